package modbus

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// meterDevice is a config of one device named "m" reading modbussim's meter profile (three
// reads: holding 0..18, coil 0, input 0) from controller, with extra lines in the plugin's
// table and dev lines in the device's.
func meterDevice(controller, extra, dev string) string {
	return fmt.Sprintf("[[inputs.modbus]]\n%s\n%s  [[inputs.modbus.device]]\n    name = \"m\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n%s\n",
		extra, modbussim.Profile, controller, dev)
}

// sim starts modbussim on addr ("127.0.0.1:0" for a free port), closed when the test ends.
func sim(t *testing.T, addr string, cfg modbussim.Config) *modbussim.Server {
	t.Helper()
	s, err := modbussim.Listen(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// breakerStates returns the breaker field of each health metric.
func breakerStates(hs []*models.Metric) []string {
	var out []string
	for _, h := range hs {
		f, _ := h.Field("breaker")
		out = append(out, f.StringV())
	}
	return out
}

// compact drops repeats: open open closed → open closed.
func compact(s []string) []string {
	var out []string
	for _, x := range s {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// waitHealth waits until cond holds for the health metrics so far.
func (a *acc) waitHealth(t *testing.T, timeout time.Duration, what string, cond func([]*models.Metric) bool) []*models.Metric {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		hs := a.healthSnapshot()
		if cond(hs) {
			return hs
		}
		if time.Now().After(deadline) {
			_, errs := a.snapshot()
			t.Fatalf("%s: not within %s; breaker %v; errors %v", what, timeout, compact(breakerStates(hs)), errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBreakerOpensHalfOpensCloses: a device that does not answer opens its breaker after
// breaker_failures polls; while open it is sent nothing; after the cool-down a probe (half-open)
// fails and it opens again; once the device answers, the probes (two here) close it.
//
// The cool-down is judged on the requests as the device received them: the last request before
// the breaker opened was received before the poll that opened it timed out, the probe sent after
// the cool-down, so they lie at least the cool-down apart however busy the machine is.
func TestBreakerOpensHalfOpensCloses(t *testing.T) {
	addr := testpeer.FreeAddr(t)
	var mu sync.Mutex
	var at []time.Time // when the silent device received each request
	silent := sim(t, addr, modbussim.Config{Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}},
		OnRequest: func(byte, []byte) {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
		}})
	received := func() []time.Time { mu.Lock(); defer mu.Unlock(); return slices.Clone(at) }
	const coolDown = 600 * time.Millisecond
	m := load(t, meterDevice(addr, `  timeout_max = "40ms"
  retries = 0
  breaker_failures = 3
  breaker_cool_down = "600ms"
  breaker_probes = 2`, ""))
	m.SetInterval(50 * time.Millisecond)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	hs := a.waitHealth(t, 5*time.Second, "breaker open", func(hs []*models.Metric) bool { return len(hs) >= 3 })
	if got := breakerStates(hs)[:3]; strings.Join(got, " ") != "closed closed open" {
		t.Fatalf("breaker after 1, 2, 3 polls without an answer: %v", got)
	}
	requests := func(h *models.Metric) int { f, _ := h.Field("requests"); return int(f.UintV()) }
	beforeOpen := requests(hs[2]) // sent in the three polls that opened it
	// After the cool-down one probe: no answer, open again.
	hs = a.waitHealth(t, 5*time.Second, "a probe", func(hs []*models.Metric) bool { return len(hs) >= 4 })
	if s := breakerStates(hs)[3]; s != "open" {
		t.Errorf("after a failed probe: %s, want open", s)
	}
	got := received()
	if n := requests(hs[3]); len(got) != n || n <= beforeOpen {
		t.Fatalf("the device received %d requests, the health metric counts %d sent, %d before the breaker opened", len(got), n, beforeOpen)
	}
	if gap := got[beforeOpen].Sub(got[beforeOpen-1]); gap < coolDown {
		t.Errorf("the probe came %s after the last request before the breaker opened, within its %s cool-down", gap, coolDown)
	}
	// The device answers again: the first good probe leaves it half-open (two probes), the
	// second closes it.
	silent.Close()
	sim(t, addr, modbussim.Config{})
	hs = a.waitHealth(t, 5*time.Second, "closed", func(hs []*models.Metric) bool { return breakerStates(hs)[len(hs)-1] == "closed" })
	if got := strings.Join(compact(breakerStates(hs)), " "); got != "closed open half-open closed" {
		t.Errorf("breaker states %s, want closed open half-open closed", got)
	}
	a.waitFor(t, 5*time.Second, "metrics after closing", func(ms []*models.Metric) bool { return len(ms) >= 6 })
}

// voltageProfile replaces modbussim.Profile in meterDevice's config for one read per poll.
const voltageProfile = `
  [[inputs.modbus.profile]]
    name = "meter"
    [[inputs.modbus.profile.field]]
      name = "voltage"
      address = 0
      data_type = "FLOAT32"
`

// TestBreakerFailureRate: a device that drops every other request never fails breaker_failures
// polls in a row, but half its polls fail: breaker_failure_rate opens the breaker.
func TestBreakerFailureRate(t *testing.T) {
	s := sim(t, "127.0.0.1:0", modbussim.Config{Faults: map[byte]modbussim.Fault{1: {DropEvery: 2}}})
	// one read per poll: a profile of one field
	m := load(t, strings.Replace(meterDevice(s.Addr(), `  timeout_max = "40ms"
  retries = 0
  breaker_failure_rate = 0.4
  breaker_min_requests = 6
  breaker_cool_down = "1h"`, ""), modbussim.Profile, voltageProfile, 1))
	m.SetInterval(30 * time.Millisecond)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	hs := a.waitHealth(t, 5*time.Second, "breaker open", func(hs []*models.Metric) bool {
		return len(hs) > 0 && breakerStates(hs)[len(hs)-1] == "open"
	})
	ms, _ := a.snapshot()
	if len(hs) < 6 || len(ms) < 2 {
		t.Errorf("opened after %d polls, %d of them answered: want at least breaker_min_requests (6), some answered", len(hs), len(ms))
	}
	to, _ := hs[len(hs)-1].Field("errors_timeout")
	if to.UintV() < 2 {
		t.Errorf("errors_timeout %d", to.UintV())
	}
}

// TestFailover: when the controller's breaker opens, polls go to the backup controller; after
// the cool-down the controller is probed and, answering again, taken back. Meanwhile no poll is
// lost: a poll whose controller refuses goes to the backup at once, so every poll (each gives a
// modbus_health metric) since the controller went down also gives data.
func TestFailover(t *testing.T) {
	primaryAddr := testpeer.FreeAddr(t)
	primary := sim(t, primaryAddr, modbussim.Config{})
	backup := sim(t, "127.0.0.1:0", modbussim.Config{})
	m := load(t, meterDevice(primaryAddr, `  timeout_max = "100ms"
  breaker_failures = 2
  breaker_cool_down = "500ms"
  reconnect_min = "20ms"
  reconnect_max = "50ms"`, fmt.Sprintf("    backup_controllers = [\"tcp://%s\"]", backup.Addr())))
	m.SetInterval(100 * time.Millisecond)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	controller := func(h *models.Metric) string { c, _ := h.Tag("controller"); return c }
	a.waitHealth(t, 5*time.Second, "polls through the controller", func(hs []*models.Metric) bool { return len(hs) >= 3 })
	if backup.Requests() != 0 {
		t.Fatalf("%d requests to the backup while the controller answers", backup.Requests())
	}
	primary.Close()
	down := time.Now()
	a.waitHealth(t, 5*time.Second, "polls through the backup", func(hs []*models.Metric) bool {
		n := 0
		for _, h := range hs {
			if controller(h) == "tcp://"+backup.Addr() {
				n++
			}
		}
		return n >= 5
	})
	st := m.st
	if st.backupPolls.Get() < 5 {
		t.Errorf("polls_via_backup %d", st.backupPolls.Get())
	}
	// The controller comes back on the same address; after its cool-down a probe takes it back.
	primary = sim(t, primaryAddr, modbussim.Config{})
	a.waitHealth(t, 5*time.Second, "polls through the controller again", func(hs []*models.Metric) bool {
		return controller(hs[len(hs)-1]) == "tcp://"+primaryAddr && primary.Requests() >= 6
	})
	viaBackup := backup.Requests()
	time.Sleep(200 * time.Millisecond)
	if got := backup.Requests(); got != viaBackup {
		t.Errorf("%d requests to the backup after the controller was taken back", got-viaBackup)
	}
	// No poll lost: every poll since the controller went down gave data. A poll hands over its
	// data metric, then its health metric, timed after the data's answers.
	checkEveryPollAnswered(t, a, down)
}

// checkEveryPollAnswered checks that each poll of a's device whose health metric is timed after
// since also gave a data metric (timed between the previous poll's health metric and its own).
func checkEveryPollAnswered(t *testing.T, a *acc, since time.Time) {
	t.Helper()
	ms, _ := a.snapshot()
	hs := a.healthSnapshot()
	polls, lost := 0, 0
	for i, h := range hs {
		if i == 0 || !hs[i-1].Time.After(since) {
			continue // the poll under way when the controller went down may have failed
		}
		polls++
		answered := false
		for _, x := range ms {
			if x.Time.After(hs[i-1].Time) && !x.Time.After(h.Time) {
				answered = true
				break
			}
		}
		if !answered {
			lost++
			c, _ := h.Tag("controller")
			t.Errorf("the poll that ended %s through %s gave no data", h.Time.Format("15:04:05.000"), c)
		}
	}
	if polls == 0 {
		t.Error("no polls after the controller went down")
	}
}

// TestTokenBucketDevice: device_requests_per_second holds a device to its rate even when its
// polls ask for more: 4 reads every 50 ms want 80 a second, 20 a second go out.
func TestTokenBucketDevice(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	s := sim(t, "127.0.0.1:0", modbussim.Config{OnRequest: func(byte, []byte) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
	}})
	m := load(t, meterDevice(s.Addr(), `  one_request_per_field = true
  device_requests_per_second = 20.0
  device_requests_burst = 2`, ""))
	m.SetInterval(50 * time.Millisecond)
	a := newAcc()
	ref := paceReference(20)
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	m.Stop()
	periods := ref()
	mu.Lock()
	defer mu.Unlock()
	checkRate(t, at, 20, 2, periods)
}

// TestTokenBucketLine: max_requests_per_second holds a gateway's connection to its rate, over
// all the units behind it.
func TestTokenBucketLine(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	units := map[byte]int{}
	s := sim(t, "127.0.0.1:0", modbussim.Config{OnRequest: func(u byte, _ []byte) {
		mu.Lock()
		at = append(at, time.Now())
		units[u]++
		mu.Unlock()
	}})
	var b strings.Builder
	b.WriteString("[[inputs.modbus]]\n  max_requests_per_second = 25.0\n" + modbussim.Profile)
	for u := 1; u <= 3; u++ {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"u%d\"\n    controller = \"tcp://%s\"\n    slave_id = %d\n    profile = \"meter\"\n", u, s.Addr(), u)
	}
	m := load(t, b.String())
	m.SetInterval(50 * time.Millisecond) // 3 units × 3 reads every 50 ms: 180 a second wanted
	a := newAcc()
	ref := paceReference(25)
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	m.Stop()
	periods := ref()
	mu.Lock()
	defer mu.Unlock()
	checkRate(t, at, 25, 1, periods)
	if units[1] == 0 || units[2] == 0 || units[3] == 0 {
		t.Errorf("requests by unit %v: every unit gets its turn", units)
	}
}

// checkRate checks request times against a token bucket of rate and burst: in every window of a
// second or more, at most rate·window + burst requests (a bucket never gives more, however the
// machine runs), and over the whole run at least 80% of the token periods that a reference
// sleeping 1/rate at a time completed meanwhile in this process (the bucket holds the device to
// the rate, it does not starve it; the reference's timers are as late as the poller's on a busy
// machine, so the share does not depend on how busy it is).
func checkRate(t *testing.T, at []time.Time, rate float64, burst, periods int) {
	t.Helper()
	if len(at) < 10 {
		t.Fatalf("%d requests", len(at))
	}
	for i := range at {
		for j := i + 1; j < len(at); j++ {
			w := at[j].Sub(at[i])
			if w < time.Second {
				continue
			}
			if n := j - i + 1; float64(n) > rate*w.Seconds()+float64(burst)+1 {
				t.Fatalf("%d requests in %s: more than %v a second (burst %d)", n, w, rate, burst)
			}
		}
	}
	t.Logf("%d requests; the reference completed %d periods", len(at), periods)
	if float64(len(at)) < 0.8*float64(periods) {
		t.Errorf("%d requests while a reference paced at %v a second completed %d periods", len(at), rate, periods)
	}
}

// paceReference sleeps 1/rate at a time, as a device's requests wait for their tokens, until the
// returned function is called; that returns how many sleeps ended.
func paceReference(rate float64) (stop func() int) {
	done := make(chan struct{})
	n := make(chan int)
	go func() {
		period := time.Duration(float64(time.Second) / rate)
		count := 0
		timer := time.NewTimer(period)
		defer timer.Stop()
		for {
			select {
			case <-done:
				n <- count
				return
			case <-timer.C:
				count++
				timer.Reset(period)
			}
		}
	}()
	return func() int { close(done); return <-n }
}

// TestRetrySchedule: a request that gets no answer is retried at once, then after 100 ms, then
// 300 ms (retry_jitter 0 here), each after its timeout; and never past the device's next poll.
//
// The first poll's modbus_health metric counts its requests and retries: all four when the
// interval leaves room, three when the fourth would start (at 550 ms) past the next poll (at
// 400 ms); a first retry that waited, or waits that did not grow, would change the count. Their
// times as the device received them are checked against the earliest each may come, counted
// from the poll's tick (timers fire late on a busy machine, never early).
func TestRetrySchedule(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		want     []time.Duration // the earliest time of each request of the first poll, after its tick
	}{
		{2 * time.Second, []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond, 550 * time.Millisecond}},
		// the fourth request would start at 550 ms, past the next poll at 400 ms
		{400 * time.Millisecond, []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond}},
	} {
		t.Run(c.interval.String(), func(t *testing.T) {
			var mu sync.Mutex
			var at []time.Time
			s := sim(t, "127.0.0.1:0", modbussim.Config{Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}},
				OnRequest: func(byte, []byte) {
					mu.Lock()
					at = append(at, time.Now())
					mu.Unlock()
				}})
			m := load(t, strings.Replace(meterDevice(s.Addr(), `  timeout_min = "50ms"
  timeout_max = "50ms"
  retries = 3
  retry_jitter = 0.0
  breaker_failures = 100`, ""), modbussim.Profile, voltageProfile, 1))
			m.SetInterval(c.interval)
			a := newAcc()
			before := time.Now()
			if err := m.Start(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			phase := m.running.Load().devices[0].phase
			hs := a.waitHealth(t, 10*time.Second, "the first poll", func(hs []*models.Metric) bool { return len(hs) >= 1 })
			m.Stop()
			// The first poll is due at the device's phase past the first multiple of the interval
			// after Start began, or later.
			tick := nextSlot(before, phase, c.interval)
			requests, _ := hs[0].Field("requests")
			retries, _ := hs[0].Field("retries")
			if requests.UintV() != uint64(len(c.want)) || retries.UintV() != uint64(len(c.want)-1) {
				t.Errorf("first poll: %d requests, %d retries; want %d and %d", requests.UintV(), retries.UintV(), len(c.want), len(c.want)-1)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(at) < len(c.want) {
				t.Fatalf("the device received %d requests, want %d", len(at), len(c.want))
			}
			for i, w := range c.want {
				if got := at[i].Sub(tick); got < w {
					t.Errorf("request %d received %s after the poll's tick, want %s at the earliest", i+1, got, w)
				}
			}
		})
	}
}

