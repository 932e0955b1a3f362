// Package resilience holds what every device input needs to survive devices that are slow,
// flaky or dead: an adaptive timeout (ours: an EWMA of round-trip times), retry backoff
// (cenkalti/backoff), a circuit breaker (ours, see Breaker for why), a token bucket
// (golang.org/x/time/rate) and the health counters reported per device. Modbus and OPC UA both use it; there is no second
// copy.
//
// None of these types is safe for concurrent use unless it says so: each device owns its own,
// touched only by its goroutine.
package resilience

import (
	"cmp"
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/time/rate"
)

// TimeoutConfig configures an adaptive timeout.
type TimeoutConfig struct {
	Alpha   float64       // EWMA weight of the newest round trip (0 < Alpha ≤ 1)
	Factor  float64       // timeout = EWMA·Factor + Jitter, clamped to [Min, Max]
	Min     time.Duration // floor: no lost frame is given up on sooner
	Max     time.Duration // ceiling, and the timeout before the first answer
	Jitter  time.Duration // added at random (0..Jitter) so that retries of many devices spread
	Initial time.Duration // the timeout before any round trip was seen (default Max)
}

// DefaultTimeout is what a device gets when its config says nothing.
var DefaultTimeout = TimeoutConfig{Alpha: 0.2, Factor: 4, Min: 50 * time.Millisecond, Max: 2 * time.Second, Jitter: 10 * time.Millisecond}

// Timeout is an adaptive timeout from an exponentially weighted moving average of round-trip
// times: a device that slows down gets a longer timeout, a fast one does not wait seconds for a
// lost frame. Written here because it is a few lines of arithmetic on the poll path.
//
// Observe and Current are for the device's goroutine; EWMA and Nominal may be called from any
// goroutine (the device page reads them while the device polls).
type Timeout struct {
	cfg  TimeoutConfig
	ewma atomic.Uint64 // float64 bits, nanoseconds; 0 until the first observation
}

// NewTimeout returns a timeout with cfg's zero fields taken from DefaultTimeout.
func NewTimeout(cfg TimeoutConfig) *Timeout {
	d := DefaultTimeout
	if cfg.Alpha <= 0 || cfg.Alpha > 1 {
		cfg.Alpha = d.Alpha
	}
	if cfg.Factor <= 0 {
		cfg.Factor = d.Factor
	}
	if cfg.Min <= 0 {
		cfg.Min = d.Min
	}
	if cfg.Max <= 0 {
		cfg.Max = d.Max
	}
	cfg.Max = max(cfg.Max, cfg.Min)
	if cfg.Initial <= 0 {
		cfg.Initial = cfg.Max
	}
	return &Timeout{cfg: cfg}
}

func (t *Timeout) avg() float64 { return math.Float64frombits(t.ewma.Load()) }

// Observe adds a round trip of a request that was answered.
func (t *Timeout) Observe(rtt time.Duration) {
	e := t.avg()
	if e == 0 {
		e = float64(rtt)
	} else {
		e += t.cfg.Alpha * (float64(rtt) - e)
	}
	t.ewma.Store(math.Float64bits(e))
}

// Current returns the timeout to use for the next request.
func (t *Timeout) Current() time.Duration {
	e := t.avg()
	if e == 0 {
		return min(t.cfg.Initial, t.cfg.Max)
	}
	d := time.Duration(e * t.cfg.Factor)
	if t.cfg.Jitter > 0 {
		d += rand.N(t.cfg.Jitter)
	}
	return min(max(d, t.cfg.Min), t.cfg.Max)
}

// Nominal returns the timeout without its jitter: what a health metric reports.
func (t *Timeout) Nominal() time.Duration {
	e := t.avg()
	if e == 0 {
		return min(t.cfg.Initial, t.cfg.Max)
	}
	return min(max(time.Duration(e*t.cfg.Factor), t.cfg.Min), t.cfg.Max)
}

