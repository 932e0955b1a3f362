package resilience

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Health counts what happened to one device or session since the start: polls, requests,
// retries and errors by kind, and the last round trip. Counters are cumulative (rates are for
// the database to compute). For the device page it also keeps, and nothing more, the last
// models.RTTRing round trips, and from the first error on the last models.ErrorLog errors and
// models.BreakerLog breaker changes: at most 1 KiB a device (TestHealthSize). It is safe for
// concurrent use.
type Health struct {
	requests    atomic.Uint64
	retries     atomic.Uint64
	errors      [numKinds]atomic.Uint64
	lastRTT     atomic.Int64
	polls       atomic.Uint64
	pollsFailed atomic.Uint64

	rtt  [models.RTTRing / 2]atomic.Uint32 // two samples a word (rttCode), oldest overwritten
	rttN atomic.Uint32                     // samples pushed
	log  atomic.Pointer[healthLog]         // made at the first error or breaker change
}

// healthLog holds a device's recent errors and breaker changes.
type healthLog struct {
	mu   sync.Mutex
	errs [models.ErrorLog]loggedError
	brk  [models.BreakerLog]int64 // Unix ms<<10 | route<<2 | state
	nerr uint32                   // entries written
	nbrk uint32
}

// loggedError is an error of a device and its repeats: errors with the same key one after the
// other are counted in one entry, which keeps the newest.
type loggedError struct {
	at      int64 // Unix ns of the newest
	repeats uint32
	key     uint32 // hash of the caller's key
	err     error
}

// Round trips are kept in 16 bits: a 12-bit mantissa of microseconds and a 4-bit exponent
// (0.025% precision up to 134 s); rttNone marks a request that got no answer.
const rttNone = 0xFFFF

func rttCode(d time.Duration) uint32 {
	us := uint64(max(d, 0) / time.Microsecond)
	e := max(bits.Len64(us)-12, 0)
	if e > 15 || e == 15 && us>>15 >= 4095 {
		return rttNone - 1
	}
	return uint32(e)<<12 | uint32(us>>e)
}

func rttOf(c uint32) time.Duration {
	if c == rttNone {
		return -1
	}
	return time.Duration(uint64(c&0xFFF)<<(c>>12)) * time.Microsecond
}

func (h *Health) pushRTT(c uint32) {
	i := (h.rttN.Add(1) - 1) % models.RTTRing
	w := &h.rtt[i/2]
	shift := 16 * (i % 2)
	for {
		old := w.Load()
		if w.CompareAndSwap(old, old&^(0xFFFF<<shift)|c<<shift) {
			return
		}
	}
}

// Request counts a request that was sent.
func (h *Health) Request() { h.requests.Add(1) }

// Retry counts a retry.
func (h *Health) Retry() { h.retries.Add(1) }

// Answered records the round trip of an answered request.
func (h *Health) Answered(rtt time.Duration) {
	h.lastRTT.Store(int64(rtt))
	h.pushRTT(rttCode(rtt))
}

// Failed counts an error of kind k. One that means no answer came (a timeout, a refused or
// reset connection) is a gap in the round trips.
func (h *Health) Failed(k ErrorKind) {
	h.errors[k].Add(1)
	if k == KindTimeout || k == KindRefused || k == KindReset {
		h.pushRTT(rttNone)
	}
}

// Polled counts a poll (a round of reads), and whether it returned an error.
func (h *Health) Polled(failed bool) {
	h.polls.Add(1)
	if failed {
		h.pollsFailed.Add(1)
	}
}

// Errors returns the count of errors of kind k.
func (h *Health) Errors(k ErrorKind) uint64 { return h.errors[k].Load() }

// LastRTT returns the round trip of the last answered request.
func (h *Health) LastRTT() time.Duration { return time.Duration(h.lastRTT.Load()) }

// Requests returns the count of requests sent.
func (h *Health) Requests() uint64 { return h.requests.Load() }

var keySeed = maphash.MakeSeed()

func (h *Health) logged() *healthLog {
	if l := h.log.Load(); l != nil {
		return l
	}
	h.log.CompareAndSwap(nil, new(healthLog))
	return h.log.Load()
}

