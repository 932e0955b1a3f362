package models

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// OutputSettings are the agent-level settings an output may override in its own table.
type OutputSettings struct {
	BatchSize     int
	BufferLimit   int // metrics, for the memory buffer
	FlushInterval time.Duration
	FlushJitter   time.Duration

	BufferStrategy  string        // "memory" or "disk"
	BufferDirectory string        // disk: the agent's buffer directory (each output has a folder in it)
	BufferBytes     int64         // disk: limit in bytes
	BufferFsync     time.Duration // disk: 0 fsyncs every write ("batch"), else the interval
}

// OutputStats are an output's counters and gauges (internal_output). They are made before the
// output's buffer and handed to it as well as to the RunningOutput (as Telegraf's
// models.NewBuffer hands its BufferStats to whichever buffer it makes), so that a buffer that
// drops metrics by itself — the disk buffer, for space — counts them where the output's other
// drops are.
type OutputStats struct {
	stats           *Stats
	BufferSize      *Stat
	BufferLimit     *Stat
	MetricsAdded    *Stat
	MetricsFiltered *Stat
	MetricsDropped  *Stat
	MetricsWritten  *Stat
	MetricsRejected *Stat
	WriteTime       *Stat
	Errors          *Stat
}

// NewOutputStats registers the stats of the output cfg names.
func NewOutputStats(cfg *PluginConfig) *OutputStats {
	tags := map[string]string{"output": cfg.Name}
	if cfg.Alias != "" {
		tags["alias"] = cfg.Alias
	}
	s := RegisterStats("internal_output", tags)
	return &OutputStats{
		stats:           s,
		BufferSize:      s.Gauge("buffer_size"),
		BufferLimit:     s.Gauge("buffer_limit"),
		MetricsAdded:    s.Get("metrics_added"),
		MetricsFiltered: s.Get("metrics_filtered"),
		MetricsDropped:  s.Get("metrics_dropped"),
		MetricsWritten:  s.Get("metrics_written"),
		MetricsRejected: s.Get("metrics_rejected"),
		WriteTime:       s.Gauge("write_time_ns"),
		Errors:          s.Get("errors"),
	}
}

// Unregister removes the stats from the agent's metrics.
func (s *OutputStats) Unregister() { s.stats.Unregister() }

// RunningOutput wraps an output with its filter, its buffer and its counters. AddMetric is safe
// for concurrent use; Flush is called by one goroutine at a time.
type RunningOutput struct {
	Output   Output
	Config   *PluginConfig
	Settings OutputSettings
	Log      *slog.Logger
	Buffer   Buffer

	// BatchReady receives (without blocking the sender) when a full batch waits.
	BatchReady chan struct{}

	*OutputStats

	lastErr   lastError
	lastWrite lastError // err is nil: the time of the last good write
	logMu     sync.Mutex
	errLog    ErrorFold // write failures
	dropLog   logThrottle
}

// NewRunningOutput wraps out with buf (a memory buffer when nil), counting in stats (made here
// when nil; see OutputStats for when to make them first).
func NewRunningOutput(out Output, cfg *PluginConfig, set OutputSettings, stats *OutputStats, buf Buffer, log *slog.Logger) *RunningOutput {
	if buf == nil {
		buf = NewMemoryBuffer(set.BufferLimit)
	}
	if stats == nil {
		stats = NewOutputStats(cfg)
	}
	set.BatchSize = max(set.BatchSize, 1)
	o := &RunningOutput{
		Output:      out,
		Config:      cfg,
		Settings:    set,
		Log:         log,
		Buffer:      buf,
		BatchReady:  make(chan struct{}, 1),
		OutputStats: stats,
		errLog:      ErrorFold{Period: time.Minute},
		dropLog:     logThrottle{period: time.Minute},
	}
	o.BufferLimit.Set(int64(set.BufferLimit))
	o.BufferSize.Set(int64(buf.Len()))
	return o
}

// AddBatch buffers the metrics of ms that the output's filter selects. The metrics may be shared
// with other outputs: one is copied before a field or tag filter changes it.
func (o *RunningOutput) AddBatch(ms []*Metric) {
	f := &o.Config.Filter
	if !f.IsActive() {
		o.add(ms...)
		return
	}
	modifies := len(f.FieldPass)+len(f.FieldDrop)+len(f.TagInclude)+len(f.TagExclude) > 0
	sel := make([]*Metric, 0, len(ms))
	for _, m := range ms {
		if !f.Select(m) {
			o.MetricsFiltered.Incr()
			continue
		}
		if modifies {
			m = m.Copy()
			if !f.Modify(m) {
				o.MetricsFiltered.Incr()
				continue
			}
		}
		sel = append(sel, m)
	}
	o.add(sel...)
}

