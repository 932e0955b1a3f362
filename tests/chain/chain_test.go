package chain_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
	_ "github.com/tagpipe/tagpipe/outputs/all"
	_ "github.com/tagpipe/tagpipe/processors/all"
)

// replay is an input that hands the agent the metrics of replayed once, on its first gather.
type replay struct{ done bool }

var replayed []*models.Metric

func (*replay) SampleConfig() string { return "" }

func (r *replay) Gather(_ context.Context, acc models.Accumulator) error {
	if !r.done {
		r.done = true
		for _, m := range replayed {
			acc.AddMetric(m.Copy())
		}
	}
	return nil
}

func init() { inputs.Add("processors_chain_replay", func() models.Input { return &replay{} }) }

// The chain is listed out of order on purpose: `order` puts predict first (it must see every
// value), then ratelimit (boiler only: one metric per 2 s, folding the largest values), then
// dedup (deadband 0.5, state file).
const conf = `
[agent]
  interval = "1h"
  round_interval = false
  flush_interval = "100ms"
  omit_hostname = true

[[inputs.processors_chain_replay]]

[[processors.dedup]]
  order = 3
  deadband_abs = 0.5
  state_file = '%STATE%'

[[processors.predict]]
  order = 1
  forecast_fields = ["temperature"]
  warmup = 3

[[processors.ratelimit]]
  order = 2
  namepass = ["boiler"]
  rate = 1
  period = "2s"
  fold = "max"

[[outputs.file]]
  files = ['%OUT%']
  data_format = "json"
  precision = "1ms"
`

type line struct {
	Name      string            `json:"name"`
	Tags      map[string]string `json:"tags"`
	Fields    map[string]any    `json:"fields"`
	Timestamp int64             `json:"timestamp"`
}

func TestChain(t *testing.T) {
	dir := t.TempDir()
	health := seriestest.ReadLP(t, "../../processors/predict/testdata/degradation.lp")
	start := health[0].Time
	// boiler temperature, one a second:
	//   s:  0   1   2     3     4     5   6   7   8     9
	//   v:  20  20  20.2  20.2  20.3  25  25  25  25.1  25.1
	temps := []float64{20, 20, 20.2, 20.2, 20.3, 25, 25, 25, 25.1, 25.1}
	replayed = health
	for s, v := range temps {
		replayed = append(replayed, models.New("boiler", []models.Tag{{Key: "device", Value: "b1"}},
			[]models.Field{models.Float("temperature", v)}, start.Add(time.Duration(s)*time.Second)))
	}
	text := strings.NewReplacer("%STATE%", filepath.Join(dir, "dedup.state"), "%OUT%", filepath.Join(dir, "out.json")).Replace(conf)
	cfg, err := config.LoadText("chain.conf", text, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}

	out := readJSON(t, filepath.Join(dir, "out.json"))
	at := func(l line) time.Duration { return time.UnixMilli(l.Timestamp).Sub(start) }

	// boiler: predict adds temperature_forecast (from 1 s) and temperature_anomaly (from 3 s,
	// warmup 3; 25 at 5 s is 4.7 from its forecast 20.3, far beyond 3σ of errors ≤ 0.2); ratelimit
	// lets 0, 2, 4, 6, 8 s through with the max of each pair: temperature 20, 20.2, 20.3, 25, 25.1,
	// anomaly any-true (6 s takes 5 s's true); dedup sends temperature at 0 s (first) and 6 s
	// (25 − 20 ≥ 0.5) only, and the anomaly flag when it first appears (4 s) and changes (6 s).
	var boiler []line
	for _, l := range out {
		if l.Name == "boiler" {
			boiler = append(boiler, l)
		}
	}
	wantTemp := map[time.Duration]float64{0: 20, 6 * time.Second: 25}
	sawAnomaly := false
	for _, l := range boiler {
		d := at(l)
		if d%(2*time.Second) != 0 {
			t.Errorf("boiler at %v went through ratelimit (1 per 2 s from 0 s)", d)
		}
		v, has := l.Fields["temperature"]
		if want, ok := wantTemp[d]; ok != has || has && v.(float64) != want {
			t.Errorf("boiler at %v: temperature %v (present %v), want %v (present %v)", d, v, has, want, ok)
		}
		if d == 2*time.Second && l.Fields["temperature_forecast"] != 20.0 {
			t.Errorf("boiler at 2 s: temperature_forecast %v, want 20 (the first, max of 20 and 20)", l.Fields["temperature_forecast"])
		}
		if an, ok := l.Fields["temperature_anomaly"]; ok && an == true {
			sawAnomaly = true
			if d != 6*time.Second {
				t.Errorf("anomaly at %v, want at 6 s only", d)
			}
		}
	}
	for _, l := range boiler {
		t.Logf("boiler at %v: %v", at(l), l.Fields)
	}
	if !sawAnomaly || len(boiler) == 0 {
		t.Errorf("boiler: %d metrics out, anomaly seen %v: %v", len(boiler), sawAnomaly, boiler)
	}

	// modbus_health: untouched by ratelimit; dedup sends a field only when it changes, so the
	// first disconnect_predicted=true is there, and must come before errors_timeout rises.
	var predicted, failed time.Duration = -1, -1
	for _, l := range out {
		if l.Name != "modbus_health" {
			continue
		}
		if p, ok := l.Fields["disconnect_predicted"]; ok && p == true && predicted < 0 {
			predicted = at(l)
		}
		if e, ok := l.Fields["errors_timeout"]; ok && e.(float64) > 0 && failed < 0 {
			failed = at(l)
		}
	}
	t.Logf("%d metrics out of %d in; disconnect predicted at %v, first timeout at %v", len(out), len(replayed), predicted, failed)
	if predicted < 0 || failed < 0 || predicted >= failed-5*time.Second {
		t.Errorf("predicted at %v, first timeout at %v: want a prediction at least 5 s before", predicted, failed)
	}
	if len(out) >= len(replayed) {
		t.Errorf("%d metrics out of %d in: nothing dropped", len(out), len(replayed))
	}
	if fi, err := os.Stat(filepath.Join(dir, "dedup.state")); err != nil || fi.Size() == 0 {
		t.Errorf("dedup state file after shutdown: %v", err)
	}
}

func readJSON(t *testing.T, path string) []line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}
