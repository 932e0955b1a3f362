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
// (and are waited for: they report too). Every healthy device is polled exactly once in every
// interval of a window of 8 intervals: the failing devices delay nobody.
//
// The judgement is by counting, not by lateness, which depends on how busy the machine is
// (lateness figures belong in internal/loadtest and BenchmarkDevices). Each failing device costs
// whoever would wait for it at least an interval per poll: a blackholed one is retried until its
// next poll is due (timeout_max 300ms, then at once, capped at the interval), a slow one answers
// after 800 ms. A healthy device that waited behind one would come a whole interval late: its
// poll would land in the next interval and the one after would be skipped, and the count shows
// it. A poll is counted in the interval its answer arrived in (phase past a multiple of the
// interval since the epoch): polls never start before their tick and a poller skips the ticks it
// overran, so a device can never have two polls in one interval.
func TestManyDevicesOnSchedule(t *testing.T) {
	const n, interval = 200, 500 * time.Millisecond
	addrs := startSimProcess(t, "tcp", "MODBUSSIM_KINDS=healthy:185,blackholed:5,slow:5")
	healthy, blackholed, slow := addrs[:185], addrs[185:190], addrs[190:]
	// Spread the failing devices over the interval: of every 40, one of each kind.
	kind := make([]string, n)
	addrOf := make([]string, n)
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
		addrOf[i] = addr
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
	// The window: the 8 intervals after two to connect. The blackholed devices cost their
	// whole interval in the first five polls (then their breakers open), the slow ones all along.
	iv := int64(interval)
	k0 := (start.UnixNano()+iv-1)/iv + 2
	k1 := k0 + 8
	time.Sleep(time.Until(time.Unix(0, (k1+1)*iv)))
	m.Stop()
	ms, _ := a.snapshot()

	polls := make([][]int, n) // per device, polls counted in each interval of the window
	var late []time.Duration  // for the log only
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
		since := x.Time.UnixNano() - int64(Phase("tcp://"+addrOf[i], 1, dev, interval))
		k := since / iv
		if k < k0 || k >= k1 {
			continue
		}
		if polls[i] == nil {
			polls[i] = make([]int, k1-k0)
		}
		polls[i][k-k0]++
		late = append(late, time.Duration(since-k*iv))
	}
	missing := 0
	for i := range n {
		if kind[i] != "healthy" {
			continue
		}
		if polls[i] == nil {
			missing += int(k1 - k0)
			t.Errorf("d%03d: no poll in the window", i)
			continue
		}
		for k, c := range polls[i] {
			switch {
			case c == 0:
				missing++
				t.Errorf("d%03d: no poll in interval %d of the window", i, k0+int64(k))
			case c > 1:
				t.Errorf("d%03d: %d polls in interval %d of the window", i, c, k0+int64(k))
			}
		}
	}
	// The slow devices are waited for (their own timeout_max) and do report, an interval or
	// two apart.
	if slowPolls < 5*3 {
		t.Errorf("%d polls of the 5 slow devices in the test, want at least 15", slowPolls)
	}
	slices.Sort(late)
	if len(late) > 0 {
		t.Logf("%d polls of 185 healthy devices in %d intervals, %d missing; lateness (not judged) p50 %s, p99 %s, max %s",
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
