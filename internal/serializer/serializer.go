// Package serializer turns metrics into bytes: influx line protocol (written with
// influxdata/line-protocol/v2) or JSON. Serializers append to a caller's buffer and allocate
// nothing in steady state.
package serializer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/models"
)

// Serializer appends metrics to a byte slice. A Serializer is not safe for concurrent use.
type Serializer interface {
	// Append appends m and returns the extended slice. A metric that cannot be written (no field
	// with a representable value, a bad name) leaves dst as it was and returns an error.
	Append(dst []byte, m *models.Metric) ([]byte, error)
}

// New returns a serializer for format "influx" or "json", writing times in units of precision
// (0: nanoseconds; for JSON, 0 means seconds as Telegraf's JSON does).
func New(format string, precision time.Duration) (Serializer, error) {
	switch format {
	case "", "influx":
		return NewInflux(precision), nil
	case "json":
		return NewJSON(precision), nil
	}
	return nil, fmt.Errorf("data_format = %q: must be \"influx\" or \"json\"", format)
}

// ErrNoFields is returned for a metric none of whose fields can be written.
var ErrNoFields = errors.New("no field with a value that can be written")

// Influx writes line protocol. Field values are written as influxdata/line-protocol/v2 writes
// them (Value.AppendBytes: strings through it, floats through AppendFloat, which is faster than
// strconv); names, tag keys/values and field keys are escaped here, in one pass over a table
// (and a copy of the plain prefix, which is most often all of it): the library's Encoder counts escapable characters with one strings.Count pass per
// character class for every key, which took 40% of serialization time on the pipeline benchmark.
// Every line written parses back with the library's Decoder (serializer_test.go).
type Influx struct {
	div int64 // nanoseconds per timestamp unit
	// The last timestamp written, and its digits: the metrics of one poll share a timestamp,
	// and at second precision those of one second do.
	lastTS  int64
	lastLen int // 0 before the first
	last    [20]byte
}

// NewInflux returns a line protocol serializer; precision is rounded down to ns, µs, ms or s.
func NewInflux(precision time.Duration) *Influx {
	return &Influx{div: int64(Precision(precision).Duration())}
}

// Precision maps a duration to the nearest line protocol precision at or below it.
func Precision(d time.Duration) lineprotocol.Precision {
	switch {
	case d >= time.Second:
		return lineprotocol.Second
	case d >= time.Millisecond:
		return lineprotocol.Millisecond
	case d >= time.Microsecond:
		return lineprotocol.Microsecond
	}
	return lineprotocol.Nanosecond
}

// Escape classes of line protocol.
const (
	escName    = 1 << iota // measurement: space and comma
	escKey                 // tag keys, tag values, field keys: space, comma, equals
	escInvalid             // control characters: never valid in a name or key
	escUTF8                // bytes of multi-byte UTF-8 sequences: valid only in valid UTF-8
)

var escTable = func() (t [256]byte) {
	for c := 0; c < 0x20; c++ {
		t[c] = escInvalid
	}
	t[0x7f] = escInvalid
	for c := utf8.RuneSelf; c < 256; c++ {
		t[c] = escUTF8
	}
	t[' '] = escName | escKey
	t[','] = escName | escKey
	t['='] = escKey
	return t
}()

// appendEscaped appends s escaped for class; ok is false for an empty or invalid s.
func appendEscaped(dst []byte, s string, class byte) ([]byte, bool) {
	if s == "" || s[len(s)-1] == '\\' {
		return dst, false
	}
	// Most names and keys are plain ASCII that needs no escaping: copied byte by byte into room
	// made for them (quicker than append's copy for a few bytes), until a byte needs a look.
	dst = slices.Grow(dst, len(s))
	l := len(dst)
	b := dst[l : l+len(s)]
	for i := 0; i < len(s) && i < len(b); i++ {
		c := s[i]
		if escTable[c] != 0 {
			return appendEscapedFrom(dst[:l+i], s, i, class)
		}
		b[i] = c
	}
	return dst[:l+len(s)], true
}

// appendEscapedFrom appends s[i:] escaped for class, s[:i] being plain ASCII.
func appendEscapedFrom(dst []byte, s string, i int, class byte) ([]byte, bool) {
	ascii := true
	for ; i < len(s); i++ {
		c := s[i]
		e := escTable[c]
		switch {
		case e == 0:
			dst = append(dst, c)
		case e&escUTF8 != 0:
			ascii = false
			dst = append(dst, c)
		case e&escInvalid != 0:
			return dst, false
		case e&class != 0:
			dst = append(dst, '\\', c)
		default:
			dst = append(dst, c)
		}
	}
	return dst, ascii || utf8.ValidString(s)
}

