package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tagpipe/tagpipe/cluster"
	"github.com/tagpipe/tagpipe/models"
)

// Cluster mode ([cluster]): the agents of a group load the same configuration and each polls
// the units of the shards the group assigns it (docs/cluster.md).
//
//   - An input that implements models.UnitRunner (inputs.modbus) runs only the units of those
//     shards; a unit is one connection, and its shard is cluster.Shard(its identity).
//   - Any other service input (each [[inputs.opcua]]) is one unit, named by its plugin id and
//     its connection (models.Connector), started and stopped whole.
//   - Polled inputs (inputs.internal) run on every agent: they report the agent itself.
//
// The member (cluster.Member) calls RunShards on every change; units of shards taken away stop,
// and close their connections, before it returns.

// clusterRun is the agent's side of cluster mode.
type clusterRun struct {
	a      *Agent
	shards int
	member *cluster.Member
	units  []*unitInput
	wholes []*wholeInput

	mu      sync.Mutex // serializes RunShards (the member calls it one at a time already)
	polled  []bool
	devices int // devices of the units polled here, after the last RunShards
}

// unitInput is an input whose units run apart.
type unitInput struct {
	ri    *models.RunningInput
	ur    models.UnitRunner
	shard []int32 // of each unit, by its index in Units
}

// wholeInput is a service input that is one unit.
type wholeInput struct {
	ri      *models.RunningInput
	si      models.ServiceInput
	unit    string
	shard   int
	ctx     context.Context
	acc     *freshAccumulator
	started bool
}

// wholeUnit is the unit identity of a service input that is one unit: "inputs.opcua "line-3"
// opc.tcp://10.0.0.5:4840".
func wholeUnit(ri *models.RunningInput) string {
	id := "inputs." + ri.Config.ID()
	if c, ok := ri.Input.(models.Connector); ok {
		id += " " + c.Connection()
	}
	return id
}

func newClusterRun(a *Agent) (*clusterRun, error) {
	cfg := a.cfg.Cluster
	c := &clusterRun{a: a, shards: cfg.Shards, polled: make([]bool, cfg.Shards)}
	for _, ri := range a.inputs {
		switch in := ri.Input.(type) {
		case models.UnitRunner:
			ids := in.Units()
			u := &unitInput{ri: ri, ur: in, shard: make([]int32, len(ids))}
			for i, id := range ids {
				u.shard[i] = int32(cluster.Shard(id, cfg.Shards))
			}
			c.units = append(c.units, u)
		case models.ServiceInput:
			id := wholeUnit(ri)
			c.wholes = append(c.wholes, &wholeInput{ri: ri, si: in, unit: id, shard: cluster.Shard(id, cfg.Shards)})
		}
	}
	m, err := cluster.New(cfg, c, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.member = m
	for _, u := range c.units {
		if o, ok := u.ur.(models.UnitOwners); ok {
			shard := u.shard
			o.SetUnitOwner(func(unit int) string { return m.Owner(int(shard[unit])) })
		}
	}
	return c, nil
}

// whole returns ri's entry when the group starts it rather than Run (nil without [cluster]).
func (c *clusterRun) whole(ri *models.RunningInput) *wholeInput {
	if c == nil {
		return nil
	}
	for _, w := range c.wholes {
		if w.ri == ri {
			return w
		}
	}
	return nil
}

// prepare makes the unit inputs start with nothing (Run starts them next); the group decides.
func (c *clusterRun) prepare() {
	for _, u := range c.units {
		u.ur.RunUnits(func(int) bool { return false })
	}
}

// RunShards implements cluster.Runner.
func (c *clusterRun) RunShards(s []bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.polled = s
	for _, u := range c.units {
		shard := u.shard
		u.ur.RunUnits(func(unit int) bool { return s[shard[unit]] })
	}
	for _, w := range c.wholes {
		want := s[w.shard]
		switch {
		case want && !w.started:
			w.acc.restart()
			if err := w.si.Start(w.ctx, w.acc); err != nil {
				w.ri.Log.Error("start failed; the input is not running", "error", err, "unit", w.unit)
				c.a.failedStart(w.ri, err)
				continue
			}
			c.a.startedOK(w.ri)
			w.started = true
		case !want && w.started:
			w.si.Stop()
			w.started = false
		}
	}
	c.devices = c.countDevices()
	c.member.SetDevices(c.devices)
}

// countDevices counts the devices polled here: those of the unit inputs that are not remote,
// and one per started whole input without devices of its own.
func (c *clusterRun) countDevices() int {
	n := 0
	now := time.Now()
	for _, u := range c.units {
		if dr, ok := u.ri.Input.(models.DeviceReporter); ok {
			dr.DeviceStates(now, func(d models.DeviceStatus) {
				if d.State != models.DeviceRemote {
					n++
				}
			})
		}
	}
	for _, w := range c.wholes {
		if w.started {
			n++
		}
	}
	return n
}

// stopWholes stops the whole inputs still started (at shutdown, after the member left).
func (c *clusterRun) stopWholes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.wholes {
		if w.started {
			w.si.Stop()
			w.started = false
		}
	}
}

