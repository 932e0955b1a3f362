package models

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type nopInput struct{}

func (nopInput) SampleConfig() string                      { return "" }
func (nopInput) Gather(context.Context, Accumulator) error { return nil }

// TestAddErrorJoined: the errors errors.Join joined (a gather's errors of several devices) are
// counted and logged one by one; an error wrapping two others (fmt.Errorf with two %w) is one.
func TestAddErrorJoined(t *testing.T) {
	var log bytes.Buffer
	ri := NewRunningInput(nopInput{}, &PluginConfig{Name: "joined_test"}, nil, 0, slog.New(slog.NewTextHandler(&log, nil)))
	defer ri.Close()
	acc := ri.NewAccumulator(func(*Metric) {})
	a, b, c := errors.New(`device "a": refused`), errors.New(`device "b": refused`), errors.New(`device "c": timeout`)
	acc.AddError(errors.Join(a, errors.Join(b, c)))
	if n := ri.Errors.Get(); n != 3 {
		t.Errorf("%d errors counted, want 3", n)
	}
	records := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(records) != 3 || strings.Contains(log.String(), `\n`) {
		t.Fatalf("want 3 records of one line each:\n%s", log.String())
	}
	for i, want := range []string{`device \"a\"`, `device \"b\"`, `device \"c\"`} {
		if !strings.Contains(records[i], want) {
			t.Errorf("record %d: %s; want %s", i, records[i], want)
		}
	}
	log.Reset()
	acc.AddError(fmt.Errorf("%w: %w", a, b))
	if n := ri.Errors.Get(); n != 4 || strings.Count(log.String(), "level=ERROR") != 1 {
		t.Errorf("an error wrapping two: %d errors counted (want 4), logged as\n%s", n, log.String())
	}
}
