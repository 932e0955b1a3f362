package dedup

import (
	"strconv"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

// BenchmarkApply: 10,000 series of 8 float fields with a deadband, every pass a second later.
// changed=1: one field moves out of the deadband each time, seven stay (each metric goes on with
// one field); changed=0: nothing moves (every metric is dropped).
func BenchmarkApply(b *testing.B) {
	for _, changed := range []int{1, 0} {
		b.Run("changed="+strconv.Itoa(changed), func(b *testing.B) {
			d := &Dedup{DeadbandAbs: 0.5, DedupInterval: config.Duration(10 * time.Minute), SeriesTTL: config.Duration(time.Hour)}
			if err := d.Init(); err != nil {
				b.Fatal(err)
			}
			fields := make([]models.Field, 8)
			for i := range fields {
				fields[i] = models.Float("f"+strconv.Itoa(i), float64(i))
			}
			ms := seriestest.Series(10000, "modbus", t0, fields...)
			seriestest.Bench(b, ms, func(batch []*models.Metric) { d.Apply(batch...) }, func(pass int) {
				for _, m := range ms {
					// dedup shortened the fields in place: put all 8 back.
					m.Fields = m.Fields[:8]
					copy(m.Fields, fields)
					if changed > 0 {
						m.Fields[0] = models.Float("f0", float64(pass))
					}
					m.Time = t0.Add(time.Duration(pass) * time.Second)
				}
			})
		})
	}
}

// BenchmarkEncodeState: the part of a save that holds the lock Apply takes (the write to disk
// comes after), for 10,000 series of 8 fields.
func BenchmarkEncodeState(b *testing.B) {
	d := &Dedup{SeriesTTL: config.Duration(time.Hour)}
	if err := d.Init(); err != nil {
		b.Fatal(err)
	}
	fields := make([]models.Field, 8)
	for i := range fields {
		fields[i] = models.Float("f"+strconv.Itoa(i), float64(i))
	}
	ms := seriestest.Series(10000, "modbus", t0, fields...)
	d.Apply(ms...)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = encodeState(buf[:0], d.table)
	}
	b.ReportMetric(float64(len(buf)), "bytes/file")
}
