package models

import (
	"sync"
	"time"
)

// logThrottle lets the same message through at most once per period, so that a device that is
// dead for an hour, or an output that is down, logs a line a minute and not one per poll. It
// remembers at most a few hundred messages. Safe for concurrent use.
type logThrottle struct {
	period time.Duration
	mu     sync.Mutex
	last   map[string]time.Time
}

// allow reports whether msg may be logged now, and how many times it was held back since.
func (t *logThrottle) allow(msg string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil || len(t.last) > 512 {
		t.last = make(map[string]time.Time)
	}
	if at, ok := t.last[msg]; ok && now.Sub(at) < t.period {
		return false
	}
	t.last[msg] = now
	return true
}
