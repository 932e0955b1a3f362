package modbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// loopRun starts m with the given devices' addresses (name d000 upward) at interval, runs it
// for the two intervals to connect and then a window of intervals, and returns per device the
// polls whose answers arrived in each interval of the window (counted by the metric's time
// against the device's phase), and the errors reported.
func loopRun(t *testing.T, m *Modbus, interval time.Duration, window int, n int) ([][]int, []error) {
	t.Helper()
	m.SetInterval(interval)
	a := newAcc()
	start := time.Now()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	phases := map[string]time.Duration{}
	for _, d := range m.running.Load().devices {
		phases[d.name] = d.phase
	}
	iv := int64(interval)
	k0 := (start.UnixNano()+iv-1)/iv + 2
	k1 := k0 + int64(window)
	time.Sleep(time.Until(time.Unix(0, (k1+1)*iv)))
	m.Stop()
	ms, errs := a.snapshot()
	polls := make([][]int, n)
	for i := range polls {
		polls[i] = make([]int, window)
	}
	for _, x := range ms {
		if x.Name == "modbus_health" {
			continue
		}
		dev, _ := x.Tag("device")
		var i int
		fmt.Sscanf(dev, "d%04d", &i) // devicesConfig's names
		k := (x.Time.UnixNano() - int64(phases[dev])) / iv
		if k >= k0 && k < k1 {
			polls[i][k-k0]++
		}
	}
	return polls, errs
}

