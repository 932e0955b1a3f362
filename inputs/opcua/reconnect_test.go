package opcua

// Sessions that come back by themselves, against node-opcua: a server killed and restarted in
// the middle of a subscription, a subscription the server drops, a connection cut, a server
// that is not there yet — and Stop leaving nothing behind.

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// noDuplicates fails when two metrics are the same point: same series, field and time.
func noDuplicates(t testing.TB, ms []*models.Metric) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range ms {
		if m.Name == "opcua_health" {
			continue
		}
		for _, f := range m.Fields {
			k := m.SeriesKey() + " " + f.Key + " " + m.Time.Format(time.RFC3339Nano)
			if seen[k] {
				t.Fatalf("duplicate point %s", k)
			}
			seen[k] = true
		}
	}
}

// consecutive fails unless the values go up by exactly one each.
func consecutive(t testing.TB, what string, ms []*models.Metric, key string) {
	t.Helper()
	// The peer samples FastCounter's getter on a 50 ms timer in the same Node event loop as the
	// 100 ms timer that counts it up. When a loaded machine delays both and they fire in the
	// other order, the server samples 19, then 21: it never sends 20. Such a skip is one value
	// at a time and rare; a value repeated or out of order, a run of skips, or a skip of more
	// than one value is the agent's.
	skips := 0
	for i := 1; i < len(ms); i++ {
		a, b := ms[i-1].Fields[0].UintV(), ms[i].Fields[0].UintV()
		if b == a+2 && skips < 2 {
			skips++
			t.Logf("%s: %s went %d → %d: a value the peer did not sample", what, key, a, b)
			continue
		}
		if b != a+1 {
			t.Fatalf("%s: %s went %d → %d (something missing or repeated):\n%s", what, key, a, b, fmtMetrics(ms))
		}
	}
}

