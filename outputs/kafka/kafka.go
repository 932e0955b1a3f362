// Package kafka is the Kafka output: metrics as line protocol or JSON, one per message or a
// batch per message, to a topic chosen per metric, through segmentio/kafka-go.
package kafka

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/kafkasasl"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

//go:embed sample.conf
var sampleConfig string

// Kafka writes metrics to Kafka brokers.
type Kafka struct {
	Brokers []string `toml:"brokers"`
	// Topic is where metrics go: the fallback of TopicTag and the prefix of TopicSuffix.
	Topic string `toml:"topic"`
	// TopicTag names a tag whose value is the topic of the metric.
	TopicTag        string      `toml:"topic_tag"`
	ExcludeTopicTag bool        `toml:"exclude_topic_tag"`
	TopicSuffix     TopicSuffix `toml:"topic_suffix"`
	// RoutingTags make the message key (values joined by "/"), so that a series stays on one
	// partition; RoutingKey is the key of metrics without any of those tags ("": none).
	RoutingTags []string `toml:"routing_tags"`
	RoutingKey  string   `toml:"routing_key"`
	// Compression is "none", "gzip", "snappy", "lz4" or "zstd".
	Compression  string `toml:"compression"`
	RequiredAcks Acks   `toml:"required_acks"`
	// MaxMessageBytes is the largest message sent; a metric that alone is larger is dropped
	// (logged and counted), never retried.
	MaxMessageBytes config.Size `toml:"max_message_bytes"`
	// BatchSize, BatchBytes and BatchTimeout shape kafka-go's produce requests per partition.
	BatchSize    int             `toml:"batch_size"`
	BatchBytes   config.Size     `toml:"batch_bytes"`
	BatchTimeout config.Duration `toml:"batch_timeout"`
	// MaxRetry is how often kafka-go retries a failed produce request within one write.
	MaxRetry int             `toml:"max_retry"`
	Timeout  config.Duration `toml:"timeout"`
	ClientID string          `toml:"client_id"`
	// DataFormat is "influx" or "json"; Precision the timestamp unit.
	DataFormat string          `toml:"data_format"`
	Precision  config.Duration `toml:"precision"`
	// UseBatchFormat puts as many metrics of one topic and key in a message as fit in
	// MaxMessageBytes (line protocol: lines; JSON: {"metrics":[...]}).
	UseBatchFormat         bool `toml:"use_batch_format"`
	AllowAutoTopicCreation bool `toml:"allow_auto_topic_creation"`
	// TLSEnable turns TLS on without any file (system CAs); any tls_* key turns it on too.
	TLSEnable bool `toml:"tls_enable"`
	tlsconfig.Client
	// SASL: sasl_mechanism ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), sasl_username,
	// sasl_password.
	kafkasasl.SASL
	Log *slog.Logger `toml:"-"`

	p *producer // a pointer: printing the plugin shows no SASL mechanism with its password
}

// TopicSuffix appends the measurement or tag values to the topic.
type TopicSuffix struct {
	// Method is "" (none), "measurement" or "tags".
	Method string `toml:"method"`
	// Keys are the tags whose values are appended (method "tags"); missing ones are skipped.
	Keys      []string `toml:"keys"`
	Separator string   `toml:"separator"`
}

// Acks is required_acks: -1 or "all" (every in-sync replica), 1 (the leader), 0 (none).
type Acks int

// UnmarshalTOML implements toml.Unmarshaler.
func (a *Acks) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x >= -1 && x <= 1 {
			*a = Acks(x)
			return nil
		}
	case string:
		switch strings.ToLower(x) {
		case "all", "-1":
			*a = -1
			return nil
		case "1", "one", "leader":
			*a = 1
			return nil
		case "0", "none":
			*a = 0
			return nil
		}
	}
	return fmt.Errorf("%v: must be \"all\" (or -1), 1 or 0", v)
}

var compressions = map[string]kafka.Compression{
	"": 0, "none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd,
}

func init() {
	outputs.Add("kafka", func() models.Output { return defaults() })
}

// defaults is outputs.kafka as a table that sets nothing configures it: the one default set,
// whose values sample.conf names.
func defaults() *Kafka {
	return &Kafka{
		Brokers:         []string{"127.0.0.1:9092"},
		Topic:           "tagpipe",
		TopicSuffix:     TopicSuffix{Separator: "_"},
		Compression:     "none",
		RequiredAcks:    -1,
		MaxMessageBytes: 1_000_000,
		BatchSize:       1000,
		BatchBytes:      1 << 20,
		BatchTimeout:    config.Duration(time.Millisecond),
		MaxRetry:        3,
		Timeout:         config.Duration(10 * time.Second),
		ClientID:        "tagpipe",
		DataFormat:      "influx",
	}
}