// simServer serves addresses on loopback with modbussim, with fault f on unit 1.
func simServer(t *testing.T, n int, f modbussim.Fault) []string {
	t.Helper()
	s := modbussim.New(modbussim.Config{Faults: map[byte]modbussim.Fault{1: f}})
	t.Cleanup(func() { s.Close() })
	var addrs []string
	for range n {
		a, err := s.AddListener("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	return addrs
}

// TestLoopManyDevices: 60 devices on the event loop, 3 of them blackholed and 3 refusing
// connections. Every healthy device is polled exactly once in every interval of the window: a
// device that times out delays no other on the loop. The loop ended most polls itself and
// handed the failing ones over.
func TestLoopManyDevices(t *testing.T) {
	healthy := simServer(t, 54, modbussim.Fault{})
	black := simServer(t, 3, modbussim.Fault{NoAnswer: true})
	var addrs []string
	kind := map[int]string{}
	for i := range 60 {
		switch {
		case i%20 == 5:
			kind[i] = "blackholed"
			addrs, black = append(addrs, black[0]), black[1:]
		case i%20 == 15:
			kind[i] = "dead"
			addrs = append(addrs, testpeer.FreeAddr(t))
		default:
			addrs, healthy = append(addrs, healthy[0]), healthy[1:]
		}
	}
	m := load(t, devicesConfig("  timeout_max = \"300ms\"\n", addrs))
	polls, errs := loopRun(t, m, 500*time.Millisecond, 6, 60)
	if m.loop == nil || len(m.loop.devs) != 60 {
		t.Fatalf("want the 60 devices on the event loop")
	}
	for i, p := range polls {
		for k, c := range p {
			if want := map[bool]int{true: 1, false: 0}[kind[i] == ""]; c != want {
				t.Errorf("device %d (%s): %d polls in interval %d of the window, want %d", i, cmpOr(kind[i], "healthy"), c, k, want)
			}
		}
	}
	if m.loop.polled.Load() < 54*6 || m.loop.handed.Load() == 0 {
		t.Errorf("polls ended on the loop %d, handed over %d: want at least %d and some", m.loop.polled.Load(), m.loop.handed.Load(), 54*6)
	}
	var timeouts, refused int
	for _, err := range errs {
		switch {
		case strings.Contains(err.Error(), "i/o timeout"):
			timeouts++
		case strings.Contains(err.Error(), "connection refused"):
			refused++
		}
	}
	if timeouts == 0 || refused == 0 {
		t.Errorf("want timeouts and refused connections reported, got: %v", errs)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestLoopSplitAnswer: every answer comes in two segments 30 ms apart (header, then the rest):
// the loop puts them together and ends every poll itself, with no error.
func TestLoopSplitAnswer(t *testing.T) {
	addrs := append(simServer(t, 1, modbussim.Fault{Split: 30 * time.Millisecond}), simServer(t, 1, modbussim.Fault{})...)
	m := load(t, devicesConfig("", addrs))
	polls, errs := loopRun(t, m, 300*time.Millisecond, 5, 2)
	onePollEach(t, polls, errs)
	// The first poll of each connects on a goroutine; the others end on the loop.
	if h := m.loop.handed.Load(); h != 2 || m.loop.polled.Load() < 2*5 {
		t.Errorf("handed over %d (want 2: the connects), ended on the loop %d", h, m.loop.polled.Load())
	}
}

// TestLoopCloseMidAnswer: a device closes its connection half way through each answer. Its
// polls fail as on the goroutine transport (the same error reported, connects counted), and
// the healthy device on the same loop is polled every interval.
func TestLoopCloseMidAnswer(t *testing.T) {
	firstErr := map[string]string{}
	for _, transport := range []string{"auto", "goroutine"} {
		addrs := append(simServer(t, 1, modbussim.Fault{CloseMid: true}), simServer(t, 1, modbussim.Fault{})...)
		m := load(t, devicesConfig(fmt.Sprintf("  transport = %q\n  retries = 0\n", transport), addrs))
		polls, errs := loopRun(t, m, 300*time.Millisecond, 4, 2)
		for k, c := range polls[1] {
			if c != 1 {
				t.Errorf("%s: the healthy device: %d polls in interval %d, want 1", transport, c, k)
			}
		}
		for k, c := range polls[0] {
			if c != 0 {
				t.Errorf("%s: the device that closes: %d polls in interval %d, want none", transport, c, k)
			}
		}
		if len(errs) == 0 {
			t.Fatalf("%s: no error reported", transport)
		}
		firstErr[transport] = errorKey(errs[0])
		if transport == "auto" && (m.loop == nil || m.loop.handed.Load() == 0) {
			t.Errorf("auto: want the event loop, handing the failed polls over")
		}
		if transport == "goroutine" && m.loop != nil {
			t.Errorf("goroutine: want no event loop")
		}
	}
	if firstErr["auto"] != firstErr["goroutine"] {
		t.Errorf("the loop reports %q, the goroutine transport %q", firstErr["auto"], firstErr["goroutine"])
	}
}

// TestLoopFallback: when the event loop cannot be made, one INFO line says so and every device
// is polled on a goroutine.
func TestLoopFallback(t *testing.T) {
	old := newLoop
	newLoop = func(*Modbus, models.Accumulator, []*poller) (*eventLoop, error) {
		return nil, errors.New("epoll_create1: not permitted")
	}
	t.Cleanup(func() { newLoop = old })
	addrs := simServer(t, 3, modbussim.Fault{})
	m := load(t, devicesConfig("", addrs))
	var log bytes.Buffer
	m.Log = slog.New(slog.NewTextHandler(&log, nil))
	polls, errs := loopRun(t, m, 300*time.Millisecond, 3, 3)
	if m.loop != nil {
		t.Errorf("an event loop ran")
	}
	onePollEach(t, polls, errs)
	if n := strings.Count(log.String(), "the event loop cannot run here"); n != 1 || !strings.Contains(log.String(), "level=INFO") {
		t.Errorf("want one INFO line about the event loop, log:\n%s", log.String())
	}
}

// onePollEach checks that every device was polled once in every interval, without errors.
func onePollEach(t *testing.T, polls [][]int, errs []error) {
	t.Helper()
	for i, p := range polls {
		for k, c := range p {
			if c != 1 {
				t.Errorf("device %d: %d polls in interval %d, want 1", i, c, k)
			}
		}
	}
	if len(errs) > 0 {
		t.Errorf("errors: %v", errs)
	}
}

// batchAcc is acc with AddMetrics, counting what came in batches and what came alone.
type batchAcc struct {
	*acc
	mu             sync.Mutex
	calls, inBatch int
	alone          int
}

func (b *batchAcc) AddMetric(m *models.Metric) {
	b.mu.Lock()
	b.alone++
	b.mu.Unlock()
	b.acc.AddMetric(m)
}

func (b *batchAcc) AddMetrics(ms []*models.Metric) {
	b.mu.Lock()
	b.calls++
	b.inBatch += len(ms)
	b.mu.Unlock()
	for _, m := range ms {
		b.acc.AddMetric(m)
	}
}

// TestLoopHandsBatches: the metrics of the polls that end on the event loop reach a
// BatchAccumulator through AddMetrics, a round's together; those of the polls handed over to
// goroutines (here the first connects) come one by one, as from the goroutine transport.
func TestLoopHandsBatches(t *testing.T) {
	const n = 20
	m := load(t, devicesConfig("", simServer(t, n, modbussim.Fault{})))
	m.SetInterval(200 * time.Millisecond)
	b := &batchAcc{acc: newAcc()}
	if err := m.Start(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, 10*time.Second, "five polls of every device", func(ms []*models.Metric) bool { return len(ms) >= 5*n })
	m.Stop()
	if m.loop == nil {
		t.Fatal("want the devices on the event loop")
	}
	polled, handed := int(m.loop.polled.Load()), int(m.loop.handed.Load())
	// Each poll emits its data metric and its health metric.
	if b.inBatch != 2*polled || b.alone != 2*handed {
		t.Errorf("%d metrics in %d batches and %d alone; want %d in batches (2 for each of the %d polls ended on the loop) and %d alone (2 for each of the %d handed over)",
			b.inBatch, b.calls, b.alone, 2*polled, polled, 2*handed, handed)
	}
	if b.calls == 0 || b.calls > polled {
		t.Errorf("%d batches for %d polls on the loop: want one a round at most", b.calls, polled)
	}
}

// TestRunUnitsOnLoop: in cluster mode the units of plain Modbus TCP devices run on the event
// loop. RunUnits takes them off it: when it returns their connections are closed and they get
// no request more — also a blackholed device whose poll a goroutine has (its first connects
// there, then waits for an answer that never comes, with a timeout of a minute): its poll is
// ended, not timed out (no error reported). Taken back, the units are polled on the loop again,
// their first metrics Fresh. The device page reads every device meanwhile (for the race
// detector).
func TestRunUnitsOnLoop(t *testing.T) {
	s := modbussim.New(modbussim.Config{Record: true})
	t.Cleanup(func() { s.Close() })
	black := modbussim.New(modbussim.Config{Record: true, Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}}})
	t.Cleanup(func() { black.Close() })
	var addrs []string
	for i := range 8 {
		srv := s
		if i%4 == 3 {
			srv = black
		}
		a, err := srv.AddListener("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	rec := func(addr string) modbussim.DeviceRecord {
		if r, ok := s.Record()[addr]; ok {
			return r
		}
		return black.Record()[addr]
	}
	m := load(t, devicesConfig("  timeout_min = \"1m\"\n  timeout_max = \"1m\"\n  retries = 0\n  health_metric = false\n", addrs))
	m.SetInterval(100 * time.Millisecond)
	if units := m.Units(); len(units) != len(addrs) {
		t.Fatalf("%d units, want one a device (%d)", len(units), len(addrs))
	}
	first := func(u int) bool { return u < 4 }      // d0000..d0003, d0003 blackholed
	second := func(u int) bool { return !first(u) } // d0004..d0007, d0007 blackholed
	m.RunUnits(first)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	healthy := func(from int) func([]*models.Metric) bool {
		return func(ms []*models.Metric) bool {
			for i := from; i < from+3; i++ {
				if len(byDevice(ms, fmt.Sprintf("d%04d", i))) < 3 {
					return false
				}
			}
			return true
		}
	}
	reading := make(chan struct{})
	read := sync.WaitGroup{}
	read.Go(func() {
		var f models.DeviceFigures
		var x models.DeviceDetail
		for {
			select {
			case <-reading:
				return
			default:
			}
			m.DeviceStates(time.Now(), func(d models.DeviceStatus) {
				d.Detail.Figures(&f)
				d.Detail.Detail(time.Now(), &x)
			})
			time.Sleep(time.Millisecond)
		}
	})
	defer read.Wait()
	defer close(reading)
	a.waitFor(t, 10*time.Second, "three polls of the first units' healthy devices", healthy(0))
	if m.loop == nil || m.loop.polled.Load() == 0 {
		t.Fatal("want the units' polls on the event loop")
	}
	for rec(addrs[3]).Open == 0 { // the blackholed device's poll is on its goroutine: connected, waiting
		time.Sleep(10 * time.Millisecond)
	}

	m.RunUnits(second)
	requests := func(from int) (n int) {
		for _, a := range addrs[from : from+4] {
			n += len(rec(a).Requests[1])
		}
		return n
	}
	before := requests(0)
	a.waitFor(t, 10*time.Second, "three polls of the second units' healthy devices", healthy(4))
	if after := requests(0); after != before {
		t.Errorf("%d requests to the first units after RunUnits took them off", after-before)
	}
	for _, a := range addrs[:4] {
		waitClosed(t, a, rec)
	}

	ms, errs := a.snapshot()
	if len(errs) > 0 {
		t.Errorf("errors reported: %v", errs)
	}
	seen := map[string]int{}
	for i := range 3 {
		name := fmt.Sprintf("d%04d", i)
		seen[name] = len(byDevice(ms, name))
	}
	polled := m.loop.polled.Load()
	m.RunUnits(first)
	ms = a.waitFor(t, 10*time.Second, "three polls of the first units' healthy devices again", func(ms []*models.Metric) bool {
		for name, n := range seen {
			if len(byDevice(ms, name)) < n+3 {
				return false
			}
		}
		return true
	})
	if m.loop.polled.Load() <= polled {
		t.Error("the units taken back are not polled on the event loop")
	}
	for name, n := range seen {
		d := byDevice(ms, name)
		if !d[n].Fresh || d[n+1].Fresh {
			t.Errorf("%s taken back: fresh flags %v %v, want only the first", name, d[n].Fresh, d[n+1].Fresh)
		}
	}
	m.Stop()
	for _, a := range addrs {
		waitClosed(t, a, rec)
		if r := rec(a); r.MaxOpen > 1 {
			t.Errorf("%s had %d clients at once", a, r.MaxOpen)
		}
	}
}

// waitClosed waits (at most 5 s: the simulator sees a close when its goroutine reads it) until
// the device at addr has no connection open.
func waitClosed(t *testing.T, addr string, rec func(string) modbussim.DeviceRecord) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); rec(addr).Open > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := rec(addr).Open; n != 0 {
		t.Errorf("%s: %d connections still open", addr, n)
	}
}
