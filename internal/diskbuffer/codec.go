package diskbuffer

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// The disk buffer stores metrics in a compact binary form:
//
//	metric := name tags fields time
//	name   := uvarint(len) bytes
//	tags   := uvarint(n) { key value }          key, value as name
//	fields := uvarint(n) { key type value }     type: one byte (ValueType)
//	                                            value: 8 bytes little endian, or a string as name
//	time   := varint(unix nanoseconds)
//
// Decoding interns names, keys and tag values (they repeat from metric to metric), so replaying a
// buffer allocates per metric, not per field. It is strict: it refuses what AppendMetric would
// not write (a varint longer than it needs, a bool other than 0 or 1), so that whatever decodes
// encodes back to the same bytes (FuzzDecode).

// AppendMetric appends the encoding of m to dst.
func AppendMetric(dst []byte, m *models.Metric) []byte {
	dst = appendStr(dst, m.Name)
	dst = binary.AppendUvarint(dst, uint64(len(m.Tags)))
	for _, t := range m.Tags {
		dst = appendStr(dst, t.Key)
		dst = appendStr(dst, t.Value)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Fields)))
	for i := range m.Fields {
		f := &m.Fields[i]
		dst = appendStr(dst, f.Key)
		typ := f.Type()
		dst = append(dst, byte(typ))
		if typ == models.TypeString {
			dst = appendStr(dst, f.StringV())
		} else {
			dst = binary.LittleEndian.AppendUint64(dst, valueBits(f))
		}
	}
	return binary.AppendVarint(dst, m.Time.UnixNano())
}

// valueBits returns the 8 bytes of a number or bool: float64 bits, the integer, 0 or 1.
func valueBits(f *models.Field) uint64 {
	switch f.Type() {
	case models.TypeFloat:
		return math.Float64bits(f.FloatV())
	case models.TypeInt:
		return uint64(f.IntV())
	case models.TypeBool:
		if f.BoolV() {
			return 1
		}
		return 0
	}
	return f.UintV()
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// ErrBadEncoding is returned for bytes that are not an encoded metric.
var ErrBadEncoding = errors.New("bad metric encoding")

// Decoder decodes metrics, interning the strings that repeat. Not safe for concurrent use.
type Decoder struct {
	intern  map[string]string
	tagSets map[string][]models.Tag // by their encoded bytes: decoded metrics share tag slices
}

const internLimit = 1 << 16

func (d *Decoder) str(b []byte) string {
	if d.intern == nil {
		d.intern = make(map[string]string)
	}
	if s, ok := d.intern[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if len(d.intern) >= internLimit {
		clear(d.intern)
	}
	d.intern[s] = s
	return s
}

// Decode decodes one metric from b and returns it and the bytes after it.
func (d *Decoder) Decode(b []byte) (*models.Metric, []byte, error) {
	name, b, err := d.readStr(b)
	if err != nil {
		return nil, nil, err
	}
	tags, b, err := d.readTags(b)
	if err != nil {
		return nil, nil, err
	}
	nf, b, err := readUvarint(b)
	if err != nil || nf > uint64(len(b)) {
		return nil, nil, ErrBadEncoding
	}
	m := models.NewMetric(name, tags, int(nf), time.Time{})
	for range nf {
		var key string
		if key, b, err = d.readStr(b); err != nil {
			return nil, nil, err
		}
		if len(b) == 0 {
			return nil, nil, ErrBadEncoding
		}
		typ := models.ValueType(b[0])
		b = b[1:]
		var f models.Field
		if typ == models.TypeString {
			var v string
			if v, b, err = d.readStr(b); err != nil {
				return nil, nil, err
			}
			f = models.String(key, v)
		} else {
			if len(b) < 8 {
				return nil, nil, ErrBadEncoding
			}
			v := binary.LittleEndian.Uint64(b)
			b = b[8:]
			switch typ {
			case models.TypeFloat:
				f = models.Float(key, math.Float64frombits(v))
			case models.TypeInt:
				f = models.Int(key, int64(v))
			case models.TypeUint:
				f = models.Uint(key, v)
			case models.TypeBool:
				if v > 1 { // AppendMetric writes only 0 and 1
					return nil, nil, ErrBadEncoding
				}
				f = models.Bool(key, v == 1)
			default:
				return nil, nil, ErrBadEncoding
			}
		}
		m.Fields = append(m.Fields, f)
	}
	ts, n := binary.Varint(b)
	if n <= 0 || !canonical(b[:n]) {
		return nil, nil, ErrBadEncoding
	}
	m.Time = time.Unix(0, ts)
	return m, b[n:], nil
}

// readTags reads a tag set. Tag sets repeat (a device's tags): one decoded slice serves every
// metric with the same encoded tags.
func (d *Decoder) readTags(b []byte) ([]models.Tag, []byte, error) {
	start := b
	nt, b, err := readUvarint(b)
	if err != nil || nt > uint64(len(b)) {
		return nil, nil, ErrBadEncoding
	}
	if nt == 0 {
		return nil, b, nil
	}
	rest := b
	for range 2 * nt {
		var n uint64
		if n, rest, err = readUvarint(rest); err != nil || n > uint64(len(rest)) {
			return nil, nil, ErrBadEncoding
		}
		rest = rest[n:]
	}
	raw := start[:len(start)-len(rest)]
	if tags, ok := d.tagSets[string(raw)]; ok {
		return tags, rest, nil
	}
	tags := make([]models.Tag, nt)
	for i := range tags {
		tags[i].Key, b, _ = d.readStr(b)
		tags[i].Value, b, _ = d.readStr(b)
	}
	if d.tagSets == nil || len(d.tagSets) >= internLimit {
		d.tagSets = make(map[string][]models.Tag)
	}
	d.tagSets[string(raw)] = tags
	return tags, rest, nil
}

func readUvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || !canonical(b[:n]) {
		return 0, nil, ErrBadEncoding
	}
	return v, b[n:], nil
}

// canonical reports whether the varint v is in its shortest form, the one AppendUvarint and
// AppendVarint write: a last byte of zero after others adds nothing. Decoding is strict, so that
// one value has one encoding and what decodes encodes back to the same bytes.
func canonical(v []byte) bool {
	return len(v) == 1 || v[len(v)-1] != 0
}

func (d *Decoder) readStr(b []byte) (string, []byte, error) {
	n, b, err := readUvarint(b)
	if err != nil || n > uint64(len(b)) || n > math.MaxInt32 {
		return "", nil, ErrBadEncoding
	}
	return d.str(b[:n]), b[n:], nil
}
