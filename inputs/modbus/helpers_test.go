package modbus

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// load builds the plugin from a config text through the real loader (so that errors carry
// FILE:LINE) and returns it initialized.
func load(t testing.TB, text string) *Modbus {
	t.Helper()
	cfg, err := config.LoadText("test.conf", text, nil)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	if len(cfg.Inputs) != 1 {
		t.Fatalf("want one input, got %d", len(cfg.Inputs))
	}
	m := cfg.Inputs[0].Plugin.(*Modbus)
	t.Cleanup(func() {
		m.Stop()
		if m.st != nil {
			m.st.set.Unregister()
		}
	})
	return m
}

// acc collects what the plugin gathers: the modbus_health metrics apart from the others. It is
// safe for concurrent use.
type acc struct {
	mu      sync.Mutex
	metrics []*models.Metric
	health  []*models.Metric
	errs    []error
	notify  chan struct{}
}

func newAcc() *acc { return &acc{notify: make(chan struct{}, 1)} }

func (a *acc) AddMetric(m *models.Metric) {
	a.mu.Lock()
	if m.Name == "modbus_health" {
		a.health = append(a.health, m)
	} else {
		a.metrics = append(a.metrics, m)
	}
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

func (a *acc) AddError(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
}

// healthSnapshot returns the modbus_health metrics so far.
func (a *acc) healthSnapshot() []*models.Metric {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*models.Metric(nil), a.health...)
}

func (a *acc) snapshot() ([]*models.Metric, []error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*models.Metric(nil), a.metrics...), append([]error(nil), a.errs...)
}

// waitFor waits until cond holds for the metrics gathered so far.
func (a *acc) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]*models.Metric) bool) []*models.Metric {
	t.Helper()
	deadline := time.After(timeout)
	for {
		ms, _ := a.snapshot()
		if cond(ms) {
			return ms
		}
		select {
		case <-a.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			_, errs := a.snapshot()
			t.Fatalf("%s: not within %s; %d metrics, errors: %v", what, timeout, len(ms), errs)
		}
	}
}

// byDevice returns the metrics of one device.
func byDevice(ms []*models.Metric, name string) []*models.Metric {
	var out []*models.Metric
	for _, m := range ms {
		if v, _ := m.Tag("device"); v == name {
			out = append(out, m)
		}
	}
	return out
}

func gather(t testing.TB, m *Modbus) ([]*models.Metric, error) {
	t.Helper()
	a := newAcc()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Gather(ctx, a)
	ms, errs := a.snapshot()
	if len(errs) > 0 {
		t.Errorf("Gather reported errors through the accumulator: %v", errs)
	}
	return ms, err
}

// field returns the field key of the first metric that has it.
func field(t testing.TB, ms []*models.Metric, key string) models.Field {
	t.Helper()
	for _, m := range ms {
		if f, ok := m.Field(key); ok {
			return f
		}
	}
	t.Fatalf("no field %q in %d metrics", key, len(ms))
	return models.Field{}
}

func hasField(ms []*models.Metric, key string) bool {
	for _, m := range ms {
		if _, ok := m.Field(key); ok {
			return true
		}
	}
	return false
}

// peer is a running modbus_server.py.
type peer struct {
	*testpeer.Process
	addr string // host:port (TCP transports) or the device path (serial)
}

// startPymodbus starts testdata/modbus_server.py (Debian's python3-pymodbus) with args on a
// free loopback port.
func startPymodbus(t testing.TB, args ...string) *peer {
	t.Helper()
	script, err := filepath.Abs("testdata/modbus_server.py")
	if err != nil {
		t.Fatal(err)
	}
	pymodbusWorks(t, script)
	isSerial := false
	for _, a := range args {
		isSerial = isSerial || a == "serial"
	}
	if !isSerial {
		args = append([]string{"--port", "0"}, args...)
	}
	p := testpeer.Start(t, testpeer.Options{}, testpeer.Python, append([]string{script}, args...)...)
	pr := &peer{Process: p}
	switch len(p.Ready) {
	case 1:
		pr.addr = p.Ready[0]
	case 2:
		pr.addr = p.Ready[0] + ":" + p.Ready[1]
		if strings.Contains(p.Ready[0], ":") {
			pr.addr = "[" + p.Ready[0] + "]:" + p.Ready[1]
		}
	default:
		t.Fatalf("READY line %q", p.Ready)
	}
	return pr
}

// pymodbusWorks starts the peer once (--check) and stops the test with Python's own error when
// it cannot serve: a missing module on a new machine names the module, not the package.
func pymodbusWorks(t testing.TB, script string) {
	t.Helper()
	pymodbusCheck.Do(func() {
		out, err := runQuiet(testpeer.Python, script, "--check", "--port", "0")
		if err != nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			pymodbusCheck.err = fmt.Errorf("%s --check: %v: %s", filepath.Base(script), err, lines[len(lines)-1])
		}
	})
	if pymodbusCheck.err != nil {
		testpeer.Missing(t, "the pymodbus test peer", "apt-get install python3-pymodbus python3-serial-asyncio", pymodbusCheck.err)
	}
}

var pymodbusCheck struct {
	sync.Once
	err error
}

func runQuiet(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func loadText(text string) (*config.Config, error) { return config.LoadText("test.conf", text, nil) }

// onePoller builds m's pollers handing metrics to acc and returns the first with its first
// device, ready to poll; its connections are closed when the test ends.
func onePoller(t testing.TB, m *Modbus, acc models.Accumulator) (*poller, *device) {
	t.Helper()
	ps, _ := m.buildPollers(m.stats(), time.Second, acc)
	p := ps[0]
	t.Cleanup(p.close)
	return p, p.devices[0]
}

// serve runs m as a service input at interval until cond holds, stops it, and returns what it
// gathered and its stats.
func serve(t testing.TB, m *Modbus, interval time.Duration, what string, cond func([]*models.Metric) bool) ([]*models.Metric, []error, *stats) {
	t.Helper()
	m.SetInterval(interval)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	st := m.st
	a.waitFor(t, 10*time.Second, what, cond)
	m.Stop()
	ms, errs := a.snapshot()
	return ms, errs, st
}