// TestIdleTimeout: a connection that would stay unused longer than idle_timeout is closed after
// the poll and opened again for the next; by default it stays.
func TestIdleTimeout(t *testing.T) {
	for _, c := range []struct {
		extra string
		want  func(conns uint64) bool
		what  string
	}{
		{`  idle_timeout = "100ms"`, func(n uint64) bool { return n >= 3 }, "a connection per poll"},
		{"", func(n uint64) bool { return n == 1 }, "one connection"},
	} {
		s := sim(t, "127.0.0.1:0", modbussim.Config{})
		m := load(t, meterDevice(s.Addr(), c.extra, ""))
		serve(t, m, 300*time.Millisecond, "4 polls", func(ms []*models.Metric) bool { return len(ms) >= 8 })
		if n := s.Connections(); !c.want(n) {
			t.Errorf("%q: %d connections for 4 polls 300ms apart, want %s", c.extra, n, c.what)
		}
	}
}

// TestKeepAlive: tcp_keep_alive sets the socket's keep-alive idle time and probe interval to
// its period, 3 probes; 0 turns keep-alive off.
func TestKeepAlive(t *testing.T) {
	s := sim(t, "127.0.0.1:0", modbussim.Config{})
	for _, c := range []struct {
		extra     string
		on        int
		idle, itv int
	}{
		{`  tcp_keep_alive = "7s"`, 1, 7, 7},
		{`  tcp_keep_alive = "0s"`, 0, 0, 0},
	} {
		m := load(t, meterDevice(s.Addr(), c.extra, ""))
		p, d := onePoller(t, m, newAcc())
		p.onErr = func(err error) { t.Fatal(err) }
		p.poll(context.Background(), d, time.Now())
		sc, ok := d.routes[0].link.c.(syscall.Conn)
		if !ok {
			t.Fatalf("%T", d.routes[0].link.c)
		}
		raw, _ := sc.SyscallConn()
		var on, idle, itv, cnt int
		raw.Control(func(fd uintptr) {
			on, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
			itv, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
			cnt, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
		})
		if on != c.on || c.on == 1 && (idle != c.idle || itv != c.itv || cnt != 3) {
			t.Errorf("%q: SO_KEEPALIVE %d, TCP_KEEPIDLE %d, TCP_KEEPINTVL %d, TCP_KEEPCNT %d", c.extra, on, idle, itv, cnt)
		}
	}
}

