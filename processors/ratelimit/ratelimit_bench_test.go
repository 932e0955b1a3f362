package ratelimit

import (
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

// BenchmarkApply: 10,000 series of 8 fields arriving twice as often as the limit lets through
// (rate 1 per 10 s, a metric every 5 s): every other metric is dropped or folded, the others go
// through (and, when folding, take the folded values).
func BenchmarkApply(b *testing.B) {
	for _, fold := range []string{"drop", "mean"} {
		b.Run("fold="+fold, func(b *testing.B) {
			r := &RateLimit{Rate: 1, Period: 10 * 1e9, Burst: 1, Fold: fold, SeriesTTL: 3600 * 1e9}
			if err := r.Init(); err != nil {
				b.Fatal(err)
			}
			fields := make([]models.Field, 8)
			for i := range fields {
				fields[i] = models.Float("f"+string(rune('0'+i)), float64(i))
			}
			ms := seriestest.Series(10000, "modbus", t0, fields...)
			seriestest.Bench(b, ms, func(batch []*models.Metric) { r.Apply(batch...) }, func(pass int) {
				for _, m := range ms {
					m.Time = t0.Add(time.Duration(pass) * 5 * time.Second)
					m.Fields[0] = models.Float("f0", float64(pass))
				}
			})
		})
	}
}
