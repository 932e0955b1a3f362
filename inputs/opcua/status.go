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
}

// DeviceStates implements models.DeviceReporter: the input's one session, named by the input's
// name, on its endpoint. Nothing is reported before Start (--test and --once).
func (o *OPCUA) DeviceStates(now time.Time, fn func(models.DeviceStatus)) {
	s := o.live.Load()
	if s == nil {
		return
	}
	st := models.DeviceStatus{Name: o.Name, Controller: o.Endpoint}
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
