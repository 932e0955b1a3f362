package dedup

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func load(t *testing.T, table string) *Dedup { return seriestest.Load[*Dedup](t, table) }

func at(d time.Duration, fields ...models.Field) *models.Metric {
	return models.New("plc", []models.Tag{{Key: "device", Value: "p1"}}, fields, t0.Add(d))
}

// feed applies one metric per call and returns, per metric, the fields let through ("" when the
// metric was dropped), written as key=value lists.
func feed(d *Dedup, ms ...*models.Metric) []string {
	var out []string
	for _, m := range ms {
		res := d.Apply(m)
		var parts []string
		for _, r := range res {
			for _, f := range r.Fields {
				parts = append(parts, f.Key+"="+fmtValue(f))
			}
		}
		out = append(out, strings.Join(parts, ","))
	}
	return out
}

func fmtValue(f models.Field) string {
	switch f.Type() {
	case models.TypeFloat:
		return strconv.FormatFloat(f.FloatV(), 'g', -1, 64)
	case models.TypeInt:
		return strconv.FormatInt(f.IntV(), 10)
	case models.TypeUint:
		return strconv.FormatUint(f.UintV(), 10)
	case models.TypeBool:
		return strconv.FormatBool(f.BoolV())
	}
	return strconv.Quote(f.StringV())
}

