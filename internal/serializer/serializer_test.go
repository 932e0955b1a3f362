package serializer

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/models"
)

var at = time.Unix(1795600000, 123456789)

func sample() *models.Metric {
	return models.New("power meter",
		[]models.Tag{{Key: "device", Value: "m,1"}, {Key: "empty", Value: ""}, {Key: "line", Value: "A=B"}},
		[]models.Field{
			models.Float("voltage", 230.5),
			models.Float("nan", math.NaN()),
			models.Int("count", -3),
			models.Uint("energy", math.MaxUint64),
			models.Bool("on", true),
			models.String("state", `ok "now"`),
		}, at)
}

func TestInfluxLine(t *testing.T) {
	got, err := NewInflux(0).Append(nil, sample())
	if err != nil {
		t.Fatal(err)
	}
	want := `power\ meter,device=m\,1,line=A\=B voltage=230.5,count=-3i,energy=18446744073709551615u,on=true,state="ok \"now\"" 1795600000123456789` + "\n"
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// The line parses back with the library's decoder to the same values.
	back := lptest.Parse(t, got, lineprotocol.Nanosecond)
	if len(back) != 1 || back[0].Name != "power meter" || !back[0].Time.Equal(at) {
		t.Fatalf("decoded %+v", back)
	}
	fields := map[string]any{}
	for _, f := range back[0].Fields {
		fields[f.Key] = f.Value()
	}
	if fields["voltage"] != 230.5 || fields["state"] != `ok "now"` || fields["energy"] != uint64(math.MaxUint64) || len(fields) != 5 {
		t.Fatalf("decoded %v", fields)
	}
}

func TestInfluxPrecision(t *testing.T) {
	m := models.New("m", nil, []models.Field{models.Int("v", 1)}, at)
	for p, want := range map[time.Duration]string{time.Second: "1795600000", time.Millisecond: "1795600000123", time.Microsecond: "1795600000123456", 0: "1795600000123456789"} {
		got, _ := NewInflux(p).Append(nil, m)
		if string(got) != "m v=1i "+want+"\n" {
			t.Errorf("precision %v: %s", p, got)
		}
	}
}

func TestInfluxRejectsWithoutTouchingBuffer(t *testing.T) {
	s := NewInflux(0)
	buf, _ := s.Append(nil, models.New("ok", nil, []models.Field{models.Int("v", 1)}, at))
	n := len(buf)
	buf, err := s.Append(buf, models.New("bad", nil, []models.Field{models.Float("v", math.Inf(1))}, at))
	if !errors.Is(err, ErrNoFields) || len(buf) != n {
		t.Fatalf("a metric with no writable field: err %v, buffer %d→%d", err, n, len(buf))
	}
	buf, err = s.Append(buf, models.New("", nil, []models.Field{models.Int("v", 1)}, at))
	if err == nil || len(buf) != n {
		t.Fatalf("empty measurement: err %v, buffer %d→%d", err, n, len(buf))
	}
	buf, err = s.Append(buf, models.New("ok2", nil, []models.Field{models.Int("v", 2)}, at))
	if err != nil || string(buf[n:]) != "ok2 v=2i 1795600000123456789\n" {
		t.Fatalf("the next metric after a bad one: %q %v", buf[n:], err)
	}
}

func TestJSON(t *testing.T) {
	got, err := NewJSON(time.Millisecond).Append(nil, sample())
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Fields    map[string]any    `json:"fields"`
		Name      string            `json:"name"`
		Tags      map[string]string `json:"tags"`
		Timestamp int64             `json:"timestamp"`
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%v in %s", err, got)
	}
	if v.Name != "power meter" || v.Tags["device"] != "m,1" || v.Fields["state"] != `ok "now"` || v.Fields["on"] != true ||
		v.Fields["voltage"] != 230.5 || v.Timestamp != 1795600000123 || len(v.Fields) != 5 {
		t.Fatalf("decoded %+v from %s", v, got)
	}
	if got[len(got)-1] != '\n' {
		t.Fatal("one object per line")
	}
	odd := models.New("m", []models.Tag{{Key: "k", Value: "\x01\xff\u00e9\n"}}, []models.Field{models.String("s", "tab\there")}, at)
	got, _ = NewJSON(0).Append(nil, odd)
	if !json.Valid(got[:len(got)-1]) {
		t.Fatalf("invalid JSON for control and invalid UTF-8 bytes: %s", got)
	}
}

