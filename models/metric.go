// Package models holds the data that flows through tagpipe (Metric) and the running wrappers
// around plugins: filters, per-plugin settings and counters, and the output buffers.
package models

import (
	"math"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// ValueType is the type of a field's value.
type ValueType uint8

// The field types line protocol knows.
const (
	TypeFloat ValueType = iota + 1
	TypeInt
	TypeUint
	TypeBool
	TypeString
)

func (t ValueType) String() string {
	switch t {
	case TypeFloat:
		return "float"
	case TypeInt:
		return "int"
	case TypeUint:
		return "uint"
	case TypeBool:
		return "bool"
	case TypeString:
		return "string"
	}
	return "invalid"
}

// Tag is one key=value pair of a metric's tag set.
type Tag struct {
	Key, Value string
}

// Field is one typed field of a metric: a plain value of 32 bytes, no interface boxing, so building
// a metric allocates nothing per field. The type lives in p: for numbers and bools p points to
// one of the typeMarks (a mark per type); for a string p points to its bytes and bits holds its
// length (an empty string points to its own mark). Half the size of an interface value plus
// a type tag, which matters when a buffer holds millions of fields.
type Field struct {
	Key  string
	p    unsafe.Pointer
	bits uint64 // float64 bits, int64, uint64, 0/1, or a string's length
}

// typeMarks[t] marks a field of type t; typeMarks[emptyString] an empty string.
var typeMarks [emptyString + 1]byte

const emptyString = TypeString + 1

func mark(t ValueType) unsafe.Pointer { return unsafe.Pointer(&typeMarks[t]) }

// Float returns a float field.
func Float(key string, v float64) Field {
	return Field{Key: key, p: mark(TypeFloat), bits: math.Float64bits(v)}
}

// Int returns a signed integer field.
func Int(key string, v int64) Field { return Field{Key: key, p: mark(TypeInt), bits: uint64(v)} }

// Uint returns an unsigned integer field.
func Uint(key string, v uint64) Field { return Field{Key: key, p: mark(TypeUint), bits: v} }

// Bool returns a boolean field.
func Bool(key string, v bool) Field {
	f := Field{Key: key, p: mark(TypeBool)}
	if v {
		f.bits = 1
	}
	return f
}

// String returns a string field.
func String(key, v string) Field {
	if v == "" {
		return Field{Key: key, p: mark(emptyString)}
	}
	return Field{Key: key, p: unsafe.Pointer(unsafe.StringData(v)), bits: uint64(len(v))}
}

// FieldOf converts a Go value to a field; ok is false for types a field cannot hold.
// It is for configuration and tests, not the hot path.
func FieldOf(key string, v any) (f Field, ok bool) {
	switch x := v.(type) {
	case float64:
		return Float(key, x), true
	case float32:
		return Float(key, float64(x)), true
	case int:
		return Int(key, int64(x)), true
	case int8:
		return Int(key, int64(x)), true
	case int16:
		return Int(key, int64(x)), true
	case int32:
		return Int(key, int64(x)), true
	case int64:
		return Int(key, x), true
	case uint:
		return Uint(key, uint64(x)), true
	case uint8:
		return Uint(key, uint64(x)), true
	case uint16:
		return Uint(key, uint64(x)), true
	case uint32:
		return Uint(key, uint64(x)), true
	case uint64:
		return Uint(key, x), true
	case bool:
		return Bool(key, x), true
	case string:
		return String(key, x), true
	}
	return Field{}, false
}

// Type returns the type of the field's value.
func (f Field) Type() ValueType {
	if f.p == nil {
		return 0
	}
	if d := uintptr(f.p) - uintptr(mark(0)); d > 0 && d < uintptr(TypeString) {
		return ValueType(d)
	}
	return TypeString
}

// FloatV returns the value of a float field.
func (f Field) FloatV() float64 { return math.Float64frombits(f.bits) }

// IntV returns the value of an int field.
func (f Field) IntV() int64 { return int64(f.bits) }

// UintV returns the value of a uint field.
func (f Field) UintV() uint64 { return f.bits }

// BoolV returns the value of a bool field.
func (f Field) BoolV() bool { return f.bits != 0 }

// StringV returns the value of a string field.
func (f Field) StringV() string {
	if f.Type() != TypeString || f.p == mark(emptyString) {
		return ""
	}
	return unsafe.String((*byte)(f.p), int(f.bits))
}

// Number returns a numeric view of the field (bools as 0/1); ok is false for strings.
func (f Field) Number() (v float64, ok bool) {
	switch f.Type() {
	case TypeFloat:
		return f.FloatV(), true
	case TypeInt:
		return float64(f.IntV()), true
	case TypeUint:
		return float64(f.bits), true
	case TypeBool:
		return float64(f.bits), true
	}
	return 0, false
}

// Value returns the value boxed in an interface. It allocates; keep it off the hot path.
func (f Field) Value() any {
	switch f.Type() {
	case TypeFloat:
		return f.FloatV()
	case TypeInt:
		return f.IntV()
	case TypeUint:
		return f.bits
	case TypeBool:
		return f.bits != 0
	case TypeString:
		return f.StringV()
	}
	return nil
}

// Equal reports whether two fields have the same key, type and value.
func (f Field) Equal(g Field) bool {
	if f.Key != g.Key || f.Type() != g.Type() {
		return false
	}
	if f.Type() == TypeString {
		return f.StringV() == g.StringV()
	}
	return f.bits == g.bits
}

// Metric is one measurement at one time: a name, a sorted tag set and typed fields.
//
// Tags is sorted by key with unique keys and may be shared between metrics: never change its
// elements in place; SetTag and RemoveTag copy it. Fields belongs to the metric.
// A Metric is not safe for concurrent mutation; after the processors it is read-only and the
// same pointer is handed to every output.
type Metric struct {
	Name   string
	Tags   []Tag
	Fields []Field
	Time   time.Time
	// Fresh marks the first metric of a series since its device started on this agent in
	// cluster mode (a takeover: another agent may have polled it meanwhile). Stateful
	// processors (dedup, predict) treat its series as new, so that the first reading after a
	// takeover is always sent and no window mixes two agents' watches. Outputs ignore it.
	Fresh bool
}

// New returns a metric. tags need not be sorted (they are sorted into a copy when they are not);
// fields are kept as given and owned by the metric from now on.
func New(name string, tags []Tag, fields []Field, t time.Time) *Metric {
	if !tagsSorted(tags) {
		tags = SortTags(slices.Clone(tags))
	}
	return &Metric{Name: name, Tags: tags, Fields: fields, Time: t}
}

func tagsSorted(tags []Tag) bool {
	for i := 1; i < len(tags); i++ {
		if tags[i-1].Key >= tags[i].Key {
			return false
		}
	}
	return true
}

// SortTags sorts tags by key in place and removes duplicate keys (the last one wins).
func SortTags(tags []Tag) []Tag {
	slices.SortStableFunc(tags, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
	out := tags[:0]
	for i, t := range tags {
		if i+1 < len(tags) && tags[i+1].Key == t.Key {
			continue
		}
		out = append(out, t)
	}
	return out
}

// TagsFromMap returns the sorted tag set of a map.
func TagsFromMap(m map[string]string) []Tag {
	tags := make([]Tag, 0, len(m))
	for k, v := range m {
		tags = append(tags, Tag{k, v})
	}
	return SortTags(tags)
}

// Tag returns the value of tag key.
func (m *Metric) Tag(key string) (string, bool) {
	for _, t := range m.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// SetTag sets tag key to value; the tag slice is copied, never changed in place.
func (m *Metric) SetTag(key, value string) {
	i, found := slices.BinarySearchFunc(m.Tags, key, func(t Tag, k string) int { return strings.Compare(t.Key, k) })
	if found && m.Tags[i].Value == value {
		return
	}
	tags := make([]Tag, 0, len(m.Tags)+1)
	tags = append(tags, m.Tags[:i]...)
	tags = append(tags, Tag{key, value})
	if found {
		i++
	}
	m.Tags = append(tags, m.Tags[i:]...)
}

// RemoveTag removes tag key; the tag slice is copied, never changed in place.
func (m *Metric) RemoveTag(key string) {
	i, found := slices.BinarySearchFunc(m.Tags, key, func(t Tag, k string) int { return strings.Compare(t.Key, k) })
	if !found {
		return
	}
	tags := make([]Tag, 0, len(m.Tags)-1)
	tags = append(tags, m.Tags[:i]...)
	m.Tags = append(tags, m.Tags[i+1:]...)
}

// Field returns the field named key.
func (m *Metric) Field(key string) (Field, bool) {
	for _, f := range m.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// SetField replaces the field with f's key, or appends f.
func (m *Metric) SetField(f Field) {
	for i := range m.Fields {
		if m.Fields[i].Key == f.Key {
			m.Fields[i] = f
			return
		}
	}
	m.Fields = append(m.Fields, f)
}

// RemoveField removes the field named key.
func (m *Metric) RemoveField(key string) {
	for i := range m.Fields {
		if m.Fields[i].Key == key {
			m.Fields = append(m.Fields[:i], m.Fields[i+1:]...)
			return
		}
	}
}

// Copy returns a deep copy whose fields can be changed without touching m.
func (m *Metric) Copy() *Metric {
	c := *m
	c.Fields = slices.Clone(m.Fields)
	return &c
}

// SeriesHash identifies the series (measurement and tag set) with a 64-bit FNV-1a hash.
// It allocates nothing; use it as a map key where the rare collision is acceptable.
func (m *Metric) SeriesHash() uint64 {
	h := uint64(fnvOffset)
	h = hashString(h, m.Name)
	for _, t := range m.Tags {
		h = hashString(hashByte(h, 0), t.Key)
		h = hashString(hashByte(h, 1), t.Value)
	}
	return h
}

// SeriesKey returns the series in line protocol's key form: name,k=v,k=v.
func (m *Metric) SeriesKey() string {
	var b strings.Builder
	b.WriteString(m.Name)
	for _, t := range m.Tags {
		b.WriteByte(',')
		b.WriteString(t.Key)
		b.WriteByte('=')
		b.WriteString(t.Value)
	}
	return b.String()
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashByte(h uint64, c byte) uint64 { return (h ^ uint64(c)) * fnvPrime }

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// HashTags hashes a name and a subset of tags (those named in keys, in the order of keys) the way
// SeriesHash hashes the whole set; processors use it to key state by chosen tags.
func HashTags(name string, tags []Tag, keys []string) uint64 {
	h := hashString(uint64(fnvOffset), name)
	for _, k := range keys {
		h = hashString(hashByte(h, 0), k)
		for _, t := range tags {
			if t.Key == k {
				h = hashString(hashByte(h, 1), t.Value)
				break
			}
		}
	}
	return h
}