// TestHealthMetric: one modbus_health metric per device and poll, tagged with the device and
// the controller in use, with the counters of what happened and room for processors.predict's
// four fields.
func TestHealthMetric(t *testing.T) {
	models.ReserveFieldRoom(4) // as processors.predict does in Init: its four link fields
	slowAddr := testpeer.FreeAddr(t)
	fast := sim(t, "127.0.0.1:0", modbussim.Config{})
	slow := sim(t, slowAddr, modbussim.Config{Faults: map[byte]modbussim.Fault{1: {Delay: 100 * time.Millisecond}}})
	m := load(t, fmt.Sprintf(`[[inputs.modbus]]
%s
  [[inputs.modbus.device]]
    name = "fast"
    controller = "tcp://%s"
    profile = "meter"
  [[inputs.modbus.device]]
    name = "slow"
    controller = "tcp://%s"
    profile = "meter"
`, modbussim.Profile, fast.Addr(), slowAddr))
	a := newAcc()
	m.SetInterval(500 * time.Millisecond)
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	hs := a.waitHealth(t, 10*time.Second, "3 polls of each", func(hs []*models.Metric) bool {
		n := map[string]int{}
		for _, h := range hs {
			d, _ := h.Tag("device")
			n[d]++
		}
		return n["fast"] >= 3 && n["slow"] >= 3
	})
	m.Stop()
	_ = slow
	rtts := map[string]float64{}
	for _, dev := range []string{"fast", "slow"} {
		var last *models.Metric
		n := 0
		for _, h := range hs {
			if d, _ := h.Tag("device"); d == dev {
				last, n = h, n+1
			}
		}
		if n < 3 {
			t.Fatalf("%s: %d health metrics", dev, n)
		}
		if got := strings.Join(tagKeys(last), ","); got != "controller,device" {
			t.Errorf("%s: tags %s", dev, got)
		}
		var keys []string
		for _, f := range last.Fields {
			keys = append(keys, f.Key)
		}
		if got := strings.Join(keys, ","); got != "rtt_ms,rtt_ewma_ms,timeout_ms,requests,retries,errors_timeout,errors_refused,errors_reset,errors_exception,errors_frame,errors_other,breaker" {
			t.Errorf("%s: fields %s", dev, got)
		}
		if cap(last.Fields)-len(last.Fields) < 4 {
			t.Errorf("%s: room for %d more fields, predict reserved and appends 4", dev, cap(last.Fields)-len(last.Fields))
		}
		f := func(k string) models.Field { v, _ := last.Field(k); return v }
		if got := f("requests").UintV(); got != uint64(3*n) {
			t.Errorf("%s: requests %d after %d polls of 3 reads", dev, got, n)
		}
		if f("errors_timeout").UintV() != 0 || f("retries").UintV() != 0 || f("breaker").StringV() != "closed" {
			t.Errorf("%s: %v", dev, last.Fields)
		}
		// The timeout in force follows the round trips: 4·EWMA (timeout_factor), clamped to
		// timeout_min 50 ms and timeout_max 2 s.
		rtt, ewma, timeout := f("rtt_ms").FloatV(), f("rtt_ewma_ms").FloatV(), f("timeout_ms").FloatV()
		if want := min(max(4*ewma, 50), 2000); rtt <= 0 || ewma <= 0 || math.Abs(timeout-want) > 0.001 {
			t.Errorf("%s: rtt_ms %v, rtt_ewma_ms %v, timeout_ms %v (want %v: 4·EWMA within 50..2000)", dev, rtt, ewma, timeout, want)
		}
		rtts[dev] = rtt
	}
	// The slow device answers 100 ms late: its round trip is at least that; the fast one's,
	// measured beside it, is shorter.
	if rtts["slow"] < 100 || rtts["fast"] >= rtts["slow"] {
		t.Errorf("rtt_ms: fast %v, slow %v (answers 100 ms late)", rtts["fast"], rtts["slow"])
	}
}