// sessionsCreated reads the server's CumulatedSessionCount (this read's own session included).
func sessionsCreated(t testing.TB, endpoint string) uint64 {
	t.Helper()
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "count"
  endpoint = %q
  [[inputs.opcua.group]]
    [[inputs.opcua.group.node]]
      name = "sessions"
      id = "i=2278"
`, endpoint))
	acc, err := gather(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return field(t, acc.values("opcua", "sessions")[0], "sessions").(uint64)
}

// The server is killed in the middle of a subscription and started again on the same port and
// PKI, with its namespace moved (index 2 → 4). Both inputs (subscribe and read) come back by
// themselves with one new session each, re-resolve nsu= ids, and deliver no duplicate points;
// FastCounter (+1 every 100 ms) has no gap before the kill nor after the reconnect. While the
// server is away, health says so and attempts back off.
func TestNodeOPCUARestart(t *testing.T) {
	p := startNodeOPCUA(t)
	table := func(name, mode string) string {
		return fmt.Sprintf(`[[inputs.opcua]]
  name = %q
  endpoint = %q
  mode = %q
  interval = "200ms"
  publishing_interval = "100ms"
  reconnect_min = "100ms"
  reconnect_max = "400ms"
  [[inputs.opcua.group]]
    namespace_uri = "urn:tagpipe:peer"
    sampling_interval = "50ms"
    [[inputs.opcua.group.node]]
      name = "fast"
      id = "s=FastCounter"
    [[inputs.opcua.group.node]]
      name = "int32"
      id = "i=2001"
  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      id = "s=Status"
`, name, p.endpoint, mode)
	}
	sub, read := load(t, table("sub", "subscribe")), load(t, table("read", "read"))
	subLog := captureLog(sub)
	subAcc, readAcc := start(t, sub), start(t, read)
	waitFor(t, 10*time.Second, "20 changes", func() bool { return len(subAcc.values("opcua", "fast")) >= 20 })
	waitFor(t, 10*time.Second, "3 polls", func() bool { return len(readAcc.values("opcua", "fast")) >= 3 })

	p.proc.Kill()
	killed := time.Now()
	waitFor(t, 5*time.Second, "health saying the server is away", func() bool {
		for _, acc := range []*testAcc{subAcc, readAcc} {
			if h := acc.lastHealth(); h == nil || h.Time.Before(killed) || field(t, h, "connected") != false {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond) // an outage of a couple of seconds
	outage := time.Since(killed)
	for _, o := range []*OPCUA{sub, read} {
		// 100 ms doubling to 400 ms, then the breaker's 400 ms: about one attempt per 300 ms
		if n := o.stats.connectErrors.Get(); n < 2 || n > int64(outage/(100*time.Millisecond)) {
			t.Errorf("%s: %d failed attempts in %v: not backing off", o.Name, n, outage)
		}
	}
	p.restart("--extra-namespaces", "2")
	restarted := time.Now()
	afterRestart := func(acc *testAcc) []*models.Metric {
		var out []*models.Metric
		for _, m := range acc.values("opcua", "fast") {
			if m.Time.After(restarted.Add(-time.Second)) && m.Time.After(killed) {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, 15*time.Second, "20 changes after the restart", func() bool { return len(afterRestart(subAcc)) >= 20 })
	waitFor(t, 10*time.Second, "3 polls after the restart", func() bool { return len(afterRestart(readAcc)) >= 3 })
	t.Logf("reconnected %v after the restart", afterRestart(subAcc)[0].Time.Sub(restarted).Round(time.Millisecond))

	// exactly one new session per input (and one for this count), not a storm
	if n := sessionsCreated(t, p.endpoint); n != 3 {
		t.Errorf("the restarted server saw %d sessions, want 3 (two inputs and this count)", n)
	}
	sub.Stop()
	read.Stop()

	all := subAcc.all()
	noDuplicates(t, all)
	noDuplicates(t, readAcc.all())
	var before []*models.Metric
	for _, m := range subAcc.values("opcua", "fast") {
		if m.Time.Before(killed) {
			before = append(before, m)
		}
	}
	consecutive(t, "before the kill", before, "FastCounter")
	after := afterRestart(subAcc)
	consecutive(t, "after the restart", after, "FastCounter")
	if first := after[0].Fields[0].UintV(); first > 40 {
		t.Errorf("first value after the restart is %d: the restarted server counts from 1", first)
	}
	// the nsu= node with a constant value: once per server life
	if n := len(subAcc.values("opcua", "int32")); n != 2 {
		t.Errorf("int32 delivered %d times, want 2 (once per server start):\n%s", n, fmtMetrics(subAcc.values("opcua", "int32")))
	}
	for _, acc := range []*testAcc{subAcc, readAcc} {
		var h *models.Metric
		for _, m := range acc.all() {
			if m.Name == "opcua_health" && field(t, m, "connected") == true && m.Time.After(restarted) {
				h = m
			}
		}
		if h == nil || field(t, h, "reconnects") != uint64(1) || field(t, h, "nodes") != int64(3) {
			t.Errorf("health after the restart: %v", h)
		}
	}
	if n := len(subLog.lines("level=ERROR", "cannot connect")); n != 1 {
		t.Errorf("%d error lines for one outage, want 1:\n%s", n, subLog)
	}
}

// The server deletes the subscription while the session stays (as a server does when it
// timed the subscription out): the input notices at the next publish, creates it again on the
// same session, and the values the new subscription repeats are dropped, not delivered twice.
func TestNodeOPCUASubscriptionLost(t *testing.T) {
	p := startNodeOPCUA(t)
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "lost"
  endpoint = %q
  mode = "subscribe"
  interval = "200ms"
  publishing_interval = "100ms"
  [[inputs.opcua.group]]
    namespace = 1
    sampling_interval = "50ms"
    [[inputs.opcua.group.node]]
      name = "fast"
      id = "s=FastCounter"
    [[inputs.opcua.group.node]]
      id = "s=Status"
`, p.endpoint))
	logs := captureLog(o)
	o.do = make(chan func(*session))
	acc := start(t, o)
	waitFor(t, 10*time.Second, "10 changes", func() bool { return len(acc.values("opcua", "fast")) >= 10 })
	done := make(chan error)
	o.do <- func(s *session) {
		// delete it behind the input's back, as the server would: the publisher is left running
		_, err := call[*ua.DeleteSubscriptionsResponse](context.Background(), s, &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{s.subn.id}})
		done <- err
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := len(acc.values("opcua", "fast"))
	waitFor(t, 10*time.Second, "10 changes from the new subscription", func() bool { return len(acc.values("opcua", "fast")) >= n+10 })
	o.Stop()
	if len(logs.lines("no longer has the subscription")) != 1 {
		t.Fatalf("the lost subscription was not reported:\n%s", logs)
	}
	if o.stats.disconnects.Get() != 0 || o.stats.connects.Get() != 1 {
		t.Fatalf("re-created on the same session? disconnects %d connects %d", o.stats.disconnects.Get(), o.stats.connects.Get())
	}
	noDuplicates(t, acc.all())
	if len(acc.values("opcua", "Status")) != 1 || o.stats.droppedDuplicates.Get() < 1 {
		t.Fatalf("Status delivered %d times (dropped duplicates %d), want once", len(acc.values("opcua", "Status")), o.stats.droppedDuplicates.Get())
	}
	// FastCounter: at most the changes during the gap are missing, none is repeated
	vals := acc.values("opcua", "fast")
	for i := 1; i < len(vals); i++ {
		if vals[i].Fields[0].UintV() <= vals[i-1].Fields[0].UintV() {
			t.Fatalf("FastCounter repeated or went back:\n%s", fmtMetrics(vals))
		}
	}
}

