package modbus

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Cluster mode ([cluster], docs/cluster.md): the input implements models.UnitRunner. A unit is a
// poller — one goroutine: the connection to one controller (a device, a gateway with every unit
// behind it, a serial line), or the connections of controllers that devices tie together with
// backup_controllers — and its identity is its controllers' addresses, sorted and joined by a
// space ("tcp://10.0.0.5:502", "tcp://10.0.0.7:502 tcp://10.0.0.8:502"): it does not depend on
// the other devices, so adding one moves no other poller to another shard.
//
// Every device is set up as without [cluster] (its phase is a hash of its identity, Phase, so
// that a device keeps its phase whichever agent polls it), but only the pollers
// kept run. RunUnits stops the pollers no longer kept — their goroutine ends and their
// connections are closed — before it returns, and starts the new ones at their usual phase.

// unitControl is the cluster mode's state of the input, under Modbus.mu.
type unitControl struct {
	keep  func(unit string) bool // nil: every unit (no [cluster])
	owner atomic.Pointer[func(unit string) string]
}

// pollerRun is a poller's own run in cluster mode, where pollers start and stop one by one.
type pollerRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// groups returns, for every device (in configuration order), the index of its poller, and the
// identity of each poller: devices whose controllers (backups included) overlap share one.
func (m *Modbus) groups() (group []int, ids []string) {
	parent := map[string]string{}
	var find func(string) string
	find = func(k string) string {
		p, ok := parent[k]
		if !ok || p == k {
			parent[k] = k
			return k
		}
		r := find(p)
		parent[k] = r
		return r
	}
	for _, spec := range m.devices {
		a := find(spec.controller.String())
		for _, b := range spec.backups {
			if r := find(b.String()); r != a {
				parent[r] = a
			}
		}
	}
	index := map[string]int{}
	var ctrls []map[string]bool
	group = make([]int, len(m.devices))
	for i, spec := range m.devices {
		root := find(spec.controller.String())
		g, ok := index[root]
		if !ok {
			g = len(ctrls)
			index[root] = g
			ctrls = append(ctrls, map[string]bool{})
		}
		group[i] = g
		ctrls[g][spec.controller.String()] = true
		for _, b := range spec.backups {
			ctrls[g][b.String()] = true
		}
	}
	ids = make([]string, len(ctrls))
	for g, cs := range ctrls {
		list := make([]string, 0, len(cs))
		for c := range cs {
			list = append(list, c)
		}
		slices.Sort(list)
		ids[g] = strings.Join(list, " ")
	}
	return group, ids
}

// Units implements models.UnitRunner: the identity of each poller, in configuration order.
func (m *Modbus) Units() []string {
	_, ids := m.groups()
	return ids
}

// RunUnits implements models.UnitRunner. Before Start it chooses the pollers Start starts.
func (m *Modbus) RunUnits(keep func(unit string) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.units.keep = keep
	run := m.running.Load()
	if run == nil {
		return
	}
	var stopping []*poller
	for _, p := range run.pollers {
		if p.own != nil && !keep(p.unit) {
			p.own.cancel()
			stopping = append(stopping, p)
		}
	}
	for _, p := range stopping { // the cancels above wake them all at once; now wait for each
		<-p.own.done
		p.own = nil
		p.active.Store(false)
	}
	started, now := 0, time.Now()
	for _, p := range run.pollers {
		if p.own == nil && keep(p.unit) {
			m.startPoller(run.ctx, p, now, true)
			started++
		}
	}
	if len(stopping) > 0 || started > 0 {
		m.Log.Info("cluster: pollers changed", "started", started, "stopped", len(stopping), "running", run.active())
	}
}

// SetUnitOwner implements models.UnitOwners: DeviceStates names the agent polling each device.
func (m *Modbus) SetUnitOwner(owner func(unit string) string) { m.units.owner.Store(&owner) }

// startPoller starts p alone (cluster mode): with a context of its own, whose end wakes it.
// takeover marks the first metrics of its devices Fresh. m.mu is held.
func (m *Modbus) startPoller(ctx context.Context, p *poller, start time.Time, takeover bool) {
	pctx, cancel := context.WithCancel(ctx)
	r := &pollerRun{cancel: cancel, done: make(chan struct{})}
	p.own = r
	for _, d := range p.devices {
		d.fresh = takeover
	}
	p.started.Store(start.UnixNano())
	p.active.Store(true)
	stop := context.AfterFunc(pctx, p.wake)
	m.wg.Go(func() {
		defer close(r.done)
		defer stop()
		p.run(pctx, start)
	})
}

// active counts the pollers running.
func (r *running) active() int {
	n := 0
	for _, p := range r.pollers {
		if p.active.Load() {
			n++
		}
	}
	return n
}
