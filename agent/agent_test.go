package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/diskbuffer"
	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
)

// counter is a polled input: each gather adds one metric whose field n counts up.
type counter struct {
	n     atomic.Int64
	sleep time.Duration // each gather takes this long
}

func (*counter) SampleConfig() string { return "" }
func (c *counter) Gather(ctx context.Context, acc models.Accumulator) error {
	if c.sleep > 0 {
		select {
		case <-time.After(c.sleep):
		case <-ctx.Done():
		}
	}
	acc.AddMetric(models.New("count", []models.Tag{{Key: "src", Value: "c"}}, []models.Field{models.Int("n", c.n.Add(1))}, time.Now()))
	return nil
}

// pusher is a service input the test drives through push.
type pusher struct {
	acc     models.Accumulator
	started chan struct{}
	stopped atomic.Bool
}

func (*pusher) SampleConfig() string                             { return "" }
func (*pusher) Gather(context.Context, models.Accumulator) error { return nil }
func (p *pusher) Start(_ context.Context, acc models.Accumulator) error {
	p.acc = acc
	close(p.started)
	return nil
}
func (p *pusher) Stop() { p.stopped.Store(true) }
func (p *pusher) push(from, n int) {
	for i := from; i < from+n; i++ {
		p.acc.AddMetric(models.New("push", nil, []models.Field{models.Int("n", int64(i))}, time.Unix(int64(i), 0)))
	}
}

// memOut records what it is given and fails while down.
type memOut struct {
	mu      sync.Mutex
	down    bool
	block   chan struct{} // Write blocks until closed (a hung server)
	got     []int64
	writes  int
	ended   []error       // of each Write that blocked: why it stopped waiting (its context's cause)
	inWrite chan struct{} // when not nil, gets a value when a Write starts blocking
}

func (*memOut) SampleConfig() string          { return "" }
func (*memOut) Connect(context.Context) error { return nil }
func (*memOut) Close() error                  { return nil }
func (o *memOut) Write(ctx context.Context, batch []*models.Metric) error {
	if o.block != nil {
		if o.inWrite != nil {
			select {
			case o.inWrite <- struct{}{}:
			default:
			}
		}
		select {
		case <-o.block:
		case <-ctx.Done():
			o.mu.Lock()
			o.ended = append(o.ended, context.Cause(ctx))
			o.mu.Unlock()
			return ctx.Err()
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writes++
	if o.down {
		return errors.New("connection refused")
	}
	for _, m := range batch {
		f, _ := m.Field("n")
		o.got = append(o.got, f.IntV())
	}
	return nil
}
func (o *memOut) setDown(d bool) { o.mu.Lock(); o.down = d; o.mu.Unlock() }
func (o *memOut) values() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// double multiplies n by two; addOne adds one: their order shows in the result.
type double struct{}

func (double) SampleConfig() string { return "" }
func (double) Apply(in ...*models.Metric) []*models.Metric {
	for _, m := range in {
		f, _ := m.Field("n")
		m.SetField(models.Int("n", f.IntV()*2))
	}
	return in
}

type addOne struct{}

func (addOne) SampleConfig() string { return "" }
func (addOne) Apply(in ...*models.Metric) []*models.Metric {
	for _, m := range in {
		f, _ := m.Field("n")
		m.SetField(models.Int("n", f.IntV()+1))
	}
	return in
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type setup struct {
	inputs     []models.Input
	processors []models.Processor
	outputs    []*memOut
	batch      int
	limit      int
	flush      time.Duration
	interval   time.Duration
}

func (s setup) config() *config.Config {
	cfg := &config.Config{Agent: config.DefaultAgent(), GlobalTags: map[string]string{}}
	cfg.Agent.RoundInterval = false
	cfg.Agent.ShutdownTimeout = config.Duration(5 * time.Second)
	if s.interval > 0 {
		cfg.Agent.Interval = config.Duration(s.interval)
	}
	for _, in := range s.inputs {
		cfg.Inputs = append(cfg.Inputs, &config.Input{Plugin: in, Config: &models.PluginConfig{Name: "test"}, Log: quiet})
	}
	for _, p := range s.processors {
		cfg.Processors = append(cfg.Processors, &config.Processor{Plugin: p, Config: &models.PluginConfig{Name: "p"}, Log: quiet})
	}
	flush := s.flush
	if flush == 0 {
		flush = time.Hour // only batches and the final flush write
	}
	for i, o := range s.outputs {
		set := models.OutputSettings{BatchSize: max(s.batch, 1), BufferLimit: max(s.limit, 1000), FlushInterval: flush}
		cfg.Outputs = append(cfg.Outputs, &config.Output{Plugin: o, Config: &models.PluginConfig{Name: "out"}, Settings: set, Log: quiet,
			Identity: "outputs.out/" + string(rune('a'+i))})
	}
	return cfg
}

func start(t *testing.T, cfg *config.Config, buffers map[string]models.Buffer) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg, buffers)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	return a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func seqFrom(from, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(from + i)
	}
	return out
}

func TestProcessorsRunInOrderAndEveryOutputGetsAll(t *testing.T) {
	p := &pusher{started: make(chan struct{})}
	o1, o2 := &memOut{}, &memOut{}
	_, stop := start(t, setup{inputs: []models.Input{p}, processors: []models.Processor{double{}, addOne{}}, outputs: []*memOut{o1, o2}, batch: 100}.config(), nil)
	<-p.started
	p.push(0, 1000)
	stop() // the final flush delivers everything
	want := make([]int64, 1000)
	for i := range want {
		want[i] = int64(i)*2 + 1 // double, then add one
	}
	for _, o := range []*memOut{o1, o2} {
		if got := o.values(); !slices.Equal(got, want) {
			t.Fatalf("output got %d metrics, first %v; want %d in order", len(got), got[:min(5, len(got))], len(want))
		}
	}
	if !p.stopped.Load() {
		t.Fatal("the service input was not stopped")
	}
}

// TestShutdownFlushesWithinDeadline: the final flush gives a hung output shutdown_timeout and
// no more: its write is cancelled by the deadline, the shutdown returns, and the healthy output
// got everything.
func TestShutdownFlushesWithinDeadline(t *testing.T) {
	p := &pusher{started: make(chan struct{})}
	up := &memOut{}
	hung := &memOut{block: make(chan struct{})} // never answers
	cfg := setup{inputs: []models.Input{p}, outputs: []*memOut{up, hung}, batch: 10000}.config()
	cfg.Agent.ShutdownTimeout = config.Duration(200 * time.Millisecond)
	_, stop := start(t, cfg, nil)
	<-p.started
	p.push(0, 50) // less than a batch, flush interval an hour: only the final flush writes
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		close(hung.block) // let the write return, and the agent with it
		<-stopped
		t.Fatal("the shutdown waited for a hung output")
	}
	hung.mu.Lock()
	ended := slices.Clone(hung.ended)
	hung.mu.Unlock()
	if len(ended) != 1 || !errors.Is(ended[0], context.DeadlineExceeded) {
		t.Fatalf("the hung output's final write ended with %v; want the shutdown deadline", ended)
	}
	if got := up.values(); !slices.Equal(got, seqFrom(0, 50)) {
		t.Fatalf("the healthy output got %v at shutdown", got)
	}
}

