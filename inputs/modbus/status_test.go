package modbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// states returns DeviceStates at now by device name.
func states(m *Modbus, now time.Time) map[string]models.DeviceStatus {
	out := map[string]models.DeviceStatus{}
	m.DeviceStates(now, func(s models.DeviceStatus) { out[s.Name] = s })
	return out
}

// TestDeviceStates: the state /healthz and the device page read comes from what the polls did:
// a device that answers is ok with its last good poll; one whose port refuses and one that
// never answers open their breakers and keep their last error; a device with no answered
// poll for StaleIntervals intervals is stale; nothing is reported before Start or after Stop.
func TestDeviceStates(t *testing.T) {
	good := sim(t, "127.0.0.1:0", modbussim.Config{})
	silent := sim(t, "127.0.0.1:0", modbussim.Config{Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}}})
	refused := testpeer.FreeAddr(t) // nothing listens
	conf := "[[inputs.modbus]]\n  timeout_max = \"40ms\"\n  retries = 0\n  breaker_failures = 2\n  breaker_cool_down = \"1h\"\n" + modbussim.Profile
	for _, d := range []struct{ name, addr string }{{"good", good.Addr()}, {"silent", silent.Addr()}, {"refused", refused}} {
		conf += fmt.Sprintf("  [[inputs.modbus.device]]\n    name = %q\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n", d.name, d.addr)
	}
	m := load(t, conf)
	if n := len(states(m, time.Now())); n != 0 {
		t.Fatalf("%d devices reported before Start", n)
	}
	interval := 50 * time.Millisecond
	m.SetInterval(interval)
	if err := m.Start(context.Background(), newAcc()); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()

	deadline := time.Now().Add(10 * time.Second)
	var got map[string]models.DeviceStatus
	for {
		got = states(m, time.Now())
		if got["good"].State == models.DeviceOK && got["silent"].State == models.DeviceBreakerOpen &&
			got["refused"].State == models.DeviceBreakerOpen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("states after 10 s: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g := got["good"]; g.LastGood.IsZero() || g.LastError != "" || g.Controller != "tcp://"+good.Addr() {
		t.Errorf("good: %+v", g)
	}
	for _, name := range []string{"silent", "refused"} {
		d := got[name]
		if !d.LastGood.IsZero() || d.LastError == "" || d.ErrorAt.IsZero() || !d.State.Failing() {
			t.Errorf("%s: %+v, want failing with its last error and no good poll", name, d)
		}
	}
	// Seen StaleIntervals intervals (and a little) after its last good poll, the good device is
	// stale: its polls did not happen, whatever the reason.
	later := got["good"].LastGood.Add(models.StaleIntervals*interval + time.Millisecond)
	if s := states(m, later)["good"].State; s != models.DeviceStale {
		t.Errorf("good, %d intervals after its last good poll: %s, want stale", models.StaleIntervals, s)
	}
	m.Stop()
	if n := len(states(m, time.Now())); n != 0 {
		t.Errorf("%d devices reported after Stop", n)
	}
}
