// Package dedup is the dedup processor: report by exception. A field is dropped while its value
// stays within a deadband of the value last sent, and sent anyway every dedup_interval; a metric
// with no fields left is dropped. The last sent values survive a restart in a state file.
package dedup

import (
	"context"
	_ "embed"
	"log/slog"
	"math"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/processors"
	"github.com/tagpipe/tagpipe/processors/internal/series"
)

//go:embed sample.conf
var sampleConfig string

// Dedup drops fields that did not change. Apply is called from one goroutine; the state it keeps
// is shared with the saver that Start runs, under a lock taken once per batch.
type Dedup struct {
	DedupInterval     config.Duration `toml:"dedup_interval"`
	DeadbandAbs       float64         `toml:"deadband_abs"`
	DeadbandPct       float64         `toml:"deadband_pct"`
	Deadbands         []Deadband      `toml:"deadband"`
	StateFile         string          `toml:"state_file"`
	StateSaveInterval config.Duration `toml:"state_save_interval"`
	SeriesTTL         config.Duration `toml:"series_ttl"`
	Alias             string          `toml:"alias"`
	Log               *slog.Logger    `toml:"-"`

	bands    []band // [0]: deadband_abs/deadband_pct; [i+1]: Deadbands[i]
	interval int64  // dedup_interval in ns; 0: no heartbeat
	now      func() time.Time

	mu    sync.Mutex // guards table and dirty (Apply, the saver)
	table *series.Table[seriesState]
	dirty bool // state changed since the last save
	out   []*models.Metric

	stop chan struct{}
	done chan struct{}
	buf  []byte // the saver's encoding buffer

	stats          *models.Stats
	held           *models.Stat // series held
	fieldsDropped  *models.Stat
	metricsDropped *models.Stat
	saves          *models.Stat // state files written
	stateErrors    *models.Stat // state files that could not be read or written
}

// Deadband is a [[processors.dedup.deadband]] table: the deadband of the fields whose names match
// one of Fields (globs). The first table that matches a field wins.
type Deadband struct {
	Fields []string `toml:"fields"`
	Abs    float64  `toml:"abs"`
	Pct    float64  `toml:"pct"`
}

type band struct{ abs, pct float64 }

type seriesState struct {
	fields []fieldState // one per field key seen, in the order they came
}

// fieldState is the value of one field last sent, as raw bits (see series.Bits), and its time.
type fieldState struct {
	key  string
	str  string
	bits uint64
	sent int64 // metric time, unix ns
	typ  models.ValueType
	band int16 // index in bands; -1 until resolved (values loaded from the state file)
}

func init() {
	processors.Add("dedup", func() models.Processor {
		return &Dedup{
			DedupInterval:     config.Duration(10 * time.Minute),
			StateSaveInterval: config.Duration(time.Minute),
			SeriesTTL:         config.Duration(time.Hour),
		}
	})
}

// SampleConfig implements models.Processor.
func (*Dedup) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer.
func (d *Dedup) Init() error {
	if err := checkBand("deadband_abs", d.DeadbandAbs); err != nil {
		return err
	}
	if err := checkBand("deadband_pct", d.DeadbandPct); err != nil {
		return err
	}
	d.bands = append(d.bands[:0], band{d.DeadbandAbs, d.DeadbandPct})
	for i, db := range d.Deadbands {
		key := "deadband[" + strconv.Itoa(i) + "]"
		if len(db.Fields) == 0 {
			return config.KeyErrorf(key, "give the fields it applies to (fields = [\"temp*\"])")
		}
		for _, p := range db.Fields {
			if _, err := path.Match(p, ""); err != nil {
				return config.KeyErrorf(key+".fields", "bad pattern %q", p)
			}
		}
		if err := checkBand(key+".abs", db.Abs); err != nil {
			return err
		}
		if err := checkBand(key+".pct", db.Pct); err != nil {
			return err
		}
		d.bands = append(d.bands, band{db.Abs, db.Pct})
	}
	if len(d.bands) > math.MaxInt16 {
		return config.KeyErrorf("deadband", "%d tables: at most %d", len(d.Deadbands), math.MaxInt16-1)
	}
	if d.SeriesTTL <= 0 {
		return config.KeyErrorf("series_ttl", "must be more than 0 (state must stay bounded)")
	}
	if d.StateFile != "" && d.StateSaveInterval <= 0 {
		return config.KeyErrorf("state_save_interval", "must be more than 0")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	d.interval = int64(d.DedupInterval)
	d.table = series.NewTable[seriesState](d.SeriesTTL.D())
	d.now = time.Now
	d.bindStats(series.NewStats("dedup", d.Alias, false))
	return nil
}

func checkBand(key string, v float64) error {
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return config.KeyErrorf(key, "%v: must be 0 or more", v)
	}
	return nil
}

