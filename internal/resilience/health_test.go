package resilience

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/tagpipe/tagpipe/models"
)

func TestRTTCode(t *testing.T) {
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 4095 * time.Microsecond,
		4097 * time.Microsecond, 12345 * time.Microsecond, 2 * time.Second, 100 * time.Second} {
		got := rttOf(rttCode(d))
		if diff := d - got; diff < 0 || float64(diff) > float64(d)/2048+float64(time.Microsecond) {
			t.Errorf("%v kept as %v", d, got)
		}
	}
	if c := rttCode(time.Hour); c == rttNone || rttOf(c) < 134*time.Second {
		t.Errorf("an hour kept as %v (code %#x): want the largest round trip", rttOf(c), c)
	}
}

func TestHealthRings(t *testing.T) {
	var h Health
	if got := h.RTTs(nil); len(got) != 0 {
		t.Fatalf("rtts before any request: %v", got)
	}
	for i := range 70 {
		h.Answered(time.Duration(i+1) * time.Millisecond)
	}
	h.Failed(KindTimeout)
	h.Failed(KindException) // the device answered: no gap
	got := h.RTTs(nil)
	near := func(a, b time.Duration) bool { return a <= b && float64(b-a) <= float64(b)/2048 }
	if len(got) != models.RTTRing || !near(got[0], 12*time.Millisecond) || !near(got[58], 70*time.Millisecond) || got[59] != -1 {
		t.Fatalf("rtts %v: want 12ms..70ms, then -1", got)
	}

	var d models.DeviceDetail
	h.Log(&d, nil)
	if len(d.Errors) != 0 || h.log.Load() != nil {
		t.Fatalf("an error log without errors: %v", d.Errors)
	}
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		h.Logged(t0.Add(time.Duration(i)*time.Second), "a", fmt.Errorf("refused, try %d", i))
	}
	for i := range 25 {
		h.Logged(t0.Add(time.Minute+time.Duration(i)*time.Second), fmt.Sprint("k", i), fmt.Errorf("error %d", i))
	}
	h.BreakerChanged(t0, 0, "open")
	h.BreakerChanged(t0.Add(time.Second), 1, "half-open")
	h.BreakerChanged(t0.Add(2*time.Second), 1, "closed")
	h.Log(&d, func(r int) string { return fmt.Sprint("route", r) })
	if len(d.Errors) != models.ErrorLog || d.Errors[0].Text != "error 24" || d.Errors[19].Text != "error 5" {
		t.Fatalf("errors %+v", d.Errors)
	}
	want := []models.BreakerChange{{At: t0.Add(2 * time.Second), Controller: "route1", To: "closed"}, {At: t0.Add(time.Second), Controller: "route1", To: "half-open"}, {At: t0, Controller: "route0", To: "open"}}
	if fmt.Sprint(d.Breaker) != fmt.Sprint(want) {
		t.Fatalf("breaker %v, want %v", d.Breaker, want)
	}

	var h2 Health
	for i := range 3 {
		h2.Logged(t0.Add(time.Duration(i)*time.Second), "same", fmt.Errorf("refused, try %d", i))
	}
	h2.Log(&d, nil)
	if len(d.Errors) != 1 || d.Errors[0].Repeats != 3 || d.Errors[0].Text != "refused, try 2" || !d.Errors[0].At.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("repeats folded: %+v", d.Errors)
	}
}

// TestHealthSize measures what a device's health costs: its counters and round trips always,
// its error and breaker log from its first error. The page's budget is 1 KiB a device.
func TestHealthSize(t *testing.T) {
	fixed := unsafe.Sizeof(Health{})
	logged := unsafe.Sizeof(healthLog{})
	t.Logf("Health %d bytes, its log %d bytes: %d in all", fixed, logged, fixed+logged)
	if fixed+logged > 1024 {
		t.Errorf("a device's health takes %d bytes, more than 1 KiB", fixed+logged)
	}

	// Measured on the heap: 10,000 devices with full rings (the errors themselves are the
	// device's, shared with its last error: one here).
	const n = 10000
	err := errors.New("connection refused")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hs := make([]Health, n)
	for i := range hs {
		h := &hs[i]
		for j := range models.RTTRing {
			h.Answered(time.Duration(j) * time.Millisecond)
		}
		for j := range models.ErrorLog {
			h.Logged(time.Now(), fmt.Sprint(j%2), err)
		}
		for range models.BreakerLog {
			h.BreakerChanged(time.Now(), 0, "open")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("on the heap: %.0f bytes a device", per)
	if per > 1024 {
		t.Errorf("%.0f bytes a device on the heap, more than 1 KiB", per)
	}
	runtime.KeepAlive(hs)
}

func BenchmarkHealthAnswered(b *testing.B) {
	var h Health
	b.ReportAllocs()
	for b.Loop() {
		h.Answered(1500 * time.Microsecond)
	}
}
