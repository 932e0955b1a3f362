package diskbuffer

import (
	"errors"
	"fmt"
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
		b.Sync() // the log's goroutine makes one record of what is queued
	}
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

// recordOffsets returns where each record of a segment file starts.
func recordOffsets(t *testing.T, data []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(data); {
		h, err := parseHeader(data[off:min(off+v2Header, len(data))])
		if err != nil {
			t.Fatalf("record at %d: %v", off, err)
		}
		offs = append(offs, off)
		off += int(h.size)
	}
	return offs
}

// damage applies f to the bytes of a segment file.
func damage(t *testing.T, path string, f func(data []byte, recs []int)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f(data, recordOffsets(t, data))
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

// One damaged record costs that record only: the records after it in its segment are read, and
// its metrics are counted as dropped (its header, under its own CRC, says how many).
func TestDiskBufferSkipsCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 6))
	b.Close()
	damage(t, segments(t, dir)[0], func(data []byte, recs []int) {
		data[recs[3]+v2Header+2] ^= 0xff // in the payload of the fourth record
	})
	var dropped models.Stat
	b = openDisk(t, dir, Config{Dropped: &dropped})
	if b.Len() != 5 || dropped.Get() != 1 || b.log.statCorrupt.Get() != 1 {
		t.Fatalf("Len %d, dropped %d, corrupt records %d; want 5, 1, 1", b.Len(), dropped.Get(), b.log.statCorrupt.Get())
	}
	b.Close()
	// The damage is skipped again after the next start, and not counted again.
	b = openDisk(t, dir, Config{Dropped: &dropped})
	defer b.Close()
	if b.log.statCorrupt.Get() != 0 || dropped.Get() != 1 {
		t.Fatalf("counted again: corrupt %d, dropped %d", b.log.statCorrupt.Get(), dropped.Get())
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 4, 5}) {
		t.Fatalf("got %v; want every intact record", got)
	}
}

// Five flipped bytes in one record of a large segment (the case: they cut 133,260 bytes
// and about 730 metrics, counted in bytes only) lose that record's metrics, counted as such.
func TestDiskBufferFlippedBytesLoseOneRecord(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	for i := range 200 {
		b.Add(buffertest.Seq(i*5, 5)...)
		b.Sync() // one record each
	}
	b.Close()
	damage(t, segments(t, dir)[0], func(data []byte, recs []int) {
		for i := range 5 {
			data[recs[50]+v2Header+3+7*i] ^= 0x5a
		}
	})
	var dropped models.Stat
	b = openDisk(t, dir, Config{Dropped: &dropped})
	defer b.Close()
	got := buffertest.Drain(t, b)
	if len(got) != 995 || got[249] != 249 || got[250] != 255 || dropped.Get() != 5 || b.log.statDropped.Get() != 5 {
		t.Fatalf("kept %d metrics (want 995, 250..254 missing), output dropped %d, buffer dropped %d",
			len(got), dropped.Get(), b.log.statDropped.Get())
	}
}

// A damaged length: the next record is found by its header (magic and CRC); what was lost is
// counted in records and bytes, as its metrics cannot be known.
func TestDiskBufferResyncsAfterDamagedHeader(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 6))
	b.Close()
	var size int64
	damage(t, segments(t, dir)[0], func(data []byte, recs []int) {
		data[recs[3]+5] ^= 0x40 // the length
		size = int64(recs[4] - recs[3])
	})
	var dropped models.Stat
	b = openDisk(t, dir, Config{Dropped: &dropped})
	defer b.Close()
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 4, 5}) {
		t.Fatalf("got %v; want every intact record", got)
	}
	if b.log.statCorrupt.Get() != 1 || b.log.statCorruptB.Get() != size || dropped.Get() != 0 {
		t.Fatalf("corrupt records %d, bytes %d (want 1, %d), dropped metrics %d", b.log.statCorrupt.Get(),
			b.log.statCorruptB.Get(), size, dropped.Get())
	}
}

// dump prints a metric as testdata/v1/expected.txt holds them (written by the code that wrote the
// segment).
func dump(m *models.Metric) string {
	var b strings.Builder
	b.WriteString(m.Name)
	for _, t := range m.Tags {
		fmt.Fprintf(&b, " %s=%q", t.Key, t.Value)
	}
	for _, f := range m.Fields {
		fmt.Fprintf(&b, " %s:%s=%#v", f.Key, f.Type(), f.Value())
	}
	fmt.Fprintf(&b, " %d\n", m.Time.UnixNano())
	return b.String()
}