func tagKeys(m *models.Metric) []string {
	var out []string
	for _, t := range m.Tags {
		out = append(out, t.Key)
	}
	return out
}

// splitProfile is a profile of four holding registers read as one (max_gap 40): a at 0, b at 5
// (pymodbus holds 0x1234 and 0x5678 there), c at cAddr and d at dAddr (address i holds i).
func splitProfile(addr string, cAddr, dAddr int, extra string) string {
	return fmt.Sprintf(`[[inputs.modbus]]
  max_gap = 40
%s
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "a"
      address = 0
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "b"
      address = 5
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "c"
      address = %d
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "d"
      address = %d
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "dev"
    controller = "tcp://%s"
    profile = "p"
`, extra, cAddr, dAddr, addr)
}

// checkIsolated checks that a metric has a, b and c with pymodbus's values and no d.
func checkIsolated(t *testing.T, m *models.Metric, c uint64) {
	t.Helper()
	want := map[string]uint64{"a": 0x1234, "b": 0x5678, "c": c}
	for k, v := range want {
		if f, ok := m.Field(k); !ok || f.UintV() != v {
			t.Errorf("%s = %v (present %v), the peer holds %d", k, f.Value(), ok, v)
		}
	}
	if _, ok := m.Field("d"); ok {
		t.Error("d reported from a range that fails")
	}
}

