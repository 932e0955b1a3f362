package modbus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// logCount is a slog handler that keeps the records at INFO and above (safe for concurrent
// use): the lines a plant operator reads in the journal.
type logCount struct {
	mu      sync.Mutex
	records []slog.Record
}

func (c *logCount) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (c *logCount) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.records = append(c.records, r.Clone())
	c.mu.Unlock()
	return nil
}
func (c *logCount) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCount) WithGroup(string) slog.Handler      { return c }

// lines returns the records so far, as text lines.
func (c *logCount) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.records {
		var b strings.Builder
		b.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		out = append(out, b.String())
	}
	return out
}

// attr returns attribute key of the records with message msg.
func (c *logCount) attr(msg, key string) []slog.Value {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []slog.Value
	for _, r := range c.records {
		if r.Message == msg {
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == key {
					out = append(out, a.Value)
				}
				return true
			})
		}
	}
	return out
}

// devicesConfig is a plugin table with extra lines and a device d0000, d0001, … of the bench
// profile on each address.
func devicesConfig(extra string, addrs []string) string {
	var b strings.Builder
	b.WriteString("[[inputs.modbus]]\n" + extra + benchProfile(20))
	for i, a := range addrs {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"d%04d\"\n    controller = \"tcp://%s\"\n    profile = \"bench\"\n", i, a)
	}
	return b.String()
}

// TestQuietStart: 2,000 healthy devices whose first poll overruns the interval, as a busy
// machine's 10,000 first connects do (pause_after_connect is longer than the interval here):
// every device skips a poll, and the log has at most 10 lines at INFO and above. A device's first
// connect is not an overrun; every device is polled in the intervals after it.
func TestQuietStart(t *testing.T) {
	const n, interval = 2000, 300 * time.Millisecond
	addrs := startSimProcess(t, "tcp", fmt.Sprintf("MODBUSSIM_PORTS=%d", n))
	m, logs, a := startLogged(t, devicesConfig("  pause_after_connect = \"400ms\"\n  health_metric = false\n", addrs), interval)
	// every device answered three times: its first poll and two after it
	a.waitFor(t, time.Minute, "three polls of every device", everyDevicePolled(n, 3))
	st := m.st
	skipped := st.overruns.Get()
	m.Stop()
	if skipped < n {
		t.Errorf("%d polls skipped: every device's first poll should have overrun", skipped)
	}
	lines := logs.lines()
	if len(lines) > 10 {
		t.Errorf("%d log lines while %d healthy devices started; the first 20:\n%s", len(lines), n, strings.Join(lines[:20], "\n"))
	}
	t.Logf("%d polls skipped at the start, %d log lines:\n%s", skipped, len(lines), strings.Join(lines, "\n"))
}

// TestOverrunsSummarised: 200 devices that answer later than the interval overrun every poll;
// the log has one line for all of them (and one when the input stops, of what came since), not
// one per device, and it names how many devices and the worst.
func TestOverrunsSummarised(t *testing.T) {
	const n, interval = 200, 200 * time.Millisecond
	addrs := startSimProcess(t, "tcp", fmt.Sprintf("MODBUSSIM_KINDS=slow:%d", n), "MODBUSSIM_SLOW=300ms")
	m, logs, a := startLogged(t, devicesConfig("  timeout_max = \"2s\"\n  health_metric = false\n", addrs), interval)
	a.waitFor(t, time.Minute, "four polls of every device", everyDevicePolled(n, 4))
	skipped := m.st.overruns.Get()
	m.Stop()
	lines := logs.lines()
	summaries := logs.attr(overrunMsg, "devices")
	if skipped < 3*n || len(summaries) == 0 || len(summaries) > 2 || len(lines) > 3 {
		t.Errorf("%d polls skipped; %d overrun summaries, %d lines:\n%s", skipped, len(summaries), len(lines), strings.Join(lines[:min(len(lines), 20)], "\n"))
	}
	most := int64(0)
	for _, v := range summaries {
		most = max(most, v.Int64())
	}
	if most < n/2 {
		t.Errorf("the summaries name at most %d devices of %d overrunning", most, n)
	}
	t.Logf("%d polls skipped, %d lines:\n%s", skipped, len(lines), strings.Join(lines, "\n"))
}