// Logged keeps err, which happened at at, in the device's error log. key says which errors are
// the same (the same requests failing the same way, whatever the text): one that has the key of
// the newest entry is counted in it. err's text is made only when the page shows it.
func (h *Health) Logged(at time.Time, key string, err error) {
	l := h.logged()
	k := uint32(maphash.String(keySeed, key))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nerr > 0 {
		e := &l.errs[(l.nerr-1)%uint32(len(l.errs))]
		if e.key == k {
			e.at, e.err = at.UnixNano(), err
			e.repeats++
			return
		}
	}
	l.errs[l.nerr%uint32(len(l.errs))] = loggedError{at: at.UnixNano(), repeats: 1, key: k, err: err}
	l.nerr++
}

// BreakerChanged keeps a change of the breaker of route (0: the device's controller, n: its
// nth backup) to state to ("closed", "open", "half-open").
func (h *Health) BreakerChanged(at time.Time, route int, to string) {
	s := uint8(0)
	for i, n := range stateNames {
		if n == to {
			s = uint8(i)
		}
	}
	l := h.logged()
	l.mu.Lock()
	l.brk[l.nbrk%uint32(len(l.brk))] = at.UnixMilli()<<10 | int64(min(route, 255))<<2 | int64(s)
	l.nbrk++
	l.mu.Unlock()
}

// Figures fills the counters of f: polls, requests, retries and errors by kind.
func (h *Health) Figures(f *models.DeviceFigures) {
	f.Polls, f.PollsFailed = h.polls.Load(), h.pollsFailed.Load()
	f.Requests, f.Retries = h.requests.Load(), h.retries.Load()
	f.Errors = f.Errors[:0]
	for k := KindTimeout; k < numKinds; k++ {
		f.Errors = append(f.Errors, models.KindCount{Kind: kindNames[k], Count: h.errors[k].Load()})
	}
	f.Errors = append(f.Errors, models.KindCount{Kind: kindNames[KindOther], Count: h.errors[KindOther].Load()})
}

// RTTs appends the kept round trips to dst, oldest first; -1 for a request that got no answer.
func (h *Health) RTTs(dst []time.Duration) []time.Duration {
	n := h.rttN.Load()
	k := min(n, models.RTTRing)
	for i := n - k; i < n; i++ {
		j := i % models.RTTRing
		dst = append(dst, rttOf(h.rtt[j/2].Load()>>(16*(j%2))&0xFFFF))
	}
	return dst
}

// Log fills d.Errors and d.Breaker, newest first; controller names a route for d.Breaker.
func (h *Health) Log(d *models.DeviceDetail, controller func(route int) string) {
	d.Errors, d.Breaker = d.Errors[:0], d.Breaker[:0]
	l := h.log.Load()
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := int(l.nerr) - 1; i >= max(int(l.nerr)-len(l.errs), 0); i-- {
		e := &l.errs[i%len(l.errs)]
		d.Errors = append(d.Errors, models.DeviceError{At: time.Unix(0, e.at), Text: e.err.Error(), Repeats: int(e.repeats)})
	}
	for i := int(l.nbrk) - 1; i >= max(int(l.nbrk)-len(l.brk), 0); i-- {
		b := l.brk[i%len(l.brk)]
		d.Breaker = append(d.Breaker, models.BreakerChange{At: time.UnixMilli(b >> 10), Controller: controller(int(b >> 2 & 0xFF)), To: stateNames[b&3]})
	}
}

// AppendFields appends the health fields: rtt_ms, rtt_ewma_ms, timeout_ms, requests, retries,
// errors_<kind> for every kind, and breaker ("closed", "open", "half-open"). t and b may be nil.
func (h *Health) AppendFields(dst []models.Field, t *Timeout, b *Breaker) []models.Field {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	dst = append(dst, models.Float("rtt_ms", ms(time.Duration(h.lastRTT.Load()))))
	if t != nil {
		dst = append(dst, models.Float("rtt_ewma_ms", ms(t.EWMA())), models.Float("timeout_ms", ms(t.Nominal())))
	}
	dst = append(dst, models.Uint("requests", h.requests.Load()), models.Uint("retries", h.retries.Load()))
	for k := KindTimeout; k < numKinds; k++ {
		dst = append(dst, models.Uint(errorFieldNames[k], h.errors[k].Load()))
	}
	dst = append(dst, models.Uint("errors_other", h.errors[KindOther].Load()))
	if b != nil {
		dst = append(dst, models.String("breaker", b.State()))
	}
	return dst
}

var errorFieldNames = func() (n [numKinds]string) {
	for k := range n {
		n[k] = "errors_" + kindNames[k]
	}
	return n
}()
