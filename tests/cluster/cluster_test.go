package cluster_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

// The run is sized for CI. The interval is 2 s (not the default 10 s) and the session timeout
// 3 s (not the default 10 s; kfake is started allowing it): every wait below is a number of
// intervals or session timeouts, so with the defaults the same run takes five times as long
// and the bounds scale with them (docs/cluster.md gives the times measured both ways).
// TAGPIPE_CLUSTER_INTERVAL and TAGPIPE_CLUSTER_SESSION_TIMEOUT set them for such a run.
var (
	interval = envDuration("TAGPIPE_CLUSTER_INTERVAL", 2*time.Second)
	session  = envDuration("TAGPIPE_CLUSTER_SESSION_TIMEOUT", 3*time.Second)
)

const (
	shards = 64
	outage = 30 * time.Second
)

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// device is one simulated device: a unit behind a listener.
type device struct {
	name string
	addr string // the listener: host:port
	unit byte
	conn string // the connection it shares with others (its poller's unit), for the report
}

type plant struct {
	srv     *modbussim.Server
	devices []device
}

// newPlant serves 600 devices: 530 on their own address, 20 gateways of 3 units each, and 10
// devices with a backup controller (two listeners; the backup is not polled while the primary
// answers). Gateways of 3 rather than more: a gateway's devices move together, and the split's
// ±20% bound is a draw over the units' hashes (0.5% of random ports miss it with these units, 2%
// with 20 gateways of 5).
func newPlant(t *testing.T, port int) *plant {
	p := &plant{srv: modbussim.New(modbussim.Config{Record: true})}
	t.Cleanup(func() { p.srv.Close() })
	listen := func(host string) string {
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if _, err := p.srv.AddListener(addr); err != nil {
			t.Fatalf("simulator: %v", err)
		}
		return addr
	}
	for i := range 530 {
		addr := listen(fmt.Sprintf("127.0.%d.%d", 40+i/200, 1+i%200))
		p.devices = append(p.devices, device{name: fmt.Sprintf("d%03d", i), addr: addr, unit: 1, conn: addr})
	}
	for g := range 20 {
		addr := listen(fmt.Sprintf("127.0.43.%d", 1+g))
		for u := range 3 {
			p.devices = append(p.devices, device{name: fmt.Sprintf("g%02du%d", g, u+1), addr: addr, unit: byte(u + 1), conn: addr})
		}
	}
	for b := range 10 {
		primary, backup := listen(fmt.Sprintf("127.0.44.%d", 1+b)), listen(fmt.Sprintf("127.0.44.%d", 101+b))
		p.devices = append(p.devices, device{name: fmt.Sprintf("b%02d", b), addr: primary, unit: 1, conn: primary + "+" + backup})
	}
	return p
}

