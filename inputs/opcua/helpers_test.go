package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// testAcc collects what an input emits. It is safe for concurrent use.
type testAcc struct {
	mu      sync.Mutex
	metrics []*models.Metric
	errs    []error
	changed chan struct{}
}

func newAcc() *testAcc { return &testAcc{changed: make(chan struct{}, 1)} }

func (a *testAcc) AddMetric(m *models.Metric) {
	a.mu.Lock()
	a.metrics = append(a.metrics, m)
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *testAcc) AddError(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
}

// all returns a copy of the metrics so far.
func (a *testAcc) all() []*models.Metric {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.metrics)
}

// values returns, in arrival order, the metrics of measurement name that carry field.
func (a *testAcc) values(name, field string) []*models.Metric {
	var out []*models.Metric
	for _, m := range a.all() {
		if m.Name != name {
			continue
		}
		if _, ok := m.Field(field); ok {
			out = append(out, m)
		}
	}
	return out
}

// last returns the last health metric, or nil.
func (a *testAcc) lastHealth() *models.Metric {
	ms := a.all()
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Name == "opcua_health" {
			return ms[i]
		}
	}
	return nil
}

// waitFor polls cond until it holds or timeout passes; it fails the test with what.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// load builds an input from a TOML table through the real config loader (so the config shape
// and Init are exercised as an operator's file would be).
// loadUnreachable loads an input named name that browses the Server object of an endpoint
// where nothing listens: for what the plugin does without a server.
func loadUnreachable(t testing.TB, name string) *OPCUA {
	t.Helper()
	return load(t, `[[inputs.opcua]]
  name = "`+name+`"
  endpoint = "opc.tcp://127.0.0.1:1"
  [[inputs.opcua.group]]
    browse = "i=85"
`)
}

func load(t testing.TB, table string) *OPCUA {
	t.Helper()
	cfg, err := config.LoadText("test.conf", "[agent]\n  interval = \"1s\"\n"+table, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config:\n%s\n%v", table, err)
	}
	if len(cfg.Inputs) != 1 {
		t.Fatalf("want 1 input, got %d", len(cfg.Inputs))
	}
	o := cfg.Inputs[0].Plugin.(*OPCUA)
	t.Cleanup(o.stats.unregister)
	// the input's log goes to the test's log: shown when the test fails or with -v
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("source", o.Name)
	return o
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs o as a service input until the test ends; it returns the accumulator.
func start(t testing.TB, o *OPCUA) *testAcc {
	t.Helper()
	acc := newAcc()
	if err := o.Start(context.Background(), acc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Stop)
	return acc
}

// nodePeer is a running node-opcua test server.
type nodePeer struct {
	proc     *testpeer.Process
	endpoint string
	pki      string
	args     []string
	t        testing.TB
}

// nodeOPCUADir returns the folder of the node-opcua peer, or stops the test when it is not
// installed (CI fails).
func nodeOPCUADir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("testdata/node-opcua")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-opcua")); err != nil {
		testpeer.Missing(t, "node-opcua 2.182.2", "cd inputs/opcua/testdata/node-opcua && npm ci", err)
	}
	testpeer.LookPath(t, "node", "apt-get install nodejs")
	return dir
}

// templatePKI holds node-opcua's server key and certificate, made once per test run (that
// costs a second or two); each server gets a copy in a folder of its own, so that no two
// servers share node-opcua's PKI lock files.
var templatePKI struct {
	once sync.Once
	dir  string
	err  error
}

func pkiDir(t testing.TB) string {
	t.Helper()
	templatePKI.once.Do(func() {
		d, err := os.MkdirTemp("", "tagpipe-opcua-pki-")
		if err != nil {
			templatePKI.err = err
			return
		}
		templatePKI.dir = d
		p := testpeer.Start(t, testpeer.Options{Dir: nodeOPCUADirNoCheck()}, "node", "opcua_server.js", "--port", "0", "--pki", d)
		p.Stop()
	})
	if templatePKI.err != nil {
		t.Fatal(templatePKI.err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.CopyFS(filepath.Join(dir, "own"), os.DirFS(filepath.Join(templatePKI.dir, "own"))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startNodeOPCUA starts node-opcua's server with extra arguments on a free loopback port.
func startNodeOPCUA(t testing.TB, args ...string) *nodePeer {
	t.Helper()
	nodeOPCUADir(t)
	p := &nodePeer{pki: pkiDir(t), args: args, t: t}
	p.start("0")
	return p
}

func (p *nodePeer) start(port string) {
	p.t.Helper()
	args := append([]string{"opcua_server.js", "--port", port, "--pki", p.pki}, p.args...)
	p.proc = testpeer.Start(p.t, testpeer.Options{Dir: nodeOPCUADirNoCheck()}, "node", args...)
	p.endpoint = p.proc.Ready[0]
}

func nodeOPCUADirNoCheck() string {
	dir, _ := filepath.Abs("testdata/node-opcua")
	return dir
}

// restart kills the server (as a crash would) and starts it again on the same port and PKI,
// with args replacing the extra arguments.
func (p *nodePeer) restart(args ...string) {
	p.t.Helper()
	p.proc.Kill()
	port := p.endpoint[strings.LastIndex(p.endpoint, ":")+1:]
	p.args = args
	p.start(port)
}

// certFile returns the file of node-opcua's own certificate.
func (p *nodePeer) certFile() string { return filepath.Join(p.pki, "own", "certs", "certificate.pem") }

// startSim starts the simulated gopcua server in this process.
func startSim(t testing.TB, opts opcuasim.Options) *opcuasim.Server {
	t.Helper()
	s, err := opcuasim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(time.Second) })
	return s
}

// field returns the value of field key of m (fails the test when missing).
func field(t testing.TB, m *models.Metric, key string) any {
	t.Helper()
	f, ok := m.Field(key)
	if !ok {
		t.Fatalf("metric %s has no field %q", m.SeriesKey(), key)
	}
	return f.Value()
}

func tag(m *models.Metric, key string) string {
	v, _ := m.Tag(key)
	return v
}

func fmtMetrics(ms []*models.Metric) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s", m.SeriesKey())
		for _, f := range m.Fields {
			fmt.Fprintf(&b, " %s=%v", f.Key, f.Value())
		}
		fmt.Fprintf(&b, " %s\n", m.Time.Format(time.RFC3339Nano))
	}
	return b.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if templatePKI.dir != "" {
		os.RemoveAll(templatePKI.dir)
	}
	if simBinary.path != "" {
		os.RemoveAll(filepath.Dir(simBinary.path))
	}
	os.Exit(code)
}

// statusTable returns an input reading ns=1;s=Status (node-opcua holds "ok" there) with more
// top-level settings, one per string.
func statusTable(name, endpoint string, settings ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[[inputs.opcua]]\n  name = %q\n  endpoint = %q\n", name, endpoint)
	for _, s := range settings {
		b.WriteString("  " + s + "\n")
	}
	b.WriteString("  [[inputs.opcua.group]]\n    namespace = 1\n    [[inputs.opcua.group.node]]\n      id = \"s=Status\"\n")
	return b.String()
}
