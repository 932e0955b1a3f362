package diskbuffer

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/buffertest"
	"github.com/tagpipe/tagpipe/models"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openDisk(t *testing.T, dir string, cfg Config) *Buffer {
	t.Helper()
	cfg.Dir = dir
	cfg.Log = quietLog()
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addEach adds metrics one record at a time and waits until they are on disk.
func addEach(b *Buffer, ms []*models.Metric) {
	for _, m := range ms {
		b.Add(m)
	}
	b.Sync()
}

// The transaction behaviour every buffer shares.
func TestBufferSuite(t *testing.T) {
	buffertest.Suite(t, func(t *testing.T) models.Buffer { return openDisk(t, t.TempDir(), Config{}) })
}

func TestDiskBufferRoundTripsEveryType(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	in := models.New("power meter", []models.Tag{{Key: "device", Value: "m,1"}, {Key: "line", Value: "A"}}, []models.Field{
		models.Float("f", math.Pi), models.Float("nan", math.Inf(-1)), models.Int("i", math.MinInt64), models.Uint("u", math.MaxUint64),
		models.Bool("b", true), models.String("s", "ünïcode \"quoted\"\n"), models.String("empty", ""),
	}, time.Unix(1795600000, 123456789))
	b.Add(in, in)
	if tx := b.Begin(10); tx == nil || tx.Batch[0] != in {
		t.Fatal("before a restart the metrics come from memory, not decoded again")
	}
	b.Close()
	b = openDisk(t, dir, Config{}) // after a restart they are read and decoded
	defer b.Close()
	tx := b.Begin(10)
	if tx == nil || len(tx.Batch) != 2 {
		t.Fatalf("got %v", tx)
	}
	out := tx.Batch[0]
	if out.Name != in.Name || !out.Time.Equal(in.Time) || !slices.Equal(out.Tags, in.Tags) || len(out.Fields) != len(in.Fields) {
		t.Fatalf("got %+v", out)
	}
	for i := range in.Fields {
		if !out.Fields[i].Equal(in.Fields[i]) {
			t.Fatalf("field %d: %+v, want %+v", i, out.Fields[i], in.Fields[i])
		}
	}
	if &tx.Batch[0].Tags[0] != &tx.Batch[1].Tags[0] {
		t.Error("decoded metrics of one series should share one tag slice")
	}
}

func TestDiskBufferRestartResumesAtAcknowledged(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 10))
	tx := b.Begin(4)
	tx.All = true
	b.End(tx) // 0..3 delivered
	tx = b.Begin(3)
	tx.Settle(errors.New("down")) // 4..6 out when the agent stops: not delivered
	b.End(tx)
	b.Close()

	b = openDisk(t, dir, Config{})
	defer b.Close()
	if b.Len() != 6 {
		t.Fatalf("after restart Len %d, want 6", b.Len())
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{4, 5, 6, 7, 8, 9}) {
		t.Fatalf("replayed %v; want exactly what was not delivered", got)
	}
}

// Without Close (a crash): what was acknowledged is not sent again, what was written survives.
func TestDiskBufferSurvivesWithoutClose(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 8))
	tx := b.Begin(5)
	tx.All = true
	b.End(tx)
	crash(b)

	b2 := openDisk(t, dir, Config{})
	defer b2.Close()
	if got := buffertest.Drain(t, b2); !slices.Equal(got, []int64{5, 6, 7}) {
		t.Fatalf("got %v", got)
	}
}

// crash stops b as kill -9 would: the files are closed and the lock released, nothing queued is
// written and nothing is persisted.
func crash(b *Buffer) {
	b.do(func(l *log) {
		l.stats.Unregister()
		l.closeFiles()
	})
	<-b.stopped
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(names)
	return names
}

func TestDiskBufferCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 5))
	b.Close()
	segs := segments(t, dir)
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	// A torn write: the last record lost its end.
	if err := os.Truncate(last, st.Size()-3); err != nil {
		t.Fatal(err)
	}
	b = openDisk(t, dir, Config{})
	if b.log.statCorrupt.Get() != 1 {
		t.Fatalf("corrupt records counted: %d", b.log.statCorrupt.Get())
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 3}) {
		t.Fatalf("got %v", got)
	}
	// The cut file takes new records cleanly.
	addEach(b, buffertest.Seq(10, 2))
	b.Close()
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{10, 11}) || b.log.statCorrupt.Get() != 0 {
		t.Fatalf("after the repair: %v (corrupt %d)", got, b.log.statCorrupt.Get())
	}
}

func TestDiskBufferCutsCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 6))
	b.Close()
	seg := segments(t, dir)[0]
	data, _ := os.ReadFile(seg)
	// Flip a byte in the payload of the fourth record: its CRC no longer matches.
	off := 0
	for range 3 {
		off += recHeader + int(uint32(data[off])|uint32(data[off+1])<<8|uint32(data[off+2])<<16|uint32(data[off+3])<<24)
	}
	data[off+recHeader+2] ^= 0xff
	os.WriteFile(seg, data, 0o640)
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2}) {
		t.Fatalf("got %v; want the records before the corrupt one", got)
	}
}

func TestDiskBufferTruncatedMiddleSegment(t *testing.T) {
	dir := t.TempDir()
	// Tiny segments: a few records each.
	b := openDisk(t, dir, Config{SegmentSize: 200, Limit: 1 << 20})
	addEach(b, buffertest.Seq(0, 30))
	b.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments; want several", len(segs))
	}
	st, _ := os.Stat(segs[1])
	os.Truncate(segs[1], st.Size()/2)
	b = openDisk(t, dir, Config{SegmentSize: 200, Limit: 1 << 20})
	defer b.Close()
	got := buffertest.Drain(t, b)
	// Everything but the cut part of segment 1 arrives, in order.
	if len(got) >= 30 || len(got) < 20 || !slices.IsSorted(got) || got[0] != 0 || got[len(got)-1] != 29 {
		t.Fatalf("got %v", got)
	}
	if b.Len() != 0 {
		t.Fatalf("Len %d after draining", b.Len())
	}
}

func TestDiskBufferFullDropsOldestSegment(t *testing.T) {
	dir := t.TempDir()
	var outDropped models.Stat // the output's metrics_dropped
	b := openDisk(t, dir, Config{SegmentSize: 300, Limit: 1000, Dropped: &outDropped})
	defer b.Close()
	addEach(b, buffertest.Seq(0, 200))
	if b.Bytes() > 1000+300 {
		t.Fatalf("%d bytes held with a limit of 1000", b.Bytes())
	}
	dropped := b.log.statDropped.Get()
	if dropped == 0 || outDropped.Get() != dropped {
		t.Fatalf("dropped %d (the output's counter %d)", dropped, outDropped.Get())
	}
	got := buffertest.Drain(t, b)
	if int64(len(got))+dropped != 200 {
		t.Fatalf("%d kept + %d dropped != 200", len(got), dropped)
	}
	if got[len(got)-1] != 199 || !slices.IsSorted(got) || got[0] != int64(dropped) {
		t.Fatalf("kept %v...%v: want the newest, in order", got[:3], got[len(got)-1])
	}
	if n := len(segments(t, dir)); n > 5 {
		t.Fatalf("%d segment files left", n)
	}
}

func TestDiskBufferRemovesDeliveredSegments(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{SegmentSize: 300, Limit: 1 << 20})
	defer b.Close()
	addEach(b, buffertest.Seq(0, 100))
	if len(segments(t, dir)) < 5 {
		t.Fatal("want several segments")
	}
	buffertest.Drain(t, b)
	if n := len(segments(t, dir)); n != 1 {
		t.Fatalf("%d segments after everything was delivered; want only the active one", n)
	}
}

func TestDiskBufferLock(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	_, err := Open(Config{Dir: dir, Log: quietLog()})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second open: %v", err)
	}
	b.Close()
	b2, err := Open(Config{Dir: dir, Log: quietLog()})
	if err != nil {
		t.Fatalf("after Close the directory is free: %v", err)
	}
	b2.Close()
}

func TestDiskBufferFsyncInterval(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{Fsync: 50 * time.Millisecond})
	defer b.Close()
	addEach(b, buffertest.Seq(0, 20))
	if got := buffertest.Drain(t, b); len(got) != 20 {
		t.Fatalf("got %d", len(got))
	}
}