// copyV1 copies testdata/v1 — a buffer written by the version before v2 records: four records
// of 5 metrics, the first acknowledged — to a new folder.
func copyV1(t *testing.T) (dir string, expected []string) {
	t.Helper()
	dir = t.TempDir()
	for _, name := range []string{"0000000000000000.seg", "ack"} {
		data, err := os.ReadFile(filepath.Join("testdata/v1", name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), data, 0o640)
	}
	exp, err := os.ReadFile("testdata/v1/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	expected = strings.SplitAfter(string(exp), "\n")
	return dir, expected[:len(expected)-1]
}

func drainDump(b *Buffer) []string {
	var out []string
	for tx := b.Begin(3); tx != nil; tx = b.Begin(3) {
		for _, m := range tx.Batch {
			out = append(out, dump(m))
		}
		tx.All = true
		b.End(tx)
	}
	return out
}

// A buffer written before an upgrade is read after it: from its acknowledged position, every
// type, and new records appended to its segment after the old ones.
func TestDiskBufferReadsVersion1Segments(t *testing.T) {
	dir, want := copyV1(t)
	b := openDisk(t, dir, Config{})
	if got := drainDump(b); !slices.Equal(got, want) {
		t.Fatalf("replayed:\n%s\nwant:\n%s", strings.Join(got, ""), strings.Join(want, ""))
	}
	addEach(b, buffertest.Seq(100, 3))
	b.Close()
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{100, 101, 102}) || b.log.statCorrupt.Get() != 0 {
		t.Fatalf("after appending to the old segment: %v (corrupt %d)", got, b.log.statCorrupt.Get())
	}
}

// A damaged record of the old format is skipped too (its length is trusted when the record after
// it checks out), counted in records and bytes.
func TestDiskBufferSkipsCorruptVersion1Record(t *testing.T) {
	dir, want := copyV1(t)
	damage(t, filepath.Join(dir, "0000000000000000.seg"), func(data []byte, recs []int) {
		data[recs[2]+v1Header+20] ^= 0xff // the third record: metrics 10..14
	})
	b := openDisk(t, dir, Config{})
	defer b.Close()
	if got := drainDump(b); !slices.Equal(got, append(want[:5:5], want[10:]...)) || b.log.statCorrupt.Get() != 1 {
		t.Fatalf("replayed %d metrics (want 10), corrupt records %d:\n%s", len(got), b.log.statCorrupt.Get(), strings.Join(got, ""))
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

// unreadable makes the file at path unopenable for this process: mode 000, or, for root (which
// opens anything), a folder in its place.
func unreadable(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o750); err != nil {
		t.Fatal(err)
	}
}

// A segment that cannot be opened at start is moved aside and reported (Err); the other
// segments are read.
func TestDiskBufferSetsAsideUnreadableSegment(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SegmentSize: 200, Limit: 1 << 20}
	b := openDisk(t, dir, cfg)
	addEach(b, buffertest.Seq(0, 30))
	b.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments; want several", len(segs))
	}
	unreadable(t, segs[1])
	b = openDisk(t, dir, cfg)
	err, at := b.Err()
	if err == nil || !strings.Contains(err.Error(), segs[1]+".unreadable") || at.IsZero() {
		t.Fatalf("Err: %v at %v", err, at)
	}
	if _, err := os.Stat(segs[1] + ".unreadable"); err != nil {
		t.Fatal("not moved aside:", err)
	}
	got := buffertest.Drain(t, b)
	if len(got) < 15 || got[0] != 0 || got[len(got)-1] != 29 || !slices.IsSorted(got) {
		t.Fatalf("got %v; want everything but the second segment", got)
	}
	b.Close()
	b = openDisk(t, dir, cfg) // set aside before: no longer in the way
	defer b.Close()
	if err, _ := b.Err(); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