// SampleConfig implements models.Output.
func (*Kafka) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer: it checks the config and builds what Connect needs.
func (k *Kafka) Init() error {
	if len(k.Brokers) == 0 {
		return config.KeyErrorf("brokers", "give at least one broker, e.g. \"127.0.0.1:9092\"")
	}
	for _, b := range k.Brokers {
		if !strings.Contains(b, ":") {
			return config.KeyErrorf("brokers", "%q: give host:port", b)
		}
	}
	if err := validTopic(k.Topic); err != nil {
		return config.KeyErrorf("topic", "%v", err)
	}
	if k.ExcludeTopicTag && k.TopicTag == "" {
		return config.KeyErrorf("exclude_topic_tag", "needs topic_tag")
	}
	switch k.TopicSuffix.Method {
	case "", "measurement":
	case "tags":
		if len(k.TopicSuffix.Keys) == 0 {
			return config.KeyErrorf("topic_suffix.keys", "method \"tags\" needs the tag keys")
		}
	default:
		return config.KeyErrorf("topic_suffix.method", "%q: must be \"measurement\" or \"tags\"", k.TopicSuffix.Method)
	}
	codec, ok := compressions[k.Compression]
	if !ok {
		return config.KeyErrorf("compression", "%q: must be \"none\", \"gzip\", \"snappy\", \"lz4\" or \"zstd\"", k.Compression)
	}
	// franz-go's cfg.validate style: one message shape, each bound with its reason.
	for _, c := range []struct {
		key      string
		got, min int64
		max      int64
	}{
		{"max_message_bytes", int64(k.MaxMessageBytes), 64, int64(k.BatchBytes)}, // kafka-go refuses a whole write with a message above batch_bytes
		{"batch_bytes", int64(k.BatchBytes), 64, 1 << 30},
		{"batch_size", int64(k.BatchSize), 1, 1_000_000},
		{"max_retry", int64(k.MaxRetry), 0, 100},
	} {
		if c.got < c.min || c.got > c.max {
			return config.KeyErrorf(c.key, "%d: must be %d..%d", c.got, c.min, c.max)
		}
	}
	if k.Timeout <= 0 {
		return config.KeyErrorf("timeout", "must be more than 0")
	}
	ser, err := serializer.New(k.DataFormat, k.Precision.D())
	if err != nil {
		return config.KeyErrorf("data_format", "%v", err)
	}
	mech, err := k.SASL.KafkaGo()
	if err != nil {
		return err
	}
	tr := &kafka.Transport{SASL: mech, ClientID: k.ClientID, DialTimeout: k.Timeout.D()}
	if k.TLSEnable || k.Client.Set() {
		if tr.TLS, err = k.Client.Config(); err != nil {
			return err
		}
	}
	k.p = &producer{
		ser:       ser,
		json:      k.DataFormat == "json",
		batch:     k.UseBatchFormat,
		maxBytes:  int(k.MaxMessageBytes),
		topic:     k.Topic,
		topicTag:  k.TopicTag,
		dropTag:   "",
		suffix:    k.TopicSuffix,
		routing:   k.RoutingTags,
		fixedKey:  []byte(k.RoutingKey),
		transport: tr,
	}
	// The Writer is made by Connect (a Writer holds state and must not be copied).
	addr, acks := kafka.TCP(k.Brokers...), kafka.RequiredAcks(k.RequiredAcks)
	k.p.newWriter = func() *kafka.Writer {
		return &kafka.Writer{
			Addr:                   addr,
			Balancer:               kafka.Murmur2Balancer{},
			MaxAttempts:            k.MaxRetry + 1,
			BatchSize:              k.BatchSize,
			BatchBytes:             int64(k.BatchBytes),
			BatchTimeout:           k.BatchTimeout.D(),
			ReadTimeout:            k.Timeout.D(),
			WriteTimeout:           k.Timeout.D(),
			RequiredAcks:           acks,
			Compression:            codec,
			AllowAutoTopicCreation: k.AllowAutoTopicCreation,
			Transport:              tr, // never a nil *Transport: the field is an interface
		}
	}
	if k.ExcludeTopicTag {
		k.p.dropTag = k.TopicTag
	}
	return nil
}

