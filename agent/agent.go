// Package agent wires configured plugins together and runs them: inputs on their schedule,
// processors in order, outputs with their buffers and flushers, and an orderly shutdown.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/diskbuffer"
	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// Agent runs one loaded configuration. Build it with New, then call Run once (or Test or Once).
type Agent struct {
	cfg        *config.Config
	log        *slog.Logger
	inputs     []*models.RunningInput
	processors []*models.RunningProcessor
	outputs    []*runningOutput
	created    time.Time   // health: what has not worked yet has failed since then
	cluster    *clusterRun // [cluster]: the units this agent polls; nil without

	mu          sync.Mutex
	handOver    map[string]bool                  // identities whose buffers go to the next agent
	buffers     map[string]models.Buffer         // detached at shutdown, for the next agent
	startFailed map[*models.RunningInput]failure // service inputs whose Start failed
}

type runningOutput struct {
	*models.RunningOutput
	identity   string
	connectErr atomic.Pointer[failure]    // while Connect fails; nil once connected
	buffer     bufferHealth               // nil when the buffer cannot fail by itself
	disk       interface{ Bytes() int64 } // a disk buffer's size, for the device page; nil: memory
}

// bufferHealth is a buffer that can fail by itself, whatever its output does: a disk buffer that
// set a file aside, or the memory buffer standing in for a disk buffer that could not be opened.
// Health reports it.
type bufferHealth interface {
	Err() (error, time.Time)
}

// failure is an error and when it happened, for Health.
type failure struct {
	err error
	at  time.Time
}

// New builds the running plugins of cfg. buffers holds the buffers of a previous agent by output
// identity (after a reload); an output with the same identity takes its buffer over.
func New(cfg *config.Config, buffers map[string]models.Buffer) (*Agent, error) {
	a := &Agent{cfg: cfg, log: slog.Default().With("plugin", "agent"), created: time.Now()}
	precision := time.Duration(cfg.Agent.Precision)
	for _, in := range cfg.Inputs {
		a.inputs = append(a.inputs, models.NewRunningInput(in.Plugin, in.Config, cfg.GlobalTags, precision, in.Log))
	}
	for _, p := range cfg.Processors {
		a.processors = append(a.processors, models.NewRunningProcessor(p.Plugin, p.Config, p.Log))
	}
	for _, o := range cfg.Outputs {
		// The stats first, so that the buffer can count what it drops by itself in them.
		stats := models.NewOutputStats(o.Config)
		buf := buffers[o.Identity]
		delete(buffers, o.Identity)
		switch d, handedOver := buf.(*diskbuffer.Buffer); {
		case buf == nil:
			var err error
			if buf, err = newBuffer(o, stats); err != nil {
				stats.Unregister()
				a.closeAll()
				return nil, fmt.Errorf("outputs.%s: buffer: %w", o.Config.ID(), err)
			}
		case handedOver:
			d.CountDropsIn(stats.MetricsDropped) // not in the previous agent's output
		}
		ro := &runningOutput{RunningOutput: models.NewRunningOutput(o.Plugin, o.Config, o.Settings, stats, buf, o.Log), identity: o.Identity}
		ro.buffer, _ = buf.(bufferHealth)
		ro.disk, _ = buf.(interface{ Bytes() int64 })
		a.outputs = append(a.outputs, ro)
	}
	if cfg.Cluster != nil {
		var err error
		if a.cluster, err = newClusterRun(a); err != nil {
			a.closeAll()
			return nil, err
		}
	}
	a.reportOrphans()
	for id, b := range buffers {
		// An output that left the config: its metrics cannot go anywhere now.
		if n := b.Len(); n > 0 && kept(b) {
			a.log.Warn("output removed by reload; its buffered metrics stay in its disk buffer folder, which no output sends",
				"output", id, "metrics", n)
		} else if n > 0 {
			a.log.Warn("output removed by reload; its buffered metrics are lost", "output", id, "metrics", n)
		}
		b.Close()
	}
	return a, nil
}