// A segment that cannot be read any more while the agent runs is set aside too: its metrics not
// yet read are counted as dropped, and reading goes on with the next segment.
func TestDiskBufferSetsAsideSegmentUnreadableAtRunTime(t *testing.T) {
	for name, spoil := range map[string]func(path string) error{
		"gone":   os.Remove,                                                                 // open fails
		"folder": func(path string) error { os.Remove(path); return os.Mkdir(path, 0o750) }, // reads fail
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{SegmentSize: 200, Limit: 1 << 20}
			b := openDisk(t, dir, cfg)
			addEach(b, buffertest.Seq(0, 30))
			b.Close()
			var dropped models.Stat
			cfg.Dropped = &dropped
			b = openDisk(t, dir, cfg) // after a restart the records are read from disk
			defer b.Close()
			segs := segments(t, dir)
			if err := spoil(segs[1]); err != nil {
				t.Fatal(err)
			}
			got := buffertest.Drain(t, b)
			if int64(len(got))+dropped.Get() != 30 || dropped.Get() == 0 || got[len(got)-1] != 29 || b.Len() != 0 {
				t.Fatalf("got %v, %d dropped, Len %d", got, dropped.Get(), b.Len())
			}
			if err, _ := b.Err(); err == nil || !strings.Contains(err.Error(), segs[1]) {
				t.Fatalf("Err: %v", err)
			}
		})
	}
}

// An acknowledged position that cannot be read is set aside: everything is sent again.
func TestDiskBufferSetsAsideUnreadableAck(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 5))
	tx := b.Begin(2)
	tx.All = true
	b.End(tx)
	b.Close()
	unreadable(t, filepath.Join(dir, "ack"))
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if err, _ := b.Err(); err == nil || !strings.Contains(err.Error(), "ack.unreadable") {
		t.Fatalf("Err: %v", err)
	}
	if got := buffertest.Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("got %v; want everything again", got)
	}
}