// TestSplitIllegalAddress: a read that runs past the device's table (exception 2) is split at
// once, again until the range at fault is isolated: the other fields are reported from the
// first poll on, the failing one is named.
func TestSplitIllegalAddress(t *testing.T) {
	p := startPymodbus(t, "--size", "30")
	m := load(t, splitProfile(p.addr, 25, 32, ""))
	ms, err := gather(t, m)
	if len(ms) != 1 {
		t.Fatalf("%d metrics (%v)", len(ms), err)
	}
	checkIsolated(t, ms[0], 25)
	want := `device "dev" (unit 1): read holding 32..32 (function 3): exception 2 (illegal data address)`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "0..32") {
		t.Errorf("want only %q, got\n%v", want, err)
	}
	if got := m.st.readsSplit.Get(); got != 2 { // 0..32 → 0..5 + 25..32 → 25 + 32
		t.Errorf("reads split %d, want 2", got)
	}
	// off: the whole read fails
	m = load(t, splitProfile(p.addr, 25, 32, "  split_failing_reads = false"))
	if ms, _ := gather(t, m); len(ms) != 0 {
		t.Errorf("split_failing_reads = false: %d metrics", len(ms))
	}
}

// TestSplitServerFailure: exception 4 may pass, so a read is split when it keeps failing: after
// two polls in a row, and its halves the same way, until the failing register is isolated.
func TestSplitServerFailure(t *testing.T) {
	p := startPymodbus(t, "--fault-from", "20")
	m := load(t, splitProfile(p.addr, 15, 25, "  retries = 0"))
	ms, errs, st := serve(t, m, 80*time.Millisecond, "a, b and c reported", func(ms []*models.Metric) bool {
		return len(ms) > 0 && hasField(ms[len(ms)-1:], "c")
	})
	checkIsolated(t, ms[len(ms)-1], 15)
	if len(ms) < 2 || hasField(ms[:1], "c") {
		t.Errorf("%d metrics; c in the first: the split waits for two polls in a row", len(ms))
	}
	var last string
	for _, e := range errs {
		last = e.Error()
	}
	if !strings.Contains(last, "read holding 25..25 (function 3): exception 4") {
		t.Errorf("the last error reported, %q, does not name the isolated register", last)
	}
	if got := st.readsSplit.Get(); got != 2 {
		t.Errorf("reads split %d, want 2", got)
	}
}

