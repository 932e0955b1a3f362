// Package ratelimit is the ratelimit processor: a token bucket per series (or per chosen tags)
// lets at most `rate` metrics per `period` through, with `burst`; the excess is dropped or folded
// (last, mean, min or max, field by field) into the next metric let through.
package ratelimit

import (
	"context"
	_ "embed"
	"log/slog"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/processors"
	"github.com/tagpipe/tagpipe/processors/internal/series"
)

//go:embed sample.conf
var sampleConfig string

// RateLimit limits the metrics of each series. Apply is called from one goroutine (the
// processor's stage of the pipeline); it is not safe for concurrent use.
type RateLimit struct {
	Rate      float64         `toml:"rate"`
	Period    config.Duration `toml:"period"`
	Burst     int             `toml:"burst"`
	KeyTags   []string        `toml:"key_tags"`
	Fold      string          `toml:"fold"`
	SeriesTTL config.Duration `toml:"series_ttl"`
	Alias     string          `toml:"alias"`
	Log       *slog.Logger    `toml:"-"`

	fold   foldKind
	limit  rate.Limit
	table  *series.Table[bucket]
	out    []*models.Metric
	fields series.Fields
	forget func(*bucket)
	now    func() time.Time // wall clock of series_ttl; tests replace it

	stats   *models.Stats
	held    *models.Stat // series (or key_tags keys) held
	dropped *models.Stat // metrics dropped (fold = "drop", or folded values of a forgotten series)
	folded  *models.Stat // metrics folded into a later one
	merged  *models.Stat // metrics that took folded values
}

type foldKind uint8

const (
	foldDrop foldKind = iota
	foldLast
	foldMean
	foldMin
	foldMax
)

var foldNames = map[string]foldKind{"drop": foldDrop, "last": foldLast, "mean": foldMean, "min": foldMin, "max": foldMax}

// bucket is the state of one series: its token bucket and the fields folded since the last
// metric let through (keys[i] is the key of acc[i]).
type bucket struct {
	lim     *rate.Limiter
	keys    []string
	acc     []accum
	pending int // metrics folded in acc
}

// accum folds the values of one field: the last value, the count, and the running mean, minimum
// or maximum, kept in the field's own type (a mean of integers is rounded, so that a field never
// changes type: InfluxDB refuses a field that does).
type accum struct {
	n   int
	v   models.Field // last, min or max
	sum float64      // for the mean: exact for integers up to 2^53
}

func init() {
	processors.Add("ratelimit", func() models.Processor {
		return &RateLimit{Rate: 1, Period: config.Duration(10 * time.Second), Burst: 1, Fold: "drop",
			SeriesTTL: config.Duration(time.Hour)}
	})
}

