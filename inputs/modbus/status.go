package modbus

import (
	"sync/atomic"
	"time"

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

// failed records a poll error of d (every one, also those the log holds back).
func (d *device) failed(err error, now time.Time) { d.status.lastErr.Store(&pollError{err, now}) }

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
	devices []*device
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
	for _, d := range run.devices {
		s := models.DeviceStatus{
			Name:       d.name,
			Controller: d.routes[d.status.route.Load()].link.controller.String(),
			State:      d.state(now, run.started, run.stale),
		}
		if n := d.status.good.Load(); n != 0 {
			s.LastGood = time.Unix(0, n)
		}
		if e := d.status.lastErr.Load(); e != nil {
			s.LastError, s.ErrorAt = e.err.Error(), e.at
		}
		fn(s)
	}
}
