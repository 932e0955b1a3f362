// Package serializer turns metrics into bytes: influx line protocol (written with
// influxdata/line-protocol/v2) or JSON. Serializers append to a caller's buffer and allocate
// nothing in steady state.
package serializer

import (
	"errors"
	"fmt"
	"math"
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

// Influx writes line protocol.
type Influx struct {
	enc lineprotocol.Encoder
}

// NewInflux returns a line protocol serializer; precision is rounded down to ns, µs, ms or s.
func NewInflux(precision time.Duration) *Influx {
	s := &Influx{}
	s.enc.SetPrecision(Precision(precision))
	return s
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

// Append implements Serializer.
func (s *Influx) Append(dst []byte, m *models.Metric) ([]byte, error) {
	start := len(dst)
	e := &s.enc
	e.SetBuffer(dst)
	e.StartLine(m.Name)
	for _, t := range m.Tags {
		if t.Key != "" && t.Value != "" {
			e.AddTag(t.Key, t.Value)
		}
	}
	n := 0
	for i := range m.Fields {
		if v, ok := lpValue(&m.Fields[i]); ok {
			e.AddField(m.Fields[i].Key, v)
			n++
		}
	}
	if n == 0 {
		return dst[:start], fmt.Errorf("%s: %w", m.Name, ErrNoFields)
	}
	e.EndLine(m.Time)
	if err := e.Err(); err != nil {
		return dst[:start], err
	}
	return e.Bytes(), nil
}

func lpValue(f *models.Field) (lineprotocol.Value, bool) {
	switch f.Type() {
	case models.TypeFloat:
		return lineprotocol.FloatValue(f.FloatV())
	case models.TypeInt:
		return lineprotocol.IntValue(f.IntV()), true
	case models.TypeUint:
		return lineprotocol.UintValue(f.UintV()), true
	case models.TypeBool:
		return lineprotocol.BoolValue(f.BoolV()), true
	case models.TypeString:
		s := f.StringV()
		// Zero copy: the value only lives until it is appended.
		v, err := lineprotocol.NewValueFromBytes(lineprotocol.String, unsafe.Slice(unsafe.StringData(s), len(s)))
		return v, err == nil
	}
	return lineprotocol.Value{}, false
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
		return strconv.AppendFloat(dst, v, 'g', -1, 64)
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