// Connect implements models.Output. It asks the brokers for the topic's metadata, so that a
// wrong address, TLS or SASL setting shows at start; the agent retries it with backoff while
// metrics are buffered.
func (k *Kafka) Connect(ctx context.Context) error {
	p := k.p
	p.closeWriter()
	p.log = k.Log
	if p.log == nil {
		p.log = slog.Default()
	}
	w := p.newWriter()
	w.ErrorLogger = kafka.LoggerFunc(func(msg string, args ...any) {
		if p.log.Enabled(context.Background(), slog.LevelDebug) { // its errors reach Write's result
			p.log.Debug("kafka-go: " + fmt.Sprintf(msg, args...))
		}
	})
	p.w = w
	p.stats = models.RegisterStats("internal_kafka", map[string]string{"output": "kafka", "topic": k.Topic})
	p.st = producerStats{
		messages: p.stats.Get("messages"), tooLarge: p.stats.Get("too_large"),
		badTopic: p.stats.Get("invalid_topic"), writeErrors: p.stats.Get("write_errors"),
	}
	ctx, cancel := context.WithTimeout(ctx, k.Timeout.D())
	defer cancel()
	client := &kafka.Client{Addr: w.Addr, Transport: p.transport, Timeout: k.Timeout.D()}
	if _, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.Topic}}); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// What a broker that refuses the SASL login (or speaks TLS to a plain client) does.
			err = fmt.Errorf("%w (the brokers closed the connection: check the SASL credentials and TLS)", err)
		}
		return fmt.Errorf("brokers %s: %w", strings.Join(k.Brokers, ","), err)
	}
	return nil
}

// Write implements models.Output.
func (k *Kafka) Write(ctx context.Context, batch []*models.Metric) error {
	return k.p.write(ctx, batch)
}

// Close implements models.Output.
func (k *Kafka) Close() error {
	if k.p == nil {
		return nil
	}
	return k.p.closeWriter()
}

// validTopic checks a topic name as Kafka does: 1..249 of [a-zA-Z0-9._-], not "." or "..".
func validTopic(t string) error {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("%q is not a valid topic name (1 to 249 of a-z A-Z 0-9 . _ -)", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q is not a valid topic name (1 to 249 of a-z A-Z 0-9 . _ -)", t)
		}
	}
	return nil
}

// producer holds the writer and the buffers reused between writes. Not safe for concurrent
// use (the agent never calls Write concurrently).
type producer struct {
	ser       serializer.Serializer
	json      bool
	batch     bool
	maxBytes  int
	topic     string
	topicTag  string
	dropTag   string
	suffix    TopicSuffix
	routing   []string
	fixedKey  []byte
	transport *kafka.Transport

	newWriter func() *kafka.Writer
	w         *kafka.Writer
	log       *slog.Logger
	stats     *models.Stats
	st        producerStats

	// Reused between writes (dropped after a cancelled write: kafka-go may still read them).
	buf, keys, one []byte
	pack           serializer.Packer // batch messages (use_batch_format)
	msgs           []kafka.Message
	recs           []record
	members        []int32
	groups         map[string]*topicGroup // by topic
	order          []*topicGroup          // topics of this write, in order of appearance
	keyGroups      map[string]*keyGroup   // by topic + "\x00" + key (batch format)
	keyOrder       []*keyGroup
	topics         map[string]string // built topic names, so that a suffix allocates once
	scratch        []byte
	metric         models.Metric
	tagBuf         []models.Tag
	gen            int
	results        []error

	// The verdict of the write in progress.
	accepted, rejected []int
	firstReject        string
	firstReason        string
}

type producerStats struct{ messages, tooLarge, badTopic, writeErrors *models.Stat }

// topicGroup is the metrics of one topic in this write (gen) and, once built, its messages.
type topicGroup struct {
	topic    string
	invalid  string // why topic is not a valid topic name
	gen      int
	idx      []int32
	from, to int // its messages in producer.msgs
}

// keyGroup is the metrics of one topic and key in this write (batch format).
type keyGroup struct {
	key []byte
	gen int
	idx []int32
}

// record is a message before the buffers stop growing: spans instead of slices.
type record struct {
	topic                string
	keyFrom, keyTo       int32 // in producer.keys
	valFrom, valTo       int32 // in producer.buf
	memberFrom, memberTo int32 // in producer.members: the metrics in the message
	time                 time.Time
}

// maxCached bounds the per-topic and per-key maps (tags with ever new values).
const maxCached = 10_000

func (p *producer) closeWriter() error {
	if p.stats != nil {
		p.stats.Unregister()
		p.stats = nil
	}
	if p.w == nil {
		return nil
	}
	err := p.w.Close()
	p.w = nil
	p.transport.CloseIdleConnections()
	return err
}

