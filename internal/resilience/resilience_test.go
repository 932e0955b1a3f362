package resilience

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTimeoutAdapts(t *testing.T) {
	to := NewTimeout(TimeoutConfig{Alpha: 0.5, Factor: 3, Min: 10 * time.Millisecond, Max: time.Second})
	if got := to.Current(); got != time.Second {
		t.Fatalf("before any answer: %v, want the maximum 1s", got)
	}
	to.Observe(20 * time.Millisecond)
	if got := to.Current(); got != 60*time.Millisecond {
		t.Fatalf("after 20ms: %v, want 3·20ms", got)
	}
	to.Observe(100 * time.Millisecond) // ewma = 20 + 0.5·80 = 60
	if got := to.EWMA(); got != 60*time.Millisecond {
		t.Fatalf("ewma %v, want 60ms", got)
	}
	if got := to.Current(); got != 180*time.Millisecond {
		t.Fatalf("slower device: %v, want 180ms", got)
	}
	to.Observe(time.Microsecond)
	to.Observe(time.Microsecond)
	to.Observe(time.Microsecond)
	to.Observe(time.Microsecond)
	to.Observe(time.Microsecond)
	to.Observe(time.Microsecond)
	if got := to.Current(); got != 10*time.Millisecond {
		t.Fatalf("fast device: %v, want the 10ms floor", got)
	}
	for range 20 {
		to.Observe(2 * time.Second)
	}
	if got := to.Current(); got != time.Second {
		t.Fatalf("very slow device: %v, want the 1s ceiling", got)
	}
}

func TestRetrySchedule(t *testing.T) {
	r := NewRetry(RetryConfig{Retries: 3, Initial: 100 * time.Millisecond, Multiplier: 3, Max: 5 * time.Second})
	var got []time.Duration
	for {
		d, ok := r.Next()
		if !ok {
			break
		}
		got = append(got, d)
	}
	want := []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	r.Reset()
	if d, ok := r.Next(); !ok || d != 0 {
		t.Fatalf("after Reset the first retry is at once, got %v %v", d, ok)
	}
}