// logTo returns a logger and the text it writes.
func logTo() (*slog.Logger, *strings.Builder) {
	var b strings.Builder
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// A missing acknowledged position replays everything, and says so with the counts; an empty ack
// file (nothing acknowledged yet before a crash) is no reason to warn.
func TestDiskBufferWarnsWhenAckIsMissing(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 6)) // 6 records of one metric
	tx := b.Begin(4)
	tx.All = true
	b.End(tx)
	b.Close()
	if err := os.Remove(filepath.Join(dir, "ack")); err != nil {
		t.Fatal(err)
	}
	lg, logged := logTo()
	b, err := Open(Config{Dir: dir, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	if got := buffertest.Drain(t, b); len(got) != 6 {
		t.Fatalf("replayed %v; want all 6", got)
	}
	b.Close()
	if !strings.Contains(logged.String(), "level=WARN msg=\"disk buffer: the acknowledged position is unknown (the ack file is missing); every record on disk is sent again") ||
		!strings.Contains(logged.String(), "records=6 metrics=6") {
		t.Fatalf("log:\n%s", logged)
	}

	dir = t.TempDir()
	b = openDisk(t, dir, Config{})
	addEach(b, buffertest.Seq(0, 3))
	crash(b) // before anything was acknowledged: the ack file is empty
	lg, logged = logTo()
	b, err = Open(Config{Dir: dir, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Len() != 3 || strings.Contains(logged.String(), "unknown") {
		t.Fatalf("Len %d, log:\n%s", b.Len(), logged)
	}
}

// metricsLogged sums the metrics=N of the log lines that contain msg.
func metricsLogged(t *testing.T, log, msg string) (sum int64, lines int) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		lines++
		var n int64
		i := strings.Index(line, " metrics=")
		if i < 0 {
			t.Fatalf("no metrics= in %q", line)
		}
		fmt.Sscanf(line[i+len(" metrics="):], "%d", &n)
		sum += n
	}
	return sum, lines
}

// Writes that fail (a full disk: /dev/full answers every write with ENOSPC) lose metrics, and
// every message says how many: the messages add up to all that was lost (the full disk
// lost 4,218 metrics and logged metrics=2). Err reports it while it lasts; the total is logged
// when writes work again.
func TestDiskBufferWriteFailuresAreCountedInEveryMessage(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here:", err)
	}
	dir := t.TempDir()
	lg, logged := logTo()
	var dropped models.Stat
	b, err := Open(Config{Dir: dir, Log: lg, Dropped: &dropped})
	if err != nil {
		t.Fatal(err)
	}
	var seg string
	b.do(func(l *log) { // the disk fills up under the active segment
		seg = l.segs[len(l.segs)-1].path
		l.active.Close()
		l.active, err = os.OpenFile("/dev/full", os.O_WRONLY, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for i := range 40 {
		b.Add(buffertest.Seq(i*10, i+1)...)
		b.Sync()
		lost += i + 1
	}
	if e, at := b.Err(); e == nil || !strings.Contains(e.Error(), fmt.Sprintf("no space left on device; %d metrics lost", lost)) || at.IsZero() {
		t.Fatalf("Err: %v", e)
	}
	b.do(func(l *log) { // space again
		l.active.Close()
		l.active, err = os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	})
	addEach(b, buffertest.Seq(1000, 2))
	if e, _ := b.Err(); e != nil || b.Len() != 2 || dropped.Get() != int64(lost) {
		t.Fatalf("after recovery: Err %v, Len %d, dropped %d of %d", e, b.Len(), dropped.Get(), lost)
	}
	b.Close()
	// The repeats within a minute are in the line that ends the failure.
	sum, lines := metricsLogged(t, logged.String(), "write failed; metrics lost")
	if !strings.Contains(logged.String(), fmt.Sprintf("writes work again\" dir=%s metrics_lost=%d not_logged_before=%d ", dir, lost, int64(lost)-sum)) {
		t.Fatalf("%d lines say %d metrics lost; the total %d is not logged:\n%s", lines, sum, lost, logged)
	}
}

// A buffer at its limit reports it (Err) with the metrics lost, until it has room again.
func TestDiskBufferFullIsReported(t *testing.T) {
	dir := t.TempDir()
	lg, logged := logTo()
	b, err := Open(Config{Dir: dir, Log: lg, SegmentSize: 300, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	addEach(b, buffertest.Seq(0, 200))
	dropped := b.log.statDropped.Get()
	e, _ := b.Err()
	if e == nil || !strings.Contains(e.Error(), "full (buffer_limit 1000 bytes) since ") ||
		!strings.Contains(e.Error(), fmt.Sprintf("the oldest records are dropped; %d metrics lost", dropped)) {
		t.Fatalf("Err: %v (dropped %d)", e, dropped)
	}
	if sum, _ := metricsLogged(t, logged.String(), "disk buffer full"); sum != dropped {
		t.Fatalf("the messages say %d metrics lost of %d:\n%s", sum, dropped, logged)
	}
	buffertest.Drain(t, b)
	if e, _ := b.Err(); e != nil {
		t.Fatalf("after draining: %v", e)
	}
}

// Records are compressed with zstd: the plant stream takes a fraction of its encoded size on
// disk, and reads back the same after a restart.
func TestDiskBufferCompressesRecords(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	p := newPlantStream(100)
	var in []string
	var encoded int
	for i := range 10 {
		var ms []*models.Metric
		for j := range 100 {
			m := p.metric(i*100 + j)
			ms = append(ms, m)
			in = append(in, dump(m))
			encoded += len(AppendMetric(nil, m))
		}
		b.Add(ms...)
	}
	b.Sync()
	onDisk := b.Bytes()
	b.Close()
	data, err := os.ReadFile(segments(t, dir)[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range recordOffsets(t, data) {
		if data[off+3] != kindZstd {
			t.Fatalf("record at %d is of kind %#x", off, data[off+3])
		}
	}
	if onDisk*3 > int64(encoded) {
		t.Fatalf("%d bytes on disk for %d bytes of metrics: want a third or less", onDisk, encoded)
	}
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if got := drainDump(b); !slices.Equal(got, in) {
		t.Fatalf("read back %d metrics, want the %d written", len(got), len(in))
	}
}

// The acknowledged position is a record and how many of its metrics are done: after a restart
// within a large record, only what was not delivered is sent again.
func TestDiskBufferResumesInsideARecord(t *testing.T) {
	dir := t.TempDir()
	b := openDisk(t, dir, Config{})
	b.Add(buffertest.Seq(0, 100)...) // one record
	b.Sync()
	tx := b.Begin(30)
	tx.All = true
	b.End(tx)
	crash(b)
	b = openDisk(t, dir, Config{})
	defer b.Close()
	if got := buffertest.Drain(t, b); b.Len() != 0 || len(got) != 70 || got[0] != 30 || got[69] != 99 {
		t.Fatalf("after the restart: %d metrics from %v; want 30..99", len(got), got[:min(3, len(got))])
	}
}
