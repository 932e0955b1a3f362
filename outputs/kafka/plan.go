package kafka

import (
	"bytes"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
)

// messageOverhead is what kafka-go adds to key and value when it checks a message's size
// (Message.totalSize: length fields, attributes, timestamp, an empty header list), rounded up.
const messageOverhead = 32

// plan turns batch into p.msgs with p.recs beside them: the messages of each topic next to each
// other (topicGroup.from..to). Metrics that can never be written (an invalid topic, no field to
// write, larger than max_message_bytes) are rejected here. Nothing is allocated per metric: the
// values and keys go into reused buffers, and the slices into them are taken once they are
// complete.
func (p *producer) plan(batch []*models.Metric) {
	p.gen++
	if p.groups == nil || len(p.groups) > maxCached {
		p.groups = map[string]*topicGroup{}
	}
	if p.topics == nil || len(p.topics) > maxCached {
		p.topics = map[string]string{}
	}
	p.order = p.order[:0]
	for i, m := range batch {
		topic := p.topicFor(m)
		g := p.groups[topic]
		if g == nil {
			g = &topicGroup{topic: topic}
			if err := validTopic(topic); err != nil {
				g.invalid = err.Error()
			}
			p.groups[topic] = g
		}
		if g.gen != p.gen {
			g.gen, g.idx = p.gen, g.idx[:0]
			if g.invalid == "" {
				p.order = append(p.order, g)
			}
		}
		if g.invalid != "" {
			p.st.badTopic.Incr()
			p.reject(i, m.Name, g.invalid)
			continue
		}
		g.idx = append(g.idx, int32(i))
	}

	p.buf, p.keys, p.recs, p.members = p.buf[:0], p.keys[:0], p.recs[:0], p.members[:0]
	for _, g := range p.order {
		g.from = len(p.recs)
		if p.batch {
			p.planBatches(batch, g)
		} else {
			p.planSingles(batch, g)
		}
		g.to = len(p.recs)
	}

	p.msgs = p.msgs[:0]
	for _, r := range p.recs {
		msg := kafka.Message{Topic: r.topic, Value: p.buf[r.valFrom:r.valTo], Time: r.time}
		if r.keyTo > r.keyFrom {
			msg.Key = p.keys[r.keyFrom:r.keyTo]
		}
		p.msgs = append(p.msgs, msg)
	}
}

// topicFor returns the topic of m: topic_tag's value (or topic), then topic_suffix.
func (p *producer) topicFor(m *models.Metric) string {
	topic := p.topic
	if p.topicTag != "" {
		if v, ok := m.Tag(p.topicTag); ok && v != "" {
			topic = v
		}
	}
	switch p.suffix.Method {
	case "measurement":
		p.scratch = append(append(append(p.scratch[:0], topic...), p.suffix.Separator...), m.Name...)
	case "tags":
		p.scratch = append(p.scratch[:0], topic...)
		for _, k := range p.suffix.Keys {
			if v, ok := m.Tag(k); ok && v != "" {
				p.scratch = append(append(p.scratch, p.suffix.Separator...), v...)
			}
		}
	default:
		return topic
	}
	if s, ok := p.topics[string(p.scratch)]; ok { // no allocation for the lookup
		return s
	}
	s := string(p.scratch)
	p.topics[s] = s
	return s
}

// appendKey appends m's message key: the values of routing_tags joined by "/", or routing_key
// when m has none of them.
func (p *producer) appendKey(dst []byte, m *models.Metric) []byte {
	start := len(dst)
	for _, k := range p.routing {
		if v, ok := m.Tag(k); ok && v != "" {
			if len(dst) > start {
				dst = append(dst, '/')
			}
			dst = append(dst, v...)
		}
	}
	if len(dst) == start {
		dst = append(dst, p.fixedKey...)
	}
	return dst
}

// prepare returns m without the topic tag when exclude_topic_tag asks for it: a scratch metric
// that lives until the next call.
func (p *producer) prepare(m *models.Metric) *models.Metric {
	if p.dropTag == "" {
		return m
	}
	if _, ok := m.Tag(p.dropTag); !ok {
		return m
	}
	p.tagBuf = p.tagBuf[:0]
	for _, t := range m.Tags {
		if t.Key != p.dropTag {
			p.tagBuf = append(p.tagBuf, t)
		}
	}
	p.metric = models.Metric{Name: m.Name, Tags: p.tagBuf, Fields: m.Fields, Time: m.Time}
	return &p.metric
}