// Append implements Serializer.
func (s *Influx) Append(dst []byte, m *models.Metric) ([]byte, error) {
	start := len(dst)
	var ok bool
	if dst, ok = appendEscaped(dst, m.Name, escName); !ok || m.Name[0] == '#' {
		return dst[:start], fmt.Errorf("invalid measurement %q", m.Name)
	}
	for _, t := range m.Tags {
		if t.Key == "" || t.Value == "" {
			continue // an empty tag is the same as no tag
		}
		mark := len(dst)
		dst = append(dst, ',')
		if dst, ok = appendEscaped(dst, t.Key, escKey); ok {
			dst = append(dst, '=')
			dst, ok = appendEscaped(dst, t.Value, escKey)
		}
		if !ok {
			dst = dst[:mark]
			return dst[:start], fmt.Errorf("%s: invalid tag %q=%q", m.Name, t.Key, t.Value)
		}
	}
	sep := byte(' ')
	n := 0
	for i := range m.Fields {
		f := &m.Fields[i]
		typ := f.Type()
		var str lineprotocol.Value
		switch typ {
		case models.TypeFloat:
			if v := f.FloatV(); math.IsNaN(v) || math.IsInf(v, 0) {
				continue // line protocol has no NaN or infinity
			}
		case models.TypeString:
			var err error
			s := f.StringV()
			// Zero copy: the value only lives until it is appended.
			if str, err = lineprotocol.NewValueFromBytes(lineprotocol.String, unsafe.Slice(unsafe.StringData(s), len(s))); err != nil {
				continue
			}
		case models.TypeInt, models.TypeUint, models.TypeBool:
		default:
			continue
		}
		mark := len(dst)
		dst = append(dst, sep)
		if dst, ok = appendEscaped(dst, f.Key, escKey); !ok {
			dst = dst[:mark]
			continue
		}
		dst = append(dst, '=')
		// Values as lineprotocol.Value.AppendBytes writes them; floats through AppendFloat,
		// which writes what strconv does, faster.
		switch typ {
		case models.TypeFloat:
			dst = AppendFloat(dst, f.FloatV())
		case models.TypeInt:
			dst = append(appendInt(dst, f.IntV()), 'i')
		case models.TypeUint:
			dst = append(appendUint(dst, f.UintV()), 'u')
		case models.TypeBool:
			dst = strconv.AppendBool(dst, f.BoolV())
		default:
			dst = str.AppendBytes(dst)
		}
		sep = ','
		n++
	}
	if n == 0 {
		return dst[:start], fmt.Errorf("%s: %w", m.Name, ErrNoFields)
	}
	if !m.Time.IsZero() {
		dst = append(dst, ' ')
		if ts := m.Time.UnixNano() / s.div; ts != s.lastTS || s.lastLen == 0 {
			s.lastTS = ts
			s.lastLen = len(appendInt(s.last[:0], ts))
		}
		dst = append(dst, s.last[:s.lastLen]...)
	}
	return append(dst, '\n'), nil
}

// JSON writes one JSON object per metric and line, in Telegraf's shape:
// {"fields":{...},"name":"...","tags":{...},"timestamp":N}. It is written by hand because
// encoding/json would allocate a map per metric.
type JSON struct {
	unit time.Duration
}

// NewJSON returns a JSON serializer with timestamps in units of precision (0: seconds).
func NewJSON(precision time.Duration) *JSON {
	if precision <= 0 {
		precision = time.Second
	}
	return &JSON{unit: precision}
}

// Append implements Serializer.
func (s *JSON) Append(dst []byte, m *models.Metric) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"fields":{`...)
	n := 0
	for i := range m.Fields {
		f := &m.Fields[i]
		if f.Type() == models.TypeFloat {
			if v := f.FloatV(); math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, f.Key)
		dst = append(dst, ':')
		dst = AppendJSONValue(dst, f)
		n++
	}
	if n == 0 {
		return dst[:start], fmt.Errorf("%s: %w", m.Name, ErrNoFields)
	}
	dst = append(dst, `},"name":`...)
	dst = appendJSONString(dst, m.Name)
	dst = append(dst, `,"tags":{`...)
	for i, t := range m.Tags {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, t.Key)
		dst = append(dst, ':')
		dst = appendJSONString(dst, t.Value)
	}
	dst = append(dst, `},"timestamp":`...)
	dst = strconv.AppendInt(dst, m.Time.UnixNano()/int64(s.unit), 10)
	return append(dst, "}\n"...), nil
}

// AppendJSONValue appends a field's value as JSON (NaN and infinities as null).
func AppendJSONValue(dst []byte, f *models.Field) []byte {
	switch f.Type() {
	case models.TypeFloat:
		v := f.FloatV()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return append(dst, "null"...)
		}
		return AppendFloat(dst, v)
	case models.TypeInt:
		return strconv.AppendInt(dst, f.IntV(), 10)
	case models.TypeUint:
		return strconv.AppendUint(dst, f.UintV(), 10)
	case models.TypeBool:
		return strconv.AppendBool(dst, f.BoolV())
	case models.TypeString:
		return appendJSONString(dst, f.StringV())
	}
	return append(dst, "null"...)
}

const hexDigits = "0123456789abcdef"

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
