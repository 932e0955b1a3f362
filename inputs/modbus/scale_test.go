package modbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// TestManyDevicesOnSchedule: 200 devices, served by modbussim in a process of its own, of which
// 5 refuse connections (nothing listens), 5 accept and never answer and 5 answer after 800 ms
// (and are waited for: they report too).
// Every healthy device is polled in every interval of a window of 8 intervals, and each poll's
// lateness from its device's tick (its phase past a multiple of the interval since the epoch,
// measured to the metric's time, when the answer arrived) stays under 50 ms: the failing
// devices delay nobody.
//
// Under the race detector, which slows every goroutine down several times, the bound is
// 150 ms: what is checked then is that no healthy device waits for a failing one (that would
// be an interval, or 800 ms), not the speed of the instrumented code.
func TestManyDevicesOnSchedule(t *testing.T) {
	const n, interval = 200, 500 * time.Millisecond
	addrs := startSimProcess(t, "tcp", "MODBUSSIM_KINDS=healthy:185,blackholed:5,slow:5")
	healthy, blackholed, slow := addrs[:185], addrs[185:190], addrs[190:]
	// Spread the failing devices over the interval: of every 40, one of each kind.
	kind := make([]string, n)
	var b strings.Builder
	// timeout_max below the interval: the blackholed devices fail (and their breakers open)
	// within the test
	b.WriteString("[[inputs.modbus]]\n  timeout_max = \"300ms\"\n" + benchProfile(20))
	for i := range n {
		var addr string
		switch {
		case i%40 == 7:
			kind[i], addr = "dead", testpeer.FreeAddr(t)
		case i%40 == 17:
			kind[i], addr, blackholed = "blackholed", blackholed[0], blackholed[1:]
		case i%40 == 27:
			kind[i], addr, slow = "slow", slow[0], slow[1:]
		default:
			kind[i], addr, healthy = "healthy", healthy[0], healthy[1:]
		}
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"d%03d\"\n    controller = \"tcp://%s\"\n    profile = \"bench\"\n", i, addr)
		if kind[i] == "slow" {
			b.WriteString("    timeout_max = \"2s\"\n") // waited for: its answers come 800 ms late
		}
	}
	m := load(t, b.String())
	m.SetInterval(interval)
	a := newAcc()
	start := time.Now()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// The window: the 8 intervals after two to connect.
	iv := int64(interval)
	k0 := (start.UnixNano()+iv-1)/iv + 2
	k1 := k0 + 8
	time.Sleep(time.Until(time.Unix(0, (k1+1)*iv)))
	m.Stop()
	ms, _ := a.snapshot()

	bound := 50 * time.Millisecond
	if raceEnabled {
		bound = 150 * time.Millisecond
	}
	slots := make([][]bool, n)
	var late []time.Duration
	slowPolls := 0
	for _, x := range ms {
		dev, _ := x.Tag("device")
		var i int
		fmt.Sscanf(dev, "d%03d", &i)
		if kind[i] == "slow" {
			slowPolls++
		}
		if kind[i] != "healthy" {
			continue
		}
		since := x.Time.UnixNano() - int64(phase(i, n, interval))
		k := since / iv
		if k < k0 || k >= k1 {
			continue
		}
		if slots[i] == nil {
			slots[i] = make([]bool, k1-k0)
		}
		if slots[i][k-k0] {
			t.Errorf("%s polled twice in interval %d", dev, k)
		}
		slots[i][k-k0] = true
		d := time.Duration(since - k*iv)
		late = append(late, d)
		if d >= bound {
			t.Errorf("%s: poll %s late (bound %s)", dev, d.Round(time.Microsecond), bound)
		}
	}
	missing := 0
	for i := range n {
		if kind[i] != "healthy" {
			continue
		}
		for k, ok := range slots[i] {
			if !ok {
				missing++
				t.Errorf("d%03d: no poll in interval %d of the window", i, k0+int64(k))
			}
		}
		if slots[i] == nil {
			missing += int(k1 - k0)
			t.Errorf("d%03d: no poll in the window", i)
		}
	}
	// The slow devices are waited for (their own timeout_max) and do report, an interval or
	// two apart.
	if slowPolls < 5*3 {
		t.Errorf("%d polls of the 5 slow devices in the test, want at least 15", slowPolls)
	}
	slices.Sort(late)
	if len(late) > 0 {
		t.Logf("%d polls of 185 healthy devices in %d intervals, %d missing; lateness p50 %s, p99 %s, max %s",
			len(late), k1-k0, missing, late[len(late)/2], late[len(late)*99/100], late[len(late)-1])
	}
	var health []*models.Metric
	for _, h := range a.healthSnapshot() {
		if dev, _ := h.Tag("device"); dev == "d007" || dev == "d017" {
			health = append(health, h)
		}
	}
	// The dead and the blackholed devices' breakers opened (5 polls without an answer).
	for _, dev := range []string{"d007", "d017"} {
		var last string
		for _, h := range health {
			if d, _ := h.Tag("device"); d == dev {
				f, _ := h.Field("breaker")
				last = f.StringV()
			}
		}
		if last != "open" {
			t.Errorf("%s: breaker %q at the end, want open", dev, last)
		}
	}
}
