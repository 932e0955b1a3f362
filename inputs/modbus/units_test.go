package modbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	first := map[string]bool{units[0]: true, units[4]: true}  // single-0 and the gateway
	second := map[string]bool{units[1]: true, units[5]: true} // single-1 and the paired device
	m.SetUnitOwner(func(u string) string {
		if first[u] {
			return "here"
		}
		return "elsewhere"
	})
	m.RunUnits(func(u string) bool { return first[u] })
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

	m.RunUnits(func(u string) bool { return second[u] })
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