// newBuffer returns the buffer of an output: in memory, holding metric_buffer_limit metrics, or
// on disk in a folder of buffer_directory named after the output's identity. Metrics the disk
// buffer drops by itself (for space) are counted in the output's stats too.
//
// A disk buffer that cannot be opened (a folder that cannot be made or written, a file it cannot
// repair) must not stop the collection: the output buffers in memory instead, logged as an error
// and reported failing in /healthz until the next start. Only a folder locked by another running
// agent is an error: that agent would poll the same devices.
func newBuffer(o *config.Output, stats *models.OutputStats) (models.Buffer, error) {
	set := o.Settings
	if set.BufferStrategy != "disk" {
		return models.NewMemoryBuffer(set.BufferLimit), nil
	}
	tags := map[string]string{"output": o.Config.Name}
	if o.Config.Alias != "" {
		tags["alias"] = o.Config.Alias
	}
	dir := filepath.Join(set.BufferDirectory, bufferDirName(o.Identity))
	b, err := diskbuffer.Open(diskbuffer.Config{
		Dir:      dir,
		Limit:    set.BufferBytes,
		Fsync:    set.BufferFsync,
		Log:      o.Log,
		StatTags: tags,
		Dropped:  stats.MetricsDropped,
	})
	switch {
	case errors.Is(err, diskbuffer.ErrLocked):
		return nil, err
	case err != nil:
		o.Log.Error("disk buffer cannot be opened; this output buffers in memory until the next start and reports failing",
			"dir", dir, "error", err, "metric_buffer_limit", set.BufferLimit)
		return &memoryFallback{models.NewMemoryBuffer(set.BufferLimit),
			fmt.Errorf("disk buffer %s cannot be opened (%w); buffering in memory, at most %d metrics", dir, err, set.BufferLimit), time.Now()}, nil
	}
	return b, nil
}

// kept reports whether b keeps its metrics when it is closed (a disk buffer).
func kept(b models.Buffer) bool {
	_, disk := b.(*diskbuffer.Buffer)
	return disk
}

// memoryFallback is the buffer of an output whose disk buffer could not be opened.
type memoryFallback struct {
	*models.MemoryBuffer
	err error
	at  time.Time
}

func (m *memoryFallback) Err() (error, time.Time) { return m.err, m.at }

// bufferDirName turns an output identity ("outputs.influxdb/plant") into a folder name.
func bufferDirName(identity string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, identity)
}

// reportOrphans logs buffer folders that no configured output uses any more: their metrics are
// not sent anywhere, and they are left for the operator to move or delete.
func (a *Agent) reportOrphans() {
	used := map[string]map[string]bool{}
	for _, o := range a.cfg.Outputs {
		if s := o.Settings; s.BufferStrategy == "disk" {
			if used[s.BufferDirectory] == nil {
				used[s.BufferDirectory] = map[string]bool{}
			}
			used[s.BufferDirectory][bufferDirName(o.Identity)] = true
		}
	}
	for dir, names := range used {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !e.IsDir() || names[e.Name()] {
				continue
			}
			var size int64
			segs, _ := filepath.Glob(filepath.Join(dir, e.Name(), "*.seg"))
			for _, s := range segs {
				if st, err := os.Stat(s); err == nil {
					size += st.Size()
				}
			}
			a.log.Warn("orphaned disk buffer: no configured output uses it; not deleted",
				"dir", filepath.Join(dir, e.Name()), "bytes", size)
		}
	}
}

// Inputs returns the running inputs (for health checks).
func (a *Agent) Inputs() []*models.RunningInput { return a.inputs }

// Outputs returns the running outputs (for health checks).
func (a *Agent) Outputs() []*models.RunningOutput {
	out := make([]*models.RunningOutput, len(a.outputs))
	for i, o := range a.outputs {
		out[i] = o.RunningOutput
	}
	return out
}

// HandOver names the outputs (by identity) whose buffers the next agent takes over after a
// reload: at shutdown they are not flushed and not closed but kept for Buffers.
func (a *Agent) HandOver(identities []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handOver = map[string]bool{}
	for _, id := range identities {
		a.handOver[id] = true
	}
}

// Buffers returns the buffers kept at shutdown for HandOver.
func (a *Agent) Buffers() map[string]models.Buffer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buffers
}

