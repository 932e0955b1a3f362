package models

import (
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"time"
	"unsafe"
)

// PluginConfig is what every plugin table may say besides the plugin's own keys.
type PluginConfig struct {
	Name         string // plugin name ("modbus")
	Alias        string // `alias`: tells two instances of one plugin apart in logs and stats
	NamePrefix   string
	NameSuffix   string
	NameOverride string
	Tags         map[string]string // `tags`: added to every metric the plugin makes
	Filter       Filter
	Interval     time.Duration // inputs: their own gather interval (0: the agent's)
	Order        int64         // processors: place in the chain
	Source       string        // "file:line" of the plugin's table, for messages
}

// ID is how logs and stats name the plugin: `modbus` or `modbus "boiler-3"`.
func (c *PluginConfig) ID() string {
	if c.Alias == "" {
		return c.Name
	}
	return c.Name + ` "` + c.Alias + `"`
}

// RunningInput wraps an input with its settings: renames, added tags, filters, precision and
// counters. MakeMetric is safe for concurrent use.
type RunningInput struct {
	Input  Input
	Config *PluginConfig
	Log    *slog.Logger

	precision  time.Duration
	pluginTags []Tag // override the metric's own
	globalTags []Tag // added where the metric has no such tag

	stats           *Stats
	GatherTime      *Stat
	MetricsGathered *Stat
	MetricsFiltered *Stat
	Errors          *Stat

	lastErr  lastError
	errorLog logThrottle

	mu        sync.RWMutex
	tagCache  map[tagsID]mergedTags
	nameCache map[string]string
}

type tagsID struct {
	p *Tag
	n int
}

type mergedTags struct {
	orig   []Tag // kept alive, so its address cannot be reused for other tags
	merged []Tag
}

const tagCacheLimit = 1 << 16

// NewRunningInput wraps in. globalTags are the agent's [global_tags] (and host).
func NewRunningInput(in Input, cfg *PluginConfig, globalTags map[string]string, precision time.Duration, log *slog.Logger) *RunningInput {
	statTags := map[string]string{"input": cfg.Name}
	if cfg.Alias != "" {
		statTags["alias"] = cfg.Alias
	}
	s := RegisterStats("internal_input", statTags)
	return &RunningInput{
		Input:           in,
		Config:          cfg,
		Log:             log,
		precision:       precision,
		pluginTags:      TagsFromMap(cfg.Tags),
		globalTags:      TagsFromMap(globalTags),
		stats:           s,
		GatherTime:      s.Gauge("gather_time_ns"),
		MetricsGathered: s.Get("metrics_gathered"),
		MetricsFiltered: s.Get("metrics_filtered"),
		Errors:          s.Get("errors"),
		tagCache:        make(map[tagsID]mergedTags),
		nameCache:       make(map[string]string),
		errorLog:        logThrottle{period: time.Minute},
	}
}

