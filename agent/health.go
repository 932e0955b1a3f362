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
	// Degraded: some devices of an input fail, but no more than health_failing_share of them;
	// /healthz lists it and still answers 200.
	Degraded bool
	// Devices are the first MaxListedDevices failing devices of an input with devices; Failing
	// counts them all.
	Devices []models.DeviceStatus
	Failing int
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
	for _, d := range p.Devices {
		b.WriteString("\n  " + deviceLine(d))
	}
	if more := p.Failing - len(p.Devices); more > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", more)
	}
	return b.String()
}

// MaxListedDevices is how many failing devices of one input /healthz lists.
const MaxListedDevices = 20

// deviceLine is a failing device as /healthz lists it:
//
//	boiler-3 (tcp://127.0.0.1:5020): breaker open; no answered poll since 2026-11-25T12:00:00Z; last error at 2026-11-25T12:00:07Z: connection refused by 127.0.0.1:5020
func deviceLine(d models.DeviceStatus) string {
	var b strings.Builder
	b.WriteString(d.Name)
	if d.Controller != "" {
		b.WriteString(" (" + d.Controller + ")")
	}
	b.WriteString(": " + d.State.String())
	if d.LastGood.IsZero() {
		b.WriteString("; no answered poll since the input started")
	} else {
		b.WriteString("; no answered poll since " + d.LastGood.UTC().Format(time.RFC3339))
	}
	if d.LastError != "" { // one line per device: a poll's errors are joined by line feeds
		b.WriteString("; last error at " + d.ErrorAt.UTC().Format(time.RFC3339) + ": " + strings.ReplaceAll(d.LastError, "\n", "; "))
	}
	return b.String()
}

// deviceHealth judges an input by its devices' state: failing when more than
// health_failing_share of them fail, degraded when fewer do. ok is false when none fails.
func (a *Agent) deviceHealth(id string, dr models.DeviceReporter, now time.Time) (p Problem, ok bool) {
	total := 0
	dr.DeviceStates(now, func(d models.DeviceStatus) {
		if d.State == models.DeviceRemote {
			return // cluster mode: another agent polls it, and judges it
		}
		total++
		if !d.State.Failing() {
			return
		}
		p.Failing++
		if len(p.Devices) < MaxListedDevices {
			p.Devices = append(p.Devices, d)
		}
	})
	if p.Failing == 0 {
		return p, false
	}
	share := a.cfg.Agent.HealthFailingShare
	p.Plugin = id
	p.Degraded = float64(p.Failing) <= share*float64(total)
	p.Reason = fmt.Sprintf("%d of %d devices failing", p.Failing, total)
	if p.Degraded {
		p.Reason += fmt.Sprintf(" (health_failing_share allows %g%%)", share*100)
	}
	return p, true
}

// Health returns what keeps the agent from being healthy at now; none means healthy. A plugin
// whose quiet time is judged uses a window of three of its intervals, at least minWindow.
//
// An output is failing while it cannot connect, while its last write failed, or when it holds
// metrics and has written nothing for the window (a write that hangs); its buffer is listed on
// its own line while it reports an error (a disk buffer that set a file aside). A polled input is failing
// while its last gather failed or when no gather finished for the window (a gather that hangs).
// A service input (it gathers on its own schedule) is failing when its start failed, or for the
// window after it reported an error. An input with devices (models.DeviceReporter) is judged by
// their state instead, once it has started: failing when more than health_failing_share of
// them fail, listed as degraded (not failing) when fewer do. Health is safe for concurrent use
// with Run.
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
		if o.buffer != nil {
			if err, at := o.buffer.Err(); err != nil {
				ps = append(ps, Problem{Plugin: id + " (buffer)", Reason: err.Error(), At: at})
			}
		}
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
	if p, ok := a.clusterProblem(now); ok {
		ps = append(ps, p)
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
			dr, devices := ri.Input.(models.DeviceReporter)
			switch {
			case failed:
				ps = append(ps, Problem{Plugin: id, Reason: "start: " + f.err.Error(), Since: a.created, Never: true, At: f.at})
			case devices:
				if p, ok := a.deviceHealth(id, dr, now); ok {
					ps = append(ps, p)
				}
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