func batch(n, fields int) []*models.Metric {
	out := make([]*models.Metric, n)
	tags := []models.Tag{{Key: "device", Value: "meter-1"}, {Key: "line", Value: "A"}}
	for i := range out {
		fs := make([]models.Field, fields)
		for j := range fs {
			fs[j] = models.Float("field_"+strconv.Itoa(j), float64(i*j)+0.5)
		}
		out[i] = models.New("power", tags, fs, at.Add(time.Duration(i)*time.Millisecond))
	}
	return out
}

func TestSerializingABatchAllocatesNothing(t *testing.T) {
	ms := batch(1000, 10)
	for _, s := range []Serializer{NewInflux(0), NewJSON(0)} {
		var buf []byte
		allocs := testing.AllocsPerRun(20, func() {
			buf = buf[:0]
			for _, m := range ms {
				buf, _ = s.Append(buf, m)
			}
		})
		if allocs != 0 {
			t.Errorf("%T: %v allocations per batch of 1000 in steady state", s, allocs)
		}
	}
}

func BenchmarkInfluxBatch1000(b *testing.B) {
	ms := batch(1000, 10)
	s := NewInflux(0)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for _, m := range ms {
			buf, _ = s.Append(buf, m)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ms)), "ns/metric")
}

func BenchmarkJSONBatch1000(b *testing.B) {
	ms := batch(1000, 10)
	s := NewJSON(0)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for _, m := range ms {
			buf, _ = s.Append(buf, m)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ms)), "ns/metric")
}

// randomMetric makes a metric of times, names, tags and fields that line protocol can carry, with
// characters that need escaping, and values of every type: floats from randomFloat, NaN and
// infinities (which are left out), strings with quotes, backslashes and line feeds.
func randomMetric(r *rand.Rand) *models.Metric {
	words := []string{"power", "a b", "c,d", "e=f", "g\\h", "é", "meter-0001", "x"}
	word := func() string { return words[r.IntN(len(words))] + words[r.IntN(len(words))] }
	var tags []models.Tag
	for range r.IntN(4) {
		tags = append(tags, models.Tag{Key: word(), Value: word()})
	}
	fields := make([]models.Field, 1+r.IntN(6))
	for i := range fields {
		k := word() + strconv.Itoa(i)
		switch r.IntN(6) {
		case 0:
			fields[i] = models.Int(k, r.Int64()>>r.IntN(64))
		case 1:
			fields[i] = models.Uint(k, r.Uint64()>>r.IntN(64))
		case 2:
			fields[i] = models.Bool(k, r.IntN(2) == 0)
		case 3:
			fields[i] = models.String(k, word()+"\"\\\n"+word())
		default:
			fields[i] = models.Float(k, randomFloat(r))
		}
	}
	// Times repeat, as the metrics of a poll share one (the serializer keeps the last one's
	// digits), and are sometimes zero (no timestamp) or before 1970.
	times := []time.Time{at, at.Add(1), {}, time.Unix(0, -r.Int64N(1e18)), at.Add(time.Duration(r.Int64N(1e15)))}
	return models.New(word(), tags, fields, times[r.IntN(len(times))])
}

// The serializer writes what influxdata/line-protocol/v2's Encoder writes, byte for byte, on
// random metrics: its own escaping and float formatting change nothing.
func TestInfluxMatchesEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	s := NewInflux(0)
	var enc lineprotocol.Encoder
	enc.SetPrecision(lineprotocol.Nanosecond)
	const n = 20_000
	written := 0
	for range n {
		m := randomMetric(r)
		enc.Reset()
		enc.StartLine(m.Name)
		for _, tag := range m.Tags {
			enc.AddTag(tag.Key, tag.Value)
		}
		for _, f := range m.Fields {
			v, ok := lineprotocol.NewValue(f.Value())
			if ok {
				enc.AddField(f.Key, v)
			}
		}
		enc.EndLine(m.Time)
		want, encErr := enc.Bytes(), enc.Err()
		got, err := s.Append(nil, m)
		if (err != nil) != (encErr != nil) || string(got) != string(want) {
			t.Fatalf("%+v:\ngot  %q (%v)\nwant %q (%v)", m, got, err, want, encErr)
		}
		if err == nil {
			written++
		}
	}
	if written < n*3/4 {
		t.Fatalf("only %d of %d metrics could be written: the comparison proves little", written, n)
	}
	t.Logf("%d of %d metrics written", written, n)
}
