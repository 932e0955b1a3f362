package diskbuffer

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/buffertest"
	"github.com/tagpipe/tagpipe/models"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBuffer adds metrics of 10 fields in batches of 100 (as the pipeline's fan-out does) and
// takes them out in batches of 5,000 (as an output's flusher does): one op is one metric in and
// out. cpu-ns/metric counts every goroutine (the disk writer too); at 100,000 metrics/s a buffer
// costs cpu-ns/metric × 100,000 of one core.
func BenchmarkBuffer(b *testing.B) {
	batch := make([]*models.Metric, 100)
	for i := range batch {
		fs := make([]models.Field, 10)
		for j := range fs {
			fs[j] = models.Float("field_"+strconv.Itoa(j), float64(i*j)+0.5)
		}
		batch[i] = models.New("power", []models.Tag{{Key: "device", Value: "meter-" + strconv.Itoa(i)}, {Key: "line", Value: "A"}}, fs, time.Unix(1795600000, int64(i)))
	}
	for _, c := range []struct {
		name string
		open func(b *testing.B) models.Buffer
	}{
		{"memory", func(*testing.B) models.Buffer { return models.NewMemoryBuffer(1 << 20) }},
		{"disk-fsync-batch", func(b *testing.B) models.Buffer {
			return mustDisk(b, Config{Dir: b.TempDir(), Limit: 8 << 30, Log: quietLog()})
		}},
		{"disk-fsync-1s", func(b *testing.B) models.Buffer {
			return mustDisk(b, Config{Dir: b.TempDir(), Limit: 8 << 30, Fsync: time.Second, Log: quietLog()})
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := c.open(b)
			defer buf.Close()
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			var bytes int64
			for added := 0; added < b.N; {
				n := min(len(batch), b.N-added)
				buf.Add(batch[:n]...)
				added += n
				if added%5000 == 0 || added == b.N {
					if d, ok := buf.(*Buffer); ok {
						bytes = max(bytes, d.Bytes())
					}
					for tx := buf.Begin(5000); tx != nil; tx = buf.Begin(5000) {
						tx.All = true
						buf.End(tx)
					}
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/metric")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "metrics/s")
			if d, ok := buf.(*Buffer); ok {
				_ = d
				b.ReportMetric(float64(b.N)*float64(bytes)/5000/b.Elapsed().Seconds()/1e6, "MB/s")
			}
		})
	}
}

func mustDisk(b *testing.B, cfg Config) *Buffer {
	d, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkDiskBufferReplay measures reading a buffer back after a restart: one op is one metric.
func BenchmarkDiskBufferReplay(b *testing.B) {
	dir := b.TempDir()
	d := mustDisk(b, Config{Dir: dir, Limit: 8 << 30, Fsync: time.Second, Log: quietLog()})
	ms := buffertest.Seq(0, 100)
	for i := range ms {
		fs := make([]models.Field, 10)
		for j := range fs {
			fs[j] = models.Float("field_"+strconv.Itoa(j), float64(i*j)+0.5)
		}
		ms[i].Fields = fs
	}
	for added := 0; added < b.N; added += 100 {
		d.Add(ms...)
	}
	d.Close()
	b.ReportAllocs()
	b.ResetTimer()
	d = mustDisk(b, Config{Dir: dir, Limit: 8 << 30, Fsync: time.Second, Log: quietLog()})
	n := 0
	for tx := d.Begin(5000); tx != nil; tx = d.Begin(5000) {
		n += len(tx.Batch)
		tx.All = true
		d.End(tx)
	}
	b.StopTimer()
	d.Close()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "metrics/s")
}
