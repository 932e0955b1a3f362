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
// Only the units kept here have run-time state: a unit's poller — its devices' resilience
// state, request frames and metric scratch, its links — is built when the unit starts (Start,
// RunUnits) and dropped when it stops, so that an agent of a group holds what it polls and a
// light description of the rest (unit: identity and device specs; place: where a device is),
// not the state of the whole inventory. A device keeps its phase, a hash of its identity
// (Phase), whichever agent polls it. RunUnits stops the pollers no longer kept — their
// goroutine ends and their connections are closed — before it returns, and starts the new
// ones at their usual phase.

// unitControl is the cluster mode's state of the input, under Modbus.mu.
type unitControl struct {
	keep  func(unit int) bool // nil: every unit (no [cluster]); unit is an index in Units
	owner atomic.Pointer[func(unit int) string]
}

// unit is a poller's description: its devices' specs, in configuration order. Its identity is
// Units()[i] for units[i]. In cluster mode it is kept for every unit of the inventory; its
// poller exists only while it runs here.
type unit struct {
	specs []*deviceSpec // a part of one array that all units share

	own    *pollerRun             // cluster mode: its run here, under Modbus.mu; nil: not running
	poller atomic.Pointer[poller] // cluster mode: set while it runs here (DeviceStates)
}

// place is where a device is: its unit (an index in the units) and its index among the unit's
// devices.
type place struct {
	unit, k int32
}

// pollerRun is a poller's own run in cluster mode, where pollers start and stop one by one:
// stop ends it, and done is closed when it has ended and closed its connections.
type pollerRun struct {
	stop func()
	done <-chan struct{}
}

// buildUnits groups the devices into units, in the order of their first device, and places
// every device, in configuration order. A large inventory's units take three allocations, not
// one or two per unit: in cluster mode most of them are polled elsewhere and only described.
func (m *Modbus) buildUnits() ([]unit, []place) {
	group, ids := m.groups()
	units := make([]unit, len(ids))
	start := make([]int32, len(ids)+1) // unit g's devices are all[start[g]:start[g+1]]
	for _, g := range group {
		start[g+1]++
	}
	for g := range ids {
		start[g+1] += start[g]
	}
	all := make([]*deviceSpec, len(m.devices))
	places := make([]place, len(m.devices))
	for i, spec := range m.devices {
		g := group[i]
		u := &units[g]
		k := int32(len(u.specs))
		u.specs = all[start[g] : start[g]+k+1 : start[g+1]]
		u.specs[k] = spec
		places[i] = place{unit: g, k: k}
	}
	return units, places
}

// groups returns, for every device (in configuration order), the index of its poller, and the
// identity of each poller: devices whose controllers (backups included) overlap share one.
// They are made once (the devices do not change after Init), so that Units' identities and
// the units' are the same strings.
func (m *Modbus) groups() (group []int32, ids []string) {
	m.grouped.Do(func() { m.group, m.unitIDs = m.makeGroups() })
	return m.group, m.unitIDs
}

func (m *Modbus) makeGroups() (group []int32, ids []string) {
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
	index := map[string]int32{}
	var ctrls []map[string]bool
	group = make([]int32, len(m.devices))
	for i, spec := range m.devices {
		root := find(spec.controller.String())
		g, ok := index[root]
		if !ok {
			g = int32(len(ctrls))
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
	return slices.Clone(ids)
}

// RunUnits implements models.UnitRunner. Before Start it chooses the pollers Start starts.
func (m *Modbus) RunUnits(keep func(unit int) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.units.keep = keep
	run := m.running.Load()
	if run == nil {
		return
	}
	var stopping []*unit
	for i := range run.units {
		if u := &run.units[i]; u.own != nil && !keep(i) {
			u.own.stop()
			stopping = append(stopping, u)
		}
	}
	for _, u := range stopping { // the cancels above wake them all at once; now wait for each
		<-u.own.done
		u.own = nil
		u.poller.Store(nil) // its state is garbage once DeviceStates' callers let it go
	}
	started, now := 0, time.Now()
	for i := range run.units {
		if u := &run.units[i]; u.own == nil && keep(i) {
			m.startPoller(run, u, now, true)
			started++
		}
	}
	if len(stopping) > 0 || started > 0 {
		m.Log.Info("cluster: pollers changed", "started", started, "stopped", len(stopping), "running", run.active())
	}
}

// SetUnitOwner implements models.UnitOwners: DeviceStates names the agent polling each device.
func (m *Modbus) SetUnitOwner(owner func(unit int) string) { m.units.owner.Store(&owner) }

// startPoller builds u's poller and starts it alone (cluster mode): on the event loop when it
// can run there (loop.go), else on a goroutine with a context of its own, whose end wakes it.
// takeover marks the first metrics of its devices Fresh. m.mu is held.
func (m *Modbus) startPoller(run *running, u *unit, start time.Time, takeover bool) {
	p := run.env.newPoller(m, u)
	for _, d := range p.devices {
		d.fresh = takeover
	}
	p.started.Store(start.UnixNano())
	u.poller.Store(p)
	if run.loop != nil && loopable(p) {
		if stop, done, ok := run.loop.attach(p, start); ok {
			u.own = &pollerRun{stop: stop, done: done}
			return
		}
	}
	pctx, cancel := context.WithCancel(run.ctx)
	done := make(chan struct{})
	u.own = &pollerRun{stop: cancel, done: done}
	stop := context.AfterFunc(pctx, p.wake)
	m.wg.Go(func() {
		defer close(done)
		defer stop()
		p.run(pctx, start)
	})
}

// active counts the units running here (cluster mode). m.mu is held.
func (r *running) active() int {
	n := 0
	for i := range r.units {
		if r.units[i].own != nil {
			n++
		}
	}
	return n
}
