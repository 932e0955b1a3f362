package models_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/buffertest"
	// A test outside the package, as buffertest imports models; the dot import keeps the names
	// as they read inside it.
	. "github.com/tagpipe/tagpipe/models"
)

// The transaction behaviour every buffer shares.
func TestBufferSuite(t *testing.T) {
	buffertest.Suite(t, func(*testing.T) Buffer { return NewMemoryBuffer(1000) })
}

func TestMemoryBufferDropsOldest(t *testing.T) {
	b := NewMemoryBuffer(5)
	if d := b.Add(buffertest.Seq(0, 4)...); d != 0 {
		t.Fatalf("dropped %d of 4 in a buffer of 5", d)
	}
	if d := b.Add(buffertest.Seq(4, 3)...); d != 2 {
		t.Fatalf("dropped %d, want 2", d)
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{2, 3, 4, 5, 6}) {
		t.Fatalf("got %v, want the newest 5", got)
	}
}

func TestMemoryBufferGrowsToLimit(t *testing.T) {
	b := NewMemoryBuffer(5000) // starts smaller and grows
	b.Add(buffertest.Seq(0, 3000)...)
	tx := b.Begin(10) // wrap the ring, then grow with a batch out
	b.Add(buffertest.Seq(3000, 2000)...)
	tx.All = true
	b.End(tx)
	got := buffertest.Drain(t, b)
	if len(got) != 4990 || got[0] != 10 || got[len(got)-1] != 4999 {
		t.Fatalf("got %d metrics from %d to %d", len(got), got[0], got[len(got)-1])
	}
}

func TestTransactionKeepsWhatWasNotAccepted(t *testing.T) {
	b := NewMemoryBuffer(100)
	b.Add(buffertest.Seq(0, 6)...)
	tx := b.Begin(4) // 0..3
	if b.Len() != 6 {
		t.Fatalf("Len counts the batch that is out: %d", b.Len())
	}
	b.Add(buffertest.Seq(6, 2)...) // arrives while the batch is out
	tx.Settle(&PartialWriteError{Accepted: []int{0, 2}, Rejected: []int{3}})
	b.End(tx)
	// 1 was neither accepted nor rejected: it is kept, in front, in order.
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{1, 4, 5, 6, 7}) {
		t.Fatalf("got %v", got)
	}
}

func TestFailedTransactionKeepsAll(t *testing.T) {
	b := NewMemoryBuffer(100)
	b.Add(buffertest.Seq(0, 5)...)
	tx := b.Begin(3)
	tx.Settle(errors.New("connection refused"))
	b.End(tx)
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("got %v", got)
	}
}

func TestBufferFillsWhileBatchIsOut(t *testing.T) {
	b := NewMemoryBuffer(5)
	b.Add(buffertest.Seq(0, 3)...)
	tx := b.Begin(3)               // 0,1,2 out
	b.Add(buffertest.Seq(3, 5)...) // 3..7 fill the ring
	tx.Settle(errors.New("x"))     // nothing delivered: 0,1,2 come back, oldest of all
	if d := b.End(tx); d != 3 {
		t.Fatalf("dropped %d, want the 3 oldest", d)
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{3, 4, 5, 6, 7}) {
		t.Fatalf("got %v", got)
	}
}

// failingOutput fails while down is set and records what it delivered.
type failingOutput struct {
	down      bool
	delivered []int64
	writes    int
}

