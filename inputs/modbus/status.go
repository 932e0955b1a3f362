package modbus

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// status is what a device's poller publishes of it for DeviceStates, which runs on another goroutine
// (/healthz, the device page): a few atomic stores per poll, nothing computed until asked.
type status struct {
	polled  atomic.Int64 // Unix ns: the end of the last poll; 0: never
	good    atomic.Int64 // Unix ns: the end of the last poll that read something
	failed  atomic.Bool  // the last poll read nothing
	route   atomic.Int32 // the route of the last poll
	lastErr atomic.Pointer[pollError]

	watch atomic.Int64             // Unix ns: until then the detail is watched (its polls copy it)
	snap  atomic.Pointer[snapshot] // the last copy
}

// pollError is a device's last poll error and when it happened.
type pollError struct {
	err error
	at  time.Time
}

// polled records the end of a poll of d: whether it read anything, through which route.
func (d *device) polled(now time.Time) {
	s := &d.status
	n := now.UnixNano()
	s.polled.Store(n)
	s.route.Store(int32(d.cur))
	ok := d.answered > 0
	if ok {
		s.good.Store(n)
	}
	s.failed.Store(!ok)
}

// failed records a poll error of d (every one, also those the log holds back), and keeps it in
// its error log; key says which errors are the same (errorKey).
func (d *device) failed(err error, key string, now time.Time) {
	d.status.lastErr.Store(&pollError{err, now})
	d.health.Logged(now, key, err)
}

// state is d's state at now. started is when its input started polling; stale is how long it may
// go without an answered poll.
func (d *device) state(now, started time.Time, stale time.Duration) models.DeviceState {
	s := &d.status
	r := &d.routes[s.route.Load()]
	if until := d.openUntil(); !until.IsZero() && now.Before(until) {
		return models.DeviceBreakerOpen
	}
	switch r.breaker.State() {
	case "open":
		return models.DeviceBreakerOpen
	case "half-open":
		return models.DeviceHalfOpen
	}
	polled := s.polled.Load()
	if polled == 0 {
		if now.Sub(started) > stale {
			return models.DeviceFailing // its poller is stuck behind another device of its connection
		}
		return models.DeviceStarting
	}
	if s.failed.Load() {
		return models.DeviceFailing
	}
	if now.Sub(time.Unix(0, s.good.Load())) > stale {
		return models.DeviceStale
	}
	return models.DeviceOK
}

// running is what DeviceStates reads of a started input.
type running struct {
	devices []*device      // without [cluster]: every device, in configuration order
	pollers []*poller      // without [cluster]
	units   []unit         // cluster mode: every unit, polled here or not (units.go)
	places  []place        // cluster mode: where each device is, in configuration order
	byUnit  []remoteDevice // cluster mode: every device's place in the inventory, unit by unit
	env     *pollerEnv
	loop    *eventLoop      // cluster mode: the event loop of the loopable units kept; nil: none
	ctx     context.Context // the input's, parent of every poller's (cluster mode)
	started time.Time
	stale   time.Duration
}

// DeviceStates implements models.DeviceReporter: the devices in configuration order. Nothing is
// reported before Start (--test and --once poll devices of their own).
func (m *Modbus) DeviceStates(now time.Time, fn func(models.DeviceStatus)) {
	run := m.running.Load()
	if run == nil {
		return
	}
	if run.units == nil {
		for _, d := range run.devices {
			fn(d.report(now, run.stale))
		}
		return
	}
	var owner func(int) string
	if o := m.units.owner.Load(); o != nil {
		owner = *o
	}
	for _, pl := range run.places {
		u := &run.units[pl.unit]
		var s models.DeviceStatus
		if r := u.run.Load(); r != nil {
			s = r.p.devices[pl.k].report(now, run.stale)
		} else { // another agent polls it: described, without run-time state here
			r := &run.byUnit[u.first+pl.k]
			var spec deviceSpec
			r.inv.decode(int(r.i), &spec)
			s = models.DeviceStatus{Name: spec.name, Controller: spec.controller.url, State: models.DeviceRemote, Detail: r}
		}
		if owner != nil {
			s.Owner = owner(int(pl.unit))
		}
		fn(s)
	}
}

// report is d's status at now.
func (d *device) report(now time.Time, stale time.Duration) models.DeviceStatus {
	s := models.DeviceStatus{
		Name:       d.name,
		Controller: d.routes[d.status.route.Load()].name,
		Detail:     d,
		State:      d.state(now, time.Unix(0, d.poller.started.Load()), stale),
	}
	if n := d.status.good.Load(); n != 0 {
		s.LastGood = time.Unix(0, n)
	}
	if e := d.status.lastErr.Load(); e != nil {
		s.LastError, s.ErrorAt = e.err.Error(), e.at
	}
	return s
}

// remoteDevice is the device page's view of a device polled by another agent of the group
// (cluster mode): what its configuration says, as a device not polled yet shows it. It is the
// device's place in the inventory, decoded when the page reads it; every device has one in
// running.byUnit, so that listing them allocates nothing.
type remoteDevice struct {
	inv *inventory
	i   int32
}

