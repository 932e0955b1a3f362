package models

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Stat is one counter or gauge of the agent's own metrics. It is safe for concurrent use.
type Stat struct {
	key   string
	gauge bool // made by Stats.Gauge: a level (buffer size), not a count that only grows
	v     atomic.Int64
}

// Add adds n to the stat.
func (s *Stat) Add(n int64) { s.v.Add(n) }

// Incr adds one.
func (s *Stat) Incr() { s.v.Add(1) }

// Set sets a gauge.
func (s *Stat) Set(n int64) { s.v.Store(n) }

// Get returns the current value.
func (s *Stat) Get() int64 { return s.v.Load() }

// Stats is a named set of stats that inputs.internal (and /metrics) report as one metric:
// measurement, tags and one field per stat. Plugins register their own with RegisterStats.
type Stats struct {
	measurement string
	tags        []Tag

	mu    sync.Mutex
	stats []*Stat
	gone  bool
}

var statsRegistry struct {
	mu   sync.Mutex
	sets []*Stats
}

// RegisterStats returns a new stat set reported under measurement with tags. Unregister it when
// the plugin goes away (a reload).
func RegisterStats(measurement string, tags map[string]string) *Stats {
	s := &Stats{measurement: measurement, tags: TagsFromMap(tags)}
	statsRegistry.mu.Lock()
	statsRegistry.sets = append(statsRegistry.sets, s)
	statsRegistry.mu.Unlock()
	return s
}

// Get returns the counter named key (a count that only grows), creating it at zero.
func (s *Stats) Get(key string) *Stat { return s.stat(key, false) }

// Gauge returns the gauge named key (a level that goes up and down: a buffer's size, a time
// taken), creating it at zero.
func (s *Stats) Gauge(key string) *Stat { return s.stat(key, true) }

func (s *Stats) stat(key string, gauge bool) *Stat {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.stats {
		if st.key == key {
			return st
		}
	}
	st := &Stat{key: key, gauge: gauge}
	s.stats = append(s.stats, st)
	if gauge {
		gauges.Store(s.measurement+"\x00"+key, true)
	}
	return st
}

// gauges holds "measurement\x00key" of every gauge ever made: one entry per kind of stat.
var gauges sync.Map

// IsGauge reports whether field key of the stats measurement is a gauge (else a counter), for
// /metrics.
func IsGauge(measurement, key string) bool {
	_, ok := gauges.Load(measurement + "\x00" + key)
	return ok
}

// Unregister removes the set from the agent's metrics.
func (s *Stats) Unregister() {
	statsRegistry.mu.Lock()
	defer statsRegistry.mu.Unlock()
	s.gone = true
	statsRegistry.sets = slices.DeleteFunc(statsRegistry.sets, func(x *Stats) bool { return x == s })
}

// Register puts a set that Unregister took away back in the registry, with its counts (an input
// stopped and started again: a [cluster] shard that comes back). A registered set stays as it is.
func (s *Stats) Register() {
	statsRegistry.mu.Lock()
	defer statsRegistry.mu.Unlock()
	if s.gone {
		s.gone = false
		statsRegistry.sets = append(statsRegistry.sets, s)
	}
}

// StatsSnapshot returns one metric per registered stat set, in a stable order.
func StatsSnapshot(now time.Time) []*Metric {
	statsRegistry.mu.Lock()
	sets := slices.Clone(statsRegistry.sets)
	statsRegistry.mu.Unlock()
	out := make([]*Metric, 0, len(sets))
	for _, s := range sets {
		s.mu.Lock()
		fields := make([]Field, 0, len(s.stats))
		for _, st := range s.stats {
			fields = append(fields, Int(st.key, st.Get()))
		}
		s.mu.Unlock()
		if len(fields) == 0 {
			continue
		}
		slices.SortFunc(fields, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
		out = append(out, &Metric{Name: s.measurement, Tags: s.tags, Fields: fields, Time: now})
	}
	slices.SortStableFunc(out, func(a, b *Metric) int { return strings.Compare(a.SeriesKey(), b.SeriesKey()) })
	return out
}