// TestShutdownLetsWriteFinish: a write under way when the agent stops is not cut short, which
// could make the final flush send again what the server took (a duplicate): it has until the
// shutdown's deadline, and only then is it cancelled, with that deadline as the cause.
func TestShutdownLetsWriteFinish(t *testing.T) {
	p := &pusher{started: make(chan struct{})}
	slow := &memOut{block: make(chan struct{}), inWrite: make(chan struct{}, 1)} // answers only when told
	cfg := setup{inputs: []models.Input{p}, outputs: []*memOut{slow}, batch: 10}.config()
	cfg.Agent.ShutdownTimeout = config.Duration(300 * time.Millisecond)
	_, stop := start(t, cfg, nil)
	<-p.started
	p.push(0, 10) // a full batch: the flusher writes it at once
	<-slow.inWrite
	stop()
	slow.mu.Lock()
	ended := slices.Clone(slow.ended)
	slow.mu.Unlock()
	if len(ended) == 0 || !errors.Is(ended[0], context.DeadlineExceeded) {
		t.Fatalf("the write under way at the stop ended with %v; want it to run until the shutdown's deadline", ended)
	}
}

func TestFailingOutputKeepsBatchAndDoesNotBlockOthers(t *testing.T) {
	p := &pusher{started: make(chan struct{})}
	good, bad := &memOut{}, &memOut{down: true}
	a, stop := start(t, setup{inputs: []models.Input{p}, outputs: []*memOut{good, bad}, batch: 10, flush: 20 * time.Millisecond}.config(), nil)
	defer stop()
	<-p.started
	p.push(0, 100)
	waitFor(t, "the good output to get everything", func() bool { return len(good.values()) == 100 })
	badRO := a.Outputs()[1]
	// Errors is counted after Write returns: wait for it, not for the writes.
	waitFor(t, "the bad output to fail a few times", func() bool { return badRO.Errors.Get() >= 3 })
	if badRO.Buffer.Len() != 100 || badRO.Errors.Get() < 3 {
		t.Fatalf("the failing output holds %d metrics after %d errors; want all 100 kept", badRO.Buffer.Len(), badRO.Errors.Get())
	}
	bad.setDown(false)
	waitFor(t, "the recovered output to deliver", func() bool { return len(bad.values()) == 100 })
	if got := bad.values(); !slices.Equal(got, seqFrom(0, 100)) {
		t.Fatalf("after recovery, delivered out of order or with gaps: %v", got[:10])
	}
}

