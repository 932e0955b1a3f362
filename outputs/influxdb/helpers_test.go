package influxdb

import (
	"context"
	"fmt"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

// logBuf is the log an output writes in a test.
type logBuf = outputtest.Log

func testLogger(t testing.TB) (*slog.Logger, *logBuf) { return outputtest.NewLogger(t) }

// fastRetries makes a writer's backoff short enough for tests.
func fastRetries(w *writer) {
	w.minWait, w.maxWait = 20*time.Millisecond, 100*time.Millisecond
}

// connect returns a connected output made by its registry entry (so with its defaults) and
// changed by mod, logging into the returned buffer.
func connect[T interface {
	models.Output
	models.Initializer
}](t testing.TB, name string, mod func(T)) (T, *logBuf) {
	t.Helper()
	o := outputs.Registry[name]().(T)
	log, lb := testLogger(t)
	v := reflect.ValueOf(o).Elem()
	v.FieldByName("Log").Set(reflect.ValueOf(log))
	mod(o)
	if err := o.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	fastRetries(v.FieldByName("HTTPOptions").Addr().Interface().(*HTTPOptions).w)
	if err := o.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o, lb
}

func newV1(t testing.TB, mod func(*InfluxDB)) (*InfluxDB, *logBuf) {
	t.Helper()
	return connect(t, "influxdb", mod)
}

func newV2(t testing.TB, mod func(*InfluxDBv2)) (*InfluxDBv2, *logBuf) {
	t.Helper()
	return connect(t, "influxdb_v2", mod)
}

// plcMetrics returns n metrics of measurement name, one per millisecond from base, with every
// field type (the string field only withString: VictoriaMetrics stores no strings).
func plcMetrics(name string, n int, base time.Time, withString bool) []*models.Metric {
	ms := make([]*models.Metric, n)
	for i := range ms {
		fields := []models.Field{
			models.Float("temp", float64(i%1000)+0.25),
			models.Int("count", -int64(i)),
			models.Bool("on", i%2 == 0),
			models.Uint("raw", uint64(i)*3),
		}
		if withString {
			fields = append(fields, models.String("state", "run "+strconv.Itoa(i)+` "quoted", \ done`))
		}
		ms[i] = models.New(name, []models.Tag{
			{Key: "device", Value: "plc" + strconv.Itoa(i%7)}, {Key: "line", Value: "L " + strconv.Itoa(i%3)},
		}, fields, base.Add(time.Duration(i)*time.Millisecond))
	}
	return ms
}

// influxExpect is what InfluxDB must hold after ms were written, keyed as server.points.
func influxExpect(ms []*models.Metric) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		tags := map[string]string{}
		for _, t := range m.Tags {
			tags[t.Key] = t.Value
		}
		fields := map[string]string{}
		for _, f := range m.Fields {
			fields[f.Key] = valueString(f, false)
		}
		out[tsdb.PointKey(m.Name, tags, m.Time.UnixNano())] = tsdb.FieldString(fields)
	}
	return out
}

// vmExpect is what VictoriaMetrics must hold after ms were written: one sample per numeric
// field, named measurement_field, with the extra labels it adds (db for /write).
func vmExpect(ms []*models.Metric, extra map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		tags := maps.Clone(extra)
		if tags == nil {
			tags = map[string]string{}
		}
		for _, t := range m.Tags {
			tags[t.Key] = t.Value
		}
		for _, f := range m.Fields {
			if f.Type() == models.TypeString {
				continue
			}
			out[tsdb.PointKey(m.Name+"_"+f.Key, tags, m.Time.UnixMilli())] = valueString(f, true)
		}
	}
	return out
}

func valueString(f models.Field, numericBool bool) string {
	switch f.Type() {
	case models.TypeFloat:
		return strconv.FormatFloat(f.FloatV(), 'g', -1, 64)
	case models.TypeInt:
		return strconv.FormatInt(f.IntV(), 10)
	case models.TypeUint:
		return strconv.FormatUint(f.UintV(), 10)
	case models.TypeBool:
		if numericBool {
			if f.BoolV() {
				return "1"
			}
			return "0"
		}
		return strconv.FormatBool(f.BoolV())
	}
	return f.StringV()
}

// compare fails the test unless got holds exactly want, naming a few differences.
func compare(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	var missing, extra, differ []string
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g != v:
			differ = append(differ, fmt.Sprintf("%s: got %s, want %s", k, g, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra)+len(differ) == 0 {
		return
	}
	first := func(s []string) []string {
		slices.Sort(s)
		return s[:min(len(s), 5)]
	}
	t.Fatalf("%s: %d points, want %d; %d missing %q, %d unexpected %q, %d differ %q", what, len(got), len(want),
		len(missing), first(missing), len(extra), first(extra), len(differ), first(differ))
}

// recentBase is a millisecond-aligned time an hour ago: VictoriaMetrics keeps milliseconds and
// refuses far-off times; InfluxDB takes anything.
func recentBase() time.Time { return time.Now().Add(-time.Hour).Truncate(time.Second) }
