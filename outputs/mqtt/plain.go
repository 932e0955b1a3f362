package mqtt

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
)

const (
	layoutSingle = iota // a message per metric
	layoutBatch         // a message per topic with as many metrics as fit
	layoutField         // a message per field, to topic/field
)

// plain publishes metrics as line protocol or JSON (or one value per field) to topics made
// from a template. Not safe for concurrent use (the agent never calls Write concurrently).
type plain struct {
	link     *link
	topic    *template
	ser      serializer.Serializer
	json     bool
	layout   int
	qos      byte
	retain   bool
	maxBytes int
	timeout  time.Duration

	willTopic, birthTopic     string
	willPayload, birthPayload []byte
	willQoS, birthQoS         byte
	willRetain, birthRetain   bool

	escaped, tooLarge, rejected *models.Stat

	// Reused between writes.
	outbox
	topics  map[string]string // topic names built, so that each allocates once
	groups  map[string]*topicGroup
	order   []*topicGroup
	gen     int
	one     []byte
	pack    serializer.Packer // batches (layout = "batch")
	scratch []byte
}

// outbox is the messages of a write (payloads in buf, the metrics of each in members) and
// what became of them. Both modes plan into one and send it.
type outbox struct {
	buf     []byte
	msgs    []message
	members []int32
	toks    []paho.Token
	done    []bool
	status  []uint8
	verdict verdict
}

// send publishes the messages in order and waits for their acknowledgements; it returns how
// many were acknowledged and why the others were not.
func (b *outbox) send(ctx context.Context, l *link, c paho.Client, lost <-chan struct{}, qos byte, retain bool, timeout time.Duration) (int, error) {
	b.toks = b.toks[:0]
	for i := range b.msgs {
		m := &b.msgs[i]
		b.toks = append(b.toks, c.Publish(m.topic, qos, retain, b.buf[m.from:m.to]))
	}
	b.done = growBools(b.done, len(b.toks))
	n, err := awaitAll(ctx, b.toks, lost, timeout, b.done)
	l.st.messages.Add(int64(n))
	if n < len(b.toks) {
		// paho may still hold (and later send) payloads of this write: leave it the buffer.
		b.buf = nil
		if err != nil && !errors.Is(err, context.Canceled) {
			l.st.ackTimeouts.Incr()
		}
	}
	return n, err
}

// message is one MQTT message of a write: its topic, its payload in plain.buf, and the
// metrics it holds in plain.members.
type message struct {
	topic          string
	from, to       int32
	memFrom, memTo int32
}

// topicGroup is the metrics of one topic in a write (batch layout).
type topicGroup struct {
	topic string
	gen   int
	idx   []int32
}

// verdict collects what a write did with each metric.
type verdict struct {
	accepted, rejected  []int
	firstWhat, firstWhy string
	firstErr            error
}

func (v *verdict) reset() {
	v.accepted, v.rejected, v.firstWhat, v.firstWhy, v.firstErr = v.accepted[:0], v.rejected[:0], "", "", nil
}

func (v *verdict) reject(i int, what, why string) {
	if len(v.rejected) == 0 {
		v.firstWhat, v.firstWhy = what, why
	}
	v.rejected = append(v.rejected, i)
}

// result turns the verdict into Write's answer for a batch of n metrics (err: why the others
// were kept).
func (v *verdict) result(n int, err error) error {
	if len(v.accepted) == n {
		return nil
	}
	if err == nil && len(v.accepted)+len(v.rejected) < n {
		err = errors.New("not acknowledged")
	}
	if len(v.rejected) == 0 && len(v.accepted) == 0 {
		return err
	}
	if err == nil {
		err = fmt.Errorf("%d metrics dropped: %s: %s", len(v.rejected), v.firstWhat, v.firstWhy)
	}
	return &models.PartialWriteError{Err: err, Accepted: append([]int(nil), v.accepted...), Rejected: append([]int(nil), v.rejected...)}
}

// maxCached bounds the per-topic maps (tags with ever new values).
const maxCached = 10_000

// maxTopicBytes is MQTT's limit on a topic name.
const maxTopicBytes = 65535

func (o *MQTT) newPlain(lk *link) (*plain, error) {
	p := &plain{link: lk, qos: byte(o.QoS), retain: o.Retain, maxBytes: int(o.MaxMessageBytes), timeout: o.Timeout.D()}
	var err error
	if p.topic, err = parseTemplate(o.Topic, false); err != nil {
		return nil, config.KeyErrorf("topic", "%v", err)
	}
	if p.topic.parts[0].kind == literal && p.topic.parts[0].text[0] == '$' {
		return nil, config.KeyErrorf("topic", "%q: topics beginning with $ belong to the broker", o.Topic)
	}
	switch o.Layout {
	case "non-batch", "":
		p.layout = layoutSingle
	case "batch":
		p.layout = layoutBatch
	case "field":
		p.layout = layoutField
	default:
		return nil, config.KeyErrorf("layout", "%q: must be \"non-batch\", \"batch\" or \"field\"", o.Layout)
	}
	if o.Batch {
		if p.layout == layoutField {
			return nil, config.KeyErrorf("batch", "batch = true contradicts layout = \"field\"")
		}
		p.layout = layoutBatch
	}
	if p.ser, err = serializer.New(o.DataFormat, o.Precision.D()); err != nil {
		return nil, config.KeyErrorf("data_format", "%v", err)
	}
	p.json = o.DataFormat == "json"
	p.willTopic, p.willPayload, p.willQoS, p.willRetain = o.WillTopic, []byte(o.WillPayload), byte(o.WillQoS), o.WillRetain
	p.birthTopic, p.birthPayload, p.birthQoS, p.birthRetain = o.BirthTopic, []byte(o.BirthPayload), byte(o.BirthQoS), o.BirthRetain
	return p, nil
}