func (p *producer) reject(i int, what, reason string) {
	if len(p.rejected) == 0 {
		p.firstReject, p.firstReason = what, reason
	}
	p.rejected = append(p.rejected, i)
}

// write plans the messages of batch, writes each topic's messages (topics in parallel, so that
// a topic that fails holds back only its own metrics) and maps kafka-go's per-message errors to
// accepted, rejected and kept metrics.
func (p *producer) write(ctx context.Context, batch []*models.Metric) error {
	if p.w == nil {
		return errors.New("not connected")
	}
	p.accepted, p.rejected = p.accepted[:0], p.rejected[:0]
	p.plan(batch)
	n := len(p.order)
	if cap(p.results) < n {
		p.results = make([]error, n)
	}
	p.results = p.results[:n]
	clear(p.results)
	if n == 1 {
		g := p.order[0]
		p.results[0] = p.w.WriteMessages(ctx, p.msgs[g.from:g.to]...)
	} else if n > 1 {
		var wg sync.WaitGroup
		for i, g := range p.order {
			if g.from == g.to {
				continue
			}
			wg.Go(func() { p.results[i] = p.w.WriteMessages(ctx, p.msgs[g.from:g.to]...) })
		}
		wg.Wait()
	}
	var kept []error
	for i, g := range p.order {
		if err := p.settle(g, p.results[i]); err != nil {
			kept = append(kept, fmt.Errorf("topic %s: %w", g.topic, err))
		}
	}
	if ctx.Err() != nil {
		// kafka-go may still send what it was given after WriteMessages returned on a cancelled
		// context: leave it those buffers.
		p.buf, p.keys, p.msgs = nil, nil, nil
	}
	if len(p.rejected) > 0 {
		p.log.Warn("metrics dropped: they can never be written", "count", len(p.rejected),
			"first", p.firstReject, "reason", p.firstReason)
	}
	err := errors.Join(kept...)
	if len(p.rejected) == 0 && (err == nil || len(p.accepted) == 0) {
		return err
	}
	if err == nil {
		err = fmt.Errorf("%d metrics dropped: %s", len(p.rejected), p.firstReason)
	}
	return &models.PartialWriteError{Err: err, Accepted: append([]int(nil), p.accepted...), Rejected: append([]int(nil), p.rejected...)}
}

// settle records the verdict of one topic's messages; it returns the error that keeps some.
func (p *producer) settle(g *topicGroup, err error) error {
	msgs := p.msgs[g.from:g.to]
	all := func(rec []record, f func(i int)) {
		for _, r := range rec {
			for _, i := range p.members[r.memberFrom:r.memberTo] {
				f(int(i))
			}
		}
	}
	recs := p.recs[g.from:g.to]
	if err == nil {
		p.st.messages.Add(int64(len(msgs)))
		all(recs, func(i int) { p.accepted = append(p.accepted, i) })
		return nil
	}
	p.st.writeErrors.Incr()
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != len(msgs) {
		var tooLarge kafka.MessageTooLargeError
		if errors.As(err, &tooLarge) {
			// Cannot happen: max_message_bytes ≤ batch_bytes is checked, and so is every message.
			return fmt.Errorf("kafka-go refused a message over batch_bytes: %w", err)
		}
		return err // nothing was written (metadata, a closed writer, a cancelled context)
	}
	tooLarge := 0
	for _, e := range werrs {
		if errors.Is(e, kafka.MessageSizeTooLarge) {
			tooLarge++
		}
	}
	var keep error
	for j, e := range werrs {
		rec := recs[j : j+1]
		switch {
		case e == nil:
			p.st.messages.Incr()
			all(rec, func(i int) { p.accepted = append(p.accepted, i) })
		case tooLarge == 1 && errors.Is(e, kafka.MessageSizeTooLarge):
			// The broker's limit is below max_message_bytes, and this message alone is over it.
			p.st.tooLarge.Incr()
			all(rec, func(i int) {
				p.reject(i, fmt.Sprintf("a message of %d bytes to %s", len(msgs[j].Value), g.topic),
					"the broker refused it as too large (its message.max.bytes is below max_message_bytes)")
			})
		default:
			if keep == nil {
				keep = e
				if errors.Is(e, kafka.MessageSizeTooLarge) {
					keep = fmt.Errorf("%w: several messages in one produce request; lower batch_bytes below the broker's message.max.bytes", e)
				}
			}
		}
	}
	return keep
}
