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
// light description of the rest (the inventory's record of each device; unit: where its
// devices are; place: where a device is; TestInventoryHeldLightly), not the state of the
// whole inventory. Units are named by their index in Units() between the agent and the input. A device keeps its phase, a hash of its identity
// (Phase), whichever agent polls it. RunUnits stops the pollers no longer kept — their
// goroutine ends and their connections are closed — before it returns, and starts the new
// ones at their usual phase.

// unitControl is the cluster mode's state of the input, under Modbus.mu.
type unitControl struct {
	keep  func(unit int) bool // nil: every unit (no [cluster]); unit is an index in Units
	owner atomic.Pointer[func(unit int) string]
}

// unit is a poller's description: where its devices are in the array of every unit's
// (running.byUnit), in configuration order. Its identity is Units()[i] for units[i]. In cluster
// mode it is kept for every unit of the inventory, so it is small; what a unit running here
// has is its unitRun.
type unit struct {
	first, n int32
	run      atomic.Pointer[unitRun] // cluster mode: set while it runs here (DeviceStates reads it)
}

// unitRun is a unit's run here in cluster mode, where pollers start and stop one by one: on the
// event loop (ld), or on a goroutine of its own (cancel ends it, done is closed when it has
// ended and closed its connections). It is changed under Modbus.mu.
type unitRun struct {
	p      *poller
	ld     *loopDev
	cancel context.CancelFunc
	done   chan struct{}
}

// place is where a device is: its unit (an index in the units) and its index among the unit's
// devices.
type place struct {
	unit, k int32
}

// buildUnits groups the devices into units, in the order of their first device, and places
// every device, in configuration order. A large inventory's units take three allocations, not
// one or two per unit: in cluster mode most of them are polled elsewhere and only described.
// byUnit holds every device's place in the inventory, unit by unit.
func (m *Modbus) buildUnits() (units []unit, places []place, byUnit []remoteDevice) {
	group, n := m.groups()
	units = make([]unit, n)
	for _, g := range group {
		units[g].n++
	}
	for g := 1; g < n; g++ {
		units[g].first = units[g-1].first + units[g-1].n
	}
	byUnit = make([]remoteDevice, len(group))
	places = make([]place, len(group))
	filled := make([]int32, n)
	for i, g := range group {
		k := filled[g]
		filled[g]++
		byUnit[units[g].first+k] = remoteDevice{inv: &m.inv, i: int32(i)}
		places[i] = place{unit: g, k: k}
	}
	return units, places, byUnit
}

// specsOf returns u's devices' specs, decoded for its poller.
func (m *Modbus) specsOf(byUnit []remoteDevice, u *unit) []*deviceSpec {
	out := make([]*deviceSpec, u.n)
	for k := range out {
		out[k] = m.inv.spec(int(byUnit[u.first+int32(k)].i))
	}
	return out
}

// groups returns, for every device (in configuration order), the index of its unit, and the
// number of units: devices whose controllers (backups included) overlap share one. They are
// made once (the devices do not change after Init).
func (m *Modbus) groups() (group []int32, units int) {
	m.grouped.Do(func() { m.group, m.nunits = m.makeGroups() })
	return m.group, m.nunits
}

func (m *Modbus) makeGroups() (group []int32, units int) {
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
	var spec deviceSpec
	for i := range m.inv.len() {
		m.inv.decode(i, &spec)
		a := find(spec.controller.url)
		for _, b := range spec.backups() {
			if r := find(b.url); r != a {
				parent[r] = a
			}
		}
	}
	index := map[string]int32{}
	group = make([]int32, m.inv.len())
	for i := range group {
		m.inv.decode(i, &spec)
		root := find(spec.controller.url)
		g, ok := index[root]
		if !ok {
			g = int32(len(index))
			index[root] = g
		}
		group[i] = g
	}
	return group, len(index)
}

// Units implements models.UnitRunner: the identity of each poller, in configuration order:
// its controllers' URLs, sorted and joined by a space. They are made when asked for (once, by
// the agent), not kept.
func (m *Modbus) Units() []string {
	group, n := m.groups()
	lists := make([][]string, n)
	var spec deviceSpec
	for i, g := range group {
		m.inv.decode(i, &spec)
		lists[g] = append(lists[g], spec.controller.url)
		for _, b := range spec.backups() {
			lists[g] = append(lists[g], b.url)
		}
	}
	ids := make([]string, n)
	for g, l := range lists {
		slices.Sort(l)
		ids[g] = strings.Join(slices.Compact(l), " ")
	}
	return ids
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
	var stopping []*unitRun
	for i := range run.units {
		if r := run.units[i].run.Load(); r != nil && !keep(i) {
			if r.ld != nil {
				run.loop.detach(r.ld)
			} else {
				r.cancel()
			}
			stopping = append(stopping, r)
			// Its state is garbage once it has stopped and DeviceStates' callers let it go.
			run.units[i].run.Store(nil)
		}
	}
	for _, r := range stopping { // the cancels above wake them all at once; now wait for each
		if r.ld != nil {
			r.ld.wait()
		} else {
			<-r.done
		}
	}
	started, now := 0, time.Now()
	for i := range run.units {
		if u := &run.units[i]; u.run.Load() == nil && keep(i) {
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
	p := run.env.newPoller(m, m.specsOf(run.byUnit, u))
	for _, d := range p.devices {
		d.fresh = takeover
	}
	p.started.Store(start.UnixNano())
	r := &unitRun{p: p}
	if run.loop != nil && loopable(p) {
		if r.ld = run.loop.attach(p, start); r.ld != nil {
			u.run.Store(r)
			return
		}
	}
	pctx, cancel := context.WithCancel(run.ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	u.run.Store(r)
	stop := context.AfterFunc(pctx, p.wake)
	m.wg.Go(func() {
		defer close(r.done)
		defer stop()
		p.run(pctx, start)
	})
}

// active counts the units running here (cluster mode). m.mu is held.
func (r *running) active() int {
	n := 0
	for i := range r.units {
		if r.units[i].run.Load() != nil {
			n++
		}
	}
	return n
}