// will implements session.
func (p *plain) will() (string, []byte, byte, bool) {
	return p.willTopic, p.willPayload, p.willQoS, p.willRetain
}

// bind implements session.
func (p *plain) bind(s *models.Stats) {
	p.escaped, p.tooLarge, p.rejected = s.Get("topic_escaped"), s.Get("too_large"), s.Get("rejected")
}

// up implements session: the birth message, acknowledged.
func (p *plain) up(c paho.Client) error {
	if p.birthTopic == "" {
		return nil
	}
	tok := c.Publish(p.birthTopic, p.birthQoS, p.birthRetain, p.birthPayload)
	if !tok.WaitTimeout(p.timeout) {
		return fmt.Errorf("birth message to %s: no acknowledgement within %s", p.birthTopic, p.timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("birth message to %s: %w", p.birthTopic, err)
	}
	return nil
}

func (*plain) wake() <-chan struct{}  { return nil }
func (*plain) tick() time.Duration    { return 0 }
func (*plain) work(paho.Client) error { return nil }
func (*plain) down()                  {}

// goodbye implements session: a graceful disconnect sends no will, so the will's payload is
// published here, for subscribers that watch the topic to see the agent go.
func (p *plain) goodbye(c paho.Client) {
	if p.willTopic == "" {
		return
	}
	c.Publish(p.willTopic, p.willQoS, p.willRetain, p.willPayload).WaitTimeout(p.timeout)
}

// write implements writer.
func (p *plain) write(ctx context.Context, batch []*models.Metric) error {
	c, lost, err := p.link.current()
	if err != nil {
		return err
	}
	p.verdict.reset()
	p.plan(batch)
	_, werr := p.send(ctx, p.link, c, lost, p.qos, p.retain, p.timeout)
	p.status = p.verdict.settle(p.status, len(batch), p.msgs, p.members, p.done, false)
	if len(p.verdict.rejected) > 0 {
		p.rejected.Add(int64(len(p.verdict.rejected)))
		p.link.log.Warn("metrics dropped: they can never be written", "count", len(p.verdict.rejected),
			"first", p.verdict.firstWhat, "reason", p.verdict.firstWhy)
	}
	return p.verdict.result(len(batch), werr)
}

// settle records, for a write of n metrics whose messages msgs (members: the metrics in each)
// were acknowledged where done says so, which metrics were accepted: those whose every message
// was. A metric in no message counts as accepted with inNone (Sparkplug: taken into the node's
// state), else it is kept. status is reused scratch; settle returns it.
func (v *verdict) settle(status []uint8, n int, msgs []message, members []int32, done []bool, inNone bool) []uint8 {
	status = growStatus(status, n)
	for _, i := range v.rejected {
		status[i] = statusRejected
	}
	for j := range msgs {
		m := &msgs[j]
		for _, i := range members[m.memFrom:m.memTo] {
			switch {
			case !done[j]:
				status[i] = statusKept
			case status[i] == statusNone:
				status[i] = statusDone
			}
		}
	}
	for i, s := range status {
		if s == statusDone || (inNone && s == statusNone) {
			v.accepted = append(v.accepted, i)
		}
	}
	return status
}

const (
	statusNone uint8 = iota
	statusDone
	statusKept
	statusRejected
)

func growBools(b []bool, n int) []bool {
	if cap(b) < n {
		return make([]bool, n)
	}
	b = b[:n]
	clear(b)
	return b
}

func growStatus(b []uint8, n int) []uint8 {
	if cap(b) < n {
		return make([]uint8, n)
	}
	b = b[:n]
	clear(b)
	return b
}

// topicFor returns m's topic (field appended with a / for the field layout), built in
// scratch and interned; "" when it is too long.
func (p *plain) topicFor(m *models.Metric, field string) string {
	var n int
	p.scratch, n = p.topic.appendTo(p.scratch[:0], m, "", escapeTopic)
	if field != "" {
		var k int
		p.scratch = append(p.scratch, '/')
		p.scratch, k = escapeTopic(p.scratch, field)
		n += k
	}
	if n > 0 {
		p.escaped.Add(int64(n))
	}
	if len(p.scratch) > maxTopicBytes || len(p.scratch) == 0 {
		return ""
	}
	if s, ok := p.topics[string(p.scratch)]; ok { // no allocation for the lookup
		return s
	}
	s := string(p.scratch)
	p.topics[s] = s
	return s
}

// plan turns batch into p.msgs. Metrics that can never be written (no field that can be
// written, larger than max_message_bytes alone, a topic over 65,535 bytes) are rejected here.
func (p *plain) plan(batch []*models.Metric) {
	if p.topics == nil || len(p.topics) > maxCached {
		p.topics = map[string]string{}
	}
	p.buf, p.msgs, p.members = p.buf[:0], p.msgs[:0], p.members[:0]
	switch p.layout {
	case layoutSingle:
		for i, m := range batch {
			topic := p.topicFor(m, "")
			if topic == "" {
				p.verdict.reject(i, m.Name, "its topic is longer than 65,535 bytes")
				continue
			}
			from := len(p.buf)
			var err error
			if p.buf, err = p.ser.Append(p.buf, m); err != nil {
				p.verdict.reject(i, m.Name, err.Error())
				continue
			}
			if len(p.buf)-from > p.maxBytes {
				p.tooLarge.Incr()
				p.verdict.reject(i, m.Name, fmt.Sprintf("%d bytes, over max_message_bytes = %d", len(p.buf)-from, p.maxBytes))
				p.buf = p.buf[:from]
				continue
			}
			p.add(topic, from, int32(i))
		}
	case layoutField:
		for i, m := range batch {
			n := 0
			for _, f := range m.Fields {
				topic := p.topicFor(m, f.Key)
				if topic == "" {
					continue
				}
				from := len(p.buf)
				var ok bool
				if p.buf, ok = appendValue(p.buf, f); !ok {
					continue
				}
				p.add(topic, from, int32(i))
				n++
			}
			if n == 0 {
				p.verdict.reject(i, m.Name, "no field with a value that can be written (or topics over 65,535 bytes)")
			}
		}
	case layoutBatch:
		p.planBatches(batch)
	}
}

// add records the message from p.buf[from:] holding metric i.
func (p *plain) add(topic string, from int, i int32) {
	p.members = append(p.members, i)
	p.msgs = append(p.msgs, message{topic: topic, from: int32(from), to: int32(len(p.buf)),
		memFrom: int32(len(p.members) - 1), memTo: int32(len(p.members))})
}

// planBatches makes messages of as many metrics of a topic as fit in max_message_bytes: lines
// one after the other, or {"metrics":[…]} for JSON.
func (p *plain) planBatches(batch []*models.Metric) {
	p.gen++
	if p.groups == nil || len(p.groups) > maxCached {
		p.groups = map[string]*topicGroup{}
	}
	p.order = p.order[:0]
	for i, m := range batch {
		topic := p.topicFor(m, "")
		if topic == "" {
			p.verdict.reject(i, m.Name, "its topic is longer than 65,535 bytes")
			continue
		}
		g := p.groups[topic]
		if g == nil {
			g = &topicGroup{topic: topic}
			p.groups[topic] = g
		}
		if g.gen != p.gen {
			g.gen, g.idx = p.gen, g.idx[:0]
			p.order = append(p.order, g)
		}
		g.idx = append(g.idx, int32(i))
	}
	p.pack.Begin(&p.buf, &p.members, p.json)
	for _, g := range p.order {
		for _, i := range g.idx {
			m := batch[i]
			var err error
			p.one, err = p.ser.Append(p.one[:0], m)
			if err != nil {
				p.verdict.reject(int(i), m.Name, err.Error())
				continue
			}
			if size := p.pack.Size(p.one, 0); size > p.maxBytes {
				p.tooLarge.Incr()
				p.verdict.reject(int(i), m.Name, fmt.Sprintf("%d bytes, over max_message_bytes = %d", size, p.maxBytes))
				continue
			}
			if done, ok := p.pack.Add(i, p.one, p.maxBytes, 0); ok {
				p.msgs = append(p.msgs, message{topic: g.topic, from: done.From, to: done.To, memFrom: done.MemFrom, memTo: done.MemTo})
			}
		}
		if done, ok := p.pack.Close(); ok {
			p.msgs = append(p.msgs, message{topic: g.topic, from: done.From, to: done.To, memFrom: done.MemFrom, memTo: done.MemTo})
		}
	}
}

// appendValue appends a field's value as text, as Telegraf's field layout writes it: numbers
// in Go's shortest form, true/false, strings as they are. NaN and ±Inf cannot be written.
func appendValue(dst []byte, f models.Field) ([]byte, bool) {
	switch f.Type() {
	case models.TypeFloat:
		v := f.FloatV()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return dst, false
		}
		return strconv.AppendFloat(dst, v, 'g', -1, 64), true
	case models.TypeInt:
		return strconv.AppendInt(dst, f.IntV(), 10), true
	case models.TypeUint:
		return strconv.AppendUint(dst, f.UintV(), 10), true
	case models.TypeBool:
		return strconv.AppendBool(dst, f.BoolV()), true
	case models.TypeString:
		return append(dst, f.StringV()...), true
	}
	return dst, false
}
