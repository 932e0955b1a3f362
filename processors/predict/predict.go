// Package predict is the predict processor: two cheap models on per-series sliding windows.
//
//  1. Link health, from the inputs' health metrics (modbus_health, opcua_health): the standard
//     deviation of the last `window` round-trip times and their trend (ms per second, by least
//     squares over the window) give disconnect_risk (0..1) and disconnect_predicted.
//  2. Values: a Holt (double exponential smoothing) forecast of chosen fields, adding
//     FIELD_forecast and, after a warm-up, FIELD_anomaly when a value is further than
//     anomaly_sigma standard deviations of the recent forecast errors from its forecast.
package predict

import (
	"context"
	_ "embed"
	"log/slog"
	"math"
	"path"
	"time"
	"unsafe"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/processors"
	"github.com/tagpipe/tagpipe/processors/internal/series"
)

//go:embed sample.conf
var sampleConfig string

// Predict adds predictions to metrics. Apply is called from one goroutine; it is not safe for
// concurrent use.
type Predict struct {
	HealthMeasurements []string        `toml:"health_measurements"`
	RTTField           string          `toml:"rtt_field"`
	ErrorFields        []string        `toml:"error_fields"`
	Window             int             `toml:"window"`
	RTTStddevThreshold float64         `toml:"rtt_stddev_threshold"`
	DecayThreshold     float64         `toml:"decay_threshold"`
	ForecastFields     []string        `toml:"forecast_fields"`
	Alpha              float64         `toml:"alpha"`
	Beta               float64         `toml:"beta"`
	AnomalySigma       float64         `toml:"anomaly_sigma"`
	Warmup             int             `toml:"warmup"`
	SeriesTTL          config.Duration `toml:"series_ttl"`
	Alias              string          `toml:"alias"`
	Log                *slog.Logger    `toml:"-"`

	table  *series.Table[seriesState]
	health map[string]bool     // measurement name → one of health_measurements (a cache)
	names  map[string]*derived // FIELD_forecast and FIELD_anomaly, built once per field name
	add    []models.Field      // fields to add to the metric at hand
	fields series.Fields
	now    func() time.Time

	stats       *models.Stats
	held        *models.Stat // series held
	forecasts   *models.Stat // FIELD_forecast fields added
	anomalies   *models.Stat // FIELD_anomaly = true
	predictions *models.Stat // disconnect_predicted = true

	publish bool // between Start and Stop: risks go to the board of link risks (the device page)
	replan  bool // plan every metric anew (TestPlanFollowsKeys's reference)
}

// Field kinds, found once per field of a series.
const (
	kindForecast uint8 = 1 << iota
	kindRTT
	kindErrors
)

// Names of the fields the link model adds to a health metric.
const (
	fieldRisk      = "disconnect_risk"
	fieldPredicted = "disconnect_predicted"
	fieldStddev    = "rtt_stddev_ms"
	fieldSlope     = "rtt_slope_ms_per_s"
)

type seriesState struct {
	health bool // the measurement is one of health_measurements
	link   link
	// board is where the link's risk is published for the device page (models.LinkRisk),
	// keyed by the device and controller tags; nil: the metric has neither.
	board    *models.LinkRisk
	boardKey models.LinkKey
	fields   []fieldState // one per field key seen, in the order they came
	// The plan of the series' metrics: keys are the field keys of the metric it was made for,
	// in order, and plan the fields among them that a model reads. A metric with the same keys
	// (the same strings, as an input's metrics of a device have) follows the plan without
	// looking its keys up in fields.
	keys []string
	plan []planStep
}

// planStep is a field a model reads: its index in the metric, the index of its state in fields
// and its kind.
type planStep struct {
	field, state int32
	kind         uint8
}

type fieldState struct {
	key  string
	kind uint8
	h    *holt // kindForecast only
	name *derived
}

type derived struct{ forecast, anomaly string }

func init() {
	processors.Add("predict", func() models.Processor {
		return &Predict{
			HealthMeasurements: []string{"modbus_health", "opcua_health"},
			RTTField:           "rtt_ms",
			ErrorFields:        []string{"errors_*"},
			Window:             20,
			RTTStddevThreshold: 80,
			DecayThreshold:     15,
			Alpha:              0.5,
			Beta:               0.3,
			AnomalySigma:       3,
			Warmup:             10,
			SeriesTTL:          config.Duration(time.Hour),
		}
	})
}

// SampleConfig implements models.Processor.
func (*Predict) SampleConfig() string { return sampleConfig }

// maxWindow bounds the windows (each a ring of float64s per series): 10,000 series of the
// largest window then hold 160 MB for the link model alone.
const maxWindow = 1000

