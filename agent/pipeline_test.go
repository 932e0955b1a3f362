package agent

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/diskbuffer"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// lineOut serializes every batch to line protocol into a reused buffer, as a network output would
// before it sends.
type lineOut struct {
	ser   *serializer.Influx
	buf   []byte
	bytes int
	n     int
	most  int // metrics in the buffer, at most (drivePipeline)
}

func (*lineOut) SampleConfig() string          { return "" }
func (*lineOut) Connect(context.Context) error { return nil }
func (*lineOut) Close() error                  { return nil }
func (o *lineOut) Write(_ context.Context, batch []*models.Metric) error {
	o.buf = o.buf[:0]
	for _, m := range batch {
		o.buf, _ = o.ser.Append(o.buf, m)
	}
	o.bytes += len(o.buf)
	o.n += len(batch)
	return nil
}

// scale converts a unit in place; rename renames a field: two cheap, typical processors.
type scale struct{}

func (scale) SampleConfig() string { return "" }
func (scale) Apply(in ...*models.Metric) []*models.Metric {
	for _, m := range in {
		for i := range m.Fields {
			if m.Fields[i].Key == "f0" {
				m.Fields[i] = models.Float("f0", m.Fields[i].FloatV()*0.1)
			}
		}
	}
	return in
}

type rename struct{}

func (rename) SampleConfig() string { return "" }
func (rename) Apply(in ...*models.Metric) []*models.Metric {
	for _, m := range in {
		for i := range m.Fields {
			if m.Fields[i].Key == "f9" {
				m.Fields[i].Key = "status"
			}
		}
	}
	return in
}

// diskBuf opens a disk buffer of limit bytes in a folder of the test's.
func diskBuf(tb testing.TB, limit int64) models.Buffer {
	d, err := diskbuffer.Open(diskbuffer.Config{Dir: tb.TempDir(), Limit: limit, Log: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// BenchmarkPipeline measures metrics of 10 fields going from an accumulator (as an input's device
// goroutine adds them) through two processors and the fan-out into an output's buffer, to a
// serialized line protocol batch. One op is one metric.
//
// The disk variant puts a disk buffer (fsync every write) behind the output instead of the memory
// one; cpu-ns/metric counts every goroutine, so the two compare what a metric costs the agent.
//
// The -100k variants pace the input at 100,000 metrics/s (the comparison point) instead of
// running flat out, which lets the disk buffer serve batches from memory as it does in steady
// state: at that rate the agent's share of one core is cpu-ns/metric × 100,000 / 10⁹.
func BenchmarkPipeline(b *testing.B) {
	disk := func(b *testing.B) models.Buffer { return diskBuf(b, 8<<30) }
	b.Run("memory", func(b *testing.B) { benchPipeline(b, nil, 0) })
	b.Run("disk", func(b *testing.B) { benchPipeline(b, disk(b), 0) })
	b.Run("memory-100k", func(b *testing.B) { benchPipeline(b, nil, 100_000) })
	b.Run("disk-100k", func(b *testing.B) { benchPipeline(b, disk(b), 100_000) })
}

func benchPipeline(b *testing.B, buf models.Buffer, rate int) {
	var cpu0 time.Duration
	out := drivePipeline(b, buf, rate, b.N, func() {
		b.ReportAllocs()
		cpu0 = cpuTime()
		b.ResetTimer()
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/metric")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "metrics/s")
	b.ReportMetric(float64(out.bytes)/float64(b.N), "bytes/metric")
}

// drivePipeline sends n metrics of 10 fields from an accumulator through two processors to an
// output (buffer buf, memory when nil) whose flusher writes full batches as the agent's does, at
// rate metrics/s (0: flat out). It calls ready just before the first metric, and returns the
// output once every metric is serialized, with the most metrics its buffer held (sampled every
// 1,000 metrics).
func drivePipeline(tb testing.TB, buf models.Buffer, rate, n int, ready func()) (out *lineOut) {
	out = &lineOut{ser: serializer.NewInflux(0)}
	ro := models.NewRunningOutput(out, &models.PluginConfig{Name: "bench"},
		models.OutputSettings{BatchSize: 5000, BufferLimit: 1 << 22}, nil, buf, quiet)
	defer ro.Close()
	procs := []*models.RunningProcessor{
		models.NewRunningProcessor(scale{}, &models.PluginConfig{Name: "scale"}, quiet),
		models.NewRunningProcessor(rename{}, &models.PluginConfig{Name: "rename"}, quiet),
	}
	pipe := newPipeline(procs, []*models.RunningOutput{ro})
	pipe.start()
	ri := models.NewRunningInput(nil, &models.PluginConfig{Name: "bench"}, map[string]string{"host": "edge"}, 0, quiet)
	defer ri.Close()
	acc := ri.NewAccumulator(func(m *models.Metric) { pipe.in <- m })

	// The output's flusher, as the agent runs it: a write whenever a full batch waits.
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-ro.BatchReady:
				ro.Flush(ctx, false)
			case <-stop:
				return
			}
		}
	})

	keys := make([]string, 10)
	for i := range keys {
		keys[i] = "f" + strconv.Itoa(i)
	}
	tags := []models.Tag{{Key: "device", Value: "meter-0001"}, {Key: "line", Value: "A"}}
	now := time.Now()
	ready()
	start := time.Now()
	for i := range n {
		if i%1000 == 0 {
			out.most = max(out.most, ro.Buffer.Len())
			if rate > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
			}
		}
		m := models.NewMetric("power", tags, 10, now)
		for j := range 10 {
			if j%2 == 0 {
				m.Fields = append(m.Fields, models.Float(keys[j], float64(i)+float64(j)*0.25))
			} else {
				m.Fields = append(m.Fields, models.Int(keys[j], int64(i+j)))
			}
		}
		acc.AddMetric(m)
	}
	close(pipe.in)
	<-pipe.done
	close(stop)
	wg.Wait()
	ro.Flush(ctx, true)
	if out.n != n {
		tb.Fatalf("%d metrics serialized of %d", out.n, n)
	}
	return out
}