// Run runs the agent until ctx is done, then shuts down: it stops the inputs, drains the
// processors, flushes every output once more within shutdown_timeout, and closes them.
func (a *Agent) Run(ctx context.Context) error {
	pipe := newPipeline(a.processors, a.Outputs())

	// Outputs first, so that nothing waits on them: connecting happens in each flusher.
	// Stopping the flushers (outCtx) does not cut short a write under way: a request the server
	// took whole but whose answer was cut off is sent again by the final flush, a duplicate. The
	// writes are cancelled at the shutdown's deadline (writeCtx).
	outCtx, stopOutputs := context.WithCancel(context.Background())
	writeCtx, cancelWrites := context.WithCancelCause(context.Background())
	defer cancelWrites(nil)
	var outWG sync.WaitGroup
	for _, o := range a.outputs {
		outWG.Go(func() { a.flushLoop(outCtx, writeCtx, o) })
	}

	for _, rp := range a.processors {
		if sp, ok := rp.Processor.(models.ServiceProcessor); ok {
			if err := sp.Start(ctx); err != nil {
				stopOutputs()
				outWG.Wait()
				a.closeAll()
				return fmt.Errorf("processors.%s: start: %w", rp.Config.ID(), err)
			}
		}
	}
	pipe.start()

	inCtx, stopInputs := context.WithCancel(ctx)
	var inWG sync.WaitGroup
	var services []models.ServiceInput
	if a.cluster != nil {
		a.cluster.prepare()
	}
	for _, ri := range a.inputs {
		var acc models.Accumulator = ri.NewBatchAccumulator(func(m *models.Metric) { pipe.in <- m }, pipe.addBatch)
		if si, ok := ri.Input.(models.ServiceInput); ok {
			if is, ok := si.(models.IntervalSetter); ok {
				is.SetInterval(a.inputInterval(ri))
			}
			if w := a.cluster.whole(ri); w != nil {
				// Started by the group, when its shard is assigned here.
				w.ctx, w.acc = inCtx, &freshAccumulator{Accumulator: acc}
				continue
			}
			if err := si.Start(inCtx, acc); err != nil {
				ri.Log.Error("start failed; the input is not running", "error", err)
				a.failedStart(ri, err)
				continue
			}
			services = append(services, si)
			continue
		}
		inWG.Go(func() { a.gatherLoop(inCtx, ri, acc) })
	}
	if a.cluster != nil {
		a.cluster.member.Start()
	}
	a.log.Info("agent started", "inputs", len(a.inputs), "processors", len(a.processors), "outputs", len(a.outputs))

	<-ctx.Done()
	if a.cluster != nil {
		// Leave the group first: the units stop, their connections close, and the others
		// take the shards over while this agent still flushes its outputs.
		a.log.Info("stopping: leaving the group")
		a.cluster.member.Close()
		a.cluster.stopWholes()
	}
	a.log.Info("stopping: inputs")
	stopInputs()
	inWG.Wait()
	for _, si := range services {
		si.Stop()
	}
	close(pipe.in)
	<-pipe.done
	for _, rp := range a.processors {
		if sp, ok := rp.Processor.(models.ServiceProcessor); ok {
			sp.Stop()
		}
	}
	deadline := time.Now().Add(time.Duration(a.cfg.Agent.ShutdownTimeout))
	stopOutputs()
	late := time.AfterFunc(time.Until(deadline), func() { cancelWrites(context.DeadlineExceeded) })
	outWG.Wait()
	late.Stop()
	a.finalFlush(deadline)
	a.closeAll()
	a.log.Info("stopped")
	return nil
}

// finalFlush writes what every output still holds, all outputs at once, by deadline (the end of
// shutdown_timeout).
func (a *Agent) finalFlush(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, o := range a.outputs {
		if a.handedOver(o.identity) {
			continue
		}
		wg.Go(func() {
			if o.Buffer.Len() == 0 {
				return
			}
			if err := o.Flush(ctx, true); err != nil && kept(o.Buffer) {
				o.Log.Warn("final flush failed; the metrics are kept in the disk buffer and sent after the next start",
					"error", err, "metrics", o.Buffer.Len())
			} else if err != nil {
				o.Log.Error("final flush failed; metrics lost", "error", err, "metrics", o.Buffer.Len())
			}
		})
	}
	wg.Wait()
}

func (a *Agent) handedOver(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handOver[id]
}

func (a *Agent) closeAll() {
	if a.cluster != nil {
		a.cluster.member.Close() // after Run, done already; after Test or Once, its stats go
	}
	for _, ri := range a.inputs {
		ri.Close()
	}
	for _, rp := range a.processors {
		rp.Close()
	}
	for _, o := range a.outputs {
		if a.handedOver(o.identity) {
			a.mu.Lock()
			if a.buffers == nil {
				a.buffers = map[string]models.Buffer{}
			}
			a.buffers[o.identity] = o.DetachBuffer()
			a.mu.Unlock()
		}
		if err := o.Close(); err != nil {
			o.Log.Warn("close", "error", err)
		}
	}
}

// failedStart records a service input whose Start failed, for Health.
func (a *Agent) failedStart(ri *models.RunningInput, err error) {
	ri.Gathered(0, err)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.startFailed == nil {
		a.startFailed = map[*models.RunningInput]failure{}
	}
	a.startFailed[ri] = failure{err, time.Now()}
}

// startedOK clears a failed start (cluster mode starts an input again on a later assignment).
func (a *Agent) startedOK(ri *models.RunningInput) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.startFailed, ri)
}

// inputInterval is the input's own interval, else the agent's.
func (a *Agent) inputInterval(ri *models.RunningInput) time.Duration {
	if ri.Config.Interval > 0 {
		return ri.Config.Interval
	}
	return time.Duration(a.cfg.Agent.Interval)
}

