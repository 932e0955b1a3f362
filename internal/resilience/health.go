package resilience

import (
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Health counts what happened to one device or session since the start: requests, retries and
// errors by kind, and the last round trip. Counters are cumulative (rates are for the database
// to compute). It is safe for concurrent use.
type Health struct {
	requests atomic.Uint64
	retries  atomic.Uint64
	errors   [numKinds]atomic.Uint64
	lastRTT  atomic.Int64
}

// Request counts a request that was sent.
func (h *Health) Request() { h.requests.Add(1) }

// Retry counts a retry.
func (h *Health) Retry() { h.retries.Add(1) }

// Answered records the round trip of an answered request.
func (h *Health) Answered(rtt time.Duration) { h.lastRTT.Store(int64(rtt)) }

// Failed counts an error of kind k.
func (h *Health) Failed(k ErrorKind) { h.errors[k].Add(1) }

// Errors returns the count of errors of kind k.
func (h *Health) Errors(k ErrorKind) uint64 { return h.errors[k].Load() }

// Requests returns the count of requests sent.
func (h *Health) Requests() uint64 { return h.requests.Load() }

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