// SampleConfig implements models.Processor.
func (*RateLimit) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer.
func (r *RateLimit) Init() error {
	if !(r.Rate > 0) || math.IsInf(r.Rate, 0) {
		return config.KeyErrorf("rate", "%v: must be more than 0", r.Rate)
	}
	if r.Period <= 0 {
		return config.KeyErrorf("period", "must be more than 0")
	}
	if r.Burst < 1 {
		return config.KeyErrorf("burst", "%d: must be at least 1", r.Burst)
	}
	f, ok := foldNames[r.Fold]
	if !ok {
		return config.KeyErrorf("fold", "%q: must be \"drop\", \"last\", \"mean\", \"min\" or \"max\"", r.Fold)
	}
	for i, k := range r.KeyTags {
		if k == "" {
			return config.KeyErrorf("key_tags", "entry %d is empty", i+1)
		}
	}
	r.fold = f
	r.limit = rate.Limit(r.Rate / r.Period.D().Seconds())
	// A forgotten series comes back with a full bucket. That is exact only if the bucket would
	// have filled up in the meantime anyway: series_ttl must cover the time a bucket takes to fill.
	fill := time.Duration(float64(r.Burst) / r.Rate * float64(r.Period))
	if r.SeriesTTL.D() < fill {
		return config.KeyErrorf("series_ttl", "%v: must be at least the time an empty bucket takes to fill "+
			"(burst/rate·period = %v), or a forgotten series would be let through early", r.SeriesTTL.D(), fill)
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	r.table = series.NewTable[bucket](r.SeriesTTL.D())
	r.forget = r.forgetBucket
	r.now = time.Now
	r.bindStats(series.NewStats("ratelimit", r.Alias, false))
	return nil
}

func (r *RateLimit) bindStats(s *models.Stats) {
	r.stats = s
	r.held, r.dropped, r.folded, r.merged = s.Get("series"), s.Get("dropped"), s.Get("folded"), s.Get("merged")
}

// Start implements models.ServiceProcessor: it registers the processor's stats.
func (r *RateLimit) Start(context.Context) error {
	r.bindStats(series.NewStats("ratelimit", r.Alias, true))
	return nil
}

// Stop implements models.ServiceProcessor. Values still folded are lost (they wait for a metric
// that will not come) and counted as dropped.
func (r *RateLimit) Stop() {
	r.table.Range(func(_ uint64, _ int64, b *bucket) bool { r.forgetBucket(b); return true })
	r.stats.Unregister()
}

func (r *RateLimit) forgetBucket(b *bucket) {
	r.dropped.Add(int64(b.pending))
	b.pending = 0
}

// Apply implements models.Processor.
func (r *RateLimit) Apply(in ...*models.Metric) []*models.Metric {
	now := r.now().UnixNano()
	out := r.out[:0]
	var dropped, folded int64
	for _, m := range in {
		key := m.SeriesHash()
		if len(r.KeyTags) > 0 {
			key = models.HashTags(m.Name, m.Tags, r.KeyTags)
		}
		b, isNew := r.table.Get(key, now)
		if isNew {
			b.lim = rate.NewLimiter(r.limit, r.Burst)
			b.keys, b.acc, b.pending = b.keys[:0], b.acc[:0], 0
		}
		// The bucket runs on the metrics' own time: a replay or a backlog is limited as it
		// happened, not as it arrives.
		if b.lim.AllowN(m.Time, 1) {
			if b.pending > 0 {
				r.mergeInto(b, m)
			}
			out = append(out, m)
			continue
		}
		if r.fold == foldDrop {
			dropped++
			continue
		}
		r.foldIn(b, m)
		folded++
	}
	r.dropped.Add(dropped)
	r.folded.Add(folded)
	r.table.Sweep(now, len(in)+16, r.forget)
	r.held.Set(int64(r.table.Len()))
	r.out = out
	return out
}

// foldIn adds the fields of a metric that was not let through to its bucket.
func (r *RateLimit) foldIn(b *bucket, m *models.Metric) {
	b.pending++
	for i, f := range m.Fields {
		j := series.FindKey(b.keys, i, f.Key)
		if j < 0 {
			b.keys = append(b.keys, f.Key)
			b.acc = append(b.acc, accum{})
			j = len(b.keys) - 1
		}
		b.acc[j].add(r.fold, f)
	}
}

// mergeInto folds the bucket's fields into m, the metric let through, and empties the bucket.
func (r *RateLimit) mergeInto(b *bucket, m *models.Metric) {
	missing := 0
	for j := range b.acc {
		a := &b.acc[j]
		if a.n == 0 {
			continue
		}
		i := fieldIndex(m.Fields, j, b.keys[j])
		if i < 0 {
			missing++
			continue
		}
		a.add(r.fold, m.Fields[i])
		m.Fields[i] = a.result(r.fold, b.keys[j])
		a.n = 0
	}
	if missing > 0 {
		// Fields only the folded metrics had: add their folded values.
		m.Fields = r.fields.Grow(m.Fields, missing)
		for j := range b.acc {
			if a := &b.acc[j]; a.n > 0 {
				m.Fields = append(m.Fields, a.result(r.fold, b.keys[j]))
				a.n = 0
			}
		}
	}
	b.pending = 0
	r.merged.Incr()
}

func fieldIndex(fs []models.Field, hint int, key string) int {
	if hint < len(fs) && fs[hint].Key == key {
		return hint
	}
	for i := range fs {
		if fs[i].Key == key {
			return i
		}
	}
	return -1
}

// add folds f in. A field whose type changed starts over with f.
func (a *accum) add(k foldKind, f models.Field) {
	if a.n == 0 || a.v.Type() != f.Type() {
		a.n, a.v = 1, f
		a.sum, _ = f.Number()
		return
	}
	a.n++
	switch k {
	case foldMean:
		if x, ok := f.Number(); ok {
			a.sum += x
		}
		a.v = f // strings and bools: the last value
	case foldMin:
		if f.Type() == models.TypeString || less(f, a.v) {
			a.v = f
		}
	case foldMax:
		if f.Type() == models.TypeString || less(a.v, f) {
			a.v = f
		}
	default:
		a.v = f
	}
}

// result returns the folded field.
func (a *accum) result(k foldKind, key string) models.Field {
	if k != foldMean {
		f := a.v
		f.Key = key
		return f
	}
	mean := a.sum / float64(a.n)
	switch a.v.Type() {
	case models.TypeFloat:
		return models.Float(key, mean)
	case models.TypeInt:
		return models.Int(key, int64(math.Round(mean)))
	case models.TypeUint:
		return models.Uint(key, uint64(math.Round(mean)))
	}
	f := a.v
	f.Key = key
	return f
}

// less orders two fields of one type in that type (false < true for bools, so that min is
// "all true" and max is "any true"); strings keep the last value, so never less.
func less(a, b models.Field) bool {
	switch a.Type() {
	case models.TypeFloat:
		return a.FloatV() < b.FloatV()
	case models.TypeInt:
		return a.IntV() < b.IntV()
	case models.TypeUint:
		return a.UintV() < b.UintV()
	case models.TypeBool:
		return !a.BoolV() && b.BoolV()
	}
	return false
}
