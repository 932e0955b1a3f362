package models

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func openDisk(t *testing.T, dir string, cfg DiskBufferConfig) *DiskBuffer {
	t.Helper()
	cfg.Dir = dir
	cfg.Log = quietLog()
	b, err := OpenDiskBuffer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addEach adds metrics one record at a time and waits until they are on disk.
func addEach(b *DiskBuffer, ms []*Metric) {
	for _, m := range ms {
		b.Add(m)
	}
	b.Sync()
}

// The transaction behaviour every buffer shares.
func TestBufferSuite(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) Buffer{
		"memory": func(*testing.T) Buffer { return NewMemoryBuffer(1000) },
		"disk":   func(t *testing.T) Buffer { return openDisk(t, t.TempDir(), DiskBufferConfig{}) },
	} {
		t.Run(name+"/partial", func(t *testing.T) {
			b := open(t)
			defer b.Close()
			b.Add(seq(0, 6)...)
			tx := b.Begin(4)
			if tx == nil || !equal(ids(tx.Batch), []int64{0, 1, 2, 3}) || b.Len() != 6 {
				t.Fatalf("Begin: %v, Len %d", tx, b.Len())
			}
			b.Add(seq(6, 2)...)
			tx.Settle(&PartialWriteError{Accepted: []int{0, 2}, Rejected: []int{3}})
			b.End(tx)
			if got := drain(t, b); !equal(got, []int64{1, 4, 5, 6, 7}) {
				t.Fatalf("got %v", got)
			}
		})
		t.Run(name+"/failed", func(t *testing.T) {
			b := open(t)
			defer b.Close()
			b.Add(seq(0, 5)...)
			tx := b.Begin(3)
			tx.Settle(errors.New("refused"))
			b.End(tx)
			if b.Len() != 5 {
				t.Fatalf("Len %d after a failed write", b.Len())
			}
			if got := drain(t, b); !equal(got, []int64{0, 1, 2, 3, 4}) {
				t.Fatalf("got %v", got)
			}
		})
		t.Run(name+"/empty", func(t *testing.T) {
			b := open(t)
			defer b.Close()
			if tx := b.Begin(10); tx != nil || b.Len() != 0 {
				t.Fatal("an empty buffer lends nothing")
			}
		})
	}
}

func TestDiskBufferRoundTripsEveryType(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{})
	in := New("power meter", []Tag{{"device", "m,1"}, {"line", "A"}}, []Field{
		Float("f", math.Pi), Float("nan", math.Inf(-1)), Int("i", math.MinInt64), Uint("u", math.MaxUint64),
		Bool("b", true), String("s", "ünïcode \"quoted\"\n"), String("empty", ""),
	}, time.Unix(1795600000, 123456789))
	b.Add(in, in)
	if tx := b.Begin(10); tx == nil || tx.Batch[0] != in {
		t.Fatal("before a restart the metrics come from memory, not decoded again")
	}
	b.Close()
	b = openDisk(t, dir, DiskBufferConfig{}) // after a restart they are read and decoded
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
	b := openDisk(t, dir, DiskBufferConfig{})
	addEach(b, seq(0, 10))
	tx := b.Begin(4)
	tx.All = true
	b.End(tx) // 0..3 delivered
	tx = b.Begin(3)
	tx.Settle(errors.New("down")) // 4..6 out when the agent stops: not delivered
	b.End(tx)
	b.Close()

	b = openDisk(t, dir, DiskBufferConfig{})
	defer b.Close()
	if b.Len() != 6 {
		t.Fatalf("after restart Len %d, want 6", b.Len())
	}
	if got := drain(t, b); !equal(got, []int64{4, 5, 6, 7, 8, 9}) {
		t.Fatalf("replayed %v; want exactly what was not delivered", got)
	}
}

// Without Close (a crash): what was acknowledged is not sent again, what was written survives.
func TestDiskBufferSurvivesWithoutClose(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{})
	addEach(b, seq(0, 8))
	tx := b.Begin(5)
	tx.All = true
	b.End(tx)
	// Simulate kill -9: drop the lock and files without the orderly close.
	b.closeFiles()
	b.stats.Unregister()

	b2 := openDisk(t, dir, DiskBufferConfig{})
	defer b2.Close()
	if got := drain(t, b2); !equal(got, []int64{5, 6, 7}) {
		t.Fatalf("got %v", got)
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(names)
	return names
}

func TestDiskBufferCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{})
	addEach(b, seq(0, 5))
	b.Close()
	segs := segments(t, dir)
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	// A torn write: the last record lost its end.
	if err := os.Truncate(last, st.Size()-3); err != nil {
		t.Fatal(err)
	}
	b = openDisk(t, dir, DiskBufferConfig{})
	if b.statCorrupt.Get() != 1 {
		t.Fatalf("corrupt records counted: %d", b.statCorrupt.Get())
	}
	if got := drain(t, b); !equal(got, []int64{0, 1, 2, 3}) {
		t.Fatalf("got %v", got)
	}
	// The cut file takes new records cleanly.
	addEach(b, seq(10, 2))
	b.Close()
	b = openDisk(t, dir, DiskBufferConfig{})
	defer b.Close()
	if got := drain(t, b); !equal(got, []int64{10, 11}) || b.statCorrupt.Get() != 0 {
		t.Fatalf("after the repair: %v (corrupt %d)", got, b.statCorrupt.Get())
	}
}

func TestDiskBufferCutsCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{})
	addEach(b, seq(0, 6))
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
	b = openDisk(t, dir, DiskBufferConfig{})
	defer b.Close()
	if got := drain(t, b); !equal(got, []int64{0, 1, 2}) {
		t.Fatalf("got %v; want the records before the corrupt one", got)
	}
}

func TestDiskBufferTruncatedMiddleSegment(t *testing.T) {
	dir := t.TempDir()
	// Tiny segments: a few records each.
	b := openDisk(t, dir, DiskBufferConfig{SegmentSize: 200, Limit: 1 << 20})
	addEach(b, seq(0, 30))
	b.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments; want several", len(segs))
	}
	st, _ := os.Stat(segs[1])
	os.Truncate(segs[1], st.Size()/2)
	b = openDisk(t, dir, DiskBufferConfig{SegmentSize: 200, Limit: 1 << 20})
	defer b.Close()
	got := drain(t, b)
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
	var onDrop int
	b := openDisk(t, dir, DiskBufferConfig{SegmentSize: 300, Limit: 1000, OnDrop: func(n int) { onDrop += n }})
	defer b.Close()
	addEach(b, seq(0, 200))
	if b.Bytes() > 1000+300 {
		t.Fatalf("%d bytes held with a limit of 1000", b.Bytes())
	}
	dropped := b.statDropped.Get()
	if dropped == 0 || int64(onDrop) != dropped {
		t.Fatalf("dropped %d (OnDrop told %d)", dropped, onDrop)
	}
	got := drain(t, b)
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
	b := openDisk(t, dir, DiskBufferConfig{SegmentSize: 300, Limit: 1 << 20})
	defer b.Close()
	addEach(b, seq(0, 100))
	if len(segments(t, dir)) < 5 {
		t.Fatal("want several segments")
	}
	drain(t, b)
	if n := len(segments(t, dir)); n != 1 {
		t.Fatalf("%d segments after everything was delivered; want only the active one", n)
	}
}

func TestDiskBufferLock(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{})
	_, err := OpenDiskBuffer(DiskBufferConfig{Dir: dir, Log: quietLog()})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second open: %v", err)
	}
	b.Close()
	b2, err := OpenDiskBuffer(DiskBufferConfig{Dir: dir, Log: quietLog()})
	if err != nil {
		t.Fatalf("after Close the directory is free: %v", err)
	}
	b2.Close()
}

func TestDiskBufferFsyncInterval(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, DiskBufferConfig{Fsync: 50 * time.Millisecond})
	defer b.Close()
	addEach(b, seq(0, 20))
	if got := drain(t, b); len(got) != 20 {
		t.Fatalf("got %d", len(got))
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	var d Decoder
	good := AppendMetric(nil, New("m", []Tag{{"a", "b"}}, []Field{Int("v", 1), String("s", "x")}, time.Unix(1, 0)))
	for i := range good {
		if _, _, err := d.Decode(good[:i]); err == nil {
			t.Fatalf("a metric cut at %d of %d bytes decoded", i, len(good))
		}
	}
	bad := slices.Clone(good)
	bad[len(bad)-5] = 0x7f // an unknown value type... or a changed byte
	d.Decode(bad)          // must not panic
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendMetric(nil, New("m", []Tag{{"a", "b"}}, []Field{Float("v", 1.5), String("s", "x")}, time.Unix(1, 0))))
	f.Add([]byte{1, 'm', 0, 1, 1, 'v', 9, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Decoder
		m, rest, err := d.Decode(data)
		if err != nil {
			return
		}
		if len(rest) > len(data) {
			t.Fatal("rest longer than the input")
		}
		// Whatever decodes encodes to the bytes it came from.
		again := AppendMetric(nil, m)
		if string(again) != string(data[:len(data)-len(rest)]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, data[:len(data)-len(rest)])
		}
	})
}
