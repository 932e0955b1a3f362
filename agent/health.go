package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// DefaultMinWindow is the shortest time Health waits before it calls a plugin that has gone
// quiet (an output holding metrics it does not write, an input that does not finish a gather)
// failing. The window is three intervals of the plugin, but never less than this, so that a slow
// write or gather is not reported as a failure.
const DefaultMinWindow = 30 * time.Second

// Problem is one reason the agent is not healthy.
type Problem struct {
	Plugin string // `outputs.file`, `inputs.modbus "boiler-3"`
	Reason string // the last error, or what has not happened
	// Since is when the plugin last worked (a good write or gather), or when the agent started
	// if it has not worked since (Never). Zero when it is not known (inputs do not record their
	// last good gather once an error followed it).
	Since time.Time
	Never bool
	At    time.Time // when the last error happened (zero when there was no error)
}

// String is the problem as /healthz prints it:
//
//	outputs.file: write /dev/full: no space left on device; no success since the agent started at 2026-11-25T12:00:00Z; last error at 2026-11-25T12:00:07Z
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Plugin + ": " + p.Reason)
	switch {
	case p.Since.IsZero():
	case p.Never:
		b.WriteString("; no success since the agent started at " + p.Since.UTC().Format(time.RFC3339))
	default:
		b.WriteString("; no success since " + p.Since.UTC().Format(time.RFC3339))
	}
	if !p.At.IsZero() {
		b.WriteString("; last error at " + p.At.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Health returns what keeps the agent from being healthy at now; none means healthy. A plugin
// whose quiet time is judged uses a window of three of its intervals, at least minWindow.
//
// An output is failing while it cannot connect, while its last write failed, or when it holds
// metrics and has written nothing for the window (a write that hangs). A polled input is failing
// while its last gather failed or when no gather finished for the window (a gather that hangs).
// A service input (it gathers on its own schedule) is failing when its start failed, or for the
// window after it reported an error. Health is safe for concurrent use with Run.
func (a *Agent) Health(now time.Time, minWindow time.Duration) []Problem {
	var ps []Problem
	window := func(d time.Duration) time.Duration { return max(3*d, minWindow) }
	lastGood := func(t time.Time) (time.Time, bool) {
		if t.After(a.created) {
			return t, false
		}
		return a.created, true
	}
	for _, o := range a.outputs {
		id := "outputs." + o.Config.ID()
		since, never := lastGood(o.LastWrite())
		if f := o.connectErr.Load(); f != nil {
			ps = append(ps, Problem{Plugin: id, Reason: "connect: " + f.err.Error(), Since: since, Never: never, At: f.at})
			continue
		}
		if err, at := o.LastError(); err != nil {
			ps = append(ps, Problem{Plugin: id, Reason: err.Error(), Since: since, Never: never, At: at})
			continue
		}
		// BufferSize, not Buffer.Len: the buffer may be detached by a reload at any moment.
		if n := o.BufferSize.Get(); n > 0 && now.Sub(since) > window(o.Settings.FlushInterval) {
			ps = append(ps, Problem{Plugin: id, Since: since, Never: never,
				Reason: fmt.Sprintf("%d metrics buffered, nothing written for %s", n, now.Sub(since).Round(time.Second))})
		}
	}
	for _, ri := range a.inputs {
		id := "inputs." + ri.Config.ID()
		interval := ri.Config.Interval
		if interval <= 0 {
			interval = time.Duration(a.cfg.Agent.Interval)
		}
		err, at := ri.LastError()
		if _, service := ri.Input.(models.ServiceInput); service {
			a.mu.Lock()
			f, failed := a.startFailed[ri]
			a.mu.Unlock()
			switch {
			case failed:
				ps = append(ps, Problem{Plugin: id, Reason: "start: " + f.err.Error(), Since: a.created, Never: true, At: f.at})
			case err != nil && now.Sub(at) < window(interval):
				ps = append(ps, Problem{Plugin: id, Reason: err.Error(), At: at})
			}
			continue
		}
		if err != nil {
			ps = append(ps, Problem{Plugin: id, Reason: err.Error(), At: at})
			continue
		}
		if since, never := lastGood(at); now.Sub(since) > window(interval) {
			ps = append(ps, Problem{Plugin: id, Since: since, Never: never,
				Reason: "no gather finished for " + now.Sub(since).Round(time.Second).String()})
		}
	}
	return ps
}