// On one core, with an input adding metrics as fast as it can, the output's flusher writes full
// batches as they fill, so the buffer holds a few batches, not the whole run. Before, the
// pipeline's goroutines handed the core to one another through their channels and the flusher,
// woken by BatchReady, ran only when the input stopped: the buffer held nearly every metric of the
// run (929,020 of 974,793 in BenchmarkPipeline/memory -cpu 1), and the agent paid for a heap that
// large.
func TestFlusherKeepsUpOnOneCore(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const total = 200_000
	out := drivePipeline(t, nil, 0, total, func() {})
	if out.most > total/4 {
		t.Fatalf("the buffer held up to %d metrics of %d (batches of 5,000): the flusher did not keep up", out.most, total)
	}
	t.Logf("the buffer held up to %d metrics", out.most)
}

// stall blocks in Apply until release is closed.
type stall struct{ release chan struct{} }

func (stall) SampleConfig() string { return "" }
func (s stall) Apply(in ...*models.Metric) []*models.Metric {
	<-s.release
	return in
}

// A pipeline whose processor is stuck holds the input channel's metrics and a few batches
// between its stages, then makes the inputs wait: it holds at most twice what the input channel
// does. With 64 batches of 512 a stage it took 71,065 metrics here.
func TestStalledPipelineHoldsLittle(t *testing.T) {
	s := stall{release: make(chan struct{})}
	procs := []*models.RunningProcessor{
		models.NewRunningProcessor(rename{}, &models.PluginConfig{Name: "rename"}, quiet),
		models.NewRunningProcessor(s, &models.PluginConfig{Name: "stall"}, quiet),
	}
	pipe := newPipeline(procs, nil)
	pipe.start()
	m := models.New("m", nil, []models.Field{models.Int("v", 1)}, time.Now())
	sent := 0
	// Send until the input channel stays full: the stages behind it have taken all they can.
	for full := 0; full < 200; {
		select {
		case pipe.in <- m:
			sent++
			full = 0
		default:
			full++
			time.Sleep(time.Millisecond)
		}
		if sent > 1_000_000 {
			t.Fatal("the pipeline takes metrics without end while its processor is stuck")
		}
	}
	held := 2 * inCapacity
	if sent > held {
		t.Fatalf("the stalled pipeline took %d metrics, more than %d", sent, held)
	}
	t.Logf("the stalled pipeline took %d metrics (at most %d)", sent, held)
	close(s.release)
	close(pipe.in)
	<-pipe.done
}