func TestReloadHandsBuffersOver(t *testing.T) {
	p1 := &pusher{started: make(chan struct{})}
	down := &memOut{down: true}
	gone := &memOut{down: true}
	cfg1 := setup{inputs: []models.Input{p1}, outputs: []*memOut{down, gone}, batch: 10, flush: 10 * time.Millisecond}.config()
	a1, stop1 := start(t, cfg1, nil)
	<-p1.started
	p1.push(0, 40)
	waitFor(t, "metrics to be buffered", func() bool { return a1.Outputs()[0].Buffer.Len() == 40 })
	// The new config keeps output "a" (same identity) and drops "b".
	a1.HandOver([]string{"outputs.out/a"})
	stop1()
	bufs := a1.Buffers()
	if len(bufs) != 1 || bufs["outputs.out/a"].Len() != 40 {
		t.Fatalf("handed over %v", bufs)
	}

	p2 := &pusher{started: make(chan struct{})}
	up := &memOut{}
	cfg2 := setup{inputs: []models.Input{p2}, outputs: []*memOut{up}, batch: 10, flush: 10 * time.Millisecond}.config()
	_, stop2 := start(t, cfg2, bufs)
	<-p2.started
	p2.push(40, 10)
	waitFor(t, "the reloaded output to deliver old and new metrics", func() bool { return len(up.values()) == 50 })
	stop2()
	if got := up.values(); !slices.Equal(got, seqFrom(0, 50)) {
		t.Fatalf("got %v", got)
	}
}

// A disk buffer handed over by a reload counts the metrics it drops for space in the new
// output's metrics_dropped, not in the stats of the output that is gone.
func TestReloadedDiskBufferCountsDropsInNewOutput(t *testing.T) {
	dir := t.TempDir()
	diskConfig := func(in models.Input, out *memOut) *config.Config {
		return diskSetup(setup{inputs: []models.Input{in}, outputs: []*memOut{out}, batch: 10, flush: 10 * time.Millisecond}, dir)
	}
	p1 := &pusher{started: make(chan struct{})}
	a1, stop1 := start(t, diskConfig(p1, &memOut{down: true}), nil)
	<-p1.started
	p1.push(0, 100)
	waitFor(t, "metrics to be buffered", func() bool { return a1.Outputs()[0].Buffer.Len() == 100 })
	a1.HandOver([]string{"outputs.out/a"})
	stop1()

	p2 := &pusher{started: make(chan struct{})}
	a2, stop2 := start(t, diskConfig(p2, &memOut{down: true}), a1.Buffers())
	defer stop2()
	<-p2.started
	const n = 30_000 // about 3 MB into a buffer of 1 MiB
	p2.pushNoisy(100, n)
	ro := a2.Outputs()[0]
	waitFor(t, "the metrics to reach the buffer", func() bool { return ro.MetricsAdded.Get() == n })
	ro.Buffer.(*diskbuffer.Buffer).Sync()
	// A batch out when its segment was dropped is counted when it comes back: wait for that.
	waitFor(t, "every metric to be held or counted as dropped by the new output", func() bool {
		d := ro.MetricsDropped.Get()
		return d > 0 && d+int64(ro.Buffer.Len()) == 100+n
	})
}

func TestOverrunningGatherSkipsTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := &counter{sleep: 2500 * time.Millisecond} // 2.5 intervals
		out := &memOut{}
		cfg := setup{inputs: []models.Input{slow}, outputs: []*memOut{out}, interval: time.Second, batch: 1}.config()
		a, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		time.Sleep(10*time.Second + time.Millisecond)
		cancel()
		<-done
		// Gathers start at 0s, 3s, 6s, 9s: each takes 2.5s, the ticks at 1, 2, 4, 5, 7, 8 are
		// skipped instead of stacking up; the one that started at 9s ends at shutdown.
		if n := slow.n.Load(); n != 4 {
			t.Fatalf("%d gathers in 10s; want 4 (overruns skip ticks, never stack)", n)
		}
	})
}

func TestRoundIntervalAligns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var times []time.Time
		var mu sync.Mutex
		in := &recordTimes{record: func(t time.Time) { mu.Lock(); times = append(times, t); mu.Unlock() }}
		cfg := setup{inputs: []models.Input{in}, interval: 10 * time.Second}.config()
		cfg.Agent.RoundInterval = true
		time.Sleep(3 * time.Second) // start off the boundary
		a, _ := New(cfg, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		time.Sleep(35 * time.Second)
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(times) != 3 {
			t.Fatalf("%d gathers, want 3", len(times))
		}
		for _, tm := range times {
			if tm.UnixNano()%int64(10*time.Second) != 0 {
				t.Fatalf("gather at %v is not on a 10s boundary", tm)
			}
		}
	})
}

