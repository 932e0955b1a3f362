package predict

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func load(t *testing.T, table string) *Predict { return seriestest.Load[*Predict](t, table) }

func value(sec int, fields ...models.Field) *models.Metric {
	return models.New("boiler", []models.Tag{{Key: "device", Value: "b1"}}, fields, t0.Add(time.Duration(sec)*time.Second))
}

func field(t *testing.T, m *models.Metric, key string) (models.Field, bool) {
	t.Helper()
	return m.Field(key)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// Holt with alpha = beta = 0.5 (all sums below are exact in binary floating point), warmup 3,
// window 4, anomaly_sigma 2:
//
//	x1 = 10: level 10, trend 0; no forecast yet.
//	x2 = 12: forecast 10+0 = 10, error 2 (1 value before: no flag)
//	         level = .5·12 + .5·10 = 11, trend = .5·(11−10) + .5·0 = 0.5
//	x3 = 14: forecast 11.5, error 2.5 (2 before: no flag)
//	         level = 7 + 5.75 = 12.75, trend = .5·1.75 + .5·.5 = 1.125
//	x4 = 16: forecast 13.875, error 2.125; 3 values before: flag.
//	         σ = √((2² + 2.5²)/2) = √5.125 = 2.264, 2σ = 4.528 > 2.125: no anomaly
//	         level = 8 + 6.9375 = 14.9375, trend = .5·2.1875 + .5·1.125 = 1.65625
//	x5 = 30: forecast 16.59375, error 13.40625
//	         σ = √((4 + 6.25 + 4.515625)/3) = √4.921875 = 2.2185, 2σ = 4.437 < 13.4: anomaly
//	         level = 15 + 8.296875 = 23.296875, trend = .5·8.359375 + .5·1.65625 = 5.0078125
//	x6 = 30: forecast 28.3046875, error 1.6953125; the window (4) holds 2, 2.5, 2.125, 13.40625:
//	         σ = √(194.4931640625/4) = 6.973, 2σ = 13.95 > 1.70: no anomaly
//	         and the error 2 leaves the window: Σe² = 6.25 + 4.515625 + 179.7275390625 + 2.87408447265625
func TestHolt(t *testing.T) {
	p := load(t, `
[[processors.predict]]
  forecast_fields = ["temp*"]
  alpha = 0.5
  beta = 0.5
  window = 4
  warmup = 3
  anomaly_sigma = 2.0
`)
	want := []struct {
		x        float64
		forecast float64 // NaN: none
		anomaly  int     // -1 none, 0 false, 1 true
	}{
		{10, math.NaN(), -1},
		{12, 10, -1},
		{14, 11.5, -1},
		{16, 13.875, 0},
		{30, 16.59375, 1},
		{30, 28.3046875, 0},
	}
	for i, w := range want {
		m := value(i, models.Float("temperature", w.x), models.Float("level", w.x), models.String("mode", "auto"))
		p.Apply(m)
		f, ok := field(t, m, "temperature_forecast")
		if math.IsNaN(w.forecast) {
			if ok {
				t.Errorf("x%d: forecast %v, want none", i+1, f.FloatV())
			}
		} else if !ok || f.Type() != models.TypeFloat || f.FloatV() != w.forecast {
			t.Errorf("x%d: forecast %v (present %v), want %v", i+1, f.Value(), ok, w.forecast)
		}
		a, ok := field(t, m, "temperature_anomaly")
		switch {
		case w.anomaly < 0 && ok:
			t.Errorf("x%d: anomaly flag %v before warm-up", i+1, a.BoolV())
		case w.anomaly >= 0 && (!ok || a.Type() != models.TypeBool || a.BoolV() != (w.anomaly == 1)):
			t.Errorf("x%d: anomaly %v (present %v), want %v", i+1, a.Value(), ok, w.anomaly == 1)
		}
		if _, ok := m.Field("level_forecast"); ok {
			t.Errorf("x%d: level does not match temp* but was forecast", i+1)
		}
	}
	s, _ := p.table.Lookup(value(0).SeriesHash())
	h := s.fields[0].h
	if want := 6.25 + 4.515625 + 179.7275390625 + 2.87408447265625; !near(h.sumSq, want) || h.rn != 4 {
		t.Errorf("error window: Σe² = %v over %d, want %v over 4", h.sumSq, h.rn, want)
	}
	if p.forecasts.Get() != 5 || p.anomalies.Get() != 1 {
		t.Errorf("forecasts %d anomalies %d, want 5 and 1", p.forecasts.Get(), p.anomalies.Get())
	}
}

// Integer fields are forecast as numbers; booleans and strings never.
func TestForecastTypes(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  forecast_fields = [\"*\"]\n")
	for i := range 3 {
		m := value(i, models.Int("count", int64(10*i)), models.Uint("u", 5), models.Bool("run", true), models.String("mode", "a"))
		p.Apply(m)
		if i == 0 {
			continue
		}
		// count: 0 then 10: forecast 0 (level 0, trend 0); level .5·10 = 5, trend .3·5 = 1.5
		// → at i = 2 the forecast is 6.5.
		if f, ok := m.Field("count_forecast"); !ok || f.FloatV() != []float64{0, 0, 6.5}[i] {
			t.Errorf("i=%d: count_forecast %v (present %v)", i, f.Value(), ok)
		}
		if _, ok := m.Field("u_forecast"); !ok {
			t.Errorf("i=%d: no u_forecast", i)
		}
		if _, ok := m.Field("run_forecast"); ok {
			t.Errorf("i=%d: a bool was forecast", i)
		}
		if _, ok := m.Field("mode_forecast"); ok {
			t.Errorf("i=%d: a string was forecast", i)
		}
	}
}

func health(sec int, rtt float64, timeouts uint64) *models.Metric {
	return models.New("modbus_health", []models.Tag{{Key: "device", Value: "plc-7"}}, []models.Field{
		models.Float("rtt_ms", rtt), models.Uint("requests", uint64(sec)), models.Uint("errors_timeout", timeouts),
		models.Uint("errors_reset", 0), models.String("breaker", "closed"),
	}, t0.Add(time.Duration(sec)*time.Second))
}

type linkWant struct {
	risk, stddev, slope float64 // NaN: field absent
	predicted           int     // -1 absent
}

func checkLink(t *testing.T, m *models.Metric, w linkWant) {
	t.Helper()
	for _, c := range []struct {
		key  string
		want float64
	}{{fieldRisk, w.risk}, {fieldStddev, w.stddev}, {fieldSlope, w.slope}} {
		f, ok := m.Field(c.key)
		if math.IsNaN(c.want) {
			if ok {
				t.Errorf("t=%v: %s = %v, want none", m.Time.Sub(t0), c.key, f.FloatV())
			}
			continue
		}
		if !ok || !near(f.FloatV(), c.want) {
			t.Errorf("t=%v: %s = %v (present %v), want %v", m.Time.Sub(t0), c.key, f.Value(), ok, c.want)
		}
	}
	f, ok := m.Field(fieldPredicted)
	if w.predicted < 0 && ok || w.predicted >= 0 && (!ok || f.BoolV() != (w.predicted == 1)) {
		t.Errorf("t=%v: %s = %v (present %v), want %d", m.Time.Sub(t0), fieldPredicted, f.Value(), ok, w.predicted)
	}
}

// The link model with window 4 and the default thresholds (80 ms, 15 ms/s). Times t relative to
// the newest sample, so for four samples 1 s apart dx = −1.5, −0.5, 0.5, 1.5 and Σdx² = 5.
func TestLinkTrend(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  window = 4\n")
	none := linkWant{math.NaN(), math.NaN(), math.NaN(), -1}
	for _, c := range []struct {
		m    *models.Metric
		want linkWant
	}{
		{health(0, 10, 0), none}, // warming up: 1, 2, 3 samples
		{health(1, 20, 0), none},
		{health(2, 30, 0), none},
		// 10, 20, 30, 40: mean 25, dy = −15, −5, 5, 15: σ = √(500/4) = √125;
		// slope = (22.5 + 2.5 + 2.5 + 22.5)/5 = 10 ms/s; risk = max(11.18/80, 10/15) = 2/3
		{health(3, 40, 0), linkWant{2.0 / 3, math.Sqrt(125), 10, 0}},
		// 20, 30, 40, 60: mean 37.5, dy = −17.5, −7.5, 2.5, 22.5: σ = √(875/4);
		// slope = (26.25 + 3.75 + 1.25 + 33.75)/5 = 13; risk 13/15
		{health(4, 60, 0), linkWant{13.0 / 15, math.Sqrt(875.0 / 4), 13, 0}},
		// 30, 40, 60, 90: mean 55, dy = −25, −15, 5, 35: σ = √(2100/4);
		// slope = (37.5 + 7.5 + 2.5 + 52.5)/5 = 20 ≥ 15: predicted, risk 1
		{health(5, 90, 0), linkWant{1, math.Sqrt(525), 20, 1}},
		// a timeout (errors_timeout 0 → 1): the 90 ms is the last answer's, not a new sample;
		// the window stays as it was, the link is failing: risk 1
		{health(6, 90, 1), linkWant{1, math.Sqrt(525), 20, 1}},
	} {
		p.Apply(c.m)
		checkLink(t, c.m, c.want)
	}
	if p.predictions.Get() != 2 {
		t.Errorf("disconnect_predictions = %d, want 2", p.predictions.Get())
	}
}

func TestLinkJitter(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  window = 4\n")
	// 10, 210, 210, 10: mean 110, dy = ±100: σ = 100 ≥ 80: predicted on jitter alone;
	// slope = (150 − 50 + 50 − 150)/5 = 0. risk = min(100/80, 1) = 1.
	for i, rtt := range []float64{10, 210, 210} {
		p.Apply(health(i, rtt, 0))
	}
	m := health(3, 10, 0)
	p.Apply(m)
	checkLink(t, m, linkWant{1, 100, 0, 1})
	// A counter that fell (the input restarted) is no failure; the 10 ms joins the window:
	// 210, 210, 10, 10: σ = 100, slope = (−150 − 50 − 50 − 150)/5 = −80: no risk from the trend.
	m = health(4, 10, 0)
	p.Apply(health(4, 10, 5)) // counter jumps to 5: a failure
	p.Apply(m)                // and back to 0: a reset, not a failure
	checkLink(t, m, linkWant{1, 100, -80, 1})
	// Calm: 10, 10, 10, 12: mean 10.5, dy = −.5, −.5, −.5, 1.5: σ = √(3/4) = 0.866;
	// slope = (.75 + .25 − .25 + 2.25)/5 = 0.6; risk = max(0.866/80, 0.6/15) = 0.04
	for i := 5; i < 8; i++ {
		p.Apply(health(i, 10, 0))
	}
	m = health(8, 12, 0)
	p.Apply(m)
	checkLink(t, m, linkWant{0.04, math.Sqrt(0.75), 0.6, 0})
}

// Metrics that are not health metrics get no link fields, even with an rtt_ms field.
func TestLinkOnlyHealth(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  window = 3\n  health_measurements = [\"*_health\"]\n")
	for i := range 5 {
		m := value(i, models.Float("rtt_ms", float64(100*i)))
		p.Apply(m)
		if len(m.Fields) != 1 {
			t.Fatalf("boiler metric got fields: %v", m.Fields)
		}
		h := models.New("opcua_health", nil, []models.Field{models.Float("rtt_ms", 5)}, m.Time)
		p.Apply(h)
		if _, ok := h.Field(fieldRisk); ok != (i >= 2) {
			t.Errorf("i=%d: opcua_health risk present %v, want %v (glob *_health, window 3)", i, ok, i >= 2)
		}
	}
}

func TestTTL(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  forecast_fields = [\"v\"]\n  series_ttl = \"10m\"\n")
	wall := t0
	p.now = func() time.Time { return wall }
	p.Apply(value(0, models.Float("v", 1)))
	m := value(1, models.Float("v", 1))
	p.Apply(m)
	if _, ok := m.Field("v_forecast"); !ok {
		t.Fatal("second value: no forecast")
	}
	wall = t0.Add(11 * time.Minute)
	p.Apply(models.New("other", nil, []models.Field{models.Float("v", 1)}, wall))
	if p.held.Get() != 1 {
		t.Fatalf("series = %d, want 1 (boiler forgotten after 10 min)", p.held.Get())
	}
	m = value(2, models.Float("v", 1))
	p.Apply(m)
	if _, ok := m.Field("v_forecast"); ok {
		t.Fatal("first value after forgetting was forecast: the state was not forgotten")
	}
}

func TestInitErrors(t *testing.T) {
	seriestest.InitErrors(t, []struct{ Table, Want string }{
		{"[[processors.predict]]\n  forecast_fields = [\"temp\", \"pres[\"]\n", `test.conf:2: processors.predict: forecast_fields: bad pattern "pres["`},
		{"[[processors.predict]]\n  health_measurements = [\"[\"]\n", `test.conf:2: processors.predict: health_measurements: bad pattern "["`},
		{"[[processors.predict]]\n  error_fields = [\"\"]\n", `test.conf:2: processors.predict: error_fields: bad pattern ""`},
		{"[[processors.predict]]\n  rtt_field = \"\"\n", `test.conf:2: processors.predict: rtt_field: must name`},
		{"[[processors.predict]]\n  window = 2\n", `test.conf:2: processors.predict: window: 2: must be 3..1000`},
		{"[[processors.predict]]\n  alpha = 0.0\n", `test.conf:2: processors.predict: alpha: 0: must be in (0, 1]`},
		{"[[processors.predict]]\n  alpha = 1.5\n", `test.conf:2: processors.predict: alpha: 1.5: must be in (0, 1]`},
		{"[[processors.predict]]\n  beta = -0.1\n", `test.conf:2: processors.predict: beta: -0.1: must be in [0, 1]`},
		{"[[processors.predict]]\n  anomaly_sigma = 0.0\n", `test.conf:2: processors.predict: anomaly_sigma: 0: must be more than 0`},
		{"[[processors.predict]]\n  rtt_stddev_threshold = -80.0\n", `test.conf:2: processors.predict: rtt_stddev_threshold: -80: must be more than 0`},
		{"[[processors.predict]]\n  decay_threshold = 0\n", `test.conf:2: processors.predict: decay_threshold: 0: must be more than 0`},
		{"[[processors.predict]]\n  warmup = -1\n", `test.conf:2: processors.predict: warmup: -1: must be 0 or more`},
	})
}

func TestSampleAndReadme(t *testing.T) {
	seriestest.CheckSample(t, sampleConfig)
}

// The link's running sums agree with a direct two-pass computation over the window after many
// samples (the ring wrapped hundreds of times), with times of today and RTTs around 500 ms.
func TestLinkSumsNoDrift(t *testing.T) {
	var l link
	l.reset(20)
	tm := t0.UnixNano()
	rnd := uint64(1)
	for i := range 10007 {
		rnd = rnd*6364136223846793005 + 1442695040888963407
		tm += int64(200*time.Millisecond) + int64(rnd>>40)%int64(50*time.Millisecond)
		l.push(tm, 500+float64(rnd>>50)/100+float64(i%7))
	}
	sd, slope := l.stats()
	// direct: means, then sums of squares about them
	var mx, my float64
	for i := range l.n {
		mx += float64(l.at[i]-tm) / 1e9
		my += l.rtt[i]
	}
	mx, my = mx/float64(l.n), my/float64(l.n)
	var sxx, sxy, syy float64
	for i := range l.n {
		dx, dy := float64(l.at[i]-tm)/1e9-mx, l.rtt[i]-my
		sxx, sxy, syy = sxx+dx*dx, sxy+dx*dy, syy+dy*dy
	}
	wantSD, wantSlope := math.Sqrt(syy/float64(l.n)), sxy/sxx
	if math.Abs(sd-wantSD) > 1e-9*wantSD || math.Abs(slope-wantSlope) > 1e-9*math.Abs(wantSlope)+1e-12 {
		t.Errorf("running sums: stddev %v slope %v; direct: %v %v", sd, slope, wantSD, wantSlope)
	}
}

// TestFreshAfterTakeover: a Fresh metric (cluster mode: the device just started on this agent)
// starts its series afresh, as a series never seen: no forecast from the window of an earlier
// watch.
func TestFreshAfterTakeover(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  forecast_fields = [\"v\"]\n")
	p.Apply(value(0, models.Float("v", 1)))
	m := value(1, models.Float("v", 1))
	p.Apply(m)
	if _, ok := m.Field("v_forecast"); !ok {
		t.Fatal("second value: no forecast")
	}
	m = value(60, models.Float("v", 5))
	m.Fresh = true
	p.Apply(m)
	if _, ok := m.Field("v_forecast"); ok {
		t.Fatal("a Fresh metric was forecast from the window held before")
	}
	m = value(61, models.Float("v", 5))
	p.Apply(m)
	if f, ok := m.Field("v_forecast"); !ok || f.FloatV() != 5 {
		t.Errorf("after the Fresh metric: forecast %v %v, want 5 (from the new window alone)", f.FloatV(), ok)
	}
}

// TestFieldRoom: once the processor is set up, a metric an input builds (models.NewMetric) has
// room for the fields it adds: they are appended in place, the metric's fields are not copied.
func TestFieldRoom(t *testing.T) {
	p := defaults()
	p.ForecastFields = []string{"temperature"}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		field models.Field
	}{{"modbus_health", models.Float("rtt_ms", 5)}, {"boiler", models.Float("temperature", 20)}} {
		added := 0
		for sec := range 30 {
			m := models.NewMetric(c.name, []models.Tag{{Key: "device", Value: "plc-7"}}, 2, t0.Add(time.Duration(sec)*time.Second))
			m.Fields = append(m.Fields, c.field, models.Uint("requests", uint64(sec)))
			before := &m.Fields[0]
			p.Apply(m)
			if len(m.Fields) <= 2 {
				continue // nothing added yet (a window fills first)
			}
			added++
			if &m.Fields[0] != before {
				t.Errorf("%s: %d fields after Apply, copied to a new slice (room %d)", c.name, len(m.Fields), models.FieldRoom())
			}
		}
		if added == 0 {
			t.Errorf("%s: no field added in 30 metrics", c.name)
		}
	}
}