// TestBreakerOpensAndProbes: three failures open the breaker for its cool-down, which refuses
// every call; after the cool-down it is half-open and a good probe closes it. The open breaker is
// examined with an hour's cool-down and the probe with 50 ms, so that neither depends on how fast
// the test runs.
func TestBreakerOpensAndProbes(t *testing.T) {
	fail := errors.New("timeout")
	open := func(b *Breaker, coolDown time.Duration) time.Time {
		t.Helper()
		before := time.Now()
		for range 3 {
			if err := b.Do(func() error { return fail }); err != fail {
				t.Fatalf("closed breaker must run f and return its error, got %v", err)
			}
		}
		after := time.Now()
		// open for the cool-down from the moment it opened (between before and after)
		until := b.OpenUntil()
		if until.Before(before.Add(coolDown)) || until.After(after.Add(coolDown)) {
			t.Fatalf("open until %s, want the %s cool-down after it opened (between %s and %s)", until.Format("15:04:05.000000"),
				coolDown, before.Format("15:04:05.000000"), after.Format("15:04:05.000000"))
		}
		return until
	}

	held := NewBreaker(BreakerConfig{Failures: 3, CoolDown: time.Hour})
	open(held, time.Hour)
	if held.State() != "open" {
		t.Fatalf("after 3 failures: %s, want open", held.State())
	}
	ran := false
	if err := held.Do(func() error { ran = true; return nil }); err != ErrOpen || ran {
		t.Fatalf("open breaker ran f (%v) or returned %v", ran, err)
	}

	var changes []string
	b := NewBreaker(BreakerConfig{Failures: 3, CoolDown: 50 * time.Millisecond, OnChange: func(from, to string) {
		changes = append(changes, from+">"+to)
	}})
	until := open(b, 50*time.Millisecond)
	time.Sleep(time.Until(until) + 5*time.Millisecond)
	if b.State() != "half-open" {
		t.Fatalf("after the cool-down: %s, want half-open", b.State())
	}
	if err := b.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if b.State() != "closed" || !b.OpenUntil().IsZero() {
		t.Fatalf("after a good probe: %s", b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>closed"}
	if len(changes) != 3 || changes[0] != want[0] || changes[1] != want[1] || changes[2] != want[2] {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func TestBreakerFailureRate(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 100, FailureRate: 0.5, MinRequests: 10, Window: time.Minute})
	fail := errors.New("x")
	for i := range 10 {
		var err error
		if i%2 == 1 {
			err = fail
		}
		b.Do(func() error { return err })
	}
	if b.State() != "open" {
		t.Fatalf("5 of 10 failed with a 50%% threshold: %s, want open", b.State())
	}
}

func TestBreakerIsSuccessful(t *testing.T) {
	exc := errors.New("exception 2")
	b := NewBreaker(BreakerConfig{Failures: 2, IsSuccessful: func(err error) bool { return err == nil || err == exc }})
	for range 5 {
		b.Do(func() error { return exc })
	}
	if b.State() != "closed" {
		t.Fatalf("answers with an exception mean the device is alive: %s", b.State())
	}
}

func TestBucket(t *testing.T) {
	if NewBucket(0, 1) != nil {
		t.Fatal("a rate of 0 means no limit (nil bucket)")
	}
	var none *Bucket
	if none.Take(time.Now()) != 0 {
		t.Fatal("a nil bucket never waits")
	}
	b := NewBucket(10, 2) // 10/s, burst 2
	now := time.Now()
	for range 2 {
		if b.Take(now) != 0 {
			t.Fatal("the burst must pass at once")
		}
	}
	d := b.Take(now)
	if d < 90*time.Millisecond || d > 110*time.Millisecond {
		t.Fatalf("third request waits %v, want ~100ms", d)
	}
	if b.Take(now.Add(d)) != 0 {
		t.Fatal("after the wait a token is there")
	}
}

func TestClassify(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.Dial("tcp", addr)
	if k := Classify(err); k != KindRefused {
		t.Fatalf("dial to a closed port: %v (%v), want refused", k, err)
	}
	if k := Classify(syscall.ECONNRESET); k != KindReset {
		t.Fatalf("reset: %v", k)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	c1.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err = c1.Read(make([]byte, 1))
	if k := Classify(err); k != KindTimeout {
		t.Fatalf("read deadline: %v (%v), want timeout", k, err)
	}
}

// TestBreakerProbes: half-open lets Probes requests through, closes when all succeeded, and
// opens again at the first that fails; OnChange may look at the breaker (it runs unlocked).
func TestBreakerProbes(t *testing.T) {
	var b *Breaker
	var seen []string
	b = NewBreaker(BreakerConfig{Failures: 1, CoolDown: 20 * time.Millisecond, Probes: 2,
		OnChange: func(from, to string) { seen = append(seen, b.State()) }})
	fail := errors.New("x")
	b.Do(func() error { return fail })
	time.Sleep(25 * time.Millisecond)
	if err := b.Allow(); err != nil {
		t.Fatalf("first probe refused: %v", err)
	}
	if err := b.Allow(); err != nil {
		t.Fatalf("second probe refused: %v", err)
	}
	if err := b.Allow(); err != ErrOpen {
		t.Fatalf("a third request while two probes are out: %v, want ErrOpen", err)
	}
	b.Done(nil)
	if b.State() != "half-open" {
		t.Fatalf("after one good probe of two: %s", b.State())
	}
	before := time.Now()
	b.Done(fail)
	// open for the 20 ms cool-down (judged only if the test got here within it)
	if st, until := b.State(), b.OpenUntil(); time.Since(before) < 20*time.Millisecond && (st != "open" || until.IsZero()) {
		t.Fatalf("after a failed probe: %s until %v", st, until)
	}
	time.Sleep(25 * time.Millisecond)
	b.Do(func() error { return nil })
	b.Do(func() error { return nil })
	if b.State() != "closed" {
		t.Fatalf("after two good probes: %s", b.State())
	}
	if got := strings.Join(seen, " "); got != "open half-open open half-open closed" {
		t.Errorf("states seen from OnChange: %s", got)
	}
}

// TestBreakerWindowRolls: failures older than the window no longer count toward the rate.
func TestBreakerWindowRolls(t *testing.T) {
	b := NewBreaker(BreakerConfig{Failures: 100, FailureRate: 0.5, MinRequests: 4, Window: 100 * time.Millisecond})
	fail := errors.New("x")
	b.Do(func() error { return fail })
	b.Do(func() error { return fail })
	time.Sleep(120 * time.Millisecond) // both failures leave the window
	for range 3 {
		b.Do(func() error { return nil })
	}
	b.Do(func() error { return fail }) // 1 of 4 in the window
	if b.State() != "closed" {
		t.Fatalf("1 failure of 4 in the window: %s", b.State())
	}
	b.Do(func() error { return fail })
	b.Do(func() error { return fail }) // 3 of 6
	if b.State() != "open" {
		t.Fatalf("3 failures of 6 in the window: %s", b.State())
	}
}

// BenchmarkBreaker: a request through a closed breaker, and what a breaker costs in memory
// (B/op of BenchmarkBreaker/new).
func BenchmarkBreaker(b *testing.B) {
	b.Run("do", func(b *testing.B) {
		br := NewBreaker(BreakerConfig{})
		f := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			br.Do(f)
		}
	})
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			breakerSink = NewBreaker(BreakerConfig{})
		}
	})
}

var breakerSink *Breaker
