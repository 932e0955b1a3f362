package models

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// ErrorFold folds repeats of the same error into one log line per period: an output that is
// down for an hour, or a device that does not answer, logs a line a period with how often the
// error came, e.g. "… (6 times in 1m6s)", and not one per flush or poll. Errors are the same
// when their keys are (the caller's, or ErrorKey). Not safe for concurrent use.
type ErrorFold struct {
	Period  time.Duration
	key     string    // of the error logged last; "" while none is
	at      time.Time // when it was logged
	repeats int       // how often it came since, not logged
}

// Add records an error with key at now. It reports whether to log it now and, when it came
// more than once since it was last logged, the note to add: "(N times in D)".
func (f *ErrorFold) Add(key string, now time.Time) (log bool, note string) {
	if key == f.key && now.Sub(f.at) < f.Period {
		f.repeats++
		return false, ""
	}
	if key == f.key && f.repeats > 0 {
		note = fmt.Sprintf("(%d times in %s)", f.repeats+1, now.Sub(f.at).Round(time.Second))
	}
	f.key, f.at, f.repeats = key, now, 0
	return true, note
}

// AddError is Add for err, compared by ErrorKey: when to log it, the message is err's text with
// the note.
func (f *ErrorFold) AddError(err error, now time.Time) (log bool, msg string) {
	log, note := f.Add(ErrorKey(err), now)
	if !log {
		return false, ""
	}
	msg = err.Error()
	if note != "" {
		msg += " " + note
	}
	return true, msg
}

// Held is how often the error logged last came since, not logged.
func (f *ErrorFold) Held() int { return f.repeats }

// Failing reports whether an error was logged and has not been cleared since.
func (f *ErrorFold) Failing() bool { return f.key != "" }

// Clear ends the error (it went away); it returns how often the error came, not logged, since it
// was last logged.
func (f *ErrorFold) Clear() (held int) {
	held = f.repeats
	f.key, f.repeats = "", 0
	return held
}

// Keyer is an error that says which errors are the same as it (for ErrorFold).
type Keyer interface{ ErrorKey() string }

// ErrorKey is the key by which ErrorFold compares err: the ErrorKey of the first error in its
// chain that has one (of each error it joins), else its text with every run of digits made
// "#" — the same failure with another count, size, port or time is the same error.
func ErrorKey(err error) string {
	if err == nil {
		return ""
	}
	if k, ok := err.(Keyer); ok {
		return k.ErrorKey()
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var keys []string
		for _, e := range j.Unwrap() {
			keys = append(keys, ErrorKey(e))
		}
		return strings.Join(keys, "; ")
	}
	var k Keyer
	if errors.As(err, &k) {
		return k.ErrorKey()
	}
	b := make([]rune, 0, 64)
	digits := false
	for _, r := range err.Error() {
		if unicode.IsDigit(r) {
			if !digits {
				b = append(b, '#')
			}
			digits = true
			continue
		}
		digits = false
		b = append(b, r)
	}
	return string(b)
}
