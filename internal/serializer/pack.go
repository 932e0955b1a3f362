package serializer

import "bytes"

// Packer packs serialized metrics into messages of bounded size, for brokers that carry a
// batch of metrics per message (outputs.kafka, outputs.mqtt): line protocol lines one after
// another, or JSON objects inside {"metrics":[…]}. The messages are spans of the caller's
// buffer and their metrics spans of the caller's list of batch indices, so that nothing is
// allocated per message.
type Packer struct {
	buf     *[]byte  // the messages, back to back (the caller's)
	members *[]int32 // the batch index of each metric packed, message after message (the caller's)

	json bool
	cur  Span
	n    int // metrics in the message under way
}

// Span is one packed message: buf[From:To] is its value, members[MemFrom:MemTo] its metrics.
type Span struct{ From, To, MemFrom, MemTo int32 }

// jsonOpen, jsonSep and jsonEnd frame a JSON batch: {"metrics":[m1,m2]}.
const jsonOpen, jsonSep, jsonEnd = `{"metrics":[`, ",", "]}"

// Begin makes the packer append to buf and members; json chooses the framing.
func (p *Packer) Begin(buf *[]byte, members *[]int32, json bool) {
	*p = Packer{buf: buf, members: members, json: json}
}

// Size returns the bytes of a message holding item alone, plus overhead (what the message
// carries besides its value: a key, the broker's framing).
func (p *Packer) Size(item []byte, overhead int) int {
	item = p.trim(item)
	if p.json {
		return len(jsonOpen) + len(item) + len(jsonEnd) + overhead
	}
	return len(item) + overhead
}

// Add packs item, the serialized metric of batch index i, into the message under way; when the
// message would grow past max bytes (counting overhead), it closes that message first and
// returns it (closed true) and item starts the next. The caller checks that item fits on its
// own (Size) before.
func (p *Packer) Add(i int32, item []byte, max, overhead int) (done Span, closed bool) {
	item = p.trim(item)
	sep, end := "", ""
	if p.json {
		sep, end = jsonSep, jsonEnd
	}
	if p.n > 0 && overhead+len(*p.buf)-int(p.cur.From)+len(sep)+len(item)+len(end) > max {
		done, closed = p.Close()
	}
	if p.n == 0 {
		p.cur = Span{From: int32(len(*p.buf)), MemFrom: int32(len(*p.members))}
		if p.json {
			*p.buf = append(*p.buf, jsonOpen...)
		}
	} else {
		*p.buf = append(*p.buf, sep...)
	}
	*p.buf = append(*p.buf, item...)
	*p.members = append(*p.members, i)
	p.n++
	return done, closed
}

// Empty reports whether no message is under way: the next Add starts one.
func (p *Packer) Empty() bool { return p.n == 0 }

// Close ends the message under way and returns it; ok is false when there was none.
func (p *Packer) Close() (done Span, ok bool) {
	if p.n == 0 {
		return Span{}, false
	}
	if p.json {
		*p.buf = append(*p.buf, jsonEnd...)
	}
	p.cur.To, p.cur.MemTo = int32(len(*p.buf)), int32(len(*p.members))
	p.n = 0
	return p.cur, true
}

// trim drops the line feed that ends a serialized metric, inside a JSON batch.
func (p *Packer) trim(item []byte) []byte {
	if p.json {
		return bytes.TrimSuffix(item, []byte{'\n'})
	}
	return item
}
