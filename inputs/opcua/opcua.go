// Package opcua is the OPC UA input: it reads nodes of an OPC UA server in batched Read requests
// (mode "read") or subscribes to them with monitored items (mode "subscribe"), over any security
// policy and mode, with anonymous, user name or certificate identity. One goroutine owns the
// session: it connects with backoff, re-resolves namespace URIs and browsed folders on every
// connect, re-creates the subscription after a session was lost, and reports opcua_health.
// The client is gopcua (github.com/gopcua/opcua, pinned to v0.9.1).
package opcua

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/models"
)

//go:embed sample.conf
var sampleConfig string

// OPCUA is one [[inputs.opcua]] table: one server endpoint, one session.
type OPCUA struct {
	Name     string          `toml:"name"`
	Endpoint string          `toml:"endpoint"`
	Mode     string          `toml:"mode"`
	Interval config.Duration `toml:"interval"`

	SecurityPolicy      string        `toml:"security_policy"`
	SecurityMode        string        `toml:"security_mode"`
	AuthMethod          string        `toml:"auth_method"`
	Username            string        `toml:"username"`
	Password            config.Secret `toml:"password"`
	Certificate         string        `toml:"certificate"`
	PrivateKey          string        `toml:"private_key"`
	StateDirectory      string        `toml:"state_directory"`
	ApplicationURI      string        `toml:"application_uri"`
	TrustedCertificates string        `toml:"trusted_certificates"`
	ServerFingerprint   string        `toml:"server_fingerprint"`
	InsecureSkipVerify  bool          `toml:"insecure_skip_verify"`

	ConnectTimeout     config.Duration `toml:"connect_timeout"`
	RequestTimeout     config.Duration `toml:"request_timeout"`
	SessionTimeout     config.Duration `toml:"session_timeout"`
	ReconnectMin       config.Duration `toml:"reconnect_min"`
	ReconnectMax       config.Duration `toml:"reconnect_max"`
	PublishingInterval config.Duration `toml:"publishing_interval"`

	MaxNodesPerRead          int `toml:"max_nodes_per_read"`
	MaxMonitoredItemsPerCall int `toml:"max_monitored_items_per_call"`

	Timestamp        string `toml:"timestamp"`
	StatusCode       string `toml:"status_code"`
	QualityTag       string `toml:"quality_tag"`
	BadQuality       string `toml:"bad_quality"`
	UncertainQuality string `toml:"uncertain_quality"`
	Health           bool   `toml:"health"`

	Groups []Group `toml:"group"`

	Log *slog.Logger `toml:"-"`

	nodes    []*nodeSpec   // every configured node, in config order (browsed ones come per session)
	browses  []*browseSpec // folders to browse on every connect
	stats    *counters
	interval time.Duration // from SetInterval (the agent's), when Interval is not set

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	// do runs functions in the session's goroutine (tests: break the session on purpose).
	do chan func(*session)

	live atomic.Pointer[session] // between Start and Stop, for DeviceStates
}

// Group is one [[inputs.opcua.group]]: nodes that share a measurement, a namespace, tags and
// monitoring parameters.
type Group struct {
	Measurement      string            `toml:"measurement"`
	Namespace        *int              `toml:"namespace"`
	NamespaceURI     string            `toml:"namespace_uri"`
	IdentifierType   string            `toml:"identifier_type"`
	SamplingInterval config.Duration   `toml:"sampling_interval"`
	QueueSize        int               `toml:"queue_size"`
	DiscardOldest    *bool             `toml:"discard_oldest"`
	Trigger          string            `toml:"trigger"`
	Deadband         *Deadband         `toml:"deadband"`
	Tags             map[string]string `toml:"tags"`
	Browse           string            `toml:"browse"`
	BrowseDepth      int               `toml:"browse_depth"`
	Nodes            []Node            `toml:"node"`
}

// Node is one [[inputs.opcua.group.node]]: one value, one field.
type Node struct {
	Name             string            `toml:"name"`
	ID               string            `toml:"id"`
	DataType         string            `toml:"data_type"`
	SamplingInterval config.Duration   `toml:"sampling_interval"`
	Deadband         *Deadband         `toml:"deadband"`
	Tags             map[string]string `toml:"tags"`
}

// Deadband is a data change filter: changes smaller than Value (absolute, or percent of the
// node's EURange) are not reported by the server.
type Deadband struct {
	Type  string  `toml:"type"`
	Value float64 `toml:"value"`
}

func init() {
	inputs.Add("opcua", func() models.Input { return newDefault() })
}

func newDefault() *OPCUA {
	return &OPCUA{
		Mode:                     "read",
		SecurityPolicy:           "None",
		SecurityMode:             "None",
		AuthMethod:               "Anonymous",
		ConnectTimeout:           config.Duration(10 * time.Second),
		RequestTimeout:           config.Duration(10 * time.Second),
		SessionTimeout:           config.Duration(20 * time.Minute),
		ReconnectMin:             config.Duration(200 * time.Millisecond),
		ReconnectMax:             config.Duration(30 * time.Second),
		PublishingInterval:       config.Duration(time.Second),
		MaxNodesPerRead:          1000,
		MaxMonitoredItemsPerCall: 1000,
		Timestamp:                "source",
		StatusCode:               "none",
		QualityTag:               "not_good",
		BadQuality:               "drop",
		UncertainQuality:         "keep",
		Health:                   true,
	}
}

// SampleConfig implements models.Input.
func (*OPCUA) SampleConfig() string { return sampleConfig }

// SetInterval is called by the agent before Start with the input's interval (its own, else the
// agent's): read mode polls on it; both modes report health on it.
func (o *OPCUA) SetInterval(d time.Duration) { o.interval = d }