func expect(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d results %q, want %d %q", len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("metric %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

func TestUnchangedDropped(t *testing.T) {
	d := load(t, "[[processors.dedup]]\n")
	got := feed(d,
		at(0, models.Float("temp", 20), models.Int("count", 7), models.Bool("run", true), models.String("mode", "auto")),
		// nothing changed: the metric has no fields left and is dropped
		at(time.Second, models.Float("temp", 20), models.Int("count", 7), models.Bool("run", true), models.String("mode", "auto")),
		// one of each type changes at a time; without a deadband any change is sent
		at(2*time.Second, models.Float("temp", 20.001), models.Int("count", 7), models.Bool("run", true), models.String("mode", "auto")),
		at(3*time.Second, models.Float("temp", 20.001), models.Int("count", 8), models.Bool("run", true), models.String("mode", "auto")),
		at(4*time.Second, models.Float("temp", 20.001), models.Int("count", 8), models.Bool("run", false), models.String("mode", "auto")),
		at(5*time.Second, models.Float("temp", 20.001), models.Int("count", 8), models.Bool("run", false), models.String("mode", "hand")),
		// a field whose type changed is sent
		at(6*time.Second, models.Int("temp", 20)),
	)
	expect(t, got, []string{
		`temp=20,count=7,run=true,mode="auto"`,
		"",
		"temp=20.001",
		"count=8",
		"run=false",
		`mode="hand"`,
		"temp=20",
	})
	if d.fieldsDropped.Get() != 4+3+3+3+3 || d.metricsDropped.Get() != 1 {
		t.Errorf("fields_dropped %d (want 16), metrics_dropped %d (want 1)", d.fieldsDropped.Get(), d.metricsDropped.Get())
	}
}

func TestDeadbandAbs(t *testing.T) {
	d := load(t, "[[processors.dedup]]\n  deadband_abs = 0.5\n")
	got := feed(d,
		at(0, models.Float("temp", 20.0), models.Int("n", 10)),  // first: sent
		at(1, models.Float("temp", 20.25), models.Int("n", 10)), // |20.25−20| = 0.25 < 0.5: dropped
		at(2, models.Float("temp", 20.375)),                     // 0.375 < 0.5: dropped (compared with 20, the value last sent)
		at(3, models.Float("temp", 20.5)),                       // 0.5 ≥ 0.5: sent
		at(4, models.Float("temp", 20.125)),                     // |20.125−20.5| = 0.375: dropped
		at(5, models.Float("temp", 19.875)),                     // |19.875−20.5| = 0.625: sent
		at(6, models.Int("n", 11)),                              // integers too: |11−10| = 1 ≥ 0.5: sent
	)
	expect(t, got, []string{"temp=20,n=10", "", "", "temp=20.5", "", "temp=19.875", "n=11"})
}

func TestDeadbandPct(t *testing.T) {
	// pct = 2: the band is 2% of the value last sent.
	d := load(t, "[[processors.dedup]]\n  deadband_pct = 2.0\n")
	got := feed(d,
		at(0, models.Float("p", 100)),   // sent; band 2
		at(1, models.Float("p", 101.5)), // 1.5 < 2: dropped
		at(2, models.Float("p", 97.5)),  // 2.5 ≥ 2: sent; band 0.02·97.5 = 1.95
		at(3, models.Float("p", 99.25)), // 1.75 < 1.95: dropped
		at(4, models.Float("p", 99.5)),  // 2.0 ≥ 1.95: sent
		at(5, models.Float("p", 0)),     // 99.5 ≥ 1.99: sent; band 0
		at(6, models.Float("p", 0)),     // unchanged: dropped
		at(7, models.Float("p", 1e-9)),  // band 2% of 0 = 0: any change is sent
	)
	expect(t, got, []string{"p=100", "", "p=97.5", "", "p=99.5", "p=0", "", "p=1e-09"})
}

func TestDeadbandBoth(t *testing.T) {
	// abs = 1, pct = 5: the band is max(1, 5% of the value last sent): 1 below 20, 5% above.
	d := load(t, "[[processors.dedup]]\n  deadband_abs = 1.0\n  deadband_pct = 5.0\n")
	got := feed(d,
		at(0, models.Float("a", 10), models.Float("b", 200)),    // sent; bands max(1, 0.5) = 1 and max(1, 10) = 10
		at(1, models.Float("a", 10.75), models.Float("b", 209)), // 0.75 < 1, 9 < 10: dropped
		at(2, models.Float("a", 11), models.Float("b", 190)),    // 1 ≥ 1, 10 ≥ 10: sent
	)
	expect(t, got, []string{"a=10,b=200", "", "a=11,b=190"})
}

// Per-field deadbands: the first [[deadband]] whose pattern matches wins; other fields use the
// processor's own (here 0: any change).
func TestPerFieldDeadband(t *testing.T) {
	d := load(t, `
[[processors.dedup]]
  [[processors.dedup.deadband]]
    fields = ["temp*"]
    abs = 1.0
  [[processors.dedup.deadband]]
    fields = ["temp_probe", "flow"]
    pct = 10.0
`)
	got := feed(d,
		at(0, models.Float("temp_probe", 50), models.Float("flow", 50), models.Float("level", 50)),
		// temp_probe: the first table (abs 1) wins over the second: |50.5−50| < 1 dropped;
		// flow: 10% of 50 = 5, |54−50| = 4 dropped; level: no deadband, 50.01 sent.
		at(1, models.Float("temp_probe", 50.5), models.Float("flow", 54), models.Float("level", 50.01)),
		// temp_probe: |51−50| = 1 sent; flow: |55−50| = 5 sent.
		at(2, models.Float("temp_probe", 51), models.Float("flow", 55), models.Float("level", 50.01)),
	)
	expect(t, got, []string{"temp_probe=50,flow=50,level=50", "level=50.01", "temp_probe=51,flow=55"})
}

// dedup_interval: an unchanged field is sent again once the interval has passed since it was
// last sent (on the metrics' time), and a metric older than the value last sent is sent.
func TestHeartbeat(t *testing.T) {
	d := load(t, "[[processors.dedup]]\n  dedup_interval = \"10m\"\n")
	v := func() models.Field { return models.Int("x", 1) }
	got := feed(d,
		at(0, v()),              // sent at 0
		at(5*time.Minute, v()),  // 5m since 0: dropped
		at(10*time.Minute, v()), // 10m ≥ 10m: sent
		at(15*time.Minute, v()), // 5m since 10m: dropped
		at(20*time.Minute, v()), // sent
		at(19*time.Minute, v()), // older than 20m (a clock set back): sent
		at(25*time.Minute, v()), // 6m since 19m: dropped
	)
	expect(t, got, []string{"x=1", "", "x=1", "", "x=1", "x=1", ""})

	d = load(t, "[[processors.dedup]]\n  dedup_interval = \"0s\"\n")
	expect(t, feed(d, at(0, v()), at(24*time.Hour, v())), []string{"x=1", ""})
}

func TestNaN(t *testing.T) {
	d := load(t, "[[processors.dedup]]\n  deadband_abs = 1.0\n")
	nan := math.NaN()
	got := feed(d,
		at(0, models.Float("v", 1)),
		at(1, models.Float("v", nan)), // a number became NaN: sent
		at(2, models.Float("v", nan)), // NaN again: unchanged
		at(3, models.Float("v", 1.5)), // NaN became a number: sent, whatever the deadband
	)
	expect(t, got, []string{"v=1", "v=NaN", "", "v=1.5"})
}

// Series are kept apart; each is forgotten after series_ttl on the wall clock, and then its
// values are sent again.
func TestSeriesAndTTL(t *testing.T) {
	d := load(t, "[[processors.dedup]]\n  series_ttl = \"1h\"\n")
	wall := t0
	d.now = func() time.Time { return wall }
	a := func(v int64) *models.Metric {
		return models.New("plc", []models.Tag{{Key: "device", Value: "a"}}, []models.Field{models.Int("x", v)}, t0)
	}
	b := func(v int64) *models.Metric {
		return models.New("plc", []models.Tag{{Key: "device", Value: "b"}}, []models.Field{models.Int("x", v)}, t0)
	}
	if n := len(d.Apply(a(1), b(1))); n != 2 {
		t.Fatalf("first values of two series: %d metrics out, want 2", n)
	}
	if n := len(d.Apply(a(1), b(2))); n != 1 {
		t.Fatalf("a unchanged, b changed: %d metrics out, want 1", n)
	}
	wall = t0.Add(40 * time.Minute)
	d.Apply(b(2))
	wall = t0.Add(61 * time.Minute) // a unseen for 61 min, b for 21
	d.Apply(b(2))
	if d.held.Get() != 1 {
		t.Fatalf("series = %d, want 1 (a forgotten)", d.held.Get())
	}
	if n := len(d.Apply(a(1))); n != 1 {
		t.Fatal("a's unchanged value after it was forgotten: dropped, want sent")
	}
}

func TestInitErrors(t *testing.T) {
	seriestest.InitErrors(t, []struct{ Table, Want string }{
		{"[[processors.dedup]]\n  deadband_abs = -0.5\n", `test.conf:2: processors.dedup: deadband_abs: -0.5: must be 0 or more`},
		{"[[processors.dedup]]\n  deadband_pct = -1.0\n", `test.conf:2: processors.dedup: deadband_pct: -1: must be 0 or more`},
		{"[[processors.dedup]]\n  alias = \"x\"\n  [[processors.dedup.deadband]]\n    fields = [\"ok\"]\n  [[processors.dedup.deadband]]\n    fields = [\"temp[\"]\n",
			`test.conf:6: processors.dedup "x": deadband[1].fields: bad pattern "temp["`},
		{"[[processors.dedup]]\n  [[processors.dedup.deadband]]\n    fields = [\"a\"]\n    abs = -2.0\n",
			`test.conf:4: processors.dedup: deadband[0].abs: -2: must be 0 or more`},
		{"[[processors.dedup]]\n  [[processors.dedup.deadband]]\n    abs = 2.0\n",
			`test.conf:2: processors.dedup: deadband[0]: give the fields it applies to`},
		{"[[processors.dedup]]\n  series_ttl = \"0s\"\n", `test.conf:2: processors.dedup: series_ttl: must be more than 0`},
		{"[[processors.dedup]]\n  state_file = \"x\"\n  state_save_interval = 0\n", `test.conf:3: processors.dedup: state_save_interval: must be more than 0`},
	})
}

func TestSampleAndReadme(t *testing.T) {
	seriestest.CheckSample(t, sampleConfig)
	// The commented [[deadband]] table loads too.
	uncommented := strings.NewReplacer("  # [[", "  [[", "  #   ", "    ").Replace(sampleConfig)
	if _, err := config.LoadText("sample.conf", uncommented, nil); err != nil {
		t.Fatalf("sample with the deadband table: %v", err)
	}
}

// logTo sends the processor's log to a buffer.
func logTo(d *Dedup) *bytes.Buffer {
	var buf bytes.Buffer
	d.Log = slog.New(slog.NewTextHandler(&buf, nil))
	return &buf
}

func stateConf(path string) string {
	return "[[processors.dedup]]\n  dedup_interval = \"10m\"\n  deadband_abs = 0.5\n  state_file = '" + path + "'\n"
}

// A restart keeps the values last sent and their times: unchanged values stay dropped, changed
// ones are sent, and the heartbeat counts from before the restart.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.state")
	d := load(t, stateConf(path))
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	expect(t, feed(d,
		at(0, models.Float("temp", 20), models.String("mode", "auto")),
		at(time.Minute, models.Float("temp", 21), models.String("mode", "auto")),
	), []string{`temp=20,mode="auto"`, "temp=21"})
	d.Stop()
	if d.saves.Get() != 1 {
		t.Fatalf("state_saves = %d at Stop, want 1", d.saves.Get())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 || entries[0].Name() != "dedup.state" {
		t.Fatalf("state folder holds %v, want only dedup.state (no temporary files left)", entries)
	}

	d2 := load(t, stateConf(path))
	logs := logTo(d2)
	if err := d2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	if !strings.Contains(logs.String(), "state loaded") || !strings.Contains(logs.String(), "fields=2") {
		t.Errorf("log: %s", logs)
	}
	expect(t, feed(d2,
		at(2*time.Minute, models.Float("temp", 21.25), models.String("mode", "auto")), // within 0.5 of 21, mode same
		at(3*time.Minute, models.Float("temp", 21.25), models.String("mode", "hand")), // mode changed
		// 10 min after temp was sent at 1m: heartbeat; mode sent at 3m: dropped
		at(11*time.Minute, models.Float("temp", 21.25), models.String("mode", "hand")),
	), []string{"", `mode="hand"`, "temp=21.25"})
}

// The state is saved every state_save_interval while the processor runs, and only when it changed.
func TestSaveInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.state")
	d := load(t, stateConf(path)+"  state_save_interval = \"20ms\"\n")
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	d.Apply(at(0, models.Int("x", 1)))
	deadline := time.Now().Add(10 * time.Second)
	for d.saves.Get() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no save within 10 s at a 20 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // five more ticks, nothing changed
	if n := d.saves.Get(); n != 1 {
		t.Errorf("state_saves = %d with nothing changed since the first, want 1", n)
	}
	var loaded int
	data, _ := os.ReadFile(path)
	if err := decodeState(data, func(uint64, []fieldState) { loaded++ }); err != nil || loaded != 1 {
		t.Errorf("saved file: %d series, %v", loaded, err)
	}
}