type recordTimes struct{ record func(time.Time) }

func (*recordTimes) SampleConfig() string { return "" }
func (r *recordTimes) Gather(context.Context, models.Accumulator) error {
	r.record(time.Now())
	return nil
}

func TestTestAndOnce(t *testing.T) {
	c := &counter{}
	o := &memOut{}
	a, err := New(setup{inputs: []models.Input{c}, processors: []models.Processor{double{}}, outputs: []*memOut{o}}.config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := a.Test(context.Background())
	if err != nil || len(ms) != 1 {
		t.Fatalf("Test: %v %v", ms, err)
	}
	if f, _ := ms[0].Field("n"); f.IntV() != 2 || len(o.values()) != 0 {
		t.Fatalf("--test runs processors (n=%d) and writes nothing (%v)", f.IntV(), o.values())
	}
	a, _ = New(setup{inputs: []models.Input{c}, outputs: []*memOut{o}}.config(), nil)
	if err := a.Once(context.Background()); err != nil || !slices.Equal(o.values(), []int64{2}) {
		t.Fatalf("--once wrote %v, %v", o.values(), err)
	}
	bad := &memOut{down: true}
	a, _ = New(setup{inputs: []models.Input{c}, outputs: []*memOut{bad}}.config(), nil)
	if err := a.Once(context.Background()); err == nil {
		t.Fatal("--once must fail when an output could not take its metrics")
	}
}

func TestOrphanedDiskBufferIsReportedNotDeleted(t *testing.T) {
	dir := t.TempDir()
	orphan := filepath.Join(dir, "outputs.influxdb_old")
	os.MkdirAll(orphan, 0o755)
	os.WriteFile(filepath.Join(orphan, "0000000000000000.seg"), make([]byte, 100), 0o640)
	cfg := setup{outputs: []*memOut{{}}}.config()
	for _, o := range cfg.Outputs {
		o.Settings.BufferStrategy, o.Settings.BufferDirectory, o.Settings.BufferBytes = "disk", dir, 1<<20
	}
	var logged strings.Builder
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(prev)
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.closeAll()
	if !strings.Contains(logged.String(), "orphaned disk buffer") || !strings.Contains(logged.String(), "outputs.influxdb_old") ||
		!strings.Contains(logged.String(), "bytes=100") {
		t.Fatalf("log:\n%s", logged.String())
	}
	if _, err := os.Stat(filepath.Join(orphan, "0000000000000000.seg")); err != nil {
		t.Fatal("an orphaned buffer must not be deleted")
	}
	if _, err := os.Stat(filepath.Join(dir, bufferDirName(cfg.Outputs[0].Identity), "lock")); err != nil {
		t.Fatalf("the output's own buffer folder: %v", err)
	}
}

// refusingOut fails to connect until it has refused `refuse` times.
type refusingOut struct {
	memOut
	refuse   int
	attempts atomic.Int64
}

func (o *refusingOut) Connect(context.Context) error {
	if n := o.attempts.Add(1); n <= int64(o.refuse) {
		return fmt.Errorf("dial tcp 127.0.0.1:%d: connect: connection refused", 40000+n) // the port changes: the same failure
	}
	return nil
}

// TestConnectFailuresFolded: an output that cannot connect logs its failure once, not once a
// retry; when it connects, one line says how many failures were not logged.
func TestConnectFailuresFolded(t *testing.T) {
	defer func(b func() *resilience.Backoff) { connectBackoff = b }(connectBackoff)
	connectBackoff = func() *resilience.Backoff { return resilience.NewBackoff(time.Millisecond, 2*time.Millisecond) }
	log, logs := outputtest.NewLogger(t)
	out := &refusingOut{refuse: 40}
	cfg := setup{}.config()
	cfg.Outputs = append(cfg.Outputs, &config.Output{Plugin: out, Config: &models.PluginConfig{Name: "refusing"},
		Settings: models.OutputSettings{BatchSize: 1, BufferLimit: 100, FlushInterval: time.Hour},
		Log:      log, Identity: "outputs.refusing"})
	_, stop := start(t, cfg, nil)
	waitFor(t, "the output to connect", func() bool { return out.attempts.Load() > 40 })
	stop()
	text := logs.String()
	if n := logs.Count("connect failed"); n != 1 {
		t.Errorf("%d lines say the connect failed, want 1 for 40 failures:\n%s", n, text)
	}
	if !strings.Contains(text, "msg=connected failures_not_logged=39") {
		t.Errorf("no line says the output connected after 39 failures not logged:\n%s", text)
	}
}
