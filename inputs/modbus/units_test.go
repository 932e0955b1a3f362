package modbus

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/models"
)

// unitsPlant is a simulator with four devices on addresses of their own, a gateway with three
// units and a device with a backup controller, and the input's configuration for it.
func unitsPlant(t *testing.T) (*modbussim.Server, string, []string) {
	s := modbussim.New(modbussim.Config{Record: true})
	t.Cleanup(func() { s.Close() })
	var addrs []string
	for range 7 {
		a, err := s.AddListener("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	var b strings.Builder
	b.WriteString("[[inputs.modbus]]\n  health_metric = false\n" + modbussim.Profile)
	dev := func(name, addr string, unit int, backup string) {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = %q\n    controller = \"tcp://%s\"\n    slave_id = %d\n    profile = \"meter\"\n", name, addr, unit)
		if backup != "" {
			fmt.Fprintf(&b, "    backup_controllers = [\"tcp://%s\"]\n", backup)
		}
	}
	for i := range 4 {
		dev(fmt.Sprintf("single-%d", i), addrs[i], 1, "")
	}
	for u := 1; u <= 3; u++ {
		dev(fmt.Sprintf("gw-%d", u), addrs[4], u, "")
	}
	dev("paired", addrs[6], 1, addrs[5])
	return s, b.String(), addrs
}

// TestUnits: a unit is a poller, named by its controllers' addresses, sorted and joined.
func TestUnits(t *testing.T) {
	_, conf, addrs := unitsPlant(t)
	m := load(t, conf)
	pair := []string{"tcp://" + addrs[5], "tcp://" + addrs[6]}
	slices.Sort(pair)
	want := []string{"tcp://" + addrs[0], "tcp://" + addrs[1], "tcp://" + addrs[2], "tcp://" + addrs[3], "tcp://" + addrs[4],
		strings.Join(pair, " ")}
	if got := m.Units(); !slices.Equal(got, want) {
		t.Errorf("units\n%q\nwant\n%q", got, want)
	}
}

// TestRunUnits: the input polls only the units kept; RunUnits stops the others, closing their
// connections, and starts new ones at their phase; the devices of units not run are reported
// remote with their owner; the first metrics of a device after its unit started are Fresh.
func TestRunUnits(t *testing.T) {
	s, conf, addrs := unitsPlant(t)
	m := load(t, conf)
	m.SetInterval(100 * time.Millisecond)
	units := m.Units()
	if len(units) != 6 {
		t.Fatalf("units %q, want 6", units)
	}
	first := map[int]bool{0: true, 4: true}  // single-0 and the gateway
	second := map[int]bool{1: true, 5: true} // single-1 and the paired device
	m.SetUnitOwner(func(u int) string {
		if first[u] {
			return "here"
		}
		return "elsewhere"
	})
	m.RunUnits(func(u int) bool { return first[u] })
	a := newAcc()
	if err := m.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 10*time.Second, "three polls of the first units", func(ms []*models.Metric) bool {
		return len(byDevice(ms, "single-0")) >= 3 && len(byDevice(ms, "gw-1")) >= 3 && len(byDevice(ms, "gw-2")) >= 3 && len(byDevice(ms, "gw-3")) >= 3
	})
	states := map[string]models.DeviceStatus{}
	m.DeviceStates(time.Now(), func(d models.DeviceStatus) { states[d.Name] = d })
	for name, d := range states {
		remote := !(name == "single-0" || strings.HasPrefix(name, "gw-"))
		if (d.State == models.DeviceRemote) != remote || (d.Owner == "here") == remote {
			t.Errorf("%s: state %s, owner %q", name, d.State, d.Owner)
		}
	}

	m.RunUnits(func(u int) bool { return second[u] })
	stopped := time.Now()
	rec := s.Record()
	before := len(rec[addrs[0]].Requests[1]) + len(rec[addrs[4]].Requests[2])
	ms := a.waitFor(t, 10*time.Second, "three polls of the second units", func(ms []*models.Metric) bool {
		return len(byDevice(ms, "single-1")) >= 3 && len(byDevice(ms, "paired")) >= 3
	})
	rec = s.Record()
	if after := len(rec[addrs[0]].Requests[1]) + len(rec[addrs[4]].Requests[2]); after != before {
		t.Errorf("%d requests to stopped units after RunUnits returned", after-before)
	}
	for _, x := range byDevice(ms, "single-0") {
		if x.Time.After(stopped) {
			t.Errorf("single-0 polled at %s, after its unit stopped", x.Time.Format("15:04:05.000"))
		}
	}
	for i, addr := range addrs {
		r := rec[addr]
		if r.MaxOpen > 1 {
			t.Errorf("listener %d had %d clients at once", i, r.MaxOpen)
		}
		if i == 2 || i == 3 || i == 5 { // never run, or the backup (not needed)
			if r.Accepted != 0 {
				t.Errorf("listener %d: %d connections", i, r.Accepted)
			}
		}
	}
	waitClosed := time.Now().Add(5 * time.Second)
	for s.Record()[addrs[0]].Open+s.Record()[addrs[4]].Open > 0 && time.Now().Before(waitClosed) {
		time.Sleep(10 * time.Millisecond)
	}
	if open := s.Record()[addrs[0]].Open + s.Record()[addrs[4]].Open; open != 0 {
		t.Errorf("%d connections of stopped units still open", open)
	}
	for _, name := range []string{"single-0", "gw-2", "single-1", "paired"} {
		d := byDevice(ms, name)
		if !d[0].Fresh || d[1].Fresh || d[2].Fresh {
			t.Errorf("%s: fresh flags %v %v %v, want only the first", name, d[0].Fresh, d[1].Fresh, d[2].Fresh)
		}
	}
	m.Stop()
}