// EWMA returns the average round trip (0 before the first).
func (t *Timeout) EWMA() time.Duration { return time.Duration(t.avg()) }

// RetryConfig configures retries of one failed request.
type RetryConfig struct {
	Retries    int           // retries after the first try (0: none)
	Initial    time.Duration // wait before the second retry (the first is at once)
	Multiplier float64
	Max        time.Duration
	Jitter     float64 // randomization factor, 0..1
}

// DefaultRetry gives 100 ms → 300 ms → 900 ms after an immediate first retry, each ±20%.
var DefaultRetry = RetryConfig{Retries: 3, Initial: 100 * time.Millisecond, Multiplier: 3, Max: 900 * time.Millisecond, Jitter: 0.2}

// Retry yields the waits between retries: 0 for the first, then exponential with jitter.
type Retry struct {
	Retries int
	b       backoff.ExponentialBackOff
	n       int
}

// NewRetry returns a retry schedule.
func NewRetry(cfg RetryConfig) *Retry {
	r := &Retry{Retries: cfg.Retries}
	r.b = backoff.ExponentialBackOff{
		InitialInterval:     cfg.Initial,
		RandomizationFactor: cfg.Jitter,
		Multiplier:          cfg.Multiplier,
		MaxInterval:         cfg.Max,
	}
	r.Reset()
	return r
}

// Reset starts a new request's schedule.
func (r *Retry) Reset() {
	r.n = 0
	r.b.Reset()
}

// Next returns the wait before the next retry and false when no retry is left.
func (r *Retry) Next() (time.Duration, bool) {
	if r.n >= r.Retries {
		return 0, false
	}
	r.n++
	if r.n == 1 {
		return 0, true
	}
	return r.b.NextBackOff(), true
}

// Backoff is a reconnect schedule: exponential with jitter up to a ceiling.
type Backoff struct{ b backoff.ExponentialBackOff }

// NewBackoff returns a backoff from initial to max, doubling, with 20% jitter.
func NewBackoff(initial, max time.Duration) *Backoff {
	b := &Backoff{b: backoff.ExponentialBackOff{InitialInterval: initial, RandomizationFactor: 0.2, Multiplier: 2, MaxInterval: max}}
	b.b.Reset()
	return b
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration { return b.b.NextBackOff() }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.b.Reset() }

// BreakerConfig configures a circuit breaker.
type BreakerConfig struct {
	Failures    int           // consecutive failures that open it
	FailureRate float64       // or this share of failures over Window (0: off)
	MinRequests int           // requests in Window before FailureRate counts
	Window      time.Duration // for FailureRate, in 10 rolling buckets
	CoolDown    time.Duration // open this long, then half-open
	Probes      int           // requests let through half-open; all must succeed to close
	// IsSuccessful decides which errors count as success (a Modbus exception: the device is
	// alive). nil: only nil is success.
	IsSuccessful func(error) bool
	// OnChange is called on every state change, outside the breaker's lock.
	OnChange func(from, to string)
}

// DefaultBreaker is what a zero field of a BreakerConfig gets: open after 5 failures in a row,
// 30 s cool-down, one probe; a failure rate counts over a minute once 10 requests were made.
var DefaultBreaker = BreakerConfig{Failures: 5, MinRequests: 10, Window: time.Minute, CoolDown: 30 * time.Second, Probes: 1}

// ErrOpen is returned by Breaker.Do while the breaker is open (or half-open and busy).
var ErrOpen = errors.New("circuit breaker open")

// Breaker states.
const (
	closed uint8 = iota
	open
	halfOpen
)

var stateNames = [...]string{closed: "closed", open: "open", halfOpen: "half-open"}

