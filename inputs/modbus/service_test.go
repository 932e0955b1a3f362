package modbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// TestServiceLifecycle: Start polls every device on its own schedule, reusing one tag slice per
// device; Stop ends every goroutine and closes every connection.
func TestServiceLifecycle(t *testing.T) {
	p := startPymodbus(t, "--units", "1,2,3")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  max_gap = 20", 1, 2, 3))
	m.SetInterval(200 * time.Millisecond)
	a := newAcc()
	before := time.Now()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), a); err == nil {
		t.Error("a second Start must fail")
	}
	ms := a.waitFor(t, 10*time.Second, "three polls of each", func(ms []*models.Metric) bool {
		return len(byDevice(ms, "unit-1")) >= 3 && len(byDevice(ms, "unit-2")) >= 3 && len(byDevice(ms, "unit-3")) >= 3
	})
	m.Stop()
	if stack := goroutines(); strings.Contains(stack, "inputs/modbus.(*link).run") {
		t.Fatalf("goroutines outlive Stop:\n%s", stack)
	}
	n := len(ms)
	time.Sleep(300 * time.Millisecond)
	if ms2, _ := a.snapshot(); len(ms2) != n {
		t.Errorf("%d metrics after Stop", len(ms2)-n)
	}
	for _, dev := range []string{"unit-1", "unit-2", "unit-3"} {
		d := byDevice(ms, dev)
		checkSimple(t, d, dev)
		for i, x := range d {
			if unsafe.SliceData(x.Tags) != unsafe.SliceData(d[0].Tags) {
				t.Errorf("%s: poll %d has a new tag slice", dev, i)
			}
			if x.Time.Before(before) || x.Time.After(time.Now()) {
				t.Errorf("%s: time %s outside the test", dev, x.Time)
			}
			if i > 0 && x.Time.Sub(d[i-1].Time) < 100*time.Millisecond {
				t.Errorf("%s: polls %s apart with a 200ms interval", dev, x.Time.Sub(d[i-1].Time))
			}
		}
	}
	// Each device polls at its phase of every interval, counted from the Unix epoch: unit-1 at
	// 0, unit-2 at 60 ms, unit-3 at 130 ms (a third and two thirds of 200 ms, in 10 ms slots).
	// Most polls land within 30 ms after their slot (the machine is shared: not all).
	for i, dev := range []string{"unit-1", "unit-2", "unit-3"} {
		ph := phase(i, 3, 200*time.Millisecond)
		onTime := 0
		d := byDevice(ms, dev)
		for _, x := range d {
			if late := time.Duration((x.Time.UnixNano() - int64(ph)) % int64(200*time.Millisecond)); late < 30*time.Millisecond {
				onTime++
			}
		}
		if onTime*2 < len(d) {
			t.Errorf("%s: %d of %d polls within 30ms of its phase %s", dev, onTime, len(d), ph)
		}
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestStopDuringRequest: Stop does not wait for a device's timeout.
func TestStopDuringRequest(t *testing.T) {
	p := startPymodbus(t, "--units", "1")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  timeout = \"30s\"", 9))
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	st := m.st
	deadline := time.Now().Add(5 * time.Second)
	for st.requests.Get() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	m.Stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Stop took %s while a request waited on a 30s timeout", took)
	}
	if _, errs := a.snapshot(); len(errs) != 0 {
		t.Errorf("stopping is not the device's error: %v", errs)
	}
}

func TestPhase(t *testing.T) {
	for _, c := range []struct {
		i, n     int
		interval time.Duration
		want     time.Duration
	}{
		{0, 4, time.Second, 0}, {1, 4, time.Second, 250 * time.Millisecond}, {3, 4, time.Second, 750 * time.Millisecond},
		{1, 3, time.Second, 330 * time.Millisecond}, // 10 ms slots
		{1, 3, 30 * time.Millisecond, 10 * time.Millisecond},
		{9999, 10000, time.Second, 990 * time.Millisecond},
	} {
		if got := phase(c.i, c.n, c.interval); got != c.want {
			t.Errorf("phase(%d, %d, %s) = %s, want %s", c.i, c.n, c.interval, got, c.want)
		}
	}
}