// A corrupt state file is logged, counted, kept aside and ignored: the processor starts without
// state and sends every value.
func TestCorruptStateFile(t *testing.T) {
	good := func(t *testing.T) []byte {
		path := filepath.Join(t.TempDir(), "good.state")
		d := load(t, stateConf(path))
		d.Start(t.Context())
		d.Apply(at(0, models.Float("temp", 20)))
		d.Stop()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}(t)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x10
	for _, c := range []struct {
		name string
		data []byte
		why  string
	}{
		{"garbage", []byte("this is not a state file\n"), "bad header"},
		{"empty", nil, "bad header"},
		{"truncated", good[:len(good)-3], "checksum mismatch"},
		{"bit flipped", flipped, "checksum mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dedup.state")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			d := load(t, stateConf(path))
			logs := logTo(d)
			if err := d.Start(t.Context()); err != nil {
				t.Fatalf("Start failed on a corrupt state file: %v", err)
			}
			defer d.Stop()
			if !strings.Contains(logs.String(), "state file ignored") || !strings.Contains(logs.String(), c.why) {
				t.Errorf("log does not say why the file was ignored (%s): %s", c.why, logs)
			}
			if d.stateErrors.Get() != 1 {
				t.Errorf("state_errors = %d, want 1", d.stateErrors.Get())
			}
			if kept, err := os.ReadFile(path + ".corrupt"); err != nil || !bytes.Equal(kept, c.data) {
				t.Errorf("corrupt file not kept aside: %v", err)
			}
			expect(t, feed(d, at(0, models.Float("temp", 20))), []string{"temp=20"})
		})
	}
	// And the good file does load: the cases above fail for their damage alone.
	n := 0
	if err := decodeState(good, func(uint64, []fieldState) { n++ }); err != nil || n != 1 {
		t.Fatalf("good file: %d series, %v", n, err)
	}
}

