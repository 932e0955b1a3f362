// Package mqtt is the MQTT output: metrics to MQTT brokers through eclipse/paho.mqtt.golang
// (MQTT 3.1.1), either plainly (line protocol, JSON or one message per field, to topics made
// from templates) or as a Sparkplug B 3.0 edge node (sparkplug = true).
package mqtt

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

//go:embed sample.conf
var sampleConfig string

// MQTT writes metrics to MQTT brokers. Key names follow Telegraf's outputs.mqtt where it has
// them, so that a Telegraf table carries over.
type MQTT struct {
	// Servers are tried in order at every (re)connection: host:port, or tcp://, mqtt://,
	// ssl://, tls://, mqtts:// URLs.
	Servers []string `toml:"servers"`
	// Protocol is the MQTT version: "3.1.1" (see the README for MQTT 5).
	Protocol string `toml:"protocol"`
	// Topic is the template of the topic of a metric (plain mode).
	Topic  string `toml:"topic"`
	QoS    int    `toml:"qos"`
	Retain bool   `toml:"retain"`
	// Layout is "non-batch" (a message per metric), "batch" (a message per topic holding as
	// many metrics as fit in max_message_bytes) or "field" (a message per field, to
	// topic/field, holding the value as text). Batch = true is Telegraf's older spelling of
	// layout = "batch".
	Layout          string      `toml:"layout"`
	Batch           bool        `toml:"batch"`
	MaxMessageBytes config.Size `toml:"max_message_bytes"`
	// DataFormat is "influx" or "json"; Precision the timestamp unit.
	DataFormat string          `toml:"data_format"`
	Precision  config.Duration `toml:"precision"`

	ClientID          string          `toml:"client_id"`
	PersistentSession bool            `toml:"persistent_session"`
	KeepAlive         config.Duration `toml:"keep_alive"`
	// Timeout bounds connecting and waiting for the broker's acknowledgements in a write.
	Timeout config.Duration `toml:"timeout"`
	// ReconnectMax is the longest wait between connection attempts (they start at 100 ms and
	// double).
	ReconnectMax config.Duration `toml:"reconnect_max"`
	Username     string          `toml:"username"`
	Password     config.Secret   `toml:"password"`
	// TLSEnable turns TLS on without any file (system CAs); any tls_* key or a TLS URL in
	// servers turns it on too.
	TLSEnable bool `toml:"tls_enable"`
	tlsconfig.Client

	// The last will the broker publishes when the connection ends without a DISCONNECT, and
	// the birth message published on every connection (plain mode).
	WillTopic    string `toml:"will_topic"`
	WillPayload  string `toml:"will_payload"`
	WillQoS      int    `toml:"will_qos"`
	WillRetain   bool   `toml:"will_retain"`
	BirthTopic   string `toml:"birth_topic"`
	BirthPayload string `toml:"birth_payload"`
	BirthQoS     int    `toml:"birth_qos"`
	BirthRetain  bool   `toml:"birth_retain"`

	// Sparkplug turns the output into a Sparkplug B edge node.
	Sparkplug  bool   `toml:"sparkplug"`
	GroupID    string `toml:"group_id"`
	EdgeNodeID string `toml:"edge_node_id"`
	// DeviceTag names the tag whose value is the Sparkplug device.
	DeviceTag string `toml:"device_tag"`
	// NoDevice is what happens to a metric without DeviceTag: "node" (the edge node's own
	// metric, in NDATA) or "reject" (dropped and counted).
	NoDevice string `toml:"no_device"`
	// MetricName is the template of a Sparkplug metric's name: {{.Name}}, {{.Tag "k"}},
	// {{.Field}}.
	MetricName string `toml:"metric_name"`
	// HealthMeasurement names the metrics that tell whether a device answers (field "breaker":
	// "open" means dead); DeviceTimeout declares a device dead when no metric of it came for
	// that long (0: never).
	HealthMeasurement string          `toml:"health_measurement"`
	DeviceTimeout     config.Duration `toml:"device_timeout"`
	// QualityTag names the tag that marks a stale value (QualityStale is its value).
	QualityTag   string `toml:"quality_tag"`
	QualityStale string `toml:"quality_stale"`
	// PrimaryHostID makes the node publish only while that host's STATE is online.
	PrimaryHostID string `toml:"primary_host_id"`

	Log *slog.Logger `toml:"-"`

	w writer // the mode's writer, made by Init
}