// gatherLoop gathers a polled input on its interval: aligned to the interval when round_interval,
// delayed by a random collection_jitter. A gather that overruns its interval is logged and the
// missed ticks are skipped, never stacked.
func (a *Agent) gatherLoop(ctx context.Context, ri *models.RunningInput, acc models.Accumulator) {
	interval := a.inputInterval(ri)
	jitter := time.Duration(a.cfg.Agent.CollectionJitter)
	next := time.Now()
	if a.cfg.Agent.RoundInterval {
		next = next.Truncate(interval).Add(interval)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := time.Until(next)
		if jitter > 0 {
			wait += rand.N(jitter)
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		err := ri.Input.Gather(ctx, acc)
		took := time.Since(start)
		ri.Gathered(took, err)
		if err != nil && ctx.Err() == nil {
			acc.AddError(err)
		}
		next = next.Add(interval)
		if now := time.Now(); !next.After(now) {
			skipped := now.Sub(next)/interval + 1
			next = next.Add(skipped * interval)
			ri.Log.Warn("gather took longer than the interval; ticks skipped",
				"took", took.Round(time.Millisecond), "interval", interval, "skipped", int(skipped))
		}
	}
}

// connectBackoff paces an output's connects: 1 s, doubling to 30 s (a variable: tests go faster).
var connectBackoff = func() *resilience.Backoff { return resilience.NewBackoff(time.Second, 30*time.Second) }

// flushLoop connects the output (retrying with backoff) and flushes it every flush_interval, or
// as soon as a full batch waits, until ctx ends. After a failed write it waits for the next
// interval. Its writes run under write, which outlives ctx until the shutdown's deadline.
func (a *Agent) flushLoop(ctx, write context.Context, ro *runningOutput) {
	o := ro.RunningOutput
	backoff := connectBackoff()
	// The same failure (models.ErrorKey) is logged once a minute with how often it came, as a
	// failed write is: a broker down for an hour is 60 lines, not one a retry.
	connectLog := models.ErrorFold{Period: time.Minute}
	for {
		err := o.Output.Connect(ctx)
		if err == nil {
			if held := connectLog.Clear(); held > 0 {
				o.Log.Info("connected", "failures_not_logged", held)
			}
			ro.connectErr.Store(nil)
			break
		}
		now := time.Now()
		ro.connectErr.Store(&failure{err, now})
		wait := backoff.Next()
		if log, msg := connectLog.AddError(err, now); log {
			o.Log.Error("connect failed; metrics are buffered meanwhile", "error", msg, "retry_in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	interval, jitter := o.Settings.FlushInterval, o.Settings.FlushJitter
	timer := time.NewTimer(interval)
	defer timer.Stop()
	failed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			failed = o.Flush(write, true) != nil
			wait := interval
			if jitter > 0 {
				wait += rand.N(jitter)
			}
			timer.Reset(wait)
		case <-o.BatchReady:
			if !failed {
				failed = o.Flush(write, false) != nil
			}
		}
	}
}

// Test gathers every input once, runs the processors and returns the metrics (--test).
func (a *Agent) Test(ctx context.Context) ([]*models.Metric, error) {
	defer a.closeAll()
	ms, err := a.gatherOnce(ctx)
	return ms, err
}

func (a *Agent) gatherOnce(ctx context.Context) ([]*models.Metric, error) {
	var (
		mu   sync.Mutex
		ms   []*models.Metric
		errs []error
		wg   sync.WaitGroup
	)
	for _, ri := range a.inputs {
		acc := ri.NewAccumulator(func(m *models.Metric) {
			mu.Lock()
			ms = append(ms, m)
			mu.Unlock()
		})
		wg.Go(func() {
			start := time.Now()
			err := ri.Input.Gather(ctx, acc)
			ri.Gathered(time.Since(start), err)
			if err != nil {
				acc.AddError(err)
				mu.Lock()
				errs = append(errs, fmt.Errorf("inputs.%s: %w", ri.Config.ID(), err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, rp := range a.processors {
		ms = append([]*models.Metric(nil), rp.Apply(ms)...)
	}
	return ms, errors.Join(errs...)
}

// Once gathers every input once, runs the processors and writes everything to the outputs
// (--once). It fails if an output could not take its metrics, or else if an input's gather
// failed. Every failure is logged where it happens (an input's errors one record each, as
// usual), so the caller need not log the error again.
func (a *Agent) Once(ctx context.Context) error {
	defer a.closeAll()
	ms, gatherErr := a.gatherOnce(ctx)
	var errs []error
	for _, o := range a.outputs {
		if err := o.Output.Connect(ctx); err != nil {
			o.Log.Error("connect failed; nothing written", "error", err, "metrics", len(ms))
			errs = append(errs, fmt.Errorf("outputs.%s: connect: %w", o.Config.ID(), err))
			continue
		}
		o.AddBatch(ms)
		if err := o.Flush(ctx, true); err != nil {
			errs = append(errs, fmt.Errorf("outputs.%s: %w", o.Config.ID(), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return gatherErr
}
