package modbus

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// logSummary folds what many devices report into one log line per period, naming how many
// devices and the worst few: polls skipped on a busy machine, or a hundred dead devices still
// failing, are a line, not a line per device. The first report after a quiet spell is written
// after first (an interval: what comes together is written together), the next no sooner than
// every after the last line. Safe for concurrent use: pollers add, a timer writes.
type logSummary struct {
	log   *slog.Logger
	level slog.Level
	msg   string
	first time.Duration
	every time.Duration

	mu      sync.Mutex
	last    time.Time   // of the last line
	since   time.Time   // of the first report not written yet
	timer   *time.Timer // the line pending; nil: none
	devices map[string]summaryEntry
	reports int
	stopped bool
}

// summaryEntry is a device's worst report of a period.
type summaryEntry struct {
	weight int64 // the worst weigh most
	note   string
}

// summaryWorst is how many devices a line names.
const summaryWorst = 3

func newLogSummary(log *slog.Logger, level slog.Level, msg string, first, every time.Duration) *logSummary {
	return &logSummary{log: log, level: level, msg: msg, first: first, every: every, devices: map[string]summaryEntry{}}
}

// add reports something of device, weighing weight (its worst report of the period is named).
func (s *logSummary) add(device string, weight int64, note string) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.reports++
	if e, ok := s.devices[device]; !ok || weight > e.weight {
		s.devices[device] = summaryEntry{weight: weight, note: note}
	}
	if s.timer != nil {
		return
	}
	s.since = now
	at := now.Add(s.first)
	if next := s.last.Add(s.every); next.After(at) {
		at = next
	}
	s.timer = time.AfterFunc(at.Sub(now), s.flush)
}

// flush writes the line of what was reported since the last.
func (s *logSummary) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.write(time.Now())
}

// stop writes what is pending; later reports are dropped (the input stopped).
func (s *logSummary) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil && s.timer.Stop() {
		s.write(time.Now())
	}
	s.stopped = true
}

func (s *logSummary) write(now time.Time) {
	s.timer = nil
	if len(s.devices) == 0 {
		return
	}
	type named struct {
		device string
		summaryEntry
	}
	all := make([]named, 0, len(s.devices))
	for d, e := range s.devices {
		all = append(all, named{d, e})
	}
	slices.SortFunc(all, func(a, b named) int {
		return cmp.Or(cmp.Compare(b.weight, a.weight), strings.Compare(a.device, b.device))
	})
	var worst strings.Builder
	for i, e := range all[:min(len(all), summaryWorst)] {
		if i > 0 {
			worst.WriteString("; ")
		}
		worst.WriteString(e.note)
	}
	s.log.Log(context.Background(), s.level, s.msg, "devices", len(all), "reports", s.reports,
		"in", now.Sub(s.since).Round(time.Millisecond), "worst", worst.String())
	clear(s.devices)
	s.reports, s.last = 0, now
}

// pollerLogs are the summaries the pollers of an input share.
type pollerLogs struct {
	// overruns: polls skipped because the devices of a connection took longer than the
	// interval. At most one line an interval, and one a minute while they go on.
	overruns *logSummary
	// failing: devices failing as they did when their error was reported (poller.fail), a
	// minute or more later.
	failing *logSummary
	// answering: devices that answer again after an error was reported. A loaded machine that
	// timed out every device once must not write a line for each when they all answer.
	answering *logSummary
	// opened and closed: circuit breakers that opened (a device's failures reached the
	// threshold) and closed again (it answers). An overloaded machine that times out thousands
	// of devices at once opens as many breakers: a line for all, not one each.
	opened, closed *logSummary
}

const (
	overrunMsg   = "polls skipped: the devices of these connections take longer than the interval"
	failingMsg   = "devices still failing as reported"
	answeringMsg = "devices answer again"
	openedMsg    = "circuit breakers open: no polls until the cool-down ends, then one probes the device (polls go to the other controllers where a device has them)"
	closedMsg    = "circuit breakers closed: polling again"
)

func newPollerLogs(log *slog.Logger, interval time.Duration) *pollerLogs {
	return &pollerLogs{
		overruns:  newLogSummary(log, slog.LevelWarn, overrunMsg, interval, errorRepeat),
		failing:   newLogSummary(log, slog.LevelWarn, failingMsg, interval, errorRepeat),
		answering: newLogSummary(log, slog.LevelInfo, answeringMsg, interval, errorRepeat),
		opened:    newLogSummary(log, slog.LevelWarn, openedMsg, interval, errorRepeat),
		closed:    newLogSummary(log, slog.LevelInfo, closedMsg, interval, errorRepeat),
	}
}

func (l *pollerLogs) stop() {
	l.overruns.stop()
	l.failing.stop()
	l.answering.stop()
	l.opened.stop()
	l.closed.stop()
}

// answers reports that d answers again through its route r after its error was reported;
// held is how often the error came since it was last logged.
func (l *pollerLogs) answers(d *device, r *route, held int) {
	l.answering.add(d.name, int64(held), fmt.Sprintf("%s on %s", d.name, r.link.controller))
}

// overran reports that d's poll due at due ended at now, missed polls later.
func (l *pollerLogs) overran(d *device, due, now time.Time, missed int64) {
	late := now.Sub(due)
	l.overruns.add(d.name, int64(late), fmt.Sprintf("%s on %s: poll took %s, %d skipped",
		d.name, d.routes[d.cur].link.controller, late.Round(time.Millisecond), missed))
}