// heapInUse is the heap's live bytes after a full collection (two: sync.Pool's victims too).
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestUnitStateOnlyWhenKept: in cluster mode a unit's run-time state (devices' resilience
// state, request frames, metric scratch, links) exists only while the unit is kept. An input
// of 1,000 units that keeps none holds less than a quarter of what keeping them all adds,
// measured on the heap in this test, and it lets that state go again when the units are
// revoked. The devices not kept are still listed, remote, and listing them allocates nothing.
func TestUnitStateOnlyWhenKept(t *testing.T) {
	const n = 1000
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.%d.%d:9", 2+i/250, 1+i%250) // nothing listens: a due poll is refused
	}
	m := load(t, devicesConfig("  health_metric = false\n", addrs))
	m.SetInterval(time.Hour) // few polls fall due while the test runs
	m.SetUnitOwner(func(int) string { return "elsewhere" })
	none := func(int) bool { return false }
	all := func(int) bool { return true }
	m.RunUnits(none)
	// The runtime keeps the descriptors of ended goroutines for new ones: made first, they are
	// in the base and not counted as what revoked units leave.
	var wg sync.WaitGroup
	hold := make(chan struct{})
	for range n + 10 {
		wg.Go(func() { <-hold })
	}
	close(hold)
	wg.Wait()
	base := heapInUse()
	if err := m.Start(context.Background(), newAcc()); err != nil {
		t.Fatal(err)
	}
	kept := func() (polled, remote int) {
		m.DeviceStates(time.Now(), func(d models.DeviceStatus) {
			if d.State == models.DeviceRemote && d.Owner == "elsewhere" {
				remote++
			} else {
				polled++
			}
		})
		return polled, remote
	}
	if p, r := kept(); p != 0 || r != n {
		t.Fatalf("none kept: %d devices polled, %d remote; want 0 and %d", p, r, n)
	}
	var f models.DeviceFigures
	if allocs := testing.AllocsPerRun(10, func() {
		m.DeviceStates(time.Now(), func(d models.DeviceStatus) { d.Detail.Figures(&f) })
	}); allocs != 0 {
		t.Errorf("listing %d remote devices with their figures: %.0f allocations, want none", n, allocs)
	}
	if len(f.Tags) == 0 || f.Timeout <= 0 {
		t.Errorf("a remote device's figures: tags %v, timeout %s; want its tags and nominal timeout", f.Tags, f.Timeout)
	}
	idle := heapInUse() - base

	m.RunUnits(all)
	if p, r := kept(); p != n || r != 0 {
		t.Fatalf("all kept: %d devices polled, %d remote; want %d and 0", p, r, n)
	}
	state := heapInUse() - base - idle // what polling the units here adds

	m.RunUnits(none)
	if p, r := kept(); p != 0 || r != n {
		t.Fatalf("all revoked: %d devices polled, %d remote; want 0 and %d", p, r, n)
	}
	left := heapInUse() - base - idle
	t.Logf("%d units: %d B a device kept by none, %d B more a device kept, %d B a device left after the revoke",
		n, idle/n, state/n, left/n)
	if idle*4 > state {
		t.Errorf("an input that keeps none of %d units holds %d B a device, more than a quarter of the %d B a device keeping them adds: units not kept have run-time state",
			n, idle/n, state/n)
	}
	if left*4 > state {
		t.Errorf("after every unit was revoked %d B a device is still held, more than a quarter of the %d B a device keeping them added: the state of revoked units is kept",
			left/n, state/n)
	}
}

// TestInventoryHeldLightly: every agent of a group loads the whole inventory and polls a part
// of it, so a device polled elsewhere must cost little. Once the configuration of 5,000
// devices is loaded (its text let go) and the input started in cluster mode keeping none of
// them, the heap holds at most 130 B a device (about 90 now): its record in the inventory (its
// name and controller spelled out, its kind and tag set as indexes), and its place in a unit.
// Nothing of the text is held: before, the names compiled kept the file and the pieces decoded
// from it, and a device cost about 550 B; with a spec, tags and controller of its own, 208 B.
func TestInventoryHeldLightly(t *testing.T) {
	const n = 5000
	base := heapInUse()
	m := func() *Modbus { // the configuration's text is garbage when it returns
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("127.1.%d.%d:9", i/250, 1+i%250)
		}
		return load(t, devicesConfig("  health_metric = false\n", addrs))
	}()
	loaded := heapInUse() - base
	m.SetInterval(time.Hour)
	m.SetUnitOwner(func(int) string { return "elsewhere" })
	m.RunUnits(func(int) bool { return false })
	if err := m.Start(context.Background(), newAcc()); err != nil {
		t.Fatal(err)
	}
	held := heapInUse() - base
	remote := 0
	m.DeviceStates(time.Now(), func(d models.DeviceStatus) {
		if d.State == models.DeviceRemote {
			remote++
		}
	})
	if remote != n {
		t.Fatalf("%d devices remote, want %d", remote, n)
	}
	t.Logf("%d devices: %d B a device loaded, %d B started keeping none", n, loaded/n, held/n)
	if held/n > 130 {
		t.Errorf("an input of %d devices keeping none holds %d B a device, want at most 130", n, held/n)
	}
}
