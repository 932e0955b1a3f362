package diskbuffer

import (
	"fmt"
	"math"
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

// plantStream makes the metrics of the 10,000-device load (docs/scale.md, cmd/loadtest): every
// device polled once a second, one metric "loadtest" tagged with its controller and name, 20
// fields — ten FLOAT32 (float fields) and ten UINT16 (uint fields). The load test's simulator
// serves mostly constant registers, which would flatter compression; here every float is a
// reading with noise in its low bits (a sensor's last digits) and every uint16 a slow counter or
// a status word, per device: a harder stream than the load test's.
type plantStream struct {
	devices int
	tags    [][]models.Tag
	keys    [20]string
	rng     uint64
}

func newPlantStream(devices int) *plantStream {
	p := &plantStream{devices: devices, rng: 1}
	for i := range p.keys {
		p.keys[i] = fmt.Sprintf("f%02d", i)
	}
	for d := range devices {
		p.tags = append(p.tags, []models.Tag{
			{Key: "controller", Value: fmt.Sprintf("tcp://127.0.%d.%d:1502", 1+d/254, 1+d%254)},
			{Key: "device", Value: fmt.Sprintf("d%05d", d)},
		})
	}
	return p
}

// metric returns the reading of poll n (device n mod devices, second n / devices).
func (p *plantStream) metric(n int) *models.Metric {
	d, sec := n%p.devices, n/p.devices
	p.rng = p.rng*6364136223846793005 + 1442695040888963407
	m := models.NewMetric("loadtest", p.tags[d], 20, time.Unix(1795600000+int64(sec), int64(d)*100_000))
	for i := range 10 {
		base := 230 + 3*math.Sin(2*math.Pi*float64(sec)/60+float64(d)+float64(i))
		noise := float64(int64(p.rng>>(i*5))%64-32) / 1000 // ±32 mV
		m.Fields = append(m.Fields, models.Float(p.keys[2*i], float64(float32(base+noise))))
		var u uint64
		switch i % 3 {
		case 0:
			u = uint64(sec*(1+i)+d) & 0xffff // a counter
		case 1:
			u = 5000 + uint64(p.rng>>(40+i)&7) // a frequency in centihertz
		default:
			u = uint64(1 + sec/60%2*2) // a status word
		}
		m.Fields = append(m.Fields, models.Uint(p.keys[2*i+1], u))
	}
	return m
}

// BenchmarkPlantLoad adds the plant stream to a disk buffer (fsync every write) and takes it out
// again in batches of 5,000, as BenchmarkBuffer does; one op is one metric. paced adds 10
// metrics a millisecond, the 10,000-device load's rate, so that records are as large as that
// load makes them; flat adds as fast as it can. disk-B/metric is what the buffer holds on disk
// per metric (records, headers, compression); encoded-B/metric is the metrics' encoding alone,
// which the buffer stored uncompressed before, in a record per batch of the pipeline.
func BenchmarkPlantLoad(b *testing.B) {
	for _, c := range []struct {
		name  string
		paced bool
	}{{"flat", false}, {"paced-10k", true}} {
		b.Run(c.name, func(b *testing.B) {
			p := newPlantStream(10_000)
			buf := mustDisk(b, Config{Dir: b.TempDir(), Limit: 8 << 30, Log: quietLog()})
			defer buf.Close()
			batch := make([]*models.Metric, 0, 100)
			var encoded []byte
			var disk, raw int64
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			size := 100
			if c.paced {
				size = 10
			}
			for n := 0; n < b.N; {
				if c.paced {
					time.Sleep(time.Until(start.Add(time.Duration(n) * time.Second / 10_000)))
				}
				batch = batch[:0]
				for ; len(batch) < size && n < b.N; n++ {
					m := p.metric(n)
					batch = append(batch, m)
					encoded = AppendMetric(encoded[:0], m)
					raw += int64(len(encoded))
				}
				buf.Add(batch...)
				if n%5000 == 0 || n == b.N {
					buf.Sync()
					disk += buf.Bytes()
					for tx := buf.Begin(5000); tx != nil; tx = buf.Begin(5000) {
						tx.All = true
						buf.End(tx)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/metric")
			b.ReportMetric(float64(disk)/float64(b.N), "disk-B/metric")
			b.ReportMetric(float64(raw)/float64(b.N), "encoded-B/metric")
		})
	}
}