// TestPipelineBatches: an input's batches (BatchAccumulator.AddMetrics) pass the input's filter,
// go through the processors beside its single metrics, and reach the output whole and in order,
// a batch larger than maxBatch included; the input may reuse its slice at once. Without
// processors and with memory buffers only, the input's goroutine adds its batches to the outputs
// itself (direct); a disk buffer's output is still fed by the fan-out.
func TestPipelineBatches(t *testing.T) {
	disk := func(t *testing.T) models.Buffer { return diskBuf(t, 1<<30) }
	for _, c := range []struct {
		name   string
		rename bool
		buf    func(*testing.T) models.Buffer
		direct bool
	}{
		{"processor", true, nil, false},
		{"direct", false, nil, true},
		{"disk", false, disk, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf models.Buffer
			if c.buf != nil {
				buf = c.buf(t)
			}
			out := &lineOut{ser: serializer.NewInflux(0)}
			ro := models.NewRunningOutput(out, &models.PluginConfig{Name: "batches"},
				models.OutputSettings{BatchSize: 10000, BufferLimit: 1 << 20}, nil, buf, quiet)
			defer ro.Close()
			var procs []*models.RunningProcessor
			if c.rename {
				procs = append(procs, models.NewRunningProcessor(rename{}, &models.PluginConfig{Name: "rename"}, quiet))
			}
			pipe := newPipeline(procs, []*models.RunningOutput{ro})
			if pipe.direct != c.direct {
				t.Fatalf("direct %v, want %v", pipe.direct, c.direct)
			}
			pipe.start()
			cfg := &models.PluginConfig{Name: "batches", Filter: models.Filter{NameDrop: []string{"dropped"}}}
			if err := cfg.Filter.Compile(); err != nil {
				t.Fatal(err)
			}
			ri := models.NewRunningInput(nil, cfg, nil, 0, quiet)
			defer ri.Close()
			acc := ri.NewBatchAccumulator(func(m *models.Metric) { pipe.in <- m }, pipe.addBatch)

			now := time.Now()
			metric := func(name string, i int) *models.Metric {
				m := models.NewMetric(name, nil, 1, now)
				m.Fields = append(m.Fields, models.Int("f9", int64(i)))
				return m
			}
			acc.AddMetric(metric("single", -1))
			ms := make([]*models.Metric, 0, 2*maxBatch+100)
			for i := range cap(ms) {
				name := "kept"
				if i%10 == 3 {
					name = "dropped"
				}
				ms = append(ms, metric(name, i))
			}
			acc.AddMetrics(ms)
			clear(ms) // the input's to reuse
			close(pipe.in)
			<-pipe.done
			if err := ro.Flush(context.Background(), true); err != nil {
				t.Fatal(err)
			}

			key := "f9"
			if c.rename {
				key = "status"
			}
			var kept []string
			for i := range 2*maxBatch + 100 {
				if i%10 != 3 {
					kept = append(kept, fmt.Sprintf("kept %s=%di", key, i))
				}
			}
			var got []string
			singles := 0
			for _, l := range strings.Split(strings.TrimSpace(string(out.buf)), "\n") {
				f := strings.Fields(l)
				if len(f) < 2 {
					t.Fatalf("line %q", l)
				}
				if f[0] == "single" {
					singles++
					continue
				}
				got = append(got, f[0]+" "+f[1])
			}
			if singles != 1 || !slices.Equal(got, kept) {
				t.Errorf("output got %d single metrics (want 1) and %d of the batch (want %d, in order, with %s)", singles, len(got), len(kept), key)
			}
			if n := ri.MetricsFiltered.Get(); n != int64(cap(ms)-len(kept)) {
				t.Errorf("%d metrics filtered, want %d", n, cap(ms)-len(kept))
			}
		})
	}
}