// MakeMetric applies the input's settings to m. It returns nil when the filters drop it.
func (r *RunningInput) MakeMetric(m *Metric) *Metric {
	c := r.Config
	if c.NameOverride != "" {
		m.Name = c.NameOverride
	}
	if c.NamePrefix != "" || c.NameSuffix != "" {
		m.Name = r.rename(m.Name)
	}
	if len(r.pluginTags)+len(r.globalTags) > 0 {
		m.Tags = r.mergeTags(m.Tags)
	}
	if !c.Filter.Select(m) || !c.Filter.Modify(m) {
		r.MetricsFiltered.Incr()
		return nil
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	if r.precision > 1 {
		m.Time = m.Time.Truncate(r.precision)
	}
	r.MetricsGathered.Incr()
	return m
}

// mergeTags returns tags with the plugin's and global tags added. Inputs reuse one tag slice per
// device, so the merged set is cached by the slice's identity: no allocation per metric.
func (r *RunningInput) mergeTags(tags []Tag) []Tag {
	id := tagsID{unsafe.SliceData(tags), len(tags)}
	r.mu.RLock()
	e, ok := r.tagCache[id]
	r.mu.RUnlock()
	if ok {
		return e.merged
	}
	merged := MergeTags(tags, r.pluginTags, r.globalTags)
	r.mu.Lock()
	if len(r.tagCache) >= tagCacheLimit {
		clear(r.tagCache)
	}
	r.tagCache[id] = mergedTags{tags, merged}
	r.mu.Unlock()
	return merged
}

// rename applies name_prefix and name_suffix; names repeat, so the result is cached.
func (r *RunningInput) rename(name string) string {
	r.mu.RLock()
	out, ok := r.nameCache[name]
	r.mu.RUnlock()
	if ok {
		return out
	}
	out = r.Config.NamePrefix + name + r.Config.NameSuffix
	r.mu.Lock()
	if len(r.nameCache) >= tagCacheLimit {
		clear(r.nameCache)
	}
	r.nameCache[name] = out
	r.mu.Unlock()
	return out
}

// MergeTags returns a new sorted tag set: base, overridden by over, completed by under.
func MergeTags(base, over, under []Tag) []Tag {
	out := make([]Tag, 0, len(base)+len(over)+len(under))
	out = append(out, under...)
	out = append(out, base...)
	out = append(out, over...)
	return SortTags(out) // stable: for equal keys the last (over, then base) wins
}

// Gathered records one gather: its duration and error.
func (r *RunningInput) Gathered(d time.Duration, err error) {
	r.GatherTime.Set(int64(d))
	r.lastErr.set(err)
}

// LastError returns the error of the last gather (nil after a good one) and when it happened.
func (r *RunningInput) LastError() (error, time.Time) { return r.lastErr.get() }

// Close unregisters the input's stats.
func (r *RunningInput) Close() { r.stats.Unregister() }

// accumulator adapts a RunningInput to the Accumulator a plugin sees.
type accumulator struct {
	r         *RunningInput
	sink      func(*Metric)
	sinkBatch func([]*Metric) // nil: AddMetrics hands metrics to sink one by one
}

// NewAccumulator returns the Accumulator the input's plugin writes to: metrics pass MakeMetric
// then go to sink; errors are logged and counted.
func (r *RunningInput) NewAccumulator(sink func(*Metric)) Accumulator {
	return &accumulator{r: r, sink: sink}
}

// NewBatchAccumulator is NewAccumulator whose AddMetrics hands what passed MakeMetric to
// sinkBatch in one call (sinkBatch must not keep the slice).
func (r *RunningInput) NewBatchAccumulator(sink func(*Metric), sinkBatch func([]*Metric)) BatchAccumulator {
	return &accumulator{r: r, sink: sink, sinkBatch: sinkBatch}
}

func (a *accumulator) AddMetric(m *Metric) {
	if m = a.r.MakeMetric(m); m != nil {
		a.sink(m)
	}
}

// AddMetrics implements BatchAccumulator. What MakeMetric keeps is gathered at the front of ms.
func (a *accumulator) AddMetrics(ms []*Metric) {
	if a.sinkBatch == nil {
		for _, m := range ms {
			a.AddMetric(m)
		}
		return
	}
	kept := ms[:0]
	for _, m := range ms {
		if m = a.r.MakeMetric(m); m != nil {
			kept = append(kept, m)
		}
	}
	if len(kept) > 0 {
		a.sinkBatch(kept)
	}
}

// AddError counts and logs err. The errors an errors.Join joined (a gather's errors of several
// devices) are counted and logged one by one: one log record per device, not one record of many
// lines.
func (a *accumulator) AddError(err error) {
	if err == nil {
		return
	}
	if reflect.TypeOf(err) == joinType {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			a.AddError(e)
		}
		return
	}
	a.r.Errors.Incr()
	a.r.lastErr.set(err)
	// The same error is logged once a minute; every one is counted.
	if msg := err.Error(); a.r.errorLog.allow(msg, time.Now()) {
		a.r.Log.Error(msg)
	}
}

// joinType is the type of the errors errors.Join makes.
var joinType = reflect.TypeOf(errors.Join(errors.New("")))

type lastError struct {
	mu  sync.Mutex
	err error
	at  time.Time
}

func (l *lastError) set(err error) {
	l.mu.Lock()
	l.err, l.at = err, time.Now()
	l.mu.Unlock()
}

func (l *lastError) get() (error, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err, l.at
}