// writer is what a mode does with a batch; link owns the connection.
type writer interface {
	write(ctx context.Context, batch []*models.Metric) error
}

func init() {
	outputs.Add("mqtt", func() models.Output { return New() })
}

// New returns an MQTT output with its defaults.
func New() *MQTT {
	return &MQTT{
		Servers:           []string{"127.0.0.1:1883"},
		Protocol:          "3.1.1",
		Topic:             `tagpipe/{{.Name}}`,
		QoS:               1,
		Layout:            "non-batch",
		MaxMessageBytes:   256 << 10,
		DataFormat:        "influx",
		ClientID:          "tagpipe",
		KeepAlive:         config.Duration(30 * time.Second),
		Timeout:           config.Duration(10 * time.Second),
		ReconnectMax:      config.Duration(10 * time.Second),
		WillQoS:           1,
		BirthQoS:          1,
		DeviceTag:         "device",
		NoDevice:          "node",
		MetricName:        `{{.Name}}/{{.Field}}`,
		HealthMeasurement: "modbus_health",
		QualityTag:        "quality",
		QualityStale:      "stale",
	}
}

// SampleConfig implements models.Output.
func (*MQTT) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer: it checks the config and builds the writer; it dials
// nothing.
func (o *MQTT) Init() error {
	if len(o.Servers) == 0 {
		return config.KeyErrorf("servers", "give at least one broker, e.g. \"127.0.0.1:1883\"")
	}
	servers := make([]string, len(o.Servers))
	tlsURL := false
	for i, s := range o.Servers {
		u, secure, err := serverURL(s)
		if err != nil {
			return config.KeyErrorf("servers", "%v", err)
		}
		servers[i], tlsURL = u, tlsURL || secure
	}
	switch o.Protocol {
	case "3.1.1", "":
	case "5", "5.0":
		return config.KeyErrorf("protocol", "MQTT 5 is not available: tagpipe speaks MQTT 3.1.1, which every MQTT 5 broker accepts (see the outputs.mqtt README)")
	default:
		return config.KeyErrorf("protocol", "%q: must be \"3.1.1\"", o.Protocol)
	}
	for _, q := range []struct {
		key string
		v   int
	}{{"qos", o.QoS}, {"will_qos", o.WillQoS}, {"birth_qos", o.BirthQoS}} {
		if q.v < 0 || q.v > 2 {
			return config.KeyErrorf(q.key, "%d: must be 0, 1 or 2", q.v)
		}
	}
	for _, c := range []struct {
		key      string
		got, min int64
		max      int64
	}{
		// A message must hold at least one small metric; MQTT's own limit is 256 MiB.
		{"max_message_bytes", int64(o.MaxMessageBytes), 128, 256 << 20},
	} {
		if c.got < c.min || c.got > c.max {
			return config.KeyErrorf(c.key, "%d: must be %d..%d", c.got, c.min, c.max)
		}
	}
	if o.Timeout <= 0 {
		return config.KeyErrorf("timeout", "must be more than 0")
	}
	if o.ReconnectMax < config.Duration(100*time.Millisecond) {
		return config.KeyErrorf("reconnect_max", "%s: must be at least 100ms", o.ReconnectMax)
	}
	if o.KeepAlive != 0 && o.KeepAlive < config.Duration(time.Second) {
		return config.KeyErrorf("keep_alive", "%s: must be 0 (off) or at least 1s", o.KeepAlive)
	}
	if o.ClientID == "" {
		return config.KeyErrorf("client_id", "give the client id (brokers tell clients apart by it)")
	}
	if o.Password != "" && o.Username == "" {
		return config.KeyErrorf("password", "give username too")
	}
	if err := checkPlainTopic(o.WillTopic); err != nil {
		return config.KeyErrorf("will_topic", "%v", err)
	}
	if err := checkPlainTopic(o.BirthTopic); err != nil {
		return config.KeyErrorf("birth_topic", "%v", err)
	}
	var tlsCfg *tls.Config
	if o.TLSEnable || o.Client.Set() || tlsURL {
		c, err := o.Client.Config()
		if err != nil {
			return err
		}
		tlsCfg = c
		for i, s := range servers { // one TLS setting for all servers
			servers[i] = "ssl://" + strings.TrimPrefix(strings.TrimPrefix(s, "tcp://"), "ssl://")
		}
	}
	lk := &link{
		servers: servers, clientID: o.ClientID, clean: !o.PersistentSession,
		keepAlive: o.KeepAlive.D(), timeout: o.Timeout.D(), reconnectMax: o.ReconnectMax.D(),
		username: o.Username, password: o.Password, tls: tlsCfg,
	}
	if o.Sparkplug {
		n, err := o.newNode(lk)
		if err != nil {
			return err
		}
		o.w = n
		return nil
	}
	for _, k := range []struct{ key, v string }{{"group_id", o.GroupID}, {"edge_node_id", o.EdgeNodeID}, {"primary_host_id", o.PrimaryHostID}} {
		if k.v != "" {
			return config.KeyErrorf(k.key, "needs sparkplug = true")
		}
	}
	p, err := o.newPlain(lk)
	if err != nil {
		return err
	}
	o.w = p
	return nil
}