// Connection implements models.Connector: in cluster mode the input is one unit, named by it.
func (o *OPCUA) Connection() string { return o.Endpoint }

func (o *OPCUA) tick() time.Duration {
	switch {
	case o.Interval > 0:
		return o.Interval.D()
	case o.interval > 0:
		return o.interval
	}
	return 10 * time.Second
}

// Init implements models.Initializer: it checks the whole table and compiles the node list.
// It reads no file and dials nothing.
func (o *OPCUA) Init() error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Name == "" {
		return config.KeyErrorf("name", "give the input a name: it becomes the \"source\" tag")
	}
	if err := checkEndpoint(o.Endpoint); err != nil {
		return config.KeyErrorf("endpoint", "%v", err)
	}
	for _, c := range []struct {
		key, got string
		allowed  []string
	}{
		{"mode", o.Mode, []string{"read", "subscribe"}},
		{"security_policy", o.SecurityPolicy, append(append([]string{}, policyNames...), "auto")},
		{"security_mode", o.SecurityMode, []string{"None", "Sign", "SignAndEncrypt", "auto"}},
		{"auth_method", o.AuthMethod, []string{"Anonymous", "UserName", "Certificate"}},
		{"timestamp", o.Timestamp, []string{"source", "server", "gather"}},
		{"status_code", o.StatusCode, []string{"none", "field", "tag"}},
		{"quality_tag", o.QualityTag, []string{"not_good", "always", "never"}},
		{"bad_quality", o.BadQuality, []string{"drop", "keep"}},
		{"uncertain_quality", o.UncertainQuality, []string{"keep", "drop"}},
	} {
		if !contains(c.allowed, c.got) {
			return config.KeyErrorf(c.key, "%q: must be one of %s", c.got, strings.Join(c.allowed, ", "))
		}
	}
	if err := o.checkSecurity(); err != nil {
		return err
	}
	for _, c := range []struct {
		key      string
		got, min time.Duration
	}{
		{"connect_timeout", o.ConnectTimeout.D(), 10 * time.Millisecond},
		{"request_timeout", o.RequestTimeout.D(), 10 * time.Millisecond},
		{"session_timeout", o.SessionTimeout.D(), time.Second},
		{"reconnect_min", o.ReconnectMin.D(), time.Millisecond},
		{"reconnect_max", o.ReconnectMax.D(), o.ReconnectMin.D()},
		{"publishing_interval", o.PublishingInterval.D(), 10 * time.Millisecond},
	} {
		if c.got < c.min {
			return config.KeyErrorf(c.key, "%v: must be at least %v", c.got, c.min)
		}
	}
	for _, c := range []struct {
		key      string
		got, max int
	}{
		// Servers commonly allow a few thousand operations per call; the bound only guards
		// against a typo that would build one giant request.
		{"max_nodes_per_read", o.MaxNodesPerRead, 100000},
		{"max_monitored_items_per_call", o.MaxMonitoredItemsPerCall, 100000},
	} {
		if c.got < 1 || c.got > c.max {
			return config.KeyErrorf(c.key, "%d: must be 1..%d", c.got, c.max)
		}
	}
	if len(o.Groups) == 0 {
		return config.KeyErrorf("group", "give at least one [[inputs.opcua.group]] with nodes or browse")
	}
	if err := o.compile(); err != nil {
		return err
	}
	o.Log = o.Log.With("source", o.Name, "endpoint", o.Endpoint)
	o.stats = newCounters(o.Name, o.Endpoint)
	return nil
}

func checkEndpoint(s string) error {
	if s == "" {
		return fmt.Errorf("give the server's URL, e.g. \"opc.tcp://127.0.0.1:4840\"")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "opc.tcp" {
		return fmt.Errorf("%q: only opc.tcp:// endpoints are supported", s)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("%q: give host and port, e.g. \"opc.tcp://127.0.0.1:4840\"", s)
	}
	return nil
}

// stateDir returns where a generated certificate and key go: state_directory, else systemd's
// $STATE_DIRECTORY/opcua, else /var/lib/tagpipe/opcua.
func (o *OPCUA) stateDir() string {
	if o.StateDirectory != "" {
		return o.StateDirectory
	}
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd may pass several, separated by colons; the first is ours
		return filepath.Join(strings.Split(d, ":")[0], "opcua")
	}
	return "/var/lib/tagpipe/opcua"
}

// Start implements models.ServiceInput: it starts the goroutine that owns the session and
// returns at once. Connecting, subscribing and polling happen in that goroutine.
func (o *OPCUA) Start(ctx context.Context, acc models.Accumulator) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cancel != nil {
		return fmt.Errorf("already started")
	}
	o.stats.register() // again, when a Stop took it away ([cluster]: the shard came back)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	o.cancel, o.done = cancel, done
	s := newSession(o, acc, o.Mode == "subscribe")
	s.status.started = time.Now()
	o.live.Store(s)
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	return nil
}

// Stop implements models.ServiceInput: it ends the session (closing it on the server when the
// server is still there, within a second or two) and returns when the goroutine has ended.
func (o *OPCUA) Stop() {
	o.mu.Lock()
	cancel, done := o.cancel, o.done
	o.cancel, o.done = nil, nil
	o.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	o.live.Store(nil)
	o.stats.unregister()
}

// Gather implements models.Input for --test and --once: it connects, reads every node once
// (in both modes) and closes the session. The running input never calls it.
func (o *OPCUA) Gather(ctx context.Context, acc models.Accumulator) error {
	s := newSession(o, acc, false)
	return s.gatherOnce(ctx)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