// config is the one configuration every agent runs; the member name, the output file and the
// HTTP port come from the environment.
func (p *plant) config(broker string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[agent]
  interval = %q
  flush_interval = "500ms"
  omit_hostname = true
  http_listen = "127.0.0.1:${HTTP_PORT}"

[cluster]
  brokers = [%q]
  group = "plant-test"
  shards = %d
  session_timeout = %q
  tag_metrics = true

[[outputs.file]]
  files = ["${OUT_FILE}"]
  data_format = "influx"

[[inputs.modbus]]
  health_metric = false
  ## A retry is a second request in the interval, which the test would count as a second
  ## poll: none, and time enough for an answer on a loaded machine.
  retries = 0
  timeout_min = "500ms"
  [[inputs.modbus.profile]]
    name = "meter"
    measurement = "power"
    [[inputs.modbus.profile.field]]
      name = "voltage"
      address = 0
      data_type = "FLOAT32"
`, interval.String(), broker, shards, session.String())
	for _, d := range p.devices {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = %q\n    controller = \"tcp://%s\"\n    slave_id = %d\n    profile = \"meter\"\n", d.name, d.addr, d.unit)
		if strings.Contains(d.conn, "+") {
			fmt.Fprintf(&b, "    backup_controllers = [\"tcp://%s\"]\n", strings.Split(d.conn, "+")[1])
		}
	}
	return b.String()
}

// requests returns the times of every request each device got, by device index.
func (p *plant) requests() [][]time.Time {
	rec := p.srv.Record()
	out := make([][]time.Time, len(p.devices))
	for i, d := range p.devices {
		out[i] = rec[d.addr].Requests[d.unit]
	}
	return out
}

// doubles returns the devices (listeners) that ever had two client connections at once, or were
// polled on an older connection after a newer one (modbussim.DeviceRecord).
func (p *plant) doubles() []string {
	var out []string
	for addr, r := range p.srv.Record() {
		if len(r.Doubles) > 0 {
			out = append(out, fmt.Sprintf("%s: %d clients at once, first at %s", addr, r.MaxOpen, r.Doubles[0].Format("15:04:05.000")))
		}
		if r.Interleaved > 0 {
			out = append(out, fmt.Sprintf("%s: %d requests on a connection after a newer one had polled", addr, r.Interleaved))
		}
	}
	slices.Sort(out)
	return out
}

// schedule is each device's phase in the interval, taken from its requests (the median of
// their offsets), so that a poll a little late still counts in its own slot.
type schedule struct{ phase []time.Duration }

func newSchedule(reqs [][]time.Time) schedule {
	s := schedule{phase: make([]time.Duration, len(reqs))}
	for i, ts := range reqs {
		if len(ts) == 0 {
			continue
		}
		offs := make([]time.Duration, len(ts))
		for j, t := range ts {
			offs[j] = time.Duration(t.UnixNano() % int64(interval))
		}
		slices.Sort(offs)
		s.phase[i] = offs[len(offs)/2]
	}
	return s
}

// slot is the interval a time falls in for device i: slots are centred on its phase.
func (s schedule) slot(i int, t time.Time) int64 {
	return (t.UnixNano() - int64(s.phase[i]) + int64(interval/2)) / int64(interval)
}

// tally counts, for devices idx, the slots strictly inside [from, to] that got no request
// (missed) and more than one (doubled), per device.
func (s schedule) tally(reqs [][]time.Time, idx []int, from, to time.Time) (missed, doubled map[int]int) {
	missed, doubled = map[int]int{}, map[int]int{}
	for _, i := range idx {
		k0, k1 := s.slot(i, from)+1, s.slot(i, to)-1
		counts := map[int64]int{}
		for _, t := range reqs[i] {
			if k := s.slot(i, t); k >= k0 && k <= k1 {
				counts[k]++
			}
		}
		for k := k0; k <= k1; k++ {
			switch {
			case counts[k] == 0:
				missed[i]++
			case counts[k] > 1:
				doubled[i]++
			}
		}
	}
	return missed, doubled
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// agentProc is one tagpipe process.
type agentProc struct {
	t       *testing.T
	name    string
	port    int
	out     string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

type harness struct {
	t       *testing.T
	bin     string
	conf    string
	dir     string
	plant   *plant
	mu      sync.Mutex
	runs    int
	outputs []string // every output file written
}

func (h *harness) start(name string) *agentProc {
	h.t.Helper()
	h.mu.Lock()
	h.runs++
	out := filepath.Join(h.dir, fmt.Sprintf("%s.%d.lp", name, h.runs))
	h.outputs = append(h.outputs, out)
	h.mu.Unlock()
	a := &agentProc{t: h.t, name: name, port: freePort(h.t), out: out, done: make(chan struct{})}
	a.logPath = filepath.Join(h.dir, fmt.Sprintf("%s.%d.log", name, h.runs))
	logf, err := os.Create(a.logPath)
	if err != nil {
		h.t.Fatal(err)
	}
	a.cmd = exec.Command(h.bin, "--config", h.conf)
	a.cmd.Env = append(os.Environ(), "HOSTNAME="+name, "OUT_FILE="+out, "HTTP_PORT="+strconv.Itoa(a.port))
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { a.cmd.Wait(); logf.Close(); close(a.done) }()
	h.t.Cleanup(func() {
		a.signal(syscall.SIGKILL)
		if h.t.Failed() {
			b, _ := os.ReadFile(a.logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			h.t.Logf("%s log (end):\n%s", a.name, b)
		}
	})
	return a
}

// signal sends sig to the process (by its PID) and waits for it to end.
func (a *agentProc) signal(sig syscall.Signal) {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		a.t.Errorf("%s did not end within 30 s of %v", a.name, sig)
	}
}

func (a *agentProc) get(path string) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", a.port, path))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var statRE = regexp.MustCompile(`(?m)^internal_cluster_(\w+)\{[^}]*\} (\S+)$`)

// stats returns the internal_cluster gauges and counters of /metrics.
func (a *agentProc) stats() map[string]float64 {
	out := map[string]float64{}
	for _, m := range statRE.FindAllStringSubmatch(a.get("/metrics"), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	return out
}

// stable reports whether the agents all see the same generation, poll what the group assigned
// them, and together poll every shard.
func stable(as ...*agentProc) bool {
	total := 0.0
	gen := -1.0
	for _, a := range as {
		s := a.stats()
		if len(s) == 0 || s["coordinator_lost"] != 0 || s["shards_polled"] != s["shards_assigned"] || s["generation"] < 1 {
			return false
		}
		if gen >= 0 && s["generation"] != gen {
			return false
		}
		gen = s["generation"]
		total += s["shards_polled"]
	}
	return total == shards
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Now()
}

// freePort is a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	_, port, _ := net.SplitHostPort(testpeer.FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

func build(t *testing.T, dir, pkg, name string) string { return testpeer.Build(t, dir, pkg, name) }

// devicesOf returns the indexes of the devices whose metrics are in the output files given,
// written in [from, to].
func (h *harness) readOutputs(files ...string) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(b), '\n'); i >= 0 {
			b = b[:i+1] // a line being written is left out
		}
		for _, m := range lptest.Parse(h.t, b, lineprotocol.Nanosecond) {
			if d, ok := m.Tag("device"); ok && m.Name == "power" {
				out[d] = append(out[d], m.Time)
			}
		}
	}
	return out
}

// polledBy returns the devices whose metrics agent a wrote in [from, to].
func (h *harness) polledBy(a *agentProc, from, to time.Time) []int {
	seen := h.readOutputs(a.out)
	var out []int
	for i, d := range h.plant.devices {
		for _, t := range seen[d.name] {
			if !t.Before(from) && !t.After(to) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func without(all, some []int) []int {
	var out []int
	for _, i := range all {
		if !slices.Contains(some, i) {
			out = append(out, i)
		}
	}
	return out
}

// TestThreeAgentsShareAPlant is the proof of issue 15 on loopback: real binaries, the Kafka
// wire protocol, the Modbus wire protocol.
func TestThreeAgentsShareAPlant(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three agents and a broker for about three minutes")
	}
	dir := t.TempDir()
	bin := build(t, dir, "./cmd/tagpipe", "tagpipe")
	kfakeBin := build(t, dir, "./outputs/kafka/testdata/kfakepeer", "kfakepeer")
	brokerPort := freePort(t)
	data := filepath.Join(dir, "kafka")
	broker := func() *testpeer.Process {
		return testpeer.Start(t, testpeer.Options{}, kfakeBin, "-ports", strconv.Itoa(brokerPort), "-data-dir", data,
			"-topic", "", "-min-session-timeout", "1s")
	}
	kafka := broker()
	p := newPlant(t, freePort(t))
	h := &harness{t: t, bin: bin, dir: dir, plant: p, conf: filepath.Join(dir, "tagpipe.conf")}
	if err := os.WriteFile(h.conf, []byte(p.config(fmt.Sprintf("127.0.0.1:%d", brokerPort))), 0o644); err != nil {
		t.Fatal(err)
	}
	n := len(p.devices)
	report := func(what string, missed, doubled map[int]int) {
		t.Helper()
		shown := false
		for i, c := range doubled {
			t.Errorf("%s: %s polled twice in %d intervals", what, p.devices[i].name, c)
			if !shown {
				shown = true
				var ts []string
				for _, r := range p.requests()[i] {
					ts = append(ts, r.Format("05.000"))
				}
				t.Logf("%s's requests (seconds): %s", p.devices[i].name, strings.Join(ts, " "))
			}
		}
		for i, c := range missed {
			t.Errorf("%s: %s missed %d intervals", what, p.devices[i].name, c)
		}
	}

	// 1. Start: every device polled by exactly one agent, every interval, within 3 intervals
	// of the three agents being in the group; the split within ±20% of even.
	a := []*agentProc{h.start("agent-1"), h.start("agent-2"), h.start("agent-3")}
	joined := waitFor(t, "three agents in the group", 2*time.Minute, func() bool {
		for _, x := range a {
			if !strings.Contains(x.get("/healthz"), "(id ") {
				return false
			}
		}
		return true
	})
	stableAt := waitFor(t, "a stable group", time.Minute, func() bool { return stable(a...) })
	time.Sleep(3*interval + 4*interval)
	now := time.Now()
	reqs := p.requests()
	sched := newSchedule(reqs)
	missed, doubled := sched.tally(reqs, all(n), joined.Add(3*interval), now)
	report("start", missed, doubled)
	var split []int
	for _, x := range a {
		split = append(split, len(h.polledBy(x, now.Add(-3*interval), now)))
	}
	for i, c := range split {
		if float64(c) < 0.8*float64(n)/3 || float64(c) > 1.2*float64(n)/3 {
			t.Errorf("start: agent-%d polls %d of %d devices: the split %v is not within ±20%% of even", i+1, c, n, split)
		}
	}
	t.Logf("start: the group was stable %s after the third agent joined; split %v", stableAt.Sub(joined).Round(time.Millisecond), split)

	// 2. Graceful stop: agent-1's devices are polled by the others within 2 intervals, no
	// other device misses an interval.
	mine := h.polledBy(a[0], now.Add(-2*interval), now)
	stopAt := time.Now()
	a[0].signal(syscall.SIGTERM)
	heldAt := waitFor(t, "two agents hold every shard", time.Minute, func() bool { return stable(a[1], a[2]) })
	time.Sleep(4 * interval)
	reqs = p.requests()
	worst := time.Duration(0)
	for _, i := range mine {
		first := time.Time{}
		for _, r := range reqs[i] {
			if r.After(stopAt) && (first.IsZero() || r.Before(first)) {
				first = r
			}
		}
		// The device's last poll before the stop was at most an interval before it.
		if gap := first.Sub(stopAt); first.IsZero() || gap > 2*interval {
			t.Errorf("graceful stop: %s polled again %s after SIGTERM (more than 2 intervals)", p.devices[i].name, gap)
		} else {
			worst = max(worst, gap)
		}
	}
	missed, doubled = sched.tally(reqs, without(all(n), mine), stopAt, time.Now())
	report("graceful stop, the others' devices", missed, doubled)
	_, doubled = sched.tally(reqs, mine, stopAt, time.Now())
	report("graceful stop, agent-1's devices", nil, doubled)
	t.Logf("graceful stop: the others held every shard %s after SIGTERM; agent-1's %d devices were polled by them at most %s after it",
		heldAt.Sub(stopAt).Round(time.Millisecond), len(mine), worst.Round(time.Millisecond))

	// Back to three, for the rest.
	a[0] = h.start("agent-1")
	waitFor(t, "three agents again", time.Minute, func() bool { return stable(a...) })
	time.Sleep(2 * interval)

	// 3. Kill: agent-2's devices are polled again within session_timeout + 2 intervals;
	// every other device misses nothing.
	now = time.Now()
	mine = h.polledBy(a[1], now.Add(-2*interval), now)
	killAt := time.Now()
	a[1].signal(syscall.SIGKILL)
	heldAt = waitFor(t, "two agents hold every shard", time.Minute, func() bool { return stable(a[0], a[2]) })
	time.Sleep(3 * interval)
	reqs = p.requests()
	worst = 0
	for _, i := range mine {
		first := time.Time{}
		for _, r := range reqs[i] {
			if r.After(killAt) && (first.IsZero() || r.Before(first)) {
				first = r
			}
		}
		if gap := first.Sub(killAt); first.IsZero() || gap > session+2*interval {
			t.Errorf("kill: %s polled again %s after SIGKILL (more than session_timeout + 2 intervals)", p.devices[i].name, gap)
		} else {
			worst = max(worst, gap)
		}
	}
	missed, doubled = sched.tally(reqs, without(all(n), mine), killAt, time.Now())
	report("kill, the others' devices", missed, doubled)
	t.Logf("kill: the others held every shard %s after SIGKILL (session_timeout %s); agent-2's %d devices were polled again at most %s after it",
		heldAt.Sub(killAt).Round(time.Millisecond), session, len(mine), worst.Round(time.Millisecond))

	// 4. Return: at most shards/3 + 1 shards move back, never with two connections at once.
	before := [2]map[string]float64{a[0].stats(), a[2].stats()}
	returnAt := time.Now()
	a[1] = h.start("agent-2")
	waitFor(t, "three agents again", time.Minute, func() bool { return stable(a...) })
	time.Sleep(3 * interval)
	moved := a[1].stats()["shards_polled"]
	revoked := a[0].stats()["shards_revoked"] - before[0]["shards_revoked"] + a[2].stats()["shards_revoked"] - before[1]["shards_revoked"]
	if moved > shards/3+1 || revoked != moved {
		t.Errorf("return: %v shards moved to agent-2, %v revoked from the others; want the same, at most %d", moved, revoked, shards/3+1)
	}
	reqs = p.requests()
	_, doubled = sched.tally(reqs, all(n), returnAt, time.Now())
	report("return", nil, doubled)
	t.Logf("return: %v shards moved back to agent-2", moved)

	// 5. Broker outage: for 30 s every device goes on being polled by the agent that had it,
	// and every poll reaches the outputs; the group reforms with no double polling.
	waitFor(t, "a stable group", time.Minute, func() bool { return stable(a...) })
	downAt := time.Now()
	kafka.Stop()
	waitFor(t, "every agent notices", time.Minute, func() bool {
		for _, x := range a {
			if x.stats()["coordinator_lost"] != 1 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Until(downAt.Add(outage)))
	upAt := time.Now()
	broker() // stopped by the test's cleanup
	waitFor(t, "the group reforms", 2*time.Minute, func() bool { return stable(a...) })
	reformed := time.Now()
	time.Sleep(3 * interval)
	reqs = p.requests()
	missed, doubled = sched.tally(reqs, all(n), downAt, time.Now())
	report("broker outage and return", missed, doubled)
	t.Logf("broker outage: down %s, the group reformed %s after the broker returned", upAt.Sub(downAt).Round(time.Millisecond), reformed.Sub(upAt).Round(time.Millisecond))

	// Every agent stops; what they wrote holds every poll of the outage once.
	for _, x := range a {
		x.signal(syscall.SIGTERM)
	}
	written := h.readOutputs(h.outputs...)
	lost := 0
	for i, d := range p.devices {
		got := map[int64]int{}
		for _, ts := range written[d.name] {
			got[sched.slot(i, ts)]++
		}
		for k := sched.slot(i, downAt) + 1; k < sched.slot(i, upAt); k++ {
			switch got[k] {
			case 0:
				lost++
			case 1:
			default:
				t.Errorf("outage: %s written %d times in one interval", d.name, got[k])
			}
		}
	}
	if lost > 0 {
		t.Errorf("outage: %d polls did not reach the outputs", lost)
	}
	for _, d := range p.doubles() {
		t.Errorf("two connections at once: %s", d)
	}
}