// The connection breaks while the server keeps running: the input reconnects, and the initial
// values of the new subscription that were delivered before are dropped.
func TestNodeOPCUAConnectionCut(t *testing.T) {
	p := startNodeOPCUA(t)
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "cut"
  endpoint = %q
  mode = "subscribe"
  interval = "200ms"
  publishing_interval = "100ms"
  reconnect_min = "50ms"
  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      id = "s=Status"
    [[inputs.opcua.group.node]]
      name = "guid"
      id = "g=72962B91-FA75-4AE6-8D28-B404DC7DAF63"
    [[inputs.opcua.group.node]]
      name = "counter"
      id = "s=Counter"
`, p.endpoint))
	o.do = make(chan func(*session))
	acc := start(t, o)
	waitFor(t, 10*time.Second, "the first values", func() bool { return len(acc.values("opcua", "guid")) == 1 })
	o.do <- func(s *session) { s.client.SecureChannel().Close() } // the channel goes, the session stays on the server
	waitFor(t, 10*time.Second, "a new session", func() bool { return o.stats.connects.Get() == 2 })
	n := len(acc.values("opcua", "counter"))
	waitFor(t, 5*time.Second, "counter changes", func() bool { return len(acc.values("opcua", "counter")) >= n+2 })
	o.Stop()
	noDuplicates(t, acc.all())
	if len(acc.values("opcua", "guid")) != 1 || len(acc.values("opcua", "Status")) != 1 || o.stats.droppedDuplicates.Get() < 2 {
		t.Fatalf("constants delivered again after the reconnect (dropped %d):\n%s", o.stats.droppedDuplicates.Get(), fmtMetrics(acc.all()))
	}
}

// Five inputs start while the server is not there; when it comes, each makes one session: no
// storm of CreateSession calls.
func TestNodeOPCUAServerLate(t *testing.T) {
	nodeOPCUADir(t)
	addr := testpeer.FreeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	endpoint := "opc.tcp://" + addr
	var inputs []*OPCUA
	var accs []*testAcc
	for i := range 5 {
		o := load(t, statusTable(fmt.Sprint("late", i), endpoint, `mode = "subscribe"`, `interval = "200ms"`,
			`reconnect_min = "100ms"`, `reconnect_max = "300ms"`))
		inputs = append(inputs, o)
		accs = append(accs, start(t, o))
	}
	waitFor(t, 5*time.Second, "health while the server is away", func() bool {
		for _, acc := range accs {
			h := acc.lastHealth()
			if h == nil || field(t, h, "connected") != false || field(t, h, "errors_refused") == uint64(0) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second)
	p := &nodePeer{pki: pkiDir(t), t: t}
	p.start(port)
	for i, acc := range accs {
		waitFor(t, 15*time.Second, "a value", func() bool { return len(acc.values("opcua", "Status")) == 1 })
		if n := inputs[i].stats.connects.Get(); n != 1 {
			t.Errorf("%s connected %d times", inputs[i].Name, n)
		}
	}
	if n := sessionsCreated(t, endpoint); n != 6 {
		t.Fatalf("the server saw %d sessions, want 6 (five inputs and this count)", n)
	}
}

// Nothing outlives Stop: not the session goroutine, not the publisher, not gopcua's channel —
// whether the input is connected or still trying to reach a server that is not there. Stop does
// not wait out the reconnect backoff (an hour for the server that is not there): the test waits
// a minute for it.
func TestStopLeavesNothing(t *testing.T) {
	p := startNodeOPCUA(t)
	down := "opc.tcp://" + testpeer.FreeAddr(t)
	settle := func() int {
		time.Sleep(100 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	base := settle()
	for _, c := range []struct{ mode, endpoint string }{
		{"subscribe", p.endpoint}, {"read", p.endpoint}, {"subscribe", down},
	} {
		backoff := ""
		if c.endpoint == down {
			backoff = "  reconnect_min = \"1h\"\n  reconnect_max = \"1h\"\n"
		}
		o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "stop"
  endpoint = %q
  mode = %q
  interval = "100ms"
  publishing_interval = "100ms"
%s  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      name = "fast"
      id = "s=FastCounter"
`, c.endpoint, c.mode, backoff))
		acc := newAcc()
		if err := o.Start(context.Background(), acc); err != nil {
			t.Fatal(err)
		}
		if c.endpoint == p.endpoint {
			waitFor(t, 10*time.Second, "values", func() bool { return len(acc.values("opcua", "fast")) >= 3 })
		} else {
			waitFor(t, 10*time.Second, "a failed attempt", func() bool { return o.stats.connectErrors.Get() >= 1 })
		}
		if runtime.NumGoroutine() <= base {
			t.Fatalf("%s: the running input shows no goroutines", c.mode)
		}
		stopped := make(chan struct{})
		go func() {
			o.Stop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
			t.Fatalf("%s %s: Stop did not return", c.mode, c.endpoint)
		}
		n := len(acc.all())
		waitFor(t, 10*time.Second, "the goroutines to end", func() bool { return settle() <= base })
		if len(acc.all()) != n {
			t.Fatalf("%s: metrics after Stop", c.mode)
		}
	}
}