func (*failingOutput) SampleConfig() string          { return "" }
func (*failingOutput) Connect(context.Context) error { return nil }
func (*failingOutput) Close() error                  { return nil }
func (o *failingOutput) Write(_ context.Context, batch []*Metric) error {
	o.writes++
	if o.down {
		return errors.New("503 service unavailable")
	}
	o.delivered = append(o.delivered, buffertest.IDs(batch)...)
	return nil
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRunningOutputKeepsBatchUntilDelivered(t *testing.T) {
	out := &failingOutput{down: true}
	cfg := &PluginConfig{Name: "test"}
	ro := NewRunningOutput(out, cfg, OutputSettings{BatchSize: 4, BufferLimit: 8}, nil, nil, quietLog())
	defer ro.Close()
	ro.AddBatch(buffertest.Seq(0, 6))
	if err := ro.Flush(context.Background(), true); err == nil {
		t.Fatal("flush to a down output must fail")
	}
	if ro.Buffer.Len() != 6 || ro.Errors.Get() != 1 {
		t.Fatalf("after a failed write: buffered %d, errors %d", ro.Buffer.Len(), ro.Errors.Get())
	}
	if e, _ := ro.LastError(); e == nil {
		t.Fatal("LastError must report the failure")
	}
	ro.AddBatch(buffertest.Seq(6, 4)) // 10 into a buffer of 8: 0 and 1 go
	if ro.MetricsDropped.Get() != 2 {
		t.Fatalf("dropped %d, want 2", ro.MetricsDropped.Get())
	}
	out.down = false
	if err := ro.Flush(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.delivered, []int64{2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("delivered %v", out.delivered)
	}
	if ro.MetricsWritten.Get() != 8 || ro.Buffer.Len() != 0 || ro.BufferSize.Get() != 0 {
		t.Fatalf("written %d, buffered %d", ro.MetricsWritten.Get(), ro.Buffer.Len())
	}
	if e, at := ro.LastError(); e != nil || at.IsZero() || ro.LastWrite().IsZero() {
		t.Fatalf("after recovery: last error %v", e)
	}
}

func TestRunningOutputFlushFullBatchesOnly(t *testing.T) {
	out := &failingOutput{}
	ro := NewRunningOutput(out, &PluginConfig{Name: "t"}, OutputSettings{BatchSize: 4, BufferLimit: 100}, nil, nil, quietLog())
	defer ro.Close()
	ro.AddBatch(buffertest.Seq(0, 10))
	select {
	case <-ro.BatchReady:
	default:
		t.Fatal("a full batch waits: BatchReady must be signalled")
	}
	ro.Flush(context.Background(), false)
	if len(out.delivered) != 8 || ro.Buffer.Len() != 2 {
		t.Fatalf("full batches only: delivered %d, left %d", len(out.delivered), ro.Buffer.Len())
	}
}

func TestRunningOutputFilterCopiesSharedMetric(t *testing.T) {
	cfg := &PluginConfig{Name: "t", Filter: Filter{FieldDrop: []string{"secret"}}}
	if err := cfg.Filter.Compile(); err != nil {
		t.Fatal(err)
	}
	ro := NewRunningOutput(&failingOutput{}, cfg, OutputSettings{BatchSize: 10, BufferLimit: 10}, nil, nil, quietLog())
	defer ro.Close()
	m := New("m", nil, []Field{Int("v", 1), Int("secret", 2)}, time.Time{})
	ro.AddBatch([]*Metric{m})
	if len(m.Fields) != 2 {
		t.Fatal("an output's field filter changed the metric other outputs share")
	}
	tx := ro.Buffer.Begin(1)
	if len(tx.Batch[0].Fields) != 1 || tx.Batch[0].Fields[0].Key != "v" {
		t.Fatalf("buffered fields %v", tx.Batch[0].Fields)
	}
}

func TestRunningInputMakeMetric(t *testing.T) {
	cfg := &PluginConfig{Name: "modbus", NamePrefix: "plant_", Tags: map[string]string{"line": "A"}}
	if err := cfg.Filter.Compile(); err != nil {
		t.Fatal(err)
	}
	ri := NewRunningInput(nil, cfg, map[string]string{"host": "h1", "line": "global"}, time.Millisecond, quietLog())
	defer ri.Close()
	devTags := []Tag{{"device", "m1"}, {"line", "own"}}
	m := New("power", devTags, []Field{Int("v", 1)}, time.Unix(10, 123456789))
	m = ri.MakeMetric(m)
	if m.Name != "plant_power" || m.Time.UnixNano() != 10123000000 {
		t.Fatalf("name %q time %d", m.Name, m.Time.UnixNano())
	}
	// Plugin tags override the metric's own; global tags only fill in.
	want := []Tag{{"device", "m1"}, {"host", "h1"}, {"line", "A"}}
	for i := range want {
		if m.Tags[i] != want[i] {
			t.Fatalf("tags %v, want %v", m.Tags, want)
		}
	}
	// The same device tag slice again: the merged set comes from the cache, no allocation.
	again := &Metric{Fields: m.Fields}
	allocs := testing.AllocsPerRun(100, func() {
		again.Name, again.Tags, again.Time = "power", devTags, time.Unix(1, 0)
		ri.MakeMetric(again)
	})
	if allocs != 0 {
		t.Fatalf("MakeMetric allocates %v per metric with a reused tag slice", allocs)
	}
}

func TestErrorsAreCountedAndLogsThrottled(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	ri := NewRunningInput(nil, &PluginConfig{Name: "t"}, nil, 0, log)
	defer ri.Close()
	acc := ri.NewAccumulator(func(*Metric) {})
	for range 100 {
		acc.AddError(errors.New(`device "m1": timeout`))
	}
	acc.AddError(errors.New(`device "m2": refused`))
	if ri.Errors.Get() != 101 {
		t.Fatalf("errors counted %d", ri.Errors.Get())
	}
	if n := strings.Count(logged.String(), "m1"); n != 1 {
		t.Fatalf("the same error logged %d times in a row", n)
	}
	if !strings.Contains(logged.String(), "m2") {
		t.Fatal("a different error must be logged")
	}
}

func TestBufferFullIsLoggedOnce(t *testing.T) {
	var logged strings.Builder
	ro := NewRunningOutput(&failingOutput{}, &PluginConfig{Name: "t"}, OutputSettings{BatchSize: 1, BufferLimit: 5},
		nil, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	defer ro.Close()
	for i := range 20 {
		ro.AddBatch(buffertest.Seq(i*5, 5))
	}
	if ro.MetricsDropped.Get() != 95 || strings.Count(logged.String(), "buffer full") != 1 {
		t.Fatalf("dropped %d, log:\n%s", ro.MetricsDropped.Get(), logged.String())
	}
}