// TestSplitTimeout: a device that cannot serve large reads gives no answer to them while it
// answers the small ones: the large read is split after timing out in two polls in a row, and
// again, until every field is read.
func TestSplitTimeout(t *testing.T) {
	s := sim(t, "127.0.0.1:0", modbussim.Config{Faults: map[byte]modbussim.Fault{1: {MaxRead: 10}}})
	// 20 fields in 30 holding registers, and an input register: the device answers that one
	text := "[[inputs.modbus]]\n  timeout_max = \"60ms\"\n  retries = 1\n" + benchProfile(20) + `    [[inputs.modbus.profile.field]]
      name = "uptime"
      register = "input"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "dev"
    controller = "tcp://` + s.Addr() + `"
    profile = "bench"
`
	m := load(t, text)
	ms, _, st := serve(t, m, 250*time.Millisecond, "all 21 fields", func(ms []*models.Metric) bool {
		return len(ms) > 0 && len(ms[len(ms)-1].Fields) == 21
	})
	if !hasField(ms[:1], "uptime") || hasField(ms[:1], "f0") {
		t.Errorf("first poll: %v; want the input register and no holding field", ms[0].Fields)
	}
	if got := st.readsSplit.Get(); got < 2 {
		t.Errorf("reads split %d, want the 30 registers in reads of 10 or less (2 splits at least)", got)
	}
}

