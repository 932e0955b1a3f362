package models

import "log/slog"

// RunningProcessor wraps a processor with its filter: metrics the filter does not select pass
// by unchanged. Apply is called from one goroutine.
type RunningProcessor struct {
	Processor Processor
	Config    *PluginConfig
	Log       *slog.Logger

	stats      *Stats
	MetricsIn  *Stat
	MetricsOut *Stat

	sel, pass []*Metric
}

// NewRunningProcessor wraps p.
func NewRunningProcessor(p Processor, cfg *PluginConfig, log *slog.Logger) *RunningProcessor {
	tags := map[string]string{"processor": cfg.Name}
	if cfg.Alias != "" {
		tags["alias"] = cfg.Alias
	}
	s := RegisterStats("internal_processor", tags)
	return &RunningProcessor{
		Processor:  p,
		Config:     cfg,
		Log:        log,
		stats:      s,
		MetricsIn:  s.Get("metrics_in"),
		MetricsOut: s.Get("metrics_out"),
	}
}

// Apply runs the processor over the metrics its filter selects and returns everything that goes
// on. The returned slice is valid until the next call.
func (r *RunningProcessor) Apply(in []*Metric) []*Metric {
	r.MetricsIn.Add(int64(len(in)))
	f := &r.Config.Filter
	if !f.IsActive() {
		out := r.Processor.Apply(in...)
		r.MetricsOut.Add(int64(len(out)))
		return out
	}
	r.sel, r.pass = r.sel[:0], r.pass[:0]
	for _, m := range in {
		if f.Select(m) {
			r.sel = append(r.sel, m)
		} else {
			r.pass = append(r.pass, m)
		}
	}
	out := append(r.pass, r.Processor.Apply(r.sel...)...)
	r.pass = out
	r.MetricsOut.Add(int64(len(out)))
	return out
}

// Close unregisters the processor's stats.
func (r *RunningProcessor) Close() { r.stats.Unregister() }