// A state file that cannot be written is logged and counted, and the processor goes on.
func TestUnwritableStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-folder", "dedup.state")
	d := load(t, stateConf(path))
	logs := logTo(d)
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	expect(t, feed(d, at(0, models.Int("x", 1)), at(1, models.Int("x", 1))), []string{"x=1", ""})
	d.Stop()
	if d.stateErrors.Get() != 1 || !strings.Contains(logs.String(), "state file not saved") {
		t.Errorf("state_errors = %d, log: %s", d.stateErrors.Get(), logs)
	}
}

// FuzzDecodeState fuzzes the part of a state file behind its checksum: the harness frames the
// input (magic + input + CRC-32C), so that the parser, not the checksum, sees the damage.
// Invariants: no panic, no read past the data; what is accepted has known types, and encodes
// back to a file that decodes to as many series.
func FuzzDecodeState(f *testing.F) {
	d := &Dedup{SeriesTTL: config.Duration(time.Hour)}
	if err := d.Init(); err != nil {
		f.Fatal(err)
	}
	d.Apply(at(0, models.Float("temp", 20), models.String("mode", "auto"), models.Bool("ok", true)))
	d.Apply(models.New("other", nil, []models.Field{models.Int("n", -3), models.Uint("u", 9)}, t0))
	good := encodeState(nil, d.table)
	f.Add(good[len(stateMagic) : len(good)-4])
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 200})
	f.Fuzz(func(t *testing.T, body []byte) {
		file := append([]byte(stateMagic), body...)
		file = binary.LittleEndian.AppendUint32(file, crc32.Checksum(file, castagnoli))
		d := &Dedup{SeriesTTL: config.Duration(time.Hour)}
		if err := d.Init(); err != nil {
			t.Fatal(err)
		}
		n := 0
		err := decodeState(file, func(hash uint64, fields []fieldState) {
			for _, fs := range fields {
				if fs.typ < models.TypeFloat || fs.typ > models.TypeString {
					t.Fatalf("field %q of type %d accepted", fs.key, fs.typ)
				}
			}
			s, isNew := d.table.Get(hash, 0)
			if isNew {
				n++
			}
			s.fields = append(s.fields[:0], fields...)
		})
		if err != nil {
			return
		}
		m := 0
		if err := decodeState(encodeState(nil, d.table), func(uint64, []fieldState) { m++ }); err != nil || m != n {
			t.Fatalf("re-encoded: %d series (%v), want %d", m, err, n)
		}
	})
}

// TestFreshAfterTakeover: in cluster mode the first metric of a device after it started on this
// agent is Fresh (another agent may have polled it meanwhile): every field is sent, even one
// equal to the value this agent last sent (in memory or from its state file), and the deadband
// counts from it on.
func TestFreshAfterTakeover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.state")
	d := load(t, stateConf(path))
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	expect(t, feed(d, at(0, models.Float("temp", 20), models.String("mode", "auto"))), []string{`temp=20,mode="auto"`})
	fresh := at(time.Minute, models.Float("temp", 20), models.String("mode", "auto"))
	fresh.Fresh = true
	expect(t, feed(d, fresh, at(2*time.Minute, models.Float("temp", 20.25), models.String("mode", "auto"))),
		[]string{`temp=20,mode="auto"`, ""})
	d.Stop()

	d2 := load(t, stateConf(path)) // the state file knows temp=20 and mode=auto
	if err := d2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	fresh = at(3*time.Minute, models.Float("temp", 20), models.String("mode", "auto"))
	fresh.Fresh = true
	expect(t, feed(d2, at(3*time.Minute, models.Float("temp", 20), models.String("mode", "auto")), fresh),
		[]string{"", `temp=20,mode="auto"`})
}
