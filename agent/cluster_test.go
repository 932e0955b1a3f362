package agent

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// unitsInput is a models.UnitRunner with one device per unit, which records the units it runs.
type unitsInput struct {
	ids   []string
	mu    sync.Mutex
	keep  func(int) bool
	owner func(int) string
}

func (*unitsInput) SampleConfig() string                             { return "" }
func (*unitsInput) Gather(context.Context, models.Accumulator) error { return nil }
func (*unitsInput) Start(context.Context, models.Accumulator) error  { return nil }
func (*unitsInput) Stop()                                            {}
func (u *unitsInput) Units() []string                                { return u.ids }
func (u *unitsInput) SetUnitOwner(owner func(int) string)            { u.owner = owner }
func (u *unitsInput) RunUnits(keep func(int) bool)                   { u.mu.Lock(); u.keep = keep; u.mu.Unlock() }
func (u *unitsInput) running(unit int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.keep != nil && u.keep(unit)
}
func (u *unitsInput) DeviceStates(_ time.Time, fn func(models.DeviceStatus)) { u.states(fn) }

func (u *unitsInput) states(fn func(models.DeviceStatus)) {
	for i, id := range u.ids {
		d := models.DeviceStatus{Name: id, Controller: id, State: models.DeviceFailing}
		if !u.running(i) {
			d.State = models.DeviceRemote
		}
		if u.owner != nil {
			d.Owner = u.owner(i)
		}
		fn(d)
	}
}

// endpoint is a service input that is one unit (an OPC UA server, say).
type endpoint struct {
	pusher
	mu      sync.Mutex
	running bool
}

func (e *endpoint) Connection() string { return "opc.tcp://127.0.0.1:4840" }
func (e *endpoint) Start(ctx context.Context, acc models.Accumulator) error {
	e.mu.Lock()
	e.running, e.acc = true, acc
	e.mu.Unlock()
	return nil
}
func (e *endpoint) Stop()           { e.mu.Lock(); e.running = false; e.mu.Unlock() }
func (e *endpoint) isRunning() bool { e.mu.Lock(); defer e.mu.Unlock(); return e.running }

// freshSeen is a processor that records the Fresh flag of every metric.
type freshSeen struct {
	mu    sync.Mutex
	fresh []bool
}

func (*freshSeen) SampleConfig() string { return "" }
func (f *freshSeen) Apply(in ...*models.Metric) []*models.Metric {
	f.mu.Lock()
	for _, m := range in {
		f.fresh = append(f.fresh, m.Fresh)
	}
	f.mu.Unlock()
	return in
}

type clusterAgent struct {
	a     *Agent
	stop  func()
	units *unitsInput
	ep    *endpoint
	seen  *freshSeen
}

func startClusterAgent(t *testing.T, brokers []string, name string) *clusterAgent {
	ids := make([]string, 24)
	for i := range ids {
		ids[i] = fmt.Sprintf("tcp://127.0.0.%d:502", i+1)
	}
	c := &clusterAgent{units: &unitsInput{ids: ids}, ep: &endpoint{}, seen: &freshSeen{}}
	cfg := setup{inputs: []models.Input{c.units, c.ep}, processors: []models.Processor{c.seen}, outputs: []*memOut{{}}}.config()
	cl := config.DefaultCluster()
	cl.Brokers, cl.Group, cl.Member, cl.Shards = brokers, "plant", name, 8
	cl.SessionTimeout = config.Duration(1500 * time.Millisecond)
	cfg.Cluster = &cl
	c.a, c.stop = start(t, cfg, nil)
	return c
}

// TestClusterAgentsShareUnits: two agents of one group run every unit once between them and
// the one-unit service input on one of them; the devices polled elsewhere are reported remote
// with their owner and do not count against health; /healthz names the group; a whole input
// started by a takeover marks each series' first metric Fresh. When one agent stops, the other
// runs everything.
func TestClusterAgentsShareUnits(t *testing.T) {
	bk, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	a := startClusterAgent(t, bk.ListenAddrs(), "agent-a")
	b := startClusterAgent(t, bk.ListenAddrs(), "agent-b")
	defer b.stop()
	split := func() (na, nb int, ok bool) {
		for i := range a.units.ids {
			ra, rb := a.units.running(i), b.units.running(i)
			if ra == rb {
				return 0, 0, false // none or both
			}
			if ra {
				na++
			} else {
				nb++
			}
		}
		return na, nb, a.ep.isRunning() != b.ep.isRunning()
	}
	waitFor(t, "the agents share the units", func() bool {
		na, nb, ok := split()
		return ok && na > 0 && nb > 0
	})
	waitFor(t, "the owners are known", func() bool {
		ok := true
		b.units.states(func(d models.DeviceStatus) {
			want := "agent-b"
			if d.State == models.DeviceRemote {
				want = "agent-a"
			}
			ok = ok && d.Owner == want
		})
		return ok
	})
	na, _, _ := split()
	ps := a.a.Health(time.Now(), time.Hour)
	if len(ps) != 1 || ps[0].Failing != na || !strings.Contains(ps[0].Reason, fmt.Sprintf("%d of %d devices failing", na, na)) {
		t.Errorf("health counts the remote devices: %+v", ps)
	}
	rec := httptest.NewRecorder()
	srv := &Server{current: func() *Agent { return a.a }, MinWindow: time.Hour}
	srv.healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if body := rec.Body.String(); !strings.Contains(body, "cluster: group plant, member agent-a") || !strings.Contains(body, fmt.Sprintf("%d devices", na)) {
		t.Errorf("/healthz:\n%s", body)
	}

	owner := a
	if b.ep.isRunning() {
		owner = b
	}
	owner.ep.push(1, 2) // one series: the first is Fresh, the second not
	waitFor(t, "the pushed metrics pass", func() bool {
		owner.seen.mu.Lock()
		defer owner.seen.mu.Unlock()
		return len(owner.seen.fresh) == 2
	})
	if f := owner.seen.fresh; !f[0] || f[1] {
		t.Errorf("fresh flags %v, want [true false]", f)
	}

	a.stop()
	waitFor(t, "agent-b runs everything", func() bool {
		_, nb, ok := split()
		return ok && nb == len(a.units.ids) && b.ep.isRunning()
	})
}
