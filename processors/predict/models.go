package predict

import (
	"math"

	"github.com/tagpipe/tagpipe/models"
)

// link is the window of a device's (or session's) last round-trip times: two fixed-size rings
// filled in step, allocated once per series, and the sums the statistics need, kept as samples
// come and go so that a health metric costs the same whatever the window. The sums are of
// x = seconds and y = ms from an origin (a sample of the window), which moves to the newest
// sample each time the ring wraps and the sums are recomputed from the ring: no drift, and no
// large numbers to cancel.
type link struct {
	rtt  []float64 // ms
	at   []int64   // metric time, unix ns
	head int       // next slot to write
	n    int       // samples held (≤ window)
	errs float64   // sum of the error counters at the last health metric
	seen bool      // errs holds a value

	x0                    int64   // origin of x, unix ns
	y0                    float64 // origin of y, ms
	sx, sy, sxx, sxy, syy float64
}

func (l *link) reset(window int) {
	if cap(l.rtt) < window {
		l.rtt, l.at = make([]float64, window), make([]int64, window)
	}
	*l = link{rtt: l.rtt[:window], at: l.at[:window]}
}

func (l *link) xy(i int) (x, y float64) {
	return float64(l.at[i]-l.x0) / 1e9, l.rtt[i] - l.y0
}

func (l *link) sum(i int, sign float64) {
	x, y := l.xy(i)
	l.sx += sign * x
	l.sy += sign * y
	l.sxx += sign * x * x
	l.sxy += sign * x * y
	l.syy += sign * y * y
}

func (l *link) push(t int64, rtt float64) {
	if l.n == len(l.rtt) {
		l.sum(l.head, -1) // the oldest sample leaves
	} else {
		if l.n == 0 {
			l.x0, l.y0 = t, rtt
		}
		l.n++
	}
	l.rtt[l.head], l.at[l.head] = rtt, t
	l.sum(l.head, 1)
	if l.head++; l.head == len(l.rtt) {
		l.head = 0
		l.x0, l.y0 = t, rtt
		l.sx, l.sy, l.sxx, l.sxy, l.syy = 0, 0, 0, 0, 0
		for i := range l.n {
			l.sum(i, 1)
		}
	}
}

// stats returns the population standard deviation of the RTTs held (ms) and the slope of the
// least-squares line through (time in s, RTT in ms): how fast the round trips grow, in ms per
// second (0 when all samples share one time):
//
//	stddev = √(Σ(y−ȳ)²/n)      slope = Σ(x−x̄)(y−ȳ) / Σ(x−x̄)²
func (l *link) stats() (stddev, slope float64) {
	n := float64(l.n)
	mx, my := l.sx/n, l.sy/n
	sxx := l.sxx - n*mx*mx
	sxy := l.sxy - n*mx*my
	syy := l.syy - n*my*my
	// Samples 1 ms apart over a window give Σ(x−x̄)² ≥ 1e-6; below that the times are one.
	if sxx > 1e-9 {
		slope = sxy / sxx
	}
	return math.Sqrt(max(syy, 0) / n), slope
}

// linkStep feeds one health metric (time t) to the link model and adds its fields to p.add.
// It reports whether a disconnect is predicted.
//
// A health metric whose error counters (error_fields, cumulative) rose since the previous one
// stands for a failed request: its RTT field then still holds the last answered round trip, so it
// is not a new sample, and the link is failing now: risk 1, predicted. Otherwise the RTT joins
// the window, and once the window is full:
//
//	disconnect_risk      = clamp(max(stddev/rtt_stddev_threshold, slope/decay_threshold), 0, 1)
//	disconnect_predicted = stddev ≥ rtt_stddev_threshold || slope ≥ decay_threshold
//
// so the risk reaches 1 exactly when the prediction is made, and below that tells how close the
// worse of the two signals is to its threshold. A falling RTT (negative slope) adds no risk.
//
// The risk is also published to board (when not nil), where the device page reads it.
func (p *Predict) linkStep(l *link, t int64, rtt float64, hasRTT bool, errs float64, hasErrs bool, board *models.LinkRisk) bool {
	failed := false
	if hasErrs {
		failed = l.seen && errs > l.errs // a counter that fell was reset (a restart): no failure
		l.errs, l.seen = errs, true
	}
	if hasRTT && !failed {
		l.push(t, rtt)
	}
	full := l.n == len(l.rtt)
	if !full && !failed {
		return false // warming up
	}
	risk, predicted := 1.0, true
	if full {
		stddev, slope := l.stats()
		p.add = append(p.add, models.Float(fieldStddev, stddev), models.Float(fieldSlope, slope))
		if !failed {
			risk = min(max(stddev/p.RTTStddevThreshold, slope/p.DecayThreshold, 0), 1)
			predicted = stddev >= p.RTTStddevThreshold || slope >= p.DecayThreshold
		}
	}
	p.add = append(p.add, models.Float(fieldRisk, risk), models.Bool(fieldPredicted, predicted))
	if board != nil {
		board.Set(risk)
	}
	return predicted
}

// holt is the forecast state of one field: Holt's linear (double exponential) smoothing,
//
//	forecast_t = level_{t-1} + trend_{t-1}
//	level_t    = α·x_t + (1−α)·(level_{t-1} + trend_{t-1})
//	trend_t    = β·(level_t − level_{t-1}) + (1−β)·trend_{t-1}
//
// started with level = the first value, trend = 0, and a ring of the last `window` forecast
// errors (x_t − forecast_t). σ is their root mean square: the standard deviation of the errors
// around 0, the error of a forecast that is right on average.
type holt struct {
	level, trend float64
	n            int       // values seen
	res          []float64 // ring of forecast errors
	head, rn     int       // next slot, errors held
	sumSq        float64   // Σ res², recomputed whenever the ring wraps (no drift)
}

func newHolt(window int) *holt { return &holt{res: make([]float64, window)} }

// step feeds value x. It returns the forecast of x made before seeing it (from the second value
// on) and, once warmup values came before x, whether x is an anomaly: |x − forecast| > k·σ of
// the errors before this one.
func (h *holt) step(x float64, p *Predict) (forecast float64, ok, anomaly, flagged bool) {
	if h.n == 0 {
		h.level, h.n = x, 1
		return 0, false, false, false
	}
	forecast = h.level + h.trend
	e := x - forecast
	if h.n >= p.Warmup && h.rn > 0 {
		sigma := math.Sqrt(max(h.sumSq, 0) / float64(h.rn))
		anomaly, flagged = math.Abs(e) > p.AnomalySigma*sigma, true
	}
	if h.rn == len(h.res) {
		h.sumSq -= h.res[h.head] * h.res[h.head] // the oldest error leaves
	} else {
		h.rn++
	}
	h.res[h.head] = e
	h.sumSq += e * e
	if h.head++; h.head == len(h.res) {
		h.head = 0
		h.sumSq = 0
		for _, r := range h.res[:h.rn] {
			h.sumSq += r * r
		}
	}
	level := p.Alpha*x + (1-p.Alpha)*(h.level+h.trend)
	h.trend = p.Beta*(level-h.level) + (1-p.Beta)*h.trend
	h.level = level
	h.n++
	return forecast, true, anomaly, flagged
}