// Breaker is a circuit breaker: it opens after Failures failures in a row or a FailureRate
// over a rolling Window, lets nothing through for CoolDown, then lets Probes requests through
// half-open and closes when they all succeed (a failed probe opens it again).
//
// It is written here rather than taken from sony/gobreaker (which the design named) because
// ten thousand devices each hold one: behind the API this package had, gobreaker cost 616 bytes
// in 6 allocations a breaker (its rolling buckets, closures) and 150 ns a request (BenchmarkBreaker
// on the build machine); this one costs 112 bytes in one allocation (the buckets only when
// FailureRate is set) and 11 ns. gobreaker's two-step API allocates a closure per request, and
// it cannot say until when it stays open, which a device needs to sleep through its cool-down
// with no timer work; Allow and Done here do what Do does without a closure. Its methods are
// safe for concurrent use.
type Breaker struct {
	mu        sync.Mutex
	cfg       BreakerConfig
	state     uint8
	failures  uint32 // in a row, closed
	probes    uint32 // let through, half-open
	successes uint32 // probes that succeeded
	rate      *rateWindow
	openUntil atomic.Int64 // unix nanos; 0 unless open
}

// rateWindow counts requests and failures over a rolling window of 10 buckets.
type rateWindow struct {
	period  int64 // of a bucket, ns
	current int64 // index of the newest bucket (time / period)
	req     [10]uint32
	fail    [10]uint32
}

func (w *rateWindow) roll(now int64) {
	idx := now / w.period
	for k := w.current + 1; k <= idx && k <= w.current+10; k++ {
		w.req[k%10], w.fail[k%10] = 0, 0
	}
	if idx > w.current {
		w.current = idx
	}
}

func (w *rateWindow) add(now int64, failed bool) (requests, failures uint32) {
	w.roll(now)
	w.req[w.current%10]++
	if failed {
		w.fail[w.current%10]++
	}
	for k := range w.req {
		requests += w.req[k]
		failures += w.fail[k]
	}
	return requests, failures
}

// NewBreaker returns a closed breaker; cfg's zero fields take DefaultBreaker's.
func NewBreaker(cfg BreakerConfig) *Breaker {
	d := DefaultBreaker
	cfg.Failures = cmp.Or(cfg.Failures, d.Failures)
	cfg.MinRequests = cmp.Or(cfg.MinRequests, d.MinRequests)
	cfg.Window = cmp.Or(cfg.Window, d.Window)
	cfg.CoolDown = cmp.Or(cfg.CoolDown, d.CoolDown)
	cfg.Probes = cmp.Or(cfg.Probes, d.Probes)
	b := &Breaker{cfg: cfg}
	if cfg.FailureRate > 0 {
		b.rate = &rateWindow{period: max(int64(cfg.Window/10), 1)}
	}
	return b
}

// Do runs f unless the breaker is open; f's error is returned as is.
func (b *Breaker) Do(f func() error) error {
	if err := b.Allow(); err != nil {
		return err
	}
	err := f()
	b.Done(err)
	return err
}

// Allow lets one request through (nil) or refuses it (ErrOpen). Every request let through must
// be followed by Done with its outcome.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	from, changed := b.advance()
	err := error(nil)
	switch b.state {
	case open:
		err = ErrOpen
	case halfOpen:
		if b.probes >= uint32(b.cfg.Probes) {
			err = ErrOpen
		} else {
			b.probes++
		}
	}
	b.mu.Unlock()
	if changed {
		b.changed(from, halfOpen)
	}
	return err
}

// Done records the outcome of a request Allow let through.
func (b *Breaker) Done(err error) {
	ok := err == nil
	if b.cfg.IsSuccessful != nil {
		ok = b.cfg.IsSuccessful(err)
	}
	b.mu.Lock()
	from := b.state
	switch b.state {
	case closed:
		if ok {
			b.failures = 0
		} else {
			b.failures++
		}
		trip := !ok && b.failures >= uint32(b.cfg.Failures)
		if b.rate != nil {
			req, fail := b.rate.add(time.Now().UnixNano(), !ok)
			trip = trip || !ok && req >= uint32(b.cfg.MinRequests) && float64(fail)/float64(req) >= b.cfg.FailureRate
		}
		if trip {
			b.set(open)
		}
	case halfOpen:
		if !ok {
			b.set(open)
		} else if b.successes++; b.successes >= uint32(b.cfg.Probes) {
			b.set(closed)
		}
	}
	to := b.state
	b.mu.Unlock()
	if to != from {
		b.changed(from, to)
	}
}

