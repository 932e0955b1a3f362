package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestErrorFold: the same error is let through once a period, then with how often it came and
// over how long; another error is let through at once; Clear ends it.
func TestErrorFold(t *testing.T) {
	f := ErrorFold{Period: time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	type step struct {
		key  string
		at   time.Duration
		log  bool
		note string
	}
	for i, s := range []step{
		{"a", 0, true, ""},
		{"a", 10 * time.Second, false, ""},
		{"a", 20 * time.Second, false, ""},
		{"a", 66 * time.Second, true, "(3 times in 1m6s)"},
		{"b", 67 * time.Second, true, ""},
		{"a", 68 * time.Second, true, ""}, // another error in between: a new run
		{"a", 3 * time.Minute, true, ""},  // once a period, nothing held back: no note
	} {
		log, note := f.Add(s.key, t0.Add(s.at))
		if log != s.log || note != s.note {
			t.Errorf("step %d (%s at %v): log %v %q, want %v %q", i, s.key, s.at, log, note, s.log, s.note)
		}
	}
	f.Add("a", t0.Add(3*time.Minute+time.Second))
	if !f.Failing() || f.Clear() != 1 || f.Failing() {
		t.Errorf("Clear: want one held back, and no failure after")
	}
	if log, _ := f.Add("a", t0.Add(3*time.Minute+2*time.Second)); !log {
		t.Errorf("the error after Clear is not let through")
	}
}

type keyed struct{ k, msg string }

func (e keyed) Error() string    { return e.msg }
func (e keyed) ErrorKey() string { return e.k }

func TestErrorKey(t *testing.T) {
	same := [][2]error{
		{errors.New("wrote 3 of 50 metrics to 127.0.0.1:40123"), errors.New("wrote 17 of 9 metrics to 127.0.0.1:51234")},
		{keyed{"u: 413", "413 for 5 lines"}, fmt.Errorf("outputs.x: %w", keyed{"u: 413", "not tried; last: 413"})},
		{errors.Join(keyed{"u: 413", "x"}), keyed{"u: 413", "y"}},
	}
	for _, p := range same {
		if a, b := ErrorKey(p[0]), ErrorKey(p[1]); a != b {
			t.Errorf("%q and %q: keys %q and %q differ", p[0], p[1], a, b)
		}
	}
	differ := [][2]error{
		{errors.New("503 Service Unavailable"), errors.New("404 Not Found")},
		{errors.Join(keyed{"u1: 503", ""}, keyed{"u2: 503", ""}), keyed{"u1: 503", ""}},
	}
	for _, p := range differ {
		if a, b := ErrorKey(p[0]), ErrorKey(p[1]); a == b {
			t.Errorf("%q and %q: the same key %q", p[0], p[1], a)
		}
	}
}

// failing is an output whose every write fails with a text that changes each time (a count).
type failing struct{ n int }

func (*failing) SampleConfig() string          { return "" }
func (*failing) Connect(context.Context) error { return nil }
func (*failing) Close() error                  { return nil }
func (f *failing) Write(_ context.Context, ms []*Metric) error {
	f.n++
	return fmt.Errorf("write %d: %d metrics not sent: no space left on device", f.n, len(ms))
}

// TestOutputErrorsFolded (issue 18, item 2): an output failing at every flush with the same
// error (only a count differs) logs it once, counted in records of the log.
func TestOutputErrorsFolded(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	ro := NewRunningOutput(&failing{}, &PluginConfig{Name: "failing"},
		OutputSettings{BatchSize: 10, BufferLimit: 1000, FlushInterval: time.Second}, nil, nil, log)
	defer ro.Close()
	for i := range 100 {
		ro.AddBatch([]*Metric{New("m", nil, []Field{Int("v", int64(i))}, time.Unix(int64(i), 0))})
		ro.Flush(context.Background(), true)
	}
	if n := strings.Count(b.String(), "write failed"); n != 1 {
		t.Errorf("%d records for 100 failed flushes, want 1:\n%s", n, b.String())
	}
	if ro.Errors.Get() != 100 || ro.Buffer.Len() != 100 {
		t.Errorf("errors %d, buffered %d; want 100, 100", ro.Errors.Get(), ro.Buffer.Len())
	}
}
