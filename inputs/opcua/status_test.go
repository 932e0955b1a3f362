package opcua

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// sessionState returns the one status DeviceStates reports (ok false when it reports none).
func sessionState(o *OPCUA, now time.Time) (st models.DeviceStatus, ok bool) {
	o.DeviceStates(now, func(s models.DeviceStatus) { st, ok = s, true })
	return st, ok
}

// TestSessionStates: /healthz and the device page see an OPC UA input as its session: ok while
// it is connected and reading, failing with the connect error while the server is away
// (before, the input logged the error and /healthz said ok), and nothing before Start.
func TestSessionStates(t *testing.T) {
	sim := startSim(t, opcuasim.Options{})
	dead := "opc.tcp://" + testpeer.FreeAddr(t)
	table := func(name, endpoint string) string {
		return fmt.Sprintf("[[inputs.opcua]]\n  name = %q\n  endpoint = %q\n  interval = \"100ms\"\n  reconnect_min = \"50ms\"\n  [[inputs.opcua.group]]\n    namespace_uri = %q\n    [[inputs.opcua.group.node]]\n      id = \"s=Counter\"\n", name, endpoint, opcuasim.NamespaceURI)
	}
	up, down := load(t, table("up", sim.Endpoint())), load(t, table("down", dead))
	if _, ok := sessionState(up, time.Now()); ok {
		t.Fatal("a session reported before Start")
	}
	start(t, up)
	start(t, down)
	var u, d models.DeviceStatus
	waitFor(t, 10*time.Second, "up ok and down failing", func() bool {
		u, _ = sessionState(up, time.Now())
		d, _ = sessionState(down, time.Now())
		return u.State == models.DeviceOK && d.State.Failing()
	})
	if u.Name != "up" || u.Controller != sim.Endpoint() || u.LastGood.IsZero() || u.LastError != "" {
		t.Errorf("up: %+v", u)
	}
	if d.LastError == "" || !strings.Contains(d.LastError, "refused") || !d.LastGood.IsZero() {
		t.Errorf("down: %+v, want its connect error and no good answer", d)
	}
	// The device page's figures: reads counted, their round trips kept; the refusals logged.
	var f models.DeviceFigures
	waitFor(t, 10*time.Second, "two reads", func() bool {
		u, _ = sessionState(up, time.Now())
		u.Detail.Figures(&f)
		return f.Polls >= 2
	})
	if f.PollsFailed != 0 || f.RTT <= 0 || f.Timeout != 10*time.Second || len(u.Detail.RTTs(nil)) == 0 {
		t.Errorf("up: figures %+v", f)
	}
	var det models.DeviceDetail
	d.Detail.Detail(time.Now(), &det)
	if len(det.Errors) == 0 || !strings.Contains(det.Errors[0].Text, "refused") {
		t.Errorf("down: errors %+v", det.Errors)
	}
	// Read mode: a session that answered no read for StaleIntervals intervals is stale.
	if s, _ := sessionState(up, u.LastGood.Add(models.StaleIntervals*100*time.Millisecond+time.Second)); s.State != models.DeviceStale {
		t.Errorf("up, long after its last read: %s, want stale", s.State)
	}
	up.Stop()
	if _, ok := sessionState(up, time.Now()); ok {
		t.Error("a session reported after Stop")
	}
}

// TestStatsAfterRestart: internal_opcua is reported while the input runs, not after Stop, and
// again, with its counts, when the input is started once more (a [cluster] shard that comes back).
func TestStatsAfterRestart(t *testing.T) {
	o := loadUnreachable(t, "restart")
	reported := func() bool {
		for _, m := range models.StatsSnapshot(time.Now()) {
			if v, _ := m.Tag("source"); m.Name == "internal_opcua" && v == "restart" {
				return true
			}
		}
		return false
	}
	for i := range 2 {
		if err := o.Start(context.Background(), &countAcc{}); err != nil {
			t.Fatal(err)
		}
		if !reported() {
			t.Fatalf("start %d: internal_opcua not reported", i+1)
		}
		o.Stop()
		if reported() {
			t.Fatalf("stop %d: internal_opcua still reported", i+1)
		}
	}
}