// advance turns an open breaker half-open once its cool-down has passed; it returns the state
// before and whether it changed. b.mu is held.
func (b *Breaker) advance() (uint8, bool) {
	if b.state == open && time.Now().UnixNano() >= b.openUntil.Load() {
		b.set(halfOpen)
		return open, true
	}
	return b.state, false
}

// set enters state s. b.mu is held.
func (b *Breaker) set(s uint8) {
	b.state, b.failures, b.probes, b.successes = s, 0, 0, 0
	if b.rate != nil {
		b.rate.req, b.rate.fail = [10]uint32{}, [10]uint32{}
	}
	if s == open {
		b.openUntil.Store(time.Now().Add(b.cfg.CoolDown).UnixNano())
	} else {
		b.openUntil.Store(0)
	}
}

func (b *Breaker) changed(from, to uint8) {
	if b.cfg.OnChange != nil {
		b.cfg.OnChange(stateNames[from], stateNames[to])
	}
}

// State returns "closed", "open" or "half-open".
func (b *Breaker) State() string {
	b.mu.Lock()
	from, changed := b.advance()
	s := b.state
	b.mu.Unlock()
	if changed {
		b.changed(from, halfOpen)
	}
	return stateNames[s]
}

// OpenUntil returns when an open breaker turns half-open (zero unless open).
func (b *Breaker) OpenUntil() time.Time {
	n := b.openUntil.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Bucket is a token bucket (golang.org/x/time/rate) that tells how long to wait instead of
// waiting, so that the caller sleeps on its own timer and nothing allocates per request.
// It is safe for concurrent use (a serial line shared by several devices).
type Bucket struct{ l *rate.Limiter }

// NewBucket returns a bucket of perSecond requests with burst; nil when perSecond ≤ 0 (no limit).
func NewBucket(perSecond float64, burst int) *Bucket {
	if perSecond <= 0 {
		return nil
	}
	return &Bucket{l: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))}
}

// Take takes a token if one is there (returns 0) or returns how long until one is. A nil
// bucket never waits.
func (b *Bucket) Take(now time.Time) time.Duration {
	if b == nil || b.l.AllowN(now, 1) {
		return 0
	}
	missing := 1 - b.l.TokensAt(now)
	return time.Duration(math.Ceil(missing / float64(b.l.Limit()) * float64(time.Second)))
}

// Wait takes a token, sleeping until there is one or ctx is done.
func (b *Bucket) Wait(ctx context.Context, timer *time.Timer) error {
	for {
		d := b.Take(time.Now())
		if d == 0 {
			return nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// ErrorKind sorts a failed request for the health metric.
type ErrorKind uint8

// Kinds of errors every device input reports; protocols add their meaning to Exception and Frame.
const (
	KindOther     ErrorKind = iota
	KindTimeout             // no answer in time
	KindRefused             // connection refused (nothing listens)
	KindReset               // connection reset or closed by the peer
	KindException           // the device answered with an error (Modbus exception, OPC UA Bad status)
	KindFrame               // an answer that cannot be trusted (CRC, wrong id, short frame)
	numKinds
)

var kindNames = [numKinds]string{"other", "timeout", "refused", "reset", "exception", "frame"}

func (k ErrorKind) String() string { return kindNames[k] }

// Classify sorts a network error; protocol errors (exceptions, frames) are for the caller to sort.
func Classify(err error) ErrorKind {
	var ne net.Error
	switch {
	case err == nil:
		return KindOther
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return KindReset
	}
	return KindOther
}