// TestPollAllocations: a scheduled poll (breaker, requests, decoding, the metrics, the health
// metric) allocates nothing of its own, also with an unchanged STRING field.
func TestPollAllocations(t *testing.T) {
	s, err := modbussim.Listen("127.0.0.1:0", modbussim.Config{Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := load(t, fmt.Sprintf("[[inputs.modbus]]\n%s  [[inputs.modbus.device]]\n    name = \"m\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n    tags = { line = \"A\" }\n",
		strings.ReplaceAll(modbussim.Profile, `name = "alarm"`, "name = \"alarm\"\n      measurement = \"alarms\""), s.Addr()))
	var metrics int
	counter := countAcc{n: &metrics}
	p, d := onePoller(t, m, counter)
	p.onErr = func(err error) { t.Fatal(err) }
	ctx := context.Background()
	p.poll(ctx, d, time.Now())
	allocs := testing.AllocsPerRun(200, func() { p.poll(ctx, d, time.Now()) })
	if metrics != 3*202 { // one poll before, one warm-up run, 200 measured; power, alarms, health
		t.Fatalf("%d metrics", metrics)
	}
	// Metrics and their fields are carved from models' shared chunks: a chunk of 256 metrics
	// every 85 polls, of 4096 fields every 140. Anything allocated per poll shows as 1 or more.
	if allocs != 0 && !raceEnabled { // the race detector allocates on its own
		t.Errorf("%v allocations per poll, want 0", allocs)
	}
}

type countAcc struct{ n *int }

func (c countAcc) AddMetric(*models.Metric) { *c.n++ }
func (c countAcc) AddError(error)           {}

func TestErrorKey(t *testing.T) {
	spec := &deviceSpec{name: "d", unit: 1}
	r := &request{kind: kindHolding, addr: 4, count: 2}
	timeout := func(port int) error {
		return &requestError{d: spec, r: r, err: &net.OpError{Op: "read", Net: "tcp",
			Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, Err: os.ErrDeadlineExceeded}}
	}
	a := &noAnswerError{errors.Join(timeout(1111), errors.New(`device "d": 1 more request skipped in this poll`))}
	b := &noAnswerError{errors.Join(timeout(2222), errors.New(`device "d": 1 more request skipped in this poll`))}
	if errorKey(a) != errorKey(b) || a.Error() == b.Error() {
		t.Errorf("keys %q and %q: a new local port is the same error", errorKey(a), errorKey(b))
	}
	c := &ExceptionError{Device: "d", Function: 3, Address: 4, Count: 2, Code: 2}
	if errorKey(c) == errorKey(a) || errorKey(c) != "3:4+2:exception 2;" {
		t.Errorf("exception key %q", errorKey(c))
	}
}

// TestControllerDownThenUp: while nothing listens, dials back off and the breaker opens; once
// the device is there, polling resumes on its own.
func TestControllerDownThenUp(t *testing.T) {
	addr := testpeer.FreeAddr(t)
	m := load(t, fmt.Sprintf("[[inputs.modbus]]\n  timeout = \"200ms\"\n  breaker_failures = 3\n  breaker_cool_down = \"300ms\"\n%s  [[inputs.modbus.device]]\n    name = \"late\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n",
		modbussim.Profile, addr))
	m.SetInterval(50 * time.Millisecond)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	st := m.st
	deadline := time.Now().Add(10 * time.Second)
	for st.breakerSkips.Get() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if polls, dials := st.polls.Get(), st.connectErrors.Get(); dials >= polls || dials == 0 {
		t.Errorf("%d dials in %d polls: a refused controller is not dialled on every poll", dials, polls)
	}
	_, errs := a.snapshot()
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), `device "late"`) || !strings.Contains(errs[0].Error(), "connection refused") {
		t.Fatalf("errors: %v", errs)
	}
	s, err := modbussim.Listen(addr, modbussim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a.waitFor(t, 10*time.Second, "polls after the device came up", func(ms []*models.Metric) bool { return len(ms) >= 3 })
}
