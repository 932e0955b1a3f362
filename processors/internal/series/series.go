// Package series keeps the per-series state of the stateful processors (ratelimit, dedup,
// predict): a table from a 64-bit series hash to a value that forgets series not seen for a
// while, a lookup of a field's slot that costs one string compare when fields come in their
// usual order, and a block allocator for metrics that gain fields. Nothing here allocates per
// metric once a series is known.
//
// None of it is safe for concurrent use: each processor touches its state from the one goroutine
// that calls Apply (dedup adds a lock for its saver).
package series

import (
	"math"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Table maps series hashes to values of type T. Values live in one slice of slots indexed by a
// map[uint64]int32, so that a lookup of a known series allocates nothing and the values of
// forgotten series are reused (with whatever buffers they hold) by new ones.
//
// Forgetting is incremental: every Sweep looks at the next few slots only, so that the cost is
// spread over the metrics (a full pass over 10,000 series takes 20 batches of 512 when each
// batch sweeps as many slots as it has metrics), and no timer runs per series.
type Table[T any] struct {
	ttl    int64 // ns; 0: never forget
	index  map[uint64]int32
	slots  []slot[T]
	free   []int32
	cursor int
}

type slot[T any] struct {
	key  uint64
	seen int64 // unix ns of the last Get
	live bool
	val  T
}

// NewTable returns an empty table that forgets a series ttl after its last Get (never when
// ttl is 0).
func NewTable[T any](ttl time.Duration) *Table[T] {
	return &Table[T]{ttl: int64(ttl), index: make(map[uint64]int32)}
}

// Get returns the value of key and marks it seen at now (unix ns). isNew says the series was not
// in the table: the value is then either zero or the old value of a forgotten series, whose
// buffers the caller may reuse but must reset. The pointer is valid until the next Get.
func (t *Table[T]) Get(key uint64, now int64) (v *T, isNew bool) {
	if i, ok := t.index[key]; ok {
		s := &t.slots[i]
		s.seen = now
		return &s.val, false
	}
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		t.slots = append(t.slots, slot[T]{})
		i = int32(len(t.slots) - 1)
	}
	s := &t.slots[i]
	s.key, s.seen, s.live = key, now, true
	t.index[key] = i
	return &s.val, true
}

// Lookup returns the value of key without creating it or marking it seen.
func (t *Table[T]) Lookup(key uint64) (*T, bool) {
	if i, ok := t.index[key]; ok {
		return &t.slots[i].val, true
	}
	return nil, false
}

// Sweep looks at up to n slots after the ones the last Sweep looked at and forgets the series
// not seen for the table's ttl before now, calling forget (if not nil) with each value first.
// It returns how many series it forgot.
func (t *Table[T]) Sweep(now int64, n int, forget func(*T)) int {
	if t.ttl <= 0 || len(t.slots) == 0 {
		return 0
	}
	n = min(n, len(t.slots))
	gone := 0
	for range n {
		if t.cursor >= len(t.slots) {
			t.cursor = 0
		}
		s := &t.slots[t.cursor]
		if s.live && now-s.seen >= t.ttl {
			if forget != nil {
				forget(&s.val)
			}
			delete(t.index, s.key)
			s.live = false
			t.free = append(t.free, int32(t.cursor))
			gone++
		}
		t.cursor++
	}
	return gone
}

// Len returns the number of series held.
func (t *Table[T]) Len() int { return len(t.index) }

// Range calls f for every series held, in slot order, until f returns false.
func (t *Table[T]) Range(f func(key uint64, seen int64, v *T) bool) {
	for i := range t.slots {
		s := &t.slots[i]
		if s.live && !f(s.key, s.seen, &s.val) {
			return
		}
	}
}

// Find returns the index of the element of s whose key (as keyOf tells) is key, or -1. It tries
// index hint first: a series' fields usually arrive in the same order every time, so the first
// compare nearly always hits (and compares two pointers to the same string). Pass a top-level
// func as keyOf: Find is inlined and so is the call.
func Find[E any](s []E, hint int, key string, keyOf func(*E) string) int {
	if hint < len(s) && keyOf(&s[hint]) == key {
		return hint
	}
	for i := range s {
		if keyOf(&s[i]) == key {
			return i
		}
	}
	return -1
}

// blockFields is the size of the blocks Grow carves field slices from: 1,024 fields (48 KiB),
// enough for about 80 metrics of 10 fields.
const blockFields = 1024

// Fields hands out field slices with room for fields a processor adds (FIELD_forecast,
// disconnect_risk, a field folded in). A metric's fields mostly come without spare capacity, so
// appending would allocate once per metric; instead Grow copies them into the next free part of
// a shared block and caps the slice there, so that one allocation serves many metrics. A block
// stays alive while any metric carved from it does (metrics of one block are of one moment, and
// leave the output buffers together). The zero value is ready to use.
type Fields struct {
	block []models.Field
}

// Grow returns fs with room for extra more fields: fs itself when it has the room, else a copy.
func (a *Fields) Grow(fs []models.Field, extra int) []models.Field {
	if cap(fs)-len(fs) >= extra {
		return fs
	}
	n := len(fs) + extra
	if n > blockFields/8 {
		out := make([]models.Field, len(fs), n)
		copy(out, fs)
		return out
	}
	if cap(a.block)-len(a.block) < n {
		a.block = make([]models.Field, 0, blockFields)
	}
	start := len(a.block)
	a.block = a.block[:start+n]
	out := a.block[start : start+len(fs) : start+n]
	copy(out, fs)
	return out
}

// NewStats returns the set of a processor's own counters, reported by inputs.internal as the
// measurement "internal_processor_NAME" with an alias tag when the table has an alias. When
// report is false the set is not reported: processors count into such a set from Init until
// Start (a configuration that is loaded but never run, say by --test or a failed reload, must
// leave no stat sets behind) and register a reported one in Start.
func NewStats(name, alias string, report bool) *models.Stats {
	tags := map[string]string{}
	if alias != "" {
		tags["alias"] = alias
	}
	s := models.RegisterStats("internal_processor_"+name, tags)
	if !report {
		s.Unregister()
	}
	return s
}

// Bits returns the raw 64 bits of a field's value, the form processors keep it in: float64
// bits, int64, uint64, or 0/1; 0 for a string.
func Bits(f *models.Field) uint64 {
	switch f.Type() {
	case models.TypeFloat:
		return math.Float64bits(f.FloatV())
	case models.TypeInt:
		return uint64(f.IntV())
	case models.TypeUint:
		return f.UintV()
	case models.TypeBool:
		if f.BoolV() {
			return 1
		}
	}
	return 0
}

// Field returns the field of type t whose value is bits (as Bits gives it) or, for a string, str.
func Field(key string, t models.ValueType, bits uint64, str string) models.Field {
	switch t {
	case models.TypeFloat:
		return models.Float(key, math.Float64frombits(bits))
	case models.TypeInt:
		return models.Int(key, int64(bits))
	case models.TypeUint:
		return models.Uint(key, bits)
	case models.TypeBool:
		return models.Bool(key, bits != 0)
	}
	return models.String(key, str)
}

// Numeric reports whether fields of type t are numbers (float, int or uint; not bool).
func Numeric(t models.ValueType) bool {
	return t == models.TypeFloat || t == models.TypeInt || t == models.TypeUint
}

// Number returns the value of bits of numeric type t as a float64.
func Number(t models.ValueType, bits uint64) float64 {
	switch t {
	case models.TypeFloat:
		return math.Float64frombits(bits)
	case models.TypeInt:
		return float64(int64(bits))
	}
	return float64(bits)
}