// Init implements models.Initializer.
func (p *Predict) Init() error {
	for _, c := range []struct {
		key      string
		patterns []string
	}{
		{"health_measurements", p.HealthMeasurements},
		{"error_fields", p.ErrorFields},
		{"forecast_fields", p.ForecastFields},
	} {
		for _, pat := range c.patterns {
			if _, err := path.Match(pat, ""); err != nil || pat == "" {
				return config.KeyErrorf(c.key, "bad pattern %q", pat)
			}
		}
	}
	if len(p.HealthMeasurements) > 0 && p.RTTField == "" {
		return config.KeyErrorf("rtt_field", "must name the round-trip time field of the health metrics")
	}
	if p.Window < 3 || p.Window > maxWindow {
		return config.KeyErrorf("window", "%d: must be 3..%d", p.Window, maxWindow)
	}
	for _, c := range []struct {
		key    string
		v      float64
		lo, hi float64
		loOpen bool
		want   string
	}{
		{"rtt_stddev_threshold", p.RTTStddevThreshold, 0, math.Inf(1), true, "more than 0"},
		{"decay_threshold", p.DecayThreshold, 0, math.Inf(1), true, "more than 0"},
		// alpha 0 would never move the level; beta 0 is plain exponential smoothing (no trend).
		{"alpha", p.Alpha, 0, 1, true, "in (0, 1]"},
		{"beta", p.Beta, 0, 1, false, "in [0, 1]"},
		{"anomaly_sigma", p.AnomalySigma, 0, math.Inf(1), true, "more than 0"},
	} {
		if math.IsNaN(c.v) || c.v < c.lo || (c.loOpen && c.v == c.lo) || c.v > c.hi || math.IsInf(c.v, 0) {
			return config.KeyErrorf(c.key, "%v: must be %s", c.v, c.want)
		}
	}
	if p.Warmup < 0 {
		return config.KeyErrorf("warmup", "%d: must be 0 or more", p.Warmup)
	}
	if p.SeriesTTL <= 0 {
		return config.KeyErrorf("series_ttl", "must be more than 0 (state must stay bounded)")
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	p.table = series.NewTable[seriesState](p.SeriesTTL.D())
	p.names = map[string]*derived{}
	p.health = map[string]bool{}
	p.now = time.Now
	p.bindStats(series.NewStats("predict", p.Alias, false))
	// Room in every metric the inputs build for the fields added here, so that they are appended
	// in place: the link model's four (disconnect_risk and its three), a forecast and an anomaly
	// flag per forecast field (patterns may match more: those then copy).
	models.ReserveFieldRoom(min(max(linkFields, 2*len(p.ForecastFields)), 8))
	return nil
}

// linkFields is how many fields the link model adds to a health metric.
const linkFields = 4

func (p *Predict) bindStats(s *models.Stats) {
	p.stats = s
	p.held, p.forecasts = s.Gauge("series"), s.Get("forecasts")
	p.anomalies, p.predictions = s.Get("anomalies"), s.Get("disconnect_predictions")
}

// Start implements models.ServiceProcessor: it registers the processor's stats.
// It also publishes each link's disconnect_risk for the device page from now on.
func (p *Predict) Start(context.Context) error {
	p.bindStats(series.NewStats("predict", p.Alias, true))
	p.publish = true
	return nil
}

// Stop implements models.ServiceProcessor: it takes its links off the board of link risks.
func (p *Predict) Stop() {
	p.stats.Unregister()
	p.publish = false
	p.table.Range(func(_ uint64, _ int64, s *seriesState) bool {
		forget(s)
		return true
	})
}

// Apply implements models.Processor. Every metric goes on, some with fields added.
func (p *Predict) Apply(in ...*models.Metric) []*models.Metric {
	now := p.now().UnixNano()
	var forecasts, anomalies, predictions int64
	for _, m := range in {
		health := p.isHealth(m.Name)
		if !health && len(p.ForecastFields) == 0 {
			continue // nothing to do, and no state to keep
		}
		s, isNew := p.table.Get(m.SeriesHash(), now)
		if isNew || m.Fresh { // a takeover: the window held here is of another time
			s.reset(p.Window, health)
			if health && p.publish {
				s.publish(m)
			}
		}
		p.add = p.add[:0]
		var rtt, errs float64
		var hasRTT, hasErrs bool
		if p.replan || !s.planned(m.Fields) {
			p.plan(s, m.Fields)
		}
		for _, st := range s.plan {
			f := &m.Fields[st.field]
			if f.Type() == models.TypeString {
				continue
			}
			x, _ := f.Number()
			if st.kind&kindRTT != 0 {
				rtt, hasRTT = x, true
			}
			if st.kind&kindErrors != 0 {
				errs, hasErrs = errs+x, true
			}
			if st.kind&kindForecast != 0 && f.Type() != models.TypeBool {
				fs := &s.fields[st.state]
				forecast, ok, anomaly, flagged := fs.h.step(x, p)
				if ok {
					p.add = append(p.add, models.Float(fs.name.forecast, forecast))
					forecasts++
				}
				if flagged {
					p.add = append(p.add, models.Bool(fs.name.anomaly, anomaly))
					if anomaly {
						anomalies++
					}
				}
			}
		}
		if s.health {
			if p.linkStep(&s.link, m.Time.UnixNano(), rtt, hasRTT, errs, hasErrs, s.board) {
				predictions++
			}
		}
		if len(p.add) > 0 {
			m.Fields = append(p.fields.Grow(m.Fields, len(p.add)), p.add...)
		}
	}
	p.forecasts.Add(forecasts)
	p.anomalies.Add(anomalies)
	p.predictions.Add(predictions)
	p.table.Sweep(now, len(in)+16, forget)
	p.held.Set(int64(p.table.Len()))
	return in
}

// forget takes a forgotten series off the link-risk board.
func forget(s *seriesState) {
	if s.board != nil {
		models.ForgetLinkRisk(s.boardKey)
		s.board = nil
	}
}

// publish puts the link of health metric m on the board of link risks, named as the inputs
// name their devices: Modbus by the tags device and controller, OPC UA by source and endpoint.
func (s *seriesState) publish(m *models.Metric) {
	var k models.LinkKey
	for _, t := range m.Tags {
		switch t.Key {
		case "device", "source":
			k.Device = t.Value
		case "controller", "endpoint":
			k.Controller = t.Value
		}
	}
	if k.Device != "" && k.Controller != "" {
		s.board, s.boardKey = models.PublishLinkRisk(k), k
	}
}

// reset readies the state of a new series (or of a forgotten one, reusing its buffers).
func (s *seriesState) reset(window int, health bool) {
	s.health = health
	s.board = nil
	s.fields, s.keys, s.plan = s.fields[:0], s.keys[:0], s.plan[:0]
	if health {
		s.link.reset(window)
	}
}

// maxNames bounds the cache of measurement names (a name that is not kept is matched again).
const maxNames = 10000

// isHealth reports whether measurement name is one of health_measurements.
func (p *Predict) isHealth(name string) bool {
	if v, ok := p.health[name]; ok {
		return v
	}
	v := matchAny(p.HealthMeasurements, name)
	if len(p.health) < maxNames {
		p.health[name] = v
	}
	return v
}

// planned reports whether fs has the keys s's plan was made for: the same strings (compared by
// address, which is enough: the plan holds on to them) in the same order.
func (s *seriesState) planned(fs []models.Field) bool {
	if len(fs) != len(s.keys) {
		return false
	}
	for i := range fs {
		k, pk := fs[i].Key, s.keys[i]
		if unsafe.StringData(k) != unsafe.StringData(pk) || len(k) != len(pk) {
			return false
		}
	}
	return true
}

// plan makes s's plan for metrics with the fields fs, adding the state of fields not seen before.
func (p *Predict) plan(s *seriesState, fs []models.Field) {
	s.keys, s.plan = s.keys[:0], s.plan[:0]
	for i := range fs {
		key := fs[i].Key
		j := series.Find(s.fields, i, key, keyOf)
		if j < 0 {
			j = p.newField(s, key)
		}
		s.keys = append(s.keys, key)
		if k := s.fields[j].kind; k != 0 {
			s.plan = append(s.plan, planStep{field: int32(i), state: int32(j), kind: k})
		}
	}
}

// newField adds the state of field key to s and returns its index. Patterns are matched here,
// once per field of a series, never per metric.
func (p *Predict) newField(s *seriesState, key string) int {
	fs := fieldState{key: key}
	if s.health {
		if key == p.RTTField {
			fs.kind |= kindRTT
		}
		if matchAny(p.ErrorFields, key) {
			fs.kind |= kindErrors
		}
	}
	if matchAny(p.ForecastFields, key) {
		fs.kind |= kindForecast
		fs.h = newHolt(p.Window)
		fs.name = p.names[key]
		if fs.name == nil {
			fs.name = &derived{forecast: key + "_forecast", anomaly: key + "_anomaly"}
			p.names[key] = fs.name
		}
	}
	s.fields = append(s.fields, fs)
	return len(s.fields) - 1
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

func keyOf(f *fieldState) string { return f.key }
