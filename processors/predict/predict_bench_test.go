package predict

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/processors"
)

// BenchmarkValues: 10,000 series of 8 float fields. forecast=none: no forecast_fields (the
// metrics pass by). forecast=1: one field forecast, two fields added to every metric; room=0:
// the metrics come without spare capacity, so the fields are copied into a shared block
// (amortized in allocs/metric; the copy and the garbage it leaves are most of the cost), a
// reference, since no input of tagpipe builds such metrics (inputs.modbus uses models.NewMetric,
// inputs.opcua leaves models.FieldRoom after its fields: TestMetricsLeaveFieldRoom); room=4:
// the input left room for the added fields; built: the metrics as models.NewMetric builds them
// once the processor reserved its room (models.ReserveFieldRoom), as every input's are.
func BenchmarkValues(b *testing.B) {
	b.Run("forecast=none", func(b *testing.B) { benchValues(b, nil, 0) })
	for _, room := range []int{0, 4, built} {
		b.Run("forecast=1/"+roomName(room), func(b *testing.B) { benchValues(b, []string{"temperature"}, room) })
	}
}

func benchValues(b *testing.B, forecast []string, room int) {
	p := defaults()
	p.ForecastFields = forecast
	if err := p.Init(); err != nil {
		b.Fatal(err)
	}
	fields := make([]models.Field, 8)
	fields[0] = models.Float("temperature", 20)
	for i := 1; i < len(fields); i++ {
		fields[i] = models.Float("f"+strconv.Itoa(i), float64(i))
	}
	ms := seriestest.Series(10000, "boiler", t0, fields...)
	orig := spare(ms, room)
	seriestest.Bench(b, ms, func(batch []*models.Metric) { p.Apply(batch...) }, func(pass int) {
		for i, m := range ms {
			m.Fields = orig[i]
			m.Fields[0] = models.Float("temperature", 20+math.Sin(float64(pass+i)))
			m.Time = t0.Add(time.Duration(pass) * time.Second)
		}
	})
}

// BenchmarkHealth: 10,000 devices' modbus_health metrics (12 fields, as internal/resilience
// writes them), window 20: every metric gets the four link fields. room as in BenchmarkValues.
func BenchmarkHealth(b *testing.B) {
	for _, room := range []int{0, 4, built} {
		b.Run(roomName(room), func(b *testing.B) { benchHealth(b, room) })
	}
}

func benchHealth(b *testing.B, room int) {
	p := defaults()
	if err := p.Init(); err != nil {
		b.Fatal(err)
	}
	fields := []models.Field{
		models.Float("rtt_ms", 5), models.Float("rtt_ewma_ms", 5), models.Float("timeout_ms", 50),
		models.Uint("requests", 1), models.Uint("retries", 0), models.Uint("errors_timeout", 0),
		models.Uint("errors_refused", 0), models.Uint("errors_reset", 0), models.Uint("errors_exception", 0),
		models.Uint("errors_frame", 0), models.Uint("errors_other", 0), models.String("breaker", "closed"),
	}
	ms := seriestest.Series(10000, "modbus_health", t0, fields...)
	orig := spare(ms, room)
	seriestest.Bench(b, ms, func(batch []*models.Metric) { p.Apply(batch...) }, func(pass int) {
		for i, m := range ms {
			m.Fields = orig[i]
			m.Fields[0] = models.Float("rtt_ms", 5+float64((pass*7+i)%11))
			m.Fields[3] = models.Uint("requests", uint64(pass))
			m.Time = t0.Add(time.Duration(pass) * time.Second)
		}
	})
}

// defaults returns the processor as the registry makes it: with the defaults of sample.conf.
func defaults() *Predict { return processors.Registry["predict"]().(*Predict) }

// built is the room of a metric models.NewMetric built (FieldRoom).
const built = -1

func roomName(room int) string {
	if room == built {
		return "built"
	}
	return "room=" + strconv.Itoa(room)
}

// spare gives each metric's fields room for n more (built: as models.NewMetric builds them) and
// returns them, to be put back before every pass (Apply lengthens them).
func spare(ms []*models.Metric, n int) [][]models.Field {
	orig := make([][]models.Field, len(ms))
	for i, m := range ms {
		var fs []models.Field
		if n == built {
			fs = models.NewMetric(m.Name, m.Tags, len(m.Fields), m.Time).Fields
		} else {
			fs = make([]models.Field, 0, len(m.Fields)+n)
		}
		orig[i] = append(fs, m.Fields...)
		m.Fields = orig[i]
	}
	return orig
}