// TestDeadDevicesQuiet: 100 dead devices (nothing listens) report their error once each, and
// their breakers opening in one line for all; then, polled again and again (a short cool-down) through ten periods of
// errorRepeat (shortened here), they write one line a period in all, which names how many still
// fail, and not a line per device.
func TestDeadDevicesQuiet(t *testing.T) {
	const n, interval = 100, 100 * time.Millisecond
	defer func(r time.Duration) { errorRepeat = r }(errorRepeat)
	errorRepeat = 500 * time.Millisecond
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = testpeer.FreeAddr(t)
	}
	m, logs, a := startLogged(t, devicesConfig("  breaker_cool_down = \"200ms\"\n  reconnect_min = \"50ms\"\n  reconnect_max = \"100ms\"\n", addrs), interval)
	time.Sleep(10 * errorRepeat)
	connects := m.st.connectErrors.Get()
	m.Stop()
	_, errs := a.snapshot()
	lines := logs.lines()
	failing := logs.attr(failingMsg, "devices")
	// The first report of each device: its error (to the accumulator). A device whose error
	// changes kind (a refused dial, then, on a loaded machine, a poll out of time before its
	// dial) reports the new error: a few may report twice. Breakers opening and closing are a
	// line for all.
	first := n + n/10
	if connects < 5*n {
		t.Fatalf("%d failed dials: the devices were not polled again and again", connects)
	}
	if got := len(errs) + len(lines); got > first+2*10+4 || len(errs) > first {
		t.Errorf("%d errors and %d log lines from %d dead devices in %s (%d failed dials); the first lines:\n%s",
			len(errs), len(lines), n, 10*errorRepeat, connects, strings.Join(lines[:min(len(lines), 20)], "\n"))
	}
	most := int64(0)
	for _, v := range failing {
		most = max(most, v.Int64())
	}
	if most < n/2 {
		t.Errorf("the summaries of failing devices name at most %d of %d devices", most, n)
	}
	t.Logf("%d failed dials; %d errors, %d log lines (%d summaries of failing devices)", connects, len(errs), len(lines), len(failing))
}

// TestFirstConnectNotOverrun: a device whose first poll overruns the interval because of its
// connect (pause_after_connect longer than the interval) skips a poll, counted, but is not
// reported as overrunning; its later polls are on time.
func TestFirstConnectNotOverrun(t *testing.T) {
	const interval = time.Second
	addrs := startSimProcess(t, "tcp")
	m, logs, a := startLogged(t, devicesConfig("  pause_after_connect = \"1200ms\"\n  health_metric = false\n", addrs), interval)
	a.waitFor(t, time.Minute, "three polls", func(ms []*models.Metric) bool { return len(ms) >= 3 })
	skipped := m.st.overruns.Get()
	m.Stop() // writes what the summaries hold
	if skipped == 0 {
		t.Fatal("the first poll did not overrun")
	}
	if s := logs.attr(overrunMsg, "devices"); len(s) != 0 {
		t.Errorf("the first connect reported as an overrun (%d polls skipped):\n%s", skipped, strings.Join(logs.lines(), "\n"))
	}
}

// everyDevicePolled is a waitFor condition: n devices, each with at least k metrics.
func everyDevicePolled(n, k int) func([]*models.Metric) bool {
	return func(ms []*models.Metric) bool {
		polls := map[string]int{}
		for _, x := range ms {
			dev, _ := x.Tag("device")
			polls[dev]++
		}
		for _, c := range polls {
			if c < k {
				return false
			}
		}
		return len(polls) == n
	}
}

// startLogged starts the plugin of config text at interval, its log counted.
func startLogged(t *testing.T, text string, interval time.Duration) (*Modbus, *logCount, *acc) {
	t.Helper()
	m := load(t, text)
	m.SetInterval(interval)
	logs := &logCount{}
	m.Log = slog.New(logs)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return m, logs, a
}