// Figures implements models.DeviceDetailer.
func (r *remoteDevice) Figures(f *models.DeviceFigures) {
	var h resilience.Health
	h.Figures(f)
	var s deviceSpec
	r.inv.decode(int(r.i), &s)
	f.Backup, f.Tags = 0, r.inv.withDevice(int(r.i))
	f.RTT, f.Timeout = 0, resilience.NewTimeout(s.opts.timeout).Nominal()
}

// RTTs implements models.DeviceDetailer: none.
func (r *remoteDevice) RTTs(dst []time.Duration) []time.Duration { return dst }

// Detail implements models.DeviceDetailer: the plan Init made, no values, no errors.
func (r *remoteDevice) Detail(_ time.Time, x *models.DeviceDetail) {
	var s deviceSpec
	r.inv.decode(int(r.i), &s)
	x.ValuesAt, x.Values, x.Errors, x.Breaker = time.Time{}, x.Values[:0], x.Errors[:0], x.Breaker[:0]
	x.Plan = appendPlan(x.Plan[:0], s.plan, s.prof.fields)
}

// The device page (package web) reads a device through models.DeviceDetailer: its counters
// and rings live in d.health as it polls; its latest values and request plan are copied by its
// polls only while someone watches its detail (watch), for the next request.

// snapshot is what a watched device's poll copies for the detail view.
type snapshot struct {
	at     time.Time
	values []models.FieldValue
	plan   []models.PlannedRead
}

// Figures implements models.DeviceDetailer.
func (d *device) Figures(f *models.DeviceFigures) {
	d.health.Figures(f)
	ri := int(d.status.route.Load())
	r := &d.routes[ri]
	f.Backup, f.Tags = ri, d.tags[0]
	f.RTT, f.Timeout = r.timeout.EWMA(), r.timeout.Nominal()
}

// RTTs implements models.DeviceDetailer.
func (d *device) RTTs(dst []time.Duration) []time.Duration { return d.health.RTTs(dst) }

// Detail implements models.DeviceDetailer. It arms d's watch for models.DetailWatch: until then
// each poll copies its values and plan.
func (d *device) Detail(now time.Time, x *models.DeviceDetail) {
	d.status.watch.Store(now.Add(models.DetailWatch).UnixNano())
	x.ValuesAt, x.Values, x.Plan = time.Time{}, x.Values[:0], x.Plan[:0]
	if s := d.status.snap.Load(); s != nil {
		x.ValuesAt = s.at
		x.Values = append(x.Values, s.values...)
		x.Plan = append(x.Plan, s.plan...)
	} else {
		// Until a poll copies the reads in force: the plan Init made (read-only), which they
		// are unless a failing read was split since.
		x.Plan = appendPlan(x.Plan, d.plan, d.prof.fields)
	}
	d.health.Log(x, func(route int) string {
		if route < len(d.routes) {
			return d.routes[route].name
		}
		return "?"
	})
}

// watched reports whether someone looked at d's detail lately: its poll then copies its values.
func (d *device) watched(now time.Time) bool {
	w := d.status.watch.Load()
	return w != 0 && now.UnixNano() < w
}

// copySnapshot copies what d's poll read (d.out, before emit) and its reads for the detail view.
// A field not read keeps the value of the last snapshot, marked so.
func (d *device) copySnapshot(now time.Time) {
	fields := d.prof.fields
	prev := d.status.snap.Load()
	s := &snapshot{at: now, values: make([]models.FieldValue, len(fields)), plan: make([]models.PlannedRead, len(d.reqs))}
	for fi := range fields {
		f := &fields[fi]
		v := &s.values[fi]
		v.Measurement, v.Name = d.prof.groups[f.group].measurement, f.name
		if m := d.out[f.group]; m != nil && m.Fields[f.pos].Key != "" {
			v.Field, v.Quality, v.At = m.Fields[f.pos], "good", m.Time
			continue
		}
		v.Field.Key, v.Quality = "", "not read in the last poll"
		if prev != nil && prev.values[fi].Field.Key != "" {
			v.Field, v.At = prev.values[fi].Field, prev.values[fi].At
		}
		if d.stale != nil && d.stale.at[fi] != 0 && now.UnixNano()-d.stale.at[fi] <= int64(d.opts.staleAfter) {
			v.Quality = "stale: its last good value is reported (stale_after)"
		}
	}
	s.plan = appendPlan(s.plan[:0], d.reqs, fields)
	d.status.snap.Store(s)
}

// appendPlan appends reqs as the device page shows them.
func appendPlan(dst []models.PlannedRead, reqs []request, fields []fieldSpec) []models.PlannedRead {
	for i := range reqs {
		r := &reqs[i]
		p := models.PlannedRead{Read: rangeOf(r), Note: r.note, Fields: make([]string, 0, len(r.fields))}
		for _, ref := range r.fields {
			p.Fields = append(p.Fields, fields[ref.field].name)
		}
		dst = append(dst, p)
	}
	return dst
}
