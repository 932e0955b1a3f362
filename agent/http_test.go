package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tagpipe/tagpipe/inputs"
	_ "github.com/tagpipe/tagpipe/inputs/all"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
	_ "github.com/tagpipe/tagpipe/outputs/all"
)

// startAgent loads conf (a TOML text) with the real loader, runs the agent and serves its
// endpoint on a free loopback port. Everything stops when the test ends.
func startAgent(t *testing.T, conf string) (*Agent, *Server) {
	t.Helper()
	a, err := New(loadConfig(t, conf), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	srv, err := ListenHTTP("127.0.0.1:0", func() *Agent { return a })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		srv.Close()
	})
	return a, srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitHealth polls /healthz until it answers code with a body containing every one of want.
func waitHealth(t *testing.T, srv *Server, timeout time.Duration, code int, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := get(t, "http://"+srv.Addr()+"/healthz")
		ok := got == code
		for _, w := range want {
			ok = ok && strings.Contains(body, w)
		}
		if ok {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz after %s: %d %q; want %d with %q", timeout, got, body, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const fastAgent = `
[agent]
  interval = "50ms"
  round_interval = false
  flush_interval = "50ms"
  omit_hostname = true
[[inputs.internal]]
  collect_process = false
`

// An output that cannot connect (its directory does not exist) makes /healthz 503 with the
// output's name and the error; once the directory exists the flusher connects, writes, and
// /healthz is 200 again.
func TestHealthOutputConnectFailsThenRecovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet")
	out := filepath.Join(dir, "metrics.lp")
	_, srv := startAgent(t, fastAgent+fmt.Sprintf("[[outputs.file]]\n  files = [%q]\n", out))

	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		"outputs.file: connect: open "+out+": no such file or directory",
		"no success since the agent started at", "last error at")
	t.Logf("failing:\n%s", body)

	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The flusher retries after 1 s, 2 s, 4 s...
	body = waitHealth(t, srv, 10*time.Second, http.StatusOK, "ok: 1 inputs gathering, 1 outputs writing")
	t.Logf("recovered: %s", body)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(out)
		if err == nil && strings.Contains(string(b), "internal_input,input=internal ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after recovery the file holds %q (%v), want the buffered internal metrics", b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitHealth(t, srv, time.Second, http.StatusOK, "ok:")
}

// A write that fails (no space left on the device) names the output and the write error.
func TestHealthOutputWriteFails(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here:", err)
	}
	_, srv := startAgent(t, fastAgent+"[[outputs.file]]\n  files = [\"/dev/full\"]\n")
	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		"outputs.file: write /dev/full: ", "no space left on device",
		"no success since the agent started at")
	t.Logf("failing:\n%s", body)
}

// fifoReader is the reading end of a named pipe the file output writes to. It drains the pipe
// while it runs; paused, it stops reading so the writer's pipe fills up and its write hangs.
type fifoReader struct {
	path   string
	f      *os.File
	paused atomic.Bool
	lines  atomic.Int64
	wg     sync.WaitGroup
}

func openFIFO(t *testing.T, path string) *fifoReader {
	t.Helper()
	// Non-blocking, so the open does not wait for a writer (the agent opens it later).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The smallest pipe (a page), so a paused reader stops the writer after a few kilobytes.
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_SETPIPE_SZ, 4096); e != 0 {
		t.Logf("F_SETPIPE_SZ: %v (the default pipe size fills more slowly)", e)
	}
	r := &fifoReader{path: path, f: f}
	r.wg.Go(func() {
		buf := make([]byte, 512)
		for {
			if r.paused.Load() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			n, err := f.Read(buf)
			r.lines.Add(int64(strings.Count(string(buf[:n]), "\n")))
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil { // io.EOF: no writer yet
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	return r
}

func (r *fifoReader) close() { r.f.Close(); r.wg.Wait() }

// The output's other side stops reading (a hung write: no error, nothing written) → 503 saying
// metrics wait; it reads again → 200. It goes away (a write error) → 503 with the error; a new
// reader → 200.
func TestHealthOutputHangsAndBreaksThenRecovers(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "out.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	r := openFIFO(t, fifo)
	// Cleanups run last in, first out: this one after the agent stopped (its last flush needs
	// a reader).
	t.Cleanup(func() { r.close() })
	_, srv := startAgent(t, fastAgent+fmt.Sprintf("[[outputs.file]]\n  files = [%q]\n", fifo))
	srv.MinWindow = 500 * time.Millisecond // 3 × flush_interval is less: the window is this

	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")
	for r.lines.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}

	r.paused.Store(true)
	body := waitHealth(t, srv, 10*time.Second, http.StatusServiceUnavailable,
		"outputs.file: ", " metrics buffered, nothing written for ", "no success since 20")
	t.Logf("hung:\n%s", body)
	r.paused.Store(false)
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")

	r.close() // the last reader goes: the next write fails with EPIPE
	body = waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		"outputs.file: write "+fifo+": ", "broken pipe", "no success since 20", "last error at")
	t.Logf("broken:\n%s", body)

	r = openFIFO(t, fifo) // a reader again: the output's open descriptor writes again
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok: 1 inputs gathering, 1 outputs writing")
}

// flaky is an input that fails while flakyFail is set: the health rules for inputs, with the
// real agent around it (no input here fails on demand).
type flaky struct{}

var flakyFail, flakyHang atomic.Bool

func init() { inputs.Add("flaky_health_test", func() models.Input { return &flaky{} }) }

func (*flaky) SampleConfig() string { return "" }
func (*flaky) Gather(ctx context.Context, acc models.Accumulator) error {
	if flakyHang.Load() {
		for flakyHang.Load() && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if flakyFail.Load() {
		return errors.New("device 10.0.0.7:502 unit 3: i/o timeout")
	}
	acc.AddMetric(&models.Metric{Name: "flaky", Fields: []models.Field{models.Int("v", 1)}})
	return nil
}

// inputConf runs one input (plugin name, extra line) with a file output (path).
const inputConf = `
[agent]
  interval = "50ms"
  round_interval = false
  flush_interval = "50ms"
[[inputs.%s]]
  %s
[[outputs.file]]
  files = [%q]
`

func TestHealthInputFailsThenRecovers(t *testing.T) {
	_, srv := startAgent(t, fmt.Sprintf(inputConf, "flaky_health_test", `alias = "line-2"`, filepath.Join(t.TempDir(), "out.lp")))
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok: 1 inputs gathering")
	flakyFail.Store(true)
	defer flakyFail.Store(false)
	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		`inputs.flaky_health_test "line-2": device 10.0.0.7:502 unit 3: i/o timeout; last error at`)
	t.Logf("failing:\n%s", body)
	flakyFail.Store(false)
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")
}

// A gather that does not return: 503 once no gather finished for the window, 200 when it does.
func TestHealthInputHangs(t *testing.T) {
	a, srv := startAgent(t, fmt.Sprintf(inputConf, "flaky_health_test", "", filepath.Join(t.TempDir(), "out.lp")))
	srv.MinWindow = 300 * time.Millisecond
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")
	// A gather must have succeeded first, so that the message names its time.
	waitFor(t, "a first gather", func() bool { return a.Inputs()[0].MetricsGathered.Get() > 0 })
	flakyHang.Store(true)
	defer flakyHang.Store(false)
	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		"inputs.flaky_health_test: no gather finished for ", "no success since 20")
	t.Logf("hung:\n%s", body)
	flakyHang.Store(false)
	waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")
}

// service is a service input (it reports on its own) whose Start fails while serviceStartFails
// is set; serviceAcc is the accumulator of the one that started.
type service struct{}

var (
	serviceStartFails atomic.Bool
	serviceAcc        atomic.Pointer[models.Accumulator]
)

func init() { inputs.Add("service_health_test", func() models.Input { return &service{} }) }

func (*service) SampleConfig() string                             { return "" }
func (*service) Gather(context.Context, models.Accumulator) error { return nil }
func (*service) Stop()                                            {}
func (*service) Start(_ context.Context, acc models.Accumulator) error {
	if serviceStartFails.Load() {
		return errors.New("listen 127.0.0.1:4840: address already in use")
	}
	serviceAcc.Store(&acc)
	return nil
}

// A service input whose start failed stays failing; one that reports an error fails for the
// window after it, then is healthy again.
func TestHealthServiceInput(t *testing.T) {
	t.Run("start fails", func(t *testing.T) {
		serviceStartFails.Store(true)
		defer serviceStartFails.Store(false)
		_, srv := startAgent(t, fmt.Sprintf(inputConf, "service_health_test", "", filepath.Join(t.TempDir(), "out.lp")))
		srv.MinWindow = 200 * time.Millisecond
		waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
			"inputs.service_health_test: start: listen 127.0.0.1:4840: address already in use; no success since the agent started")
		time.Sleep(500 * time.Millisecond) // beyond the window: still failing
		waitHealth(t, srv, 0, http.StatusServiceUnavailable, "inputs.service_health_test: start: ")
	})
	t.Run("reports an error", func(t *testing.T) {
		serviceAcc.Store(nil)
		_, srv := startAgent(t, fmt.Sprintf(inputConf, "service_health_test", "", filepath.Join(t.TempDir(), "out.lp")))
		srv.MinWindow = 300 * time.Millisecond
		waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok: 1 inputs gathering")
		// /healthz can answer before the agent reached the inputs' Start: wait for it.
		var acc *models.Accumulator
		for deadline := time.Now().Add(5 * time.Second); acc == nil && time.Now().Before(deadline); {
			if acc = serviceAcc.Load(); acc == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if acc == nil {
			t.Fatal("the service input did not start")
		}
		(*acc).AddError(errors.New("device meter-7: exception 11 (gateway target failed to respond)"))
		waitHealth(t, srv, time.Second, http.StatusServiceUnavailable,
			"inputs.service_health_test: device meter-7: exception 11 (gateway target failed to respond); last error at")
		waitHealth(t, srv, 5*time.Second, http.StatusOK, "ok:")
	})
}

// /metrics parses with Prometheus' own text parser, and its numbers are what happened: the lines
// the file output wrote, the buffer limit the config set.
func TestMetricsEndpoint(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.lp")
	_, srv := startAgent(t, fmt.Sprintf(`
[agent]
  interval = "1h"           # one gather, at the start
  round_interval = false
  flush_interval = "50ms"
  metric_batch_size = 100
  metric_buffer_limit = 1234
  omit_hostname = true
[[inputs.internal]]
  collect_process = false
[[outputs.file]]
  alias = "archive"
  files = [%q]
`, out))
	var lines int
	deadline := time.Now().Add(5 * time.Second)
	for lines == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(out)
		lines = strings.Count(string(b), "\n")
	}
	if lines == 0 {
		t.Fatal("the file output wrote nothing in 5 s")
	}
	time.Sleep(200 * time.Millisecond) // written is counted after the write returns
	if b, _ := os.ReadFile(out); strings.Count(string(b), "\n") != lines {
		t.Fatalf("the file grew from %d lines: a second gather ran", lines)
	}

	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	fams := parseProm(t, resp.Body)
	want := []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"internal_output_metrics_written", map[string]string{"output": "file", "alias": "archive"}, float64(lines)},
		{"internal_output_buffer_limit", map[string]string{"output": "file", "alias": "archive"}, 1234},
		{"internal_input_metrics_gathered", map[string]string{"input": "internal"}, float64(lines)},
		{"internal_output_errors", map[string]string{"output": "file", "alias": "archive"}, 0},
	}
	for _, w := range want {
		v, ok := sampleValue(fams[w.family], w.labels)
		if !ok {
			t.Errorf("%s%v: missing", w.family, w.labels)
			continue
		}
		if v != w.value {
			t.Errorf("%s%v = %v, want %v", w.family, w.labels, v, w.value)
		}
	}
	// Counts are counters, levels are gauges (Prometheus' rate() and alerts depend on it).
	for family, typ := range map[string]dto.MetricType{
		"internal_output_metrics_written": dto.MetricType_COUNTER,
		"internal_output_errors":          dto.MetricType_COUNTER,
		"internal_input_metrics_gathered": dto.MetricType_COUNTER,
		"internal_output_buffer_size":     dto.MetricType_GAUGE,
		"internal_output_buffer_limit":    dto.MetricType_GAUGE,
		"internal_input_gather_time_ns":   dto.MetricType_GAUGE,
	} {
		if f := fams[family]; f == nil || f.GetType() != typ {
			t.Errorf("%s: type %v, want %v", family, f.GetType(), typ)
		}
	}
}

// inputs.modbus' own counters are the input's, labelled by its alias, not by its first device.
func TestMetricsModbusInput(t *testing.T) {
	sim, err := modbussim.Listen("127.0.0.1:0", modbussim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	_, srv := startAgent(t, modbusPlant(sim.Addr(), 0))
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + srv.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		fams = parseProm(t, resp.Body)
		resp.Body.Close()
		if v, _ := sampleValue(fams["internal_modbus_polls"], map[string]string{"input": "plant"}); v > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no internal_modbus_polls{input=\"plant\"} after 10 s: %v", fams["internal_modbus_polls"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range fams["internal_modbus_polls"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == "good" {
				t.Errorf("internal_modbus_polls is labelled with a device's name: %v", m)
			}
		}
	}
	if typ := fams["internal_modbus_polls"].GetType(); typ != dto.MetricType_COUNTER {
		t.Errorf("internal_modbus_polls: %v, want a counter", typ)
	}
}

func parseProm(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("not Prometheus text format: %v", err)
	}
	// The parser leaves duplicate series to the caller; Prometheus would refuse the scrape.
	for name, f := range fams {
		seen := map[string]bool{}
		for _, m := range f.Metric {
			var k string
			for _, l := range m.Label {
				k += l.GetName() + "=" + l.GetValue() + ","
			}
			if seen[k] {
				t.Errorf("%s: series %s twice", name, k)
			}
			seen[k] = true
		}
	}
	return fams
}

func sampleValue(f *dto.MetricFamily, labels map[string]string) (float64, bool) {
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

// Names and label values that the format must escape or rename come back from Prometheus' parser
// as they went in; two sets with the same name and tags stay two series.
func TestAppendPrometheusRoundTrip(t *testing.T) {
	now := time.Now()
	ms := []*models.Metric{
		{Name: "internal_output", Tags: []models.Tag{{Key: "alias", Value: `say "hi"\ now` + "\nnext"}, {Key: "output", Value: "kafka"}},
			Fields: []models.Field{models.Int("metrics_written", 42), models.Int("errors", -1)}, Time: now},
		{Name: "internal_output", Tags: []models.Tag{{Key: "output", Value: "file"}},
			Fields: []models.Field{models.Int("metrics_written", 7)}, Time: now},
		{Name: "internal_output", Tags: []models.Tag{{Key: "output", Value: "file"}},
			Fields: []models.Field{models.Int("metrics_written", 8)}, Time: now},
		{Name: "modbus-health", Tags: []models.Tag{{Key: "device.name", Value: "boiler 3"}, {Key: "__x", Value: "y"}},
			Fields: []models.Field{models.Float("rtt_ms", 1.5), models.Uint("timeouts", 1<<63), models.Bool("open", true),
				models.String("state", "closed")}, Time: now},
	}
	fams := parseProm(t, strings.NewReader(string(AppendPrometheus(nil, ms))))
	for _, c := range []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"internal_output_metrics_written", map[string]string{"alias": `say "hi"\ now` + "\nnext", "output": "kafka"}, 42},
		{"internal_output_errors", map[string]string{"alias": `say "hi"\ now` + "\nnext", "output": "kafka"}, -1},
		{"internal_output_metrics_written", map[string]string{"output": "file"}, 7},
		{"internal_output_metrics_written", map[string]string{"output": "file", "index": "2"}, 8},
		{"modbus_health_rtt_ms", map[string]string{"device_name": "boiler 3", "tag__x": "y"}, 1.5},
		{"modbus_health_timeouts", map[string]string{"device_name": "boiler 3", "tag__x": "y"}, 1 << 63},
		{"modbus_health_open", map[string]string{"device_name": "boiler 3", "tag__x": "y"}, 1},
	} {
		v, ok := sampleValue(fams[c.family], c.labels)
		if !ok || v != c.value {
			t.Errorf("%s%v = %v (found %v), want %v", c.family, c.labels, v, ok, c.value)
		}
	}
	if _, ok := fams["modbus_health_state"]; ok {
		t.Error("a string field became a sample")
	}
}

// BenchmarkAppendPrometheus renders a scrape of 1,000 stat sets of 10 fields (a large agent:
// per-plugin sets, not per-device) into a reused buffer.
func BenchmarkAppendPrometheus(b *testing.B) {
	now := time.Now()
	ms := make([]*models.Metric, 1000)
	for i := range ms {
		fields := make([]models.Field, 10)
		for j := range fields {
			fields[j] = models.Int(fmt.Sprintf("field_%d", j), int64(i*j))
		}
		ms[i] = &models.Metric{Name: "internal_output", Tags: []models.Tag{
			{Key: "alias", Value: fmt.Sprintf("line-%d", i)}, {Key: "output", Value: "kafka"}}, Fields: fields, Time: now}
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPrometheus(buf[:0], ms)
	}
	b.SetBytes(int64(len(buf)))
}

// modbusPlant is an agent config with a Modbus input "plant" polling one device on a simulator
// at good and one device per dead address, every 100 ms, breakers opening after two polls.
func modbusPlant(good string, share float64, dead ...string) string {
	conf := strings.Replace(fastAgent, "[agent]\n", fmt.Sprintf("[agent]\n  health_failing_share = %g\n", share), 1) +
		"[[outputs.file]]\n  files = [\"/dev/null\"]\n" +
		"[[inputs.modbus]]\n  alias = \"plant\"\n  interval = \"100ms\"\n  timeout_max = \"50ms\"\n  retries = 0\n  breaker_failures = 2\n  breaker_cool_down = \"1h\"\n" +
		modbussim.Profile +
		fmt.Sprintf("  [[inputs.modbus.device]]\n    name = \"good\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n", good)
	for i, addr := range dead {
		conf += fmt.Sprintf("  [[inputs.modbus.device]]\n    name = \"dead-%d\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n", i+1, addr)
	}
	return conf
}

// Health comes from the devices' state, not from the errors the input logged: with two of
// three Modbus devices dead, /healthz is 503 and names both, and it stays so long after the
// last error was logged (the log holds a dead device's error back for a minute; health used to
// forget it after 30 s and answer "200 ok").
func TestHealthDeadDevices(t *testing.T) {
	sim, err := modbussim.Listen("127.0.0.1:0", modbussim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dead1, dead2 := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	a, srv := startAgent(t, modbusPlant(sim.Addr(), 0, dead1, dead2))
	body := waitHealth(t, srv, 10*time.Second, http.StatusServiceUnavailable,
		`inputs.modbus "plant": 2 of 3 devices failing`,
		"dead-1 (tcp://"+dead1+"): breaker open; no answered poll since the input started; last error at",
		"dead-2 (tcp://"+dead2+"): breaker open")
	if strings.Contains(body, "good") {
		t.Errorf("the device that answers is listed:\n%s", body)
	}
	// Five minutes on, nothing new was logged, and the devices are still dead (the good one is
	// stale by then too, as nobody polled it in that future).
	var failing []string
	for _, p := range a.Health(time.Now().Add(5*time.Minute), DefaultMinWindow) {
		for _, d := range p.Devices {
			if p.Plugin == `inputs.modbus "plant"` && !p.Degraded && d.State == models.DeviceBreakerOpen {
				failing = append(failing, d.Name)
			}
		}
	}
	if strings.Join(failing, " ") != "dead-1 dead-2" {
		t.Errorf("breaker open five minutes later: %v, want dead-1 dead-2", failing)
	}
}

// With health_failing_share = 0.5, one dead device of two leaves /healthz at 200, but it says
// "degraded" and lists the device: a dead device is never "ok".
func TestHealthDeadDeviceWithinShare(t *testing.T) {
	sim, err := modbussim.Listen("127.0.0.1:0", modbussim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dead := testpeer.FreeAddr(t)
	_, srv := startAgent(t, modbusPlant(sim.Addr(), 0.5, dead))
	body := waitHealth(t, srv, 10*time.Second, http.StatusOK, "degraded:",
		`inputs.modbus "plant": 1 of 2 devices failing (health_failing_share allows 50%)`,
		"dead-1 (tcp://"+dead+"): breaker open")
	if strings.Contains(body, "ok:") {
		t.Errorf("/healthz says ok with a dead device:\n%s", body)
	}
}
