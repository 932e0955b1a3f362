package modbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"slices"
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
	const interval = 600 * time.Millisecond
	p := startPymodbus(t, "--units", "1,2,3")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  max_gap = 20", 1, 2, 3))
	m.SetInterval(interval)
	a := newAcc()
	before := time.Now()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), a); err == nil {
		t.Error("a second Start must fail")
	}
	ms := a.waitFor(t, 20*time.Second, "three polls of each", func(ms []*models.Metric) bool {
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
	// Each device polls at its phase of every interval, counted from the Unix epoch (Phase: a
	// hash of its controller, unit id and name, in 10 ms slots), once an interval: a poll never
	// starts before its tick and a poller skips the ticks it overran, so no interval (counted
	// from the device's phase) has two. Lateness depends on how busy the machine is: each
	// device's polls are judged against the three phases, and lie closest after its own (a
	// device polled at another's phase, or at none, would not; two devices whose hashes share a
	// slot are polled in turn at it).
	var phases []time.Duration
	for u, name := range []string{"unit-1", "unit-2", "unit-3"} {
		phases = append(phases, Phase("tcp://"+p.addr, byte(u+1), name, interval))
	}
	for i, dev := range []string{"unit-1", "unit-2", "unit-3"} {
		d := byDevice(ms, dev)
		checkSimple(t, d, dev)
		slots := map[int64]bool{}
		for j, x := range d {
			if unsafe.SliceData(x.Tags) != unsafe.SliceData(d[0].Tags) {
				t.Errorf("%s: poll %d has a new tag slice", dev, j)
			}
			if x.Time.Before(before) || x.Time.After(time.Now()) {
				t.Errorf("%s: time %s outside the test", dev, x.Time)
			}
			k := (x.Time.UnixNano() - int64(phases[i])) / int64(interval)
			if slots[k] {
				t.Errorf("%s: two polls in the interval from %s", dev, time.Unix(0, k*int64(interval)+int64(phases[i])).Format("15:04:05.000"))
			}
			slots[k] = true
		}
		closest := -1
		var best time.Duration
		for pi, ph := range phases {
			var late []time.Duration
			for _, x := range d {
				late = append(late, time.Duration((x.Time.UnixNano()-int64(ph))%int64(interval)))
			}
			slices.Sort(late)
			if med := late[len(late)/2]; closest < 0 || med < best {
				closest, best = pi, med
			}
		}
		if phases[closest] != phases[i] {
			t.Errorf("%s: its polls lie closest after the phase %s, not its own %s", dev, phases[closest], phases[i])
		}
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestStopDuringRequest: Stop does not wait for a device's timeout (an hour here).
func TestStopDuringRequest(t *testing.T) {
	p := startPymodbus(t, "--units", "1")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  timeout = \"1h\"", 9))
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	st := m.st
	deadline := time.Now().Add(10 * time.Second)
	for st.requests.Get() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st.requests.Get() == 0 {
		t.Fatal("no request sent")
	}
	stopped := make(chan struct{})
	go func() {
		m.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		p.Kill() // the connection ends: the request with it, and Stop returns
		<-stopped
		t.Fatal("Stop waited on a request's one-hour timeout")
	}
	if _, errs := a.snapshot(); len(errs) != 0 {
		t.Errorf("stopping is not the device's error: %v", errs)
	}
}

// TestPhase: a phase lies in the interval, in 10 ms slots from 100 ms up, and depends on the
// device's controller, unit id and name alone.
func TestPhase(t *testing.T) {
	for _, iv := range []time.Duration{time.Second, 100 * time.Millisecond, 10 * time.Second, 1005 * time.Millisecond, 30 * time.Millisecond} {
		seen := map[time.Duration]bool{}
		for i := range 1000 {
			p := Phase(fmt.Sprintf("tcp://10.0.%d.%d:502", i/250, i%250), 1, fmt.Sprintf("d%d", i), iv)
			if p < 0 || p >= iv || iv >= 100*time.Millisecond && p%phaseSlot != 0 {
				t.Fatalf("interval %s: phase %s", iv, p)
			}
			seen[p] = true
		}
		// 1,000 draws fill 632 of 1,000 slots, and every one of 100
		if want := min(int(iv/phaseSlot), 1000); iv >= 100*time.Millisecond && len(seen) < want/2 {
			t.Errorf("interval %s: 1,000 devices in %d of %d slots", iv, len(seen), iv/phaseSlot)
		}
	}
	a := Phase("tcp://10.0.0.5:502", 1, "meter", time.Second)
	if Phase("tcp://10.0.0.5:502", 1, "meter", time.Second) != a {
		t.Error("the same identity got another phase")
	}
	// The parts are kept apart: an identity is not the concatenation of its parts.
	differ := 0
	for _, o := range []time.Duration{Phase("tcp://10.0.0.5:50", 1, "2meter", time.Second), Phase("tcp://10.0.0.5:502", 2, "meter", time.Second),
		Phase("tcp://10.0.0.6:502", 1, "meter", time.Second), Phase("tcp://10.0.0.5:502", 1, "meter2", time.Second)} {
		if o != a {
			differ++
		}
	}
	if differ < 3 { // one in 100 may share the slot by chance; these four do not all
		t.Errorf("%d of 4 other identities in the same slot", 4-differ)
	}
}

// TestPhaseSpread: 10,000 devices, each on its own address as cmd/loadtest configures them,
// and 10,000 units of 100 gateways, fill the 100 slots of a 1 s interval evenly: no slot holds
// more than 1.5 times the mean or less than half of it (a draw of 10,000 into 100 slots is
// 100 ± 10 a slot).
func TestPhaseSpread(t *testing.T) {
	for _, c := range []struct {
		what string
		id   func(i int) (string, byte, string)
	}{
		{"a device on each address", func(i int) (string, byte, string) {
			return fmt.Sprintf("tcp://127.0.%d.%d:1502", 1+(i+1)/254, 1+(i+1)%254), 1, fmt.Sprintf("d%05d", i)
		}},
		{"100 gateways of 100 units", func(i int) (string, byte, string) {
			return fmt.Sprintf("tcp://10.1.0.%d:502", i/100), byte(1 + i%100), fmt.Sprintf("meter-%d", i)
		}},
	} {
		const n = 10_000
		slots := make([]int, time.Second/phaseSlot)
		for i := range n {
			addr, unit, name := c.id(i)
			slots[Phase(addr, unit, name, time.Second)/phaseSlot]++
		}
		mean := n / len(slots)
		lo, hi := slices.Min(slots), slices.Max(slots)
		if hi > mean*3/2 || lo < mean/2 {
			t.Errorf("%s: slots hold %d..%d devices, mean %d", c.what, lo, hi, mean)
		}
		t.Logf("%s: slots hold %d..%d devices, mean %d", c.what, lo, hi, mean)
	}
}

// TestPhaseStableOnReload: a configuration with a device added at its start and another removed
// (as a SIGHUP reload reads it) moves no other device's phase.
func TestPhaseStableOnReload(t *testing.T) {
	conf := func(first, last int, extra string) string {
		var b strings.Builder
		b.WriteString("[[inputs.modbus]]\n" + benchProfile(4) + extra)
		for i := first; i < last; i++ {
			fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"d%03d\"\n    controller = \"tcp://127.0.0.1:%d\"\n    profile = \"bench\"\n", i, 20000+i)
		}
		return b.String()
	}
	phases := func(text string) map[string]time.Duration {
		m := load(t, text)
		_, devices := m.buildPollers(m.stats(), time.Second, newAcc())
		out := map[string]time.Duration{}
		for _, d := range devices {
			out[d.name] = d.phase
			if d.phase != phaseOf(d.deviceSpec, time.Second) {
				t.Errorf("%s: phase %s, Phase gives %s", d.name, d.phase, phaseOf(d.deviceSpec, time.Second))
			}
		}
		m.st.set.Unregister() // the next load registers its own
		m.st = nil
		return out
	}
	before := phases(conf(1, 300, ""))
	added := "  [[inputs.modbus.device]]\n    name = \"new\"\n    controller = \"tcp://127.0.0.1:19999\"\n    profile = \"bench\"\n"
	after := phases(conf(1, 299, added)) // one added first, the last removed
	if len(after) != len(before) {
		t.Fatalf("%d devices before, %d after", len(before), len(after))
	}
	moved := 0
	for name, p := range after {
		if q, ok := before[name]; ok && q != p {
			moved++
			t.Errorf("%s: phase %s before the reload, %s after", name, q, p)
		}
	}
	if _, ok := after["d299"]; ok {
		t.Error("d299 was removed")
	}
	t.Logf("%d devices kept, %d moved", len(after)-1, moved)
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

// TestNotConnectedError: the error of a device whose controller refuses says when the next dial
// is due as a time of day, fixed when the error is made: read later, as /healthz reads the last
// error, it says the same, never a wait that has passed. While the link waits, the error says
// since when it is not connected.
func TestNotConnectedError(t *testing.T) {
	addr := testpeer.FreeAddr(t) // nothing listens
	pollErr := func(m *Modbus) func() error {
		p, d := onePoller(t, m, newAcc())
		var last error
		p.onErr = func(err error) { last = err }
		return func() error {
			last = nil
			p.poll(context.Background(), d, time.Now())
			if last == nil {
				t.Fatal("a poll of a refusing controller gave no error")
			}
			return last
		}
	}
	nextDial := regexp.MustCompile(`\(next dial at (\d\d:\d\d:\d\d\.\d\d\d)\)$`)

	oneRead := func(extra string) string { // one read: one request error per poll
		return strings.Replace(meterDevice(addr, extra, ""), modbussim.Profile, voltageProfile, 1)
	}
	m := load(t, oneRead("  reconnect_min = \"50ms\"\n  reconnect_max = \"50ms\""))
	before := time.Now()
	err := pollErr(m)()
	after := time.Now()
	text := err.Error()
	at := nextDial.FindStringSubmatch(text)
	if at == nil || strings.Contains(text, "not connected since") {
		t.Fatalf("%q: want the dial's error and the next dial's time", text)
	}
	// reconnect backoff 50 ms ± 20%
	if lo, hi := before.Add(40*time.Millisecond).Truncate(time.Millisecond).Format("15:04:05.000"),
		after.Add(60*time.Millisecond).Format("15:04:05.000"); lo <= hi && (at[1] < lo || at[1] > hi) { // (not across midnight)
		t.Errorf("next dial at %s, want 50ms ± 20%% after the dial (%s..%s)", at[1], lo, hi)
	}
	time.Sleep(100 * time.Millisecond) // past the next dial
	if again := err.Error(); again != text {
		t.Errorf("the error reads %q after its next dial passed; it read %q when it was made", again, text)
	}

	// Waiting for the next dial (an hour away): not connected since the failed dial.
	m = load(t, oneRead("  reconnect_min = \"1h\"\n  reconnect_max = \"1h\""))
	poll := pollErr(m)
	first := time.Now()
	poll()
	text = poll().Error()
	since := regexp.MustCompile(`not connected since (\d\d:\d\d:\d\d\.\d\d\d): .*connection refused.* \(next dial at ([-\d]+ )?\d\d:\d\d:\d\d\.\d\d\d\)$`).FindStringSubmatch(text)
	if since == nil || since[2] == "" && since[1] < first.Truncate(time.Millisecond).Format("15:04:05.000") {
		t.Errorf("%q: want since when it is not connected (the dial at %s or after) and the next dial", text, first.Format("15:04:05.000"))
	}
}