func (d *Dedup) bindStats(s *models.Stats) {
	d.stats = s
	d.held, d.fieldsDropped, d.metricsDropped = s.Gauge("series"), s.Get("fields_dropped"), s.Get("metrics_dropped")
	d.saves, d.stateErrors = s.Get("state_saves"), s.Get("state_errors")
}

// Start implements models.ServiceProcessor: it registers the stats, loads the state file (a
// missing one is a first start; a broken one is logged, counted, kept aside as FILE.corrupt and
// ignored) and saves the state every state_save_interval until Stop.
func (d *Dedup) Start(context.Context) error {
	d.bindStats(series.NewStats("dedup", d.Alias, true))
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	if d.StateFile == "" {
		close(d.done)
		return nil
	}
	d.load()
	go d.saveLoop(d.StateSaveInterval.D())
	return nil
}

// Stop implements models.ServiceProcessor: it ends the saver and saves the state once more.
func (d *Dedup) Stop() {
	if d.stop != nil {
		close(d.stop)
		<-d.done
	}
	if d.StateFile != "" {
		d.save()
	}
	d.stats.Unregister()
}

func (d *Dedup) saveLoop(every time.Duration) {
	defer close(d.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.save()
		}
	}
}

// Apply implements models.Processor.
func (d *Dedup) Apply(in ...*models.Metric) []*models.Metric {
	now := d.now().UnixNano()
	out := d.out[:0]
	var fieldsDropped, metricsDropped int64
	sent := false
	d.mu.Lock()
	for _, m := range in {
		s, isNew := d.table.Get(m.SeriesHash(), now)
		if isNew || m.Fresh { // a takeover: the values last sent here may not be the last sent
			s.fields = s.fields[:0]
		}
		t := m.Time.UnixNano()
		kept := m.Fields[:0] // in place: the fields are the metric's own
		for i := range m.Fields {
			if d.send(s, i, &m.Fields[i], t) {
				kept = append(kept, m.Fields[i])
			}
		}
		fieldsDropped += int64(len(m.Fields) - len(kept))
		if len(kept) == 0 {
			metricsDropped++
			continue
		}
		sent = true
		m.Fields = kept
		out = append(out, m)
	}
	if d.table.Sweep(now, len(in)+16, nil) > 0 || sent {
		d.dirty = true
	}
	d.held.Set(int64(d.table.Len()))
	d.mu.Unlock()
	d.fieldsDropped.Add(fieldsDropped)
	d.metricsDropped.Add(metricsDropped)
	d.out = out
	return out
}

// send decides whether field f (at index i of a metric of time t) goes on, and if so records it
// as the value last sent.
func (d *Dedup) send(s *seriesState, i int, f *models.Field, t int64) bool {
	typ, bits := f.Type(), series.Bits(f)
	j := series.Find(s.fields, i, f.Key, keyOf)
	if j < 0 {
		s.fields = append(s.fields, fieldState{key: f.Key, band: d.bandOf(f.Key)})
		j = len(s.fields) - 1
	} else {
		st := &s.fields[j]
		if st.band < 0 {
			st.band = d.bandOf(f.Key)
		}
		// A metric older than the value last sent (a clock set back, an input's backlog) is
		// sent as a heartbeat: better once too often than a silence of the clock's jump.
		due := d.interval > 0 && (t-st.sent >= d.interval || t < st.sent)
		if st.typ == typ && !due && !d.changed(st, typ, bits, f) {
			return false
		}
	}
	st := &s.fields[j]
	st.typ, st.bits, st.str, st.sent = typ, bits, f.StringV(), t
	return true
}

// changed reports whether a value of the type last sent moved out of the deadband: by at least
// max(abs, pct% of |last sent|), or at all when both are 0. Strings and booleans change when
// they differ. NaN differs from every number.
func (d *Dedup) changed(st *fieldState, typ models.ValueType, bits uint64, f *models.Field) bool {
	switch typ {
	case models.TypeString:
		return f.StringV() != st.str
	case models.TypeBool:
		return bits != st.bits
	}
	if bits == st.bits {
		return false
	}
	b := d.bands[st.band]
	if b.abs == 0 && b.pct == 0 {
		return true
	}
	last, v := series.Number(typ, st.bits), series.Number(typ, bits)
	if math.IsNaN(last) || math.IsNaN(v) {
		return true
	}
	return math.Abs(v-last) >= max(b.abs, b.pct/100*math.Abs(last))
}

// bandOf returns the index of the deadband of field key: the first [[deadband]] table with a
// matching pattern, else the processor's own (0). It runs once per field of a series.
func (d *Dedup) bandOf(key string) int16 {
	for i, db := range d.Deadbands {
		for _, p := range db.Fields {
			if ok, _ := path.Match(p, key); ok {
				return int16(i + 1)
			}
		}
	}
	return 0
}

func keyOf(f *fieldState) string { return f.key }
