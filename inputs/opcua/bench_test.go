package opcua

// Benchmarks. The servers run as processes of their own (opcuasim built from
// cmd/opcuasim, node-opcua), so that allocations and CPU are this process's:
// the client's.
//
//	go test -run '^$' -bench . -benchmem -count 5 ./inputs/opcua/

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

var simBinary struct {
	once sync.Once
	path string
	err  error
}

// startSimProcess runs the simulated server as a child process.
func startSimProcess(b testing.TB, args ...string) string {
	b.Helper()
	simBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "tagpipe-opcuasim-")
		if err != nil {
			simBinary.err = err
			return
		}
		simBinary.path = filepath.Join(dir, "opcuasim")
		out, err := exec.Command("go", "build", "-o", simBinary.path, "github.com/tagpipe/tagpipe/cmd/opcuasim").CombinedOutput()
		if err != nil {
			simBinary.err = fmt.Errorf("go build opcuasim: %v\n%s", err, out)
		}
	})
	if simBinary.err != nil {
		b.Fatal(simBinary.err)
	}
	p := testpeer.Start(b, testpeer.Options{}, simBinary.path, args...)
	// gopcua's server waits 10 s for connected clients at SIGTERM: the inputs stop first
	// (cleanups run last-in first-out), and a kill is as good as a stop here.
	b.Cleanup(p.Kill)
	return p.Ready[0]
}

// tokenAcc hands one token per value to a channel (the benchmark loop takes one per op) and
// drops the metric.
type tokenAcc struct {
	ch chan struct{}
	n  atomic.Int64
}

func (a *tokenAcc) AddMetric(m *models.Metric) {
	if m.Name == "opcua_health" {
		return
	}
	a.n.Add(1)
	a.ch <- struct{}{}
}

func (a *tokenAcc) AddError(error) {}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// One subscription, 10,000 monitored items, every one changing every 100 ms (100,000 values/s
// offered). An op is one value received and turned into a metric.
func BenchmarkSubscribe10k(b *testing.B) {
	endpoint := startSimProcess(b, "-tags", "10000", "-period", "100ms")
	o := load(b, fmt.Sprintf(`[[inputs.opcua]]
  name = "bench"
  endpoint = %q
  mode = "subscribe"
  interval = "10s"
  publishing_interval = "100ms"
  health = false
  [[inputs.opcua.group]]
    namespace_uri = %q
    browse = "s=Sim"
`, endpoint, opcuasim.NamespaceURI))
	o.Log = slog.New(slog.DiscardHandler)
	acc := &tokenAcc{ch: make(chan struct{}, 1<<16)}
	if err := o.Start(context.Background(), acc); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(o.Stop)
	for range 20000 { // warm up: the subscription is made and values flow
		select {
		case <-acc.ch:
		case <-time.After(30 * time.Second):
			b.Fatal("no values from the simulated server")
		}
	}
	b.ReportAllocs()
	cpu0, t0 := cpuTime(), time.Now()
	for b.Loop() {
		<-acc.ch
	}
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "values/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/value")
	if o.stats.droppedDuplicates.Get() != 0 || o.stats.typeErrors.Get() != 0 {
		b.Fatalf("dropped %d, type errors %d", o.stats.droppedDuplicates.Get(), o.stats.typeErrors.Get())
	}
}

// One read-mode poll of 1,000 nodes: against gopcua's server (it advertises MaxNodesPerRead
// 32: 32 requests a poll) and node-opcua (one request). An op is one poll.
func BenchmarkReadPoll1000(b *testing.B) {
	b.Run("gopcua", func(b *testing.B) {
		endpoint := startSimProcess(b, "-tags", "1000", "-period", "1h")
		benchPoll(b, endpoint, opcuasim.NamespaceURI, "s=Sim", 1006)
	})
	b.Run("node-opcua", func(b *testing.B) {
		p := startNodeOPCUA(b, "--bulk", "1000")
		benchPoll(b, p.endpoint, "", "ns=1;s=Bulk", 1000)
	})
}

func benchPoll(b *testing.B, endpoint, nsURI, folder string, want int) {
	ns := ""
	if nsURI != "" {
		ns = fmt.Sprintf("namespace_uri = %q", nsURI)
	}
	o := load(b, fmt.Sprintf(`[[inputs.opcua]]
  name = "bench"
  endpoint = %q
  timestamp = "gather"
  [[inputs.opcua.group]]
    %s
    browse = %q
`, endpoint, ns, folder))
	o.Log = slog.New(slog.DiscardHandler)
	acc := &countAcc{}
	s := newSession(o, acc, false)
	ctx := context.Background()
	if err := s.connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.closeClient)
	if len(s.items) != want {
		b.Fatalf("%d nodes, want %d", len(s.items), want)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if err := s.poll(ctx); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	if n := acc.n.Load(); n != int64(b.N*want) {
		b.Fatalf("%d values from %d polls of %d nodes", n, b.N, want)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/poll")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*want), "ns/value")
	b.ReportMetric(float64(s.readChunk), "nodes/request")
}

type countAcc struct{ n atomic.Int64 }

func (a *countAcc) AddMetric(*models.Metric) { a.n.Add(1) }
func (a *countAcc) AddError(error)           {}

// The plugin's own part of a value: DataValue → metric (tags, field, timestamp, dedupe), 1000
// values a batch. The target is no allocation per value: two per batch (the slab).
func BenchmarkMakeMetric(b *testing.B) {
	o := loadUnreachable(b, "bench")
	const n = 1000
	states := make([]*nodeState, n)
	dvs := make([]*ua.DataValue, n)
	t0 := time.Now()
	for i := range n {
		spec := &nodeSpec{field: fmt.Sprintf("Tag.%d", i), measurement: "sim", baseTags: o.tags(nil, nil)}
		states[i] = o.newNodeState(spec)
		dvs[i] = &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp,
			Value: ua.MustVariant(float64(i)), SourceTimestamp: t0}
	}
	b.ReportAllocs()
	var sink *models.Metric
	tick := 0
	for b.Loop() {
		tick++
		a := newSlab(n)
		for i, st := range states {
			dvs[i].SourceTimestamp = t0.Add(time.Duration(tick)) // a new sample each time
			m, oc, _ := o.makeMetric(a, st, dvs[i], t0, true)
			if oc != emitted {
				b.Fatal("not emitted")
			}
			sink = m
		}
	}
	_ = sink
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/value")
}