func (o *RunningOutput) add(ms ...*Metric) {
	if dropped := o.Buffer.Add(ms...); dropped > 0 {
		o.MetricsDropped.Add(int64(dropped))
		if o.dropLog.allow("buffer full", time.Now()) {
			o.Log.Warn("buffer full: oldest metrics dropped (logged once a minute; see metrics_dropped)",
				"dropped", dropped, "total_dropped", o.MetricsDropped.Get(), "limit", o.Settings.BufferLimit)
		}
	}
	o.MetricsAdded.Add(int64(len(ms)))
	n := o.Buffer.Len()
	o.BufferSize.Set(int64(n))
	if n >= o.Settings.BatchSize {
		select {
		case o.BatchReady <- struct{}{}:
		default:
		}
		// Let the flusher run now. On one core, the pipeline's stages wake one another through
		// their channels and each woken goroutine runs next, so a flusher woken above waited
		// until the inputs stopped: the buffer grew to everything they sent (BenchmarkPipeline
		// -cpu 1; agent.TestFlusherKeepsUpOnOneCore), with a heap to match.
		runtime.Gosched()
	}
}

// Flush writes batches. With all, it writes until the buffer is empty (what was there when it
// started); otherwise only full batches. It stops at the first failed write and returns its error;
// the failed batch stays in the buffer.
func (o *RunningOutput) Flush(ctx context.Context, all bool) error {
	bs := o.Settings.BatchSize
	rounds := o.Buffer.Len()/bs + 1 // new metrics keep arriving: do not chase them forever
	for ; rounds > 0; rounds-- {
		if !all && o.Buffer.Len() < bs {
			return nil
		}
		tx := o.Buffer.Begin(bs)
		if tx == nil {
			return nil
		}
		if err := o.write(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

func (o *RunningOutput) write(ctx context.Context, tx *Transaction) error {
	start := time.Now()
	err := o.Output.Write(ctx, tx.Batch)
	o.WriteTime.Set(int64(time.Since(start)))
	tx.Settle(err)
	dropped := o.Buffer.End(tx)
	o.MetricsDropped.Add(int64(dropped))
	o.BufferSize.Set(int64(o.Buffer.Len()))

	switch p, partial := AsPartialWrite(err); {
	case err == nil:
		o.MetricsWritten.Add(int64(len(tx.Batch)))
	case partial:
		o.MetricsWritten.Add(int64(len(p.Accepted)))
		o.MetricsRejected.Add(int64(len(p.Rejected)))
		if len(p.Accepted)+len(p.Rejected) == len(tx.Batch) {
			// Everything was handled: the rejects are logged by the output; go on.
			o.lastWrite.set(nil)
			o.lastErr.set(nil)
			return nil
		}
	}
	if err != nil {
		o.Errors.Incr()
		o.lastErr.set(err)
		o.logFailure(err, len(tx.Batch))
		return err
	}
	o.lastWrite.set(nil)
	if prev, _ := o.lastErr.get(); prev != nil {
		o.logMu.Lock()
		held := o.errLog.Clear()
		o.logMu.Unlock()
		o.Log.Info("output writes again", "buffered", o.Buffer.Len(), "failures_not_logged", held)
	}
	o.lastErr.set(nil)
	return nil
}

// logFailure logs a failed write, but the same error (ErrorKey) at most once a minute, with how
// often it came: an output that is down for an hour logs a line a minute, not one per flush.
func (o *RunningOutput) logFailure(err error, batch int) {
	o.logMu.Lock()
	defer o.logMu.Unlock()
	log, msg := o.errLog.AddError(err, time.Now())
	if !log {
		return
	}
	level := slog.LevelError
	if errors.Is(err, context.Canceled) {
		level = slog.LevelWarn
	}
	o.Log.Log(context.Background(), level, "write failed; batch kept for the next try",
		"error", msg, "batch", batch, "buffered", o.Buffer.Len(), "limit", o.Settings.BufferLimit)
}

// LastError returns the error of the last write (nil after a good one) and when it happened.
func (o *RunningOutput) LastError() (error, time.Time) { return o.lastErr.get() }

// LastWrite returns when the last write succeeded (zero if none did).
func (o *RunningOutput) LastWrite() time.Time {
	_, t := o.lastWrite.get()
	return t
}

// DetachBuffer hands the buffer over (to the same output after a reload); Close then leaves it
// open.
func (o *RunningOutput) DetachBuffer() Buffer {
	b := o.Buffer
	o.Buffer = nil
	return b
}

// Close closes the output and its buffer (unless detached) and unregisters its stats.
func (o *RunningOutput) Close() error {
	o.OutputStats.Unregister()
	err := o.Output.Close()
	if o.Buffer != nil {
		err = errors.Join(err, o.Buffer.Close())
	}
	return err
}