// A series follows the plan made for its last metric only while its metrics have the same field
// keys in the same order: metrics whose keys move, come and go, change type, or are equal
// strings at other addresses get exactly what a processor that plans every metric anew gives
// them.
func TestPlanFollowsKeys(t *testing.T) {
	const conf = `
[[processors.predict]]
  forecast_fields = ["temp*"]
  window = 3
  warmup = 1
`
	reused, fresh := load(t, conf), load(t, conf)
	fresh.replan = true
	r := rand.New(rand.NewPCG(7, 8))
	keys := []string{"rtt_ms", "errors_timeout", "errors_other", "temperature", "temp_out", "level"}
	for i := range 3000 {
		// Mostly the same keys in the same order, sometimes another order or set.
		n := len(keys)
		order := []int{0, 1, 2, 3, 4, 5}
		if r.IntN(4) == 0 {
			r.Shuffle(n, func(a, b int) { order[a], order[b] = order[b], order[a] })
			n = 1 + r.IntN(n)
		}
		var a, b []models.Field
		for _, k := range order[:n] {
			x := float64(r.IntN(50))
			f := models.Float(keys[k], x)
			switch {
			case k == 1 || k == 2:
				f = models.Uint(keys[k], uint64(i/10+r.IntN(2)))
			case r.IntN(20) == 0:
				f = models.String(keys[k], "off")
			}
			if r.IntN(10) == 0 {
				f.Key = strings.Clone(f.Key) // the same key at another address
			}
			a, b = append(a, f), append(b, f)
		}
		name := []string{"modbus_health", "boiler"}[r.IntN(2)]
		tags := []models.Tag{{Key: "device", Value: "d" + strconv.Itoa(r.IntN(3))}}
		at := t0.Add(time.Duration(i) * time.Second)
		ma, mb := models.New(name, tags, a, at), models.New(name, tags, b, at)
		reused.Apply(ma)
		fresh.Apply(mb)
		if !slices.EqualFunc(ma.Fields, mb.Fields, models.Field.Equal) {
			t.Fatalf("metric %d (%s %v):\nplan kept  %v\nplan anew  %v", i, name, order[:n], ma.Fields, mb.Fields)
		}
	}
}
