package ratelimit

import (
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func load(t *testing.T, table string) *RateLimit { return seriestest.Load[*RateLimit](t, table) }

func metric(sec int, tags map[string]string, fields ...models.Field) *models.Metric {
	return models.New("boiler", models.TagsFromMap(tags), fields, t0.Add(time.Duration(sec)*time.Second))
}

// run applies one metric per call, as a pipeline of batches of one would, and returns the
// seconds of the metrics let through.
func run(r *RateLimit, ms ...*models.Metric) (passed []*models.Metric) {
	for _, m := range ms {
		passed = append(passed, r.Apply(m)...)
	}
	return passed
}

func seconds(ms []*models.Metric) []int {
	var out []int
	for _, m := range ms {
		out = append(out, int(m.Time.Sub(t0)/time.Second))
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The bucket of rate = 1 per 4 s holds burst = 2 tokens and gains 0.25 per second (all exact in
// binary floating point). Tokens before each metric at t = 0..8 s (a metric let through takes
// one; a refused one takes none):
//
//	t=0: 2 → through (1)      t=1: 1.25 → through (0.25)   t=2: 0.5 → no   t=3: 0.75 → no
//	t=4: 1.0 → through (0)    t=5: 0.25 → no   t=6: 0.5 → no   t=7: 0.75 → no   t=8: 1.0 → through
const bucketConf = `
[[processors.ratelimit]]
  rate = 1
  period = "4s"
  burst = 2
  fold = "%s"
`

func nineMetrics() []*models.Metric {
	var ms []*models.Metric
	for k := 0; k <= 8; k++ {
		// v = 10·(k+1), n = k², a bool and a string only at t=3 and t=6
		fs := []models.Field{models.Float("v", float64(10*(k+1))), models.Int("n", int64(k*k))}
		if k == 3 || k == 6 {
			fs = append(fs, models.Bool("alarm", k == 3), models.String("state", "warn"+string(rune('0'+k))))
		}
		ms = append(ms, metric(k, map[string]string{"device": "b1"}, fs...))
	}
	return ms
}

func TestDrop(t *testing.T) {
	r := load(t, strings.Replace(bucketConf, "%s", "drop", 1))
	passed := run(r, nineMetrics()...)
	if got, want := seconds(passed), []int{0, 1, 4, 8}; !equalInts(got, want) {
		t.Fatalf("let through at %v, want %v", got, want)
	}
	// The ones let through are untouched: t=4 has v=50, n=16 and no folded fields.
	if m := passed[2]; len(m.Fields) != 2 || m.Fields[0].FloatV() != 50 || m.Fields[1].IntV() != 16 {
		t.Errorf("t=4: fields %v", m.Fields)
	}
	if got := r.dropped.Get(); got != 5 {
		t.Errorf("dropped = %d, want 5 (t=2,3,5,6,7)", got)
	}
	if got := r.held.Get(); got != 1 {
		t.Errorf("series = %d, want 1", got)
	}
}

func TestFold(t *testing.T) {
	// t=4 takes t=2, t=3 and itself: v = 30, 40, 50; n = 4, 9, 16; t=3 adds alarm=true, state="warn3".
	// t=8 takes t=5, 6, 7 and itself: v = 60, 70, 80, 90; n = 25, 36, 49, 64; t=6: alarm=false, "warn6".
	for _, c := range []struct {
		fold     string
		v4, v8   float64
		n4, n8   int64
		al4, al8 bool
	}{
		// last: the latest value of each field; alarm and state only came with t=3 and t=6.
		{"last", 50, 90, 16, 64, true, false},
		// mean: (30+40+50)/3 = 40, (60+70+80+90)/4 = 75; n: 29/3 = 9.67 → 10, 174/4 = 43.5 → 44
		// (rounded half away from zero, so that n stays an integer field).
		{"mean", 40, 75, 10, 44, true, false},
		// min: 30, 60; n: 4, 25; min of one bool is itself.
		{"min", 30, 60, 4, 25, true, false},
		// max: 50, 90; n: 16, 64.
		{"max", 50, 90, 16, 64, true, false},
	} {
		t.Run(c.fold, func(t *testing.T) {
			r := load(t, strings.Replace(bucketConf, "%s", c.fold, 1))
			passed := run(r, nineMetrics()...)
			if got, want := seconds(passed), []int{0, 1, 4, 8}; !equalInts(got, want) {
				t.Fatalf("let through at %v, want %v", got, want)
			}
			check := func(m *models.Metric, v float64, n int64, alarm bool, state string) {
				t.Helper()
				if f, _ := m.Field("v"); f.Type() != models.TypeFloat || f.FloatV() != v {
					t.Errorf("t=%v: v = %v (%v), want %v", m.Time.Sub(t0), f.Value(), f.Type(), v)
				}
				if f, _ := m.Field("n"); f.Type() != models.TypeInt || f.IntV() != n {
					t.Errorf("t=%v: n = %v (%v), want int %v", m.Time.Sub(t0), f.Value(), f.Type(), n)
				}
				if f, ok := m.Field("alarm"); !ok || f.BoolV() != alarm {
					t.Errorf("t=%v: alarm = %v (present %v), want %v", m.Time.Sub(t0), f.Value(), ok, alarm)
				}
				if f, ok := m.Field("state"); !ok || f.StringV() != state {
					t.Errorf("t=%v: state = %v (present %v), want %q", m.Time.Sub(t0), f.Value(), ok, state)
				}
			}
			check(passed[2], c.v4, c.n4, c.al4, "warn3")
			check(passed[3], c.v8, c.n8, c.al8, "warn6")
			if len(passed[0].Fields) != 2 || len(passed[1].Fields) != 2 {
				t.Errorf("t=0, t=1 gained fields: %v / %v", passed[0].Fields, passed[1].Fields)
			}
			if r.folded.Get() != 5 || r.merged.Get() != 2 || r.dropped.Get() != 0 {
				t.Errorf("folded %d merged %d dropped %d, want 5, 2, 0", r.folded.Get(), r.merged.Get(), r.dropped.Get())
			}
		})
	}
}

// Min and max of booleans are "all true" and "any true"; of unsigned integers, in their own type.
func TestFoldBoolUint(t *testing.T) {
	conf := `
[[processors.ratelimit]]
  rate = 1
  period = "10s"
  burst = 1
  fold = "%s"
`
	// Through at t=0 and t=10 (one token per 10 s); t=10 takes t=3, t=6 and itself:
	// ok = true, false, true → min false, max true; u = 7, 3, 5 → min 3, max 7; mean 15/3 = 5.
	feed := func(fold string) *models.Metric {
		r := load(t, strings.Replace(conf, "%s", fold, 1))
		passed := run(r,
			metric(0, nil, models.Bool("ok", true), models.Uint("u", 1)),
			metric(3, nil, models.Bool("ok", true), models.Uint("u", 7)),
			metric(6, nil, models.Bool("ok", false), models.Uint("u", 3)),
			metric(10, nil, models.Bool("ok", true), models.Uint("u", 5)))
		if len(passed) != 2 {
			t.Fatalf("%s: %d through, want 2", fold, len(passed))
		}
		return passed[1]
	}
	for _, c := range []struct {
		fold string
		ok   bool
		u    uint64
	}{{"min", false, 3}, {"max", true, 7}, {"mean", true, 5}} {
		m := feed(c.fold)
		ok, _ := m.Field("ok")
		u, _ := m.Field("u")
		if ok.BoolV() != c.ok || u.Type() != models.TypeUint || u.UintV() != c.u {
			t.Errorf("%s: ok=%v u=%v (%v), want %v %v", c.fold, ok.BoolV(), u.Value(), u.Type(), c.ok, c.u)
		}
	}
}

// With key_tags = ["device"], the two registers of device d1 share one bucket (burst 1); d2 has
// its own.
func TestKeyTags(t *testing.T) {
	r := load(t, `
[[processors.ratelimit]]
  rate = 1
  period = "10s"
  key_tags = ["device"]
`)
	out := r.Apply(
		metric(0, map[string]string{"device": "d1", "reg": "a"}, models.Int("x", 1)),
		metric(0, map[string]string{"device": "d1", "reg": "b"}, models.Int("x", 2)),
		metric(0, map[string]string{"device": "d2", "reg": "a"}, models.Int("x", 3)),
	)
	if len(out) != 2 || out[0].Fields[0].IntV() != 1 || out[1].Fields[0].IntV() != 3 {
		t.Fatalf("let through %v, want x=1 (d1) and x=3 (d2)", out)
	}
	if r.held.Get() != 2 {
		t.Errorf("keys held = %d, want 2", r.held.Get())
	}
	// Without key_tags they are three series, all let through.
	r = load(t, "[[processors.ratelimit]]\n  rate = 1\n  period = \"10s\"\n")
	out = r.Apply(
		metric(0, map[string]string{"device": "d1", "reg": "a"}, models.Int("x", 1)),
		metric(0, map[string]string{"device": "d1", "reg": "b"}, models.Int("x", 2)),
		metric(0, map[string]string{"device": "d2", "reg": "a"}, models.Int("x", 3)),
	)
	if len(out) != 3 {
		t.Fatalf("whole series keys: %d through, want 3", len(out))
	}
}

// A series not seen for series_ttl (wall clock) is forgotten; folded values it still held are
// counted as dropped.
func TestTTL(t *testing.T) {
	r := load(t, `
[[processors.ratelimit]]
  rate = 1
  period = "1m"
  fold = "last"
  series_ttl = "1h"
`)
	wall := t0
	r.now = func() time.Time { return wall }
	a := map[string]string{"device": "a"}
	b := map[string]string{"device": "b"}
	r.Apply(metric(0, a, models.Int("x", 1)), metric(1, a, models.Int("x", 2))) // a: through, folded
	wall = t0.Add(30 * time.Minute)
	r.Apply(metric(1800, b, models.Int("x", 1)))
	if r.held.Get() != 2 {
		t.Fatalf("series = %d after 30 min, want 2", r.held.Get())
	}
	wall = t0.Add(61 * time.Minute) // a: 61 min unseen, b: 31 min
	r.Apply(metric(3660, b, models.Int("x", 2)))
	if r.held.Get() != 1 {
		t.Fatalf("series = %d after 61 min, want 1 (a forgotten)", r.held.Get())
	}
	if r.dropped.Get() != 1 {
		t.Errorf("dropped = %d, want 1 (a's folded x=2)", r.dropped.Get())
	}
	// a comes back with a full bucket, and without the forgotten fold.
	out := r.Apply(metric(3661, a, models.Int("x", 3)))
	if len(out) != 1 || out[0].Fields[0].IntV() != 3 {
		t.Fatalf("a after forgetting: %v", out)
	}
}

func TestInitErrors(t *testing.T) {
	seriestest.InitErrors(t, []struct{ Table, Want string }{
		{"[[processors.ratelimit]]\n  fold = \"median\"\n", `test.conf:2: processors.ratelimit: fold: "median": must be "drop", "last", "mean", "min" or "max"`},
		{"[[processors.ratelimit]]\n  alias = \"plc\"\n  rate = -1.5\n", `test.conf:3: processors.ratelimit "plc": rate: -1.5: must be more than 0`},
		{"[[processors.ratelimit]]\n  rate = 0\n", `test.conf:2: processors.ratelimit: rate: 0: must be more than 0`},
		{"[[processors.ratelimit]]\n\n  burst = 0\n", `test.conf:3: processors.ratelimit: burst: 0: must be at least 1`},
		{"[[processors.ratelimit]]\n  period = \"0s\"\n", `test.conf:2: processors.ratelimit: period: must be more than 0`},
		{"[[processors.ratelimit]]\n  key_tags = [\"device\", \"\"]\n", `test.conf:2: processors.ratelimit: key_tags: entry 2 is empty`},
		// rate 1 per 10 min with burst 12 fills in 2 h: a 1 h ttl would let a series burst early.
		{"[[processors.ratelimit]]\n  rate = 1\n  period = \"10m\"\n  burst = 12\n  series_ttl = \"1h\"\n",
			`test.conf:5: processors.ratelimit: series_ttl: 1h0m0s: must be at least the time an empty bucket takes to fill (burst/rate·period = 2h0m0s)`},
	})
}

// The sample loads (its defaults pass Init) and the README repeats it.
func TestSampleAndReadme(t *testing.T) {
	seriestest.CheckSample(t, sampleConfig)
}

// Stats are reported only between Start and Stop.
func TestStatsLifetime(t *testing.T) {
	r := load(t, "[[processors.ratelimit]]\n  alias = \"lifetime-test\"\n")
	find := func() bool {
		for _, m := range models.StatsSnapshot(t0) {
			if v, _ := m.Tag("alias"); m.Name == "internal_processor_ratelimit" && v == "lifetime-test" {
				return true
			}
		}
		return false
	}
	if find() {
		t.Fatal("stats reported before Start")
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.Apply(metric(0, nil, models.Int("x", 1)))
	if !find() {
		t.Fatal("stats not reported after Start")
	}
	r.Stop()
	if find() {
		t.Fatal("stats still reported after Stop")
	}
}