// Read mode with an interval longer than the session timeout: the server closes the session
// between polls; the poll that finds it gone connects again at once and still reads its tick.
// Every tick gives a health metric after its poll: each one since the first value must follow a
// value of its own tick.
func TestNodeOPCUASessionTimeoutBetweenPolls(t *testing.T) {
	p := startNodeOPCUA(t)
	o := load(t, statusTable("slow", p.endpoint, `interval = "3s"`, `session_timeout = "1s"`, `timestamp = "gather"`))
	logs := captureLog(o)
	acc := start(t, o)
	waitFor(t, 20*time.Second, "4 polls", func() bool { return len(acc.values("opcua", "Status")) >= 4 })
	if o.stats.connects.Get() < 2 {
		t.Fatalf("the server kept the session (%d connects): the case was not exercised\n%s", o.stats.connects.Get(), logs)
	}
	valued, ticks := false, 0
	for _, m := range acc.all() {
		switch {
		case m.Name == "opcua":
			if _, ok := m.Field("Status"); ok {
				valued = true
			}
		case m.Name == "opcua_health" && valued:
			valued = false
			ticks++
		case m.Name == "opcua_health" && ticks > 0:
			t.Fatalf("a poll was lost: the tick of %s gave no value\n%s", m.Time.Format("15:04:05.000"), logs)
		}
	}
	if ticks < 3 {
		t.Fatalf("%d ticks with a value", ticks)
	}
}