// TestStaleValues: with stale_after, the last good value of a field that could not be read is
// reported tagged quality=stale, timed at the poll, for at most stale_after after it was read;
// then nothing.
func TestStaleValues(t *testing.T) {
	addr := testpeer.FreeAddr(t)
	s := sim(t, addr, modbussim.Config{})
	m := load(t, meterDevice(addr, `  stale_after = "300ms"
  timeout_max = "50ms"
  breaker_failures = 1000`, ""))
	m.SetInterval(50 * time.Millisecond)
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	a.waitFor(t, 5*time.Second, "good polls", func(ms []*models.Metric) bool { return len(ms) >= 6 })
	s.Close()
	time.Sleep(800 * time.Millisecond)
	m.Stop()
	ms, _ := a.snapshot()
	var good, stale []*models.Metric
	for _, x := range ms {
		if q, _ := x.Tag("quality"); q == "stale" {
			stale = append(stale, x)
		} else if x.Name == "power" {
			good = append(good, x)
		}
	}
	if len(stale) == 0 {
		t.Fatal("no stale values after the device went away")
	}
	lastGood := good[len(good)-1]
	for _, x := range stale {
		if age := x.Time.Sub(lastGood.Time); age <= 0 || age > 300*time.Millisecond+60*time.Millisecond {
			t.Errorf("stale metric %s after the last good read (stale_after 300ms)", age)
		}
		if x.Name != "power" {
			continue
		}
		for _, f := range x.Fields {
			if g, ok := lastGood.Field(f.Key); !ok || !g.Equal(f) {
				t.Errorf("stale %s = %v, last read %v", f.Key, f.Value(), g.Value())
			}
		}
		if len(x.Fields) != len(lastGood.Fields) {
			t.Errorf("stale metric with %d fields, the last good one had %d", len(x.Fields), len(lastGood.Fields))
		}
	}
	if st := m.st; st != nil && st.staleMetrics.Get() == 0 {
		t.Error("stale_metrics not counted")
	}
}
