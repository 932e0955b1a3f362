package opcua

import (
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// status is what the session's goroutine publishes of it for DeviceStates, which runs on another
// goroutine (/healthz, the device page).
type status struct {
	started time.Time
	good    atomic.Int64 // Unix ns: connected, or a read or publish answered; 0: never
	lastErr atomic.Pointer[sessionError]
}

type sessionError struct {
	err error
	at  time.Time
}

func (s *session) answered(now time.Time) { s.status.good.Store(now.UnixNano()) }

func (s *session) lost(err error, now time.Time) {
	s.status.lastErr.Store(&sessionError{err, now})
	s.health.Logged(now, err.Error(), err)
}

// Figures implements models.DeviceDetailer: the session's counters; its RTT is the last round
// trip (there is no adaptive timeout: the timeout is request_timeout).
func (s *session) Figures(f *models.DeviceFigures) {
	s.health.Figures(f)
	f.Backup, f.Tags = 0, nil
	f.RTT, f.Timeout = s.health.LastRTT(), s.o.RequestTimeout.D()
}

// RTTs implements models.DeviceDetailer.
func (s *session) RTTs(dst []time.Duration) []time.Duration { return s.health.RTTs(dst) }

// Detail implements models.DeviceDetailer: the session's errors and reconnect breaker. Node
// values and the read plan are not shown for OPC UA sessions yet.
func (s *session) Detail(_ time.Time, d *models.DeviceDetail) {
	d.Values, d.Plan = d.Values[:0], d.Plan[:0]
	s.health.Log(d, func(int) string { return s.o.Endpoint })
}

// DeviceStates implements models.DeviceReporter: the input's one session, named by the input's
// name, on its endpoint. Nothing is reported before Start (--test and --once).
func (o *OPCUA) DeviceStates(now time.Time, fn func(models.DeviceStatus)) {
	s := o.live.Load()
	if s == nil {
		return
	}
	st := models.DeviceStatus{Name: o.Name, Controller: o.Endpoint, Detail: s}
	if n := s.status.good.Load(); n != 0 {
		st.LastGood = time.Unix(0, n)
	}
	if e := s.status.lastErr.Load(); e != nil {
		st.LastError, st.ErrorAt = e.err.Error(), e.at
	}
	stale := models.StaleIntervals * o.tick()
	switch {
	case !s.breaker.OpenUntil().IsZero() && now.Before(s.breaker.OpenUntil()):
		st.State = models.DeviceBreakerOpen
	case s.state.Load() == stateConnected && !s.sub && now.Sub(st.LastGood) > stale:
		st.State = models.DeviceStale // read mode: connected, but no read answered lately
	case s.state.Load() == stateConnected:
		st.State = models.DeviceOK
	case st.LastError == "" && now.Sub(s.status.started) <= stale:
		st.State = models.DeviceStarting
	default:
		st.State = models.DeviceFailing
	}
	fn(st)
}