// freshAccumulator marks the first metric of each series since the input's last start as
// Fresh: the input was started by a takeover, and the processors must not judge its first
// readings by what they kept of an earlier watch.
type freshAccumulator struct {
	models.Accumulator
	mu   sync.Mutex
	seen map[uint64]struct{}
}

func (f *freshAccumulator) restart() {
	f.mu.Lock()
	f.seen = map[uint64]struct{}{}
	f.mu.Unlock()
}

func (f *freshAccumulator) AddMetric(m *models.Metric) {
	h := m.SeriesHash()
	f.mu.Lock()
	if _, ok := f.seen[h]; !ok {
		f.seen[h] = struct{}{}
		m.Fresh = true
	}
	f.mu.Unlock()
	f.Accumulator.AddMetric(m)
}

// clusterLine is the line /healthz prints about the group, "" without [cluster].
func (a *Agent) clusterLine() string {
	if a.cluster == nil {
		return ""
	}
	st := a.cluster.member.Status()
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: group %s, member %s", st.Group, st.Member)
	if st.MemberID != "" {
		fmt.Fprintf(&b, " (id %s)", st.MemberID)
	}
	fmt.Fprintf(&b, ", generation %d, %d of %d shards polled here (%d assigned), %d devices, %d members",
		st.Generation, st.Polled, st.Shards, st.Assigned, st.Devices, st.Members)
	if st.LastRebalance.IsZero() {
		b.WriteString(", no rebalance yet")
	} else {
		b.WriteString(", last rebalance at " + st.LastRebalance.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// clusterProblem is the group's entry in Health: degraded while the coordinator is lost (or was
// never reached), with what the agent polls meanwhile.
func (a *Agent) clusterProblem(now time.Time) (Problem, bool) {
	if a.cluster == nil {
		return Problem{}, false
	}
	st := a.cluster.member.Status()
	p := Problem{Plugin: "cluster", Degraded: true}
	switch {
	case !st.LostSince.IsZero() && st.Keep:
		p.Reason = fmt.Sprintf("group coordinator lost since %s; on_coordinator_loss = keep: polling the %d shards last assigned",
			st.LostSince.UTC().Format(time.RFC3339), st.Polled)
	case !st.LostSince.IsZero():
		p.Reason = fmt.Sprintf("group coordinator lost since %s; on_coordinator_loss = stop: polling nothing", st.LostSince.UTC().Format(time.RFC3339))
	case st.MemberID == "" && now.Sub(a.created) > a.cfg.Cluster.SessionTimeout.D():
		p.Reason = "not in the group yet; polling nothing"
	default:
		return p, false
	}
	if st.Err != "" {
		p.Reason += "; last error: " + st.Err
	}
	return p, true
}