func (p *producer) tooLarge(i int32, m *models.Metric, size int) {
	p.st.tooLarge.Incr()
	p.reject(int(i), m.Name, fmt.Sprintf("%d bytes as a message, over max_message_bytes = %d", size, p.maxBytes))
}

// planSingles makes one message per metric of g.
func (p *producer) planSingles(batch []*models.Metric, g *topicGroup) {
	for _, i := range g.idx {
		m := batch[i]
		valFrom, keyFrom := len(p.buf), len(p.keys)
		var err error
		p.buf, err = p.ser.Append(p.buf, p.prepare(m))
		if err != nil {
			p.reject(int(i), m.Name, err.Error())
			continue
		}
		p.keys = p.appendKey(p.keys, m)
		if size := len(p.keys) - keyFrom + len(p.buf) - valFrom + messageOverhead; size > p.maxBytes {
			p.buf, p.keys = p.buf[:valFrom], p.keys[:keyFrom]
			p.tooLarge(i, m, size)
			continue
		}
		p.members = append(p.members, i)
		p.recs = append(p.recs, record{
			topic: g.topic, keyFrom: int32(keyFrom), keyTo: int32(len(p.keys)),
			valFrom: int32(valFrom), valTo: int32(len(p.buf)),
			memberFrom: int32(len(p.members) - 1), memberTo: int32(len(p.members)), time: m.Time,
		})
	}
}

// planBatches makes messages of as many metrics of g with the same key as fit in
// max_message_bytes: lines one after the other, or {"metrics":[…]} for JSON.
func (p *producer) planBatches(batch []*models.Metric, g *topicGroup) {
	if p.keyGroups == nil || len(p.keyGroups) > maxCached {
		p.keyGroups = map[string]*keyGroup{}
	}
	p.keyOrder = p.keyOrder[:0]
	for _, i := range g.idx {
		// The map key is topic, a 0 byte, the message key; built in scratch: no allocation.
		p.scratch = append(append(p.scratch[:0], g.topic...), 0)
		p.scratch = p.appendKey(p.scratch, batch[i])
		kg := p.keyGroups[string(p.scratch)]
		if kg == nil {
			kg = &keyGroup{key: bytes.Clone(p.scratch[len(g.topic)+1:])}
			p.keyGroups[string(p.scratch)] = kg
		}
		if kg.gen != p.gen {
			kg.gen, kg.idx = p.gen, kg.idx[:0]
			p.keyOrder = append(p.keyOrder, kg)
		}
		kg.idx = append(kg.idx, i)
	}
	p.pack.Begin(&p.buf, &p.members, p.json)
	for _, kg := range p.keyOrder {
		overhead := len(kg.key) + messageOverhead
		var t time.Time // of the message's first metric
		for _, i := range kg.idx {
			m := batch[i]
			var err error
			p.one, err = p.ser.Append(p.one[:0], p.prepare(m))
			if err != nil {
				p.reject(int(i), m.Name, err.Error())
				continue
			}
			if size := p.pack.Size(p.one, overhead); size > p.maxBytes {
				p.tooLarge(i, m, size)
				continue
			}
			starts := p.pack.Empty()
			if done, ok := p.pack.Add(i, p.one, p.maxBytes, overhead); ok {
				p.record(g.topic, kg.key, done, t)
				starts = true
			}
			if starts {
				t = m.Time
			}
		}
		if done, ok := p.pack.Close(); ok {
			p.record(g.topic, kg.key, done, t)
		}
	}
}

// record keeps the packed message done of topic and key, stamped t.
func (p *producer) record(topic string, key []byte, done serializer.Span, t time.Time) {
	keyFrom := int32(len(p.keys))
	p.keys = append(p.keys, key...)
	p.recs = append(p.recs, record{topic: topic, keyFrom: keyFrom, keyTo: int32(len(p.keys)),
		valFrom: done.From, valTo: done.To, memberFrom: done.MemFrom, memberTo: done.MemTo, time: t})
}