// serverURL turns a servers entry into the URL paho dials and tells whether it asks for TLS.
func serverURL(s string) (string, bool, error) {
	if !strings.Contains(s, "://") {
		s = "tcp://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", false, fmt.Errorf("%q: %v", s, err)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return "", false, fmt.Errorf("%q: give host:port", s)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		return "tcp://" + u.Host, false, nil
	case "ssl", "tls", "mqtts", "tcps":
		return "ssl://" + u.Host, true, nil
	}
	return "", false, fmt.Errorf("%q: the scheme must be tcp, mqtt, ssl, tls or mqtts", s)
}

// checkPlainTopic checks a fixed topic to publish to: "" (none) or 1..65535 bytes of UTF-8
// without the wildcards + and # and without NUL, not a $ topic.
func checkPlainTopic(t string) error {
	if t == "" {
		return nil
	}
	if err := checkLiteral(t); err != nil {
		return err
	}
	if t[0] == '$' {
		return fmt.Errorf("%q: topics beginning with $ belong to the broker", t)
	}
	return nil
}

// Connect implements models.Output. It starts the connection, which reconnects by itself for
// as long as the output lives, and waits for the first attempt: a broker that cannot be
// reached or refuses the connection is logged (once per change) and counted, and the writes
// keep their metrics in the buffer meanwhile.
func (o *MQTT) Connect(ctx context.Context) error {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	switch w := o.w.(type) {
	case *plain:
		return w.link.start(ctx, log, w)
	case *node:
		return w.link.start(ctx, log, w)
	}
	return errors.New("not initialized")
}

// Write implements models.Output: a metric counts as written once the broker acknowledged
// the message holding it (PUBACK at QoS 1, PUBCOMP at QoS 2; at QoS 0 once it was sent).
func (o *MQTT) Write(ctx context.Context, batch []*models.Metric) error {
	if o.w == nil {
		return errors.New("not initialized")
	}
	return o.w.write(ctx, batch)
}

// Close implements models.Output: it says goodbye (the will's payload in plain mode, NDEATH
// as a Sparkplug node) and disconnects.
func (o *MQTT) Close() error {
	switch w := o.w.(type) {
	case *plain:
		w.link.stop()
	case *node:
		w.link.stop()
	}
	return nil
}
