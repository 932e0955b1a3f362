package models

import (
	"sync"
	"sync/atomic"
	"time"
)

// Inputs make a metric per poll, thousands a second; allocating each metric and its field slice
// on its own made allocation and GC a third of the pipeline's cost. Metrics and field slices are
// instead carved out of larger chunks: one allocation serves hundreds of metrics. A chunk is freed
// when the last metric carved from it is.

const (
	fieldChunk  = 4096
	metricChunk = 256
)

type slab struct {
	fields  []Field
	metrics []Metric
}

var slabs = sync.Pool{New: func() any { return &slab{} }}

// MakeFields returns an empty field slice with room for n fields (appending beyond n allocates as
// append does). Safe for concurrent use.
func MakeFields(n int) []Field {
	if n > fieldChunk/8 {
		return make([]Field, 0, n)
	}
	s := slabs.Get().(*slab)
	if cap(s.fields)-len(s.fields) < n {
		s.fields = make([]Field, 0, fieldChunk)
	}
	l := len(s.fields)
	out := s.fields[l : l : l+n]
	s.fields = s.fields[:l+n]
	slabs.Put(s)
	return out
}

// fieldRoom is how many fields processors may add to a metric (ReserveFieldRoom).
var fieldRoom atomic.Int32

// ReserveFieldRoom makes NewMetric leave room for n more fields in every metric from now on, so
// that a processor adding fields (processors.predict: disconnect_risk, FIELD_forecast) appends
// them in place instead of copying the metric's fields into a slice of its own. Processors that
// add fields call it in Init; the largest n holds, for the life of the process. Safe for
// concurrent use.
func ReserveFieldRoom(n int) {
	for {
		cur := fieldRoom.Load()
		if int32(n) <= cur || fieldRoom.CompareAndSwap(cur, int32(n)) {
			return
		}
	}
}

// FieldRoom is the room NewMetric leaves (ReserveFieldRoom); 0 unless a processor reserved some.
func FieldRoom() int { return int(fieldRoom.Load()) }

// NewMetric returns a metric with an empty field slice that has room for nfields and the
// FieldRoom processors reserved, both carved from shared chunks. tags must be sorted by key (see
// New) and are kept, not copied.
func NewMetric(name string, tags []Tag, nfields int, t time.Time) *Metric {
	nfields += int(fieldRoom.Load())
	s := slabs.Get().(*slab)
	if len(s.metrics) == cap(s.metrics) {
		s.metrics = make([]Metric, 0, metricChunk)
	}
	s.metrics = s.metrics[:len(s.metrics)+1]
	m := &s.metrics[len(s.metrics)-1]
	if n := nfields; n <= fieldChunk/8 {
		if cap(s.fields)-len(s.fields) < n {
			s.fields = make([]Field, 0, fieldChunk)
		}
		l := len(s.fields)
		m.Fields = s.fields[l : l : l+n]
		s.fields = s.fields[:l+n]
	} else {
		m.Fields = make([]Field, 0, n)
	}
	slabs.Put(s)
	m.Name, m.Tags, m.Time = name, tags, t
	return m
}
