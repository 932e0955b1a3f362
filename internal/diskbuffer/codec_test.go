package diskbuffer

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/buffertest"
	"github.com/tagpipe/tagpipe/models"
)

func TestDecodeRejectsGarbage(t *testing.T) {
	var d Decoder
	good := AppendMetric(nil, models.New("m", []models.Tag{{Key: "a", Value: "b"}}, []models.Field{models.Int("v", 1), models.String("s", "x")}, time.Unix(1, 0)))
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
	f.Add(AppendMetric(nil, models.New("m", []models.Tag{{Key: "a", Value: "b"}}, []models.Field{models.Float("v", 1.5), models.String("s", "x")}, time.Unix(1, 0))))
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

// memDir returns a new folder in memory (/dev/shm) where there is one, else on disk: fsync costs
// nothing there, and a fuzzer needs thousands of runs.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "diskbuffer-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FuzzSegment opens a buffer whose only segment holds the fuzzed bytes, as after a crash or a
// damaged disk. Invariants: no panic and no error; every metric the buffer counts at the start
// is lent out, once; the damage it met is skipped for good (a second start finds none).
func FuzzSegment(f *testing.F) {
	valid := func() []byte {
		dir := f.TempDir()
		b, err := Open(Config{Dir: dir, Log: quietLog()})
		if err != nil {
			f.Fatal(err)
		}
		for i := range 3 {
			b.Add(buffertest.Seq(i*2, 2)...)
			b.Sync()
		}
		b.Close()
		data, _ := os.ReadFile(filepath.Join(dir, "0000000000000000.seg"))
		return data
	}
	v2 := valid()
	v1, err := os.ReadFile("testdata/v1/0000000000000000.seg")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v2)
	f.Add(v1)
	f.Add(v2[:len(v2)-5])
	damaged := slices.Clone(v2)
	damaged[30] ^= 0xff
	f.Add(damaged)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := memDir(t)
		if err := os.WriteFile(filepath.Join(dir, "0000000000000000.seg"), data, 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := Open(Config{Dir: dir, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		held, dropped0 := b.Len(), b.log.statDropped.Get()
		n := 0
		for tx := b.Begin(100); tx != nil; tx = b.Begin(100) {
			n += len(tx.Batch)
			tx.All = true
			b.End(tx)
		}
		dropped := b.log.statDropped.Get() - dropped0 // undecodable records
		if int64(n)+dropped != int64(held) || b.Len() != 0 {
			t.Fatalf("held %d at the start, lent out %d, dropped %d, Len %d after", held, n, dropped, b.Len())
		}
		b.Close()
		if b, err = Open(Config{Dir: dir, Log: quietLog()}); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.Len() != 0 || b.log.statCorrupt.Get() != 0 {
			t.Fatalf("second start: Len %d, corrupt records %d", b.Len(), b.log.statCorrupt.Get())
		}
	})
}
