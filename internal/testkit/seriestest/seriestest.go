// Package seriestest builds the load of the processors' benchmarks: many series fed in batches
// as the pipeline feeds them, measured per metric.
package seriestest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/models"
)

// Batch is the pipeline's largest batch (agent/pipeline.go), the size every benchmark feeds.
const Batch = 512

// Series returns one metric for each of n series: measurement name, tags device=dev-NNNNN,
// site=plant-1, unit=1, and the given fields (copied per metric, without spare capacity, as an
// input builds them), all at time t.
func Series(n int, name string, t time.Time, fields ...models.Field) []*models.Metric {
	ms := make([]*models.Metric, n)
	for i := range ms {
		tags := []models.Tag{{Key: "device", Value: fmt.Sprintf("dev-%05d", i)}, {Key: "site", Value: "plant-1"}, {Key: "unit", Value: "1"}}
		fs := make([]models.Field, len(fields))
		copy(fs, fields)
		ms[i] = models.New(name, tags, fs, t)
	}
	return ms
}

// Bench feeds ms to apply in batches of Batch, over and over, and reports ns/metric and
// allocs/metric (of the whole run, amortized allocations included). Before every pass over all
// of ms it calls next(pass) with the timer stopped, to move the metrics on (time, values).
func Bench(b *testing.B, ms []*models.Metric, apply func([]*models.Metric), next func(pass int)) {
	b.Helper()
	batches := (len(ms) + Batch - 1) / Batch
	// Two passes to create every series and its state (a processor may build part of it on a
	// series' second metric): the benchmark measures the steady state.
	for pass := range 2 {
		next(pass)
		for i := 0; i < len(ms); i += Batch {
			apply(ms[i:min(i+Batch, len(ms))])
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ops, pass, i := 0, 2, 0
	b.ResetTimer()
	for b.Loop() {
		if i == 0 {
			b.StopTimer()
			next(pass)
			pass++
			b.StartTimer()
		}
		apply(ms[i*Batch : min((i+1)*Batch, len(ms))])
		ops++
		if i++; i == batches {
			i = 0
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	metrics := float64(ops) * float64(len(ms)) / float64(batches)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/metrics, "ns/metric")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/metrics, "allocs/metric")
}

// Load builds the processor of a one-table config text as the agent does (decoding, Init, the
// loader's FILE:LINE errors), with "test.conf" for the file name.
func Load[P models.Processor](t testing.TB, table string) P {
	t.Helper()
	cfg, err := config.LoadText("test.conf", table, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Processors[0].Plugin.(P)
}

// InitErrors checks that each config text fails to load with an error containing its message.
func InitErrors(t *testing.T, cases []struct{ Table, Want string }) {
	t.Helper()
	for _, c := range cases {
		_, err := config.LoadText("test.conf", c.Table, nil)
		if err == nil || !strings.Contains(err.Error(), c.Want) {
			t.Errorf("%q:\n got %v\nwant %s", c.Table, err, c.Want)
		}
	}
}

// CheckSample checks that a plugin's sample config loads (its values pass Init) and that the
// README.md of the test's folder repeats it verbatim.
func CheckSample(t *testing.T, sample string) {
	t.Helper()
	if _, err := config.LoadText("sample.conf", sample, nil); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), sample) {
		t.Error("README.md does not contain sample.conf verbatim")
	}
}

// ReadLP reads a line protocol file (millisecond times, # comments) into metrics.
func ReadLP(t testing.TB, path string) []*models.Metric {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ms := lptest.Parse(t, data, lineprotocol.Millisecond)
	if len(ms) == 0 {
		t.Fatalf("%s holds no metrics", path)
	}
	return ms
}
