package modbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/goburrow/modbus"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// device is a deviceSpec at run time: its resilience state and the scratch of a poll. Only the
// goroutine of its link touches it.
type device struct {
	*deviceSpec
	frames  [][]byte // RTU and ASCII: the request ADUs, encoded once by goburrow's packagers
	timeout *resilience.Timeout
	retry   *resilience.Retry
	breaker *resilience.Breaker
	health  resilience.Health
	phase   time.Duration // offset of its polls in the interval
	next    time.Time     // its next poll
	poll    func() error  // the breaker's body, made once

	out   [][]models.Field // per group, during a poll; handed to the metric after it
	times []time.Time      // per group: when the last answer that fed it arrived
	strs  []string         // last value of each STRING field

	lastErr   string
	lastErrAt time.Time
	repeats   int
}

// errorRepeat is how often the same error of a device is reported again while it lasts.
const errorRepeat = time.Minute

func newDevice(spec *deviceSpec, m *Modbus, log *slog.Logger) *device {
	d := &device{
		deviceSpec: spec,
		timeout:    resilience.NewTimeout(resilience.TimeoutConfig{Max: spec.opts.timeout, Min: min(resilience.DefaultTimeout.Min, spec.opts.timeout)}),
		retry: resilience.NewRetry(resilience.RetryConfig{
			Retries: spec.opts.retries, Initial: 100 * time.Millisecond, Multiplier: 3, Max: 2 * time.Second, Jitter: 0.2,
		}),
		out:   make([][]models.Field, len(spec.prof.groups)),
		times: make([]time.Time, len(spec.prof.groups)),
		strs:  make([]string, spec.prof.strings),
	}
	d.breaker = resilience.NewBreaker(spec.name, resilience.BreakerConfig{
		Failures:     cmp.Or(m.BreakerFailures, defaultFailures),
		CoolDown:     cmp.Or(time.Duration(m.BreakerCoolDown), defaultCoolDown),
		IsSuccessful: func(err error) bool { return !errors.Is(err, errNoAnswer) },
		OnChange: func(from, to string) {
			log.Warn("circuit breaker "+to, "device", spec.name, "from", from,
				"meaning", map[string]string{"open": "no polls until the cool-down ends", "half-open": "one poll probes the device", "closed": "polling again"}[to])
		},
	})
	if f := spec.opts.target.framing; f != frameMBAP {
		var p modbus.Packager
		if f == frameRTU {
			h := modbus.NewRTUClientHandler("")
			h.SlaveId = spec.unit
			p = h
		} else {
			h := modbus.NewASCIIClientHandler("")
			h.SlaveId = spec.unit
			p = h
		}
		for i := range spec.plan {
			r := &spec.plan[i]
			adu, err := p.Encode(&modbus.ProtocolDataUnit{FunctionCode: byte(r.kind),
				Data: []byte{byte(r.addr >> 8), byte(r.addr), byte(r.count >> 8), byte(r.count)}})
			if err != nil { // a read request is 6 bytes: cannot exceed the ADU limit
				panic(err)
			}
			d.frames = append(d.frames, adu)
		}
	}
	return d
}

// errNoAnswer marks a poll in which the device answered nothing: it counts against the breaker.
// A device that answers with exceptions is alive.
var errNoAnswer = errors.New("no answer")

type noAnswerError struct{ err error }

func (e *noAnswerError) Error() string   { return e.err.Error() }
func (e *noAnswerError) Unwrap() []error { return []error{e.err, errNoAnswer} }

// requestError names the device and the request a transport or frame error happened to.
type requestError struct {
	d   *deviceSpec
	r   *request
	err error
}

func (e *requestError) Error() string {
	return fmt.Sprintf("device %q (%s unit %d): read %s %d..%d: %v",
		e.d.name, e.d.opts.target, e.d.unit, e.r.kind, e.r.addr, int(e.r.addr)+int(e.r.count)-1, e.err)
}
func (e *requestError) Unwrap() error { return e.err }

func (d *device) describe(r *request, err error) error {
	var exc *ExceptionError
	if errors.As(err, &exc) {
		exc.Device, exc.Unit, exc.Function, exc.Address, exc.Count = d.name, d.unit, byte(r.kind), r.addr, r.count
		return exc
	}
	return &requestError{d: d.deviceSpec, r: r, err: err}
}

// read sends request i of d, retrying what is worth retrying: a timeout or a garbled answer
// (resilience.Retry), and a busy device after busy_retries_wait.
func (l *link) read(ctx context.Context, d *device, i int) ([]byte, time.Time, error) {
	d.retry.Reset()
	busy := d.opts.busyRetries
	for {
		data, at, err := l.exchange(ctx, d, i)
		if err == nil || ctx.Err() != nil {
			return data, at, err
		}
		var exc *ExceptionError
		var wait time.Duration
		switch {
		case errors.As(err, &exc):
			d.health.Failed(resilience.KindException)
			if exc.Code != ExcServerBusy || busy == 0 {
				return nil, at, err
			}
			busy--
			l.st.busyRetries.Incr()
			wait = d.opts.busyWait
		case errors.As(err, new(*errBackoff)):
			d.health.Failed(resilience.KindRefused)
			return nil, at, err
		default:
			kind := resilience.Classify(err)
			if errors.As(err, new(*frameError)) {
				kind = resilience.KindFrame
			}
			d.health.Failed(kind)
			if kind == resilience.KindReset || kind == resilience.KindRefused {
				// the connection is gone: one retry on a new one, no waiting
				if d.retry.Retries == 0 {
					return nil, at, err
				}
			}
			w, ok := d.retry.Next()
			if !ok {
				return nil, at, err
			}
			wait = w
			l.st.retries.Incr()
			d.health.Retry()
		}
		if err := l.sleep(ctx, wait); err != nil {
			return nil, at, err
		}
	}
}

// pollOnce reads every request of d's plan and hands its metrics to acc: the fields that were
// read, even when others failed. It returns the failures, each naming device and request.
func (l *link) pollOnce(ctx context.Context, d *device, acc models.Accumulator) error {
	l.st.polls.Incr()
	l.acquire()
	defer l.release()
	var errs []error
	answered := 0
	for i := range d.plan {
		r := &d.plan[i]
		data, at, err := l.read(ctx, d, i)
		if err != nil {
			if ctx.Err() != nil {
				break // stopping: not the device's fault
			}
			errs = append(errs, d.describe(r, err))
			var exc *ExceptionError
			if !errors.As(err, &exc) && !errors.As(err, new(*frameError)) {
				// timeout or no connection: the rest would wait just as long
				if n := len(d.plan) - i - 1; n > 0 {
					errs = append(errs, fmt.Errorf("device %q: %d more %s skipped in this poll", d.name, n, plural(n, "request")))
				}
				break
			}
			continue
		}
		answered++
		d.decode(r, data, at, l.buf.scratch[:])
	}
	d.emit(acc)
	if d.opts.closeAfterGather {
		l.close()
	}
	if len(errs) == 0 {
		return nil
	}
	l.st.pollErrors.Incr()
	err := errors.Join(errs...)
	if answered == 0 && !isExceptions(errs) {
		return &noAnswerError{err}
	}
	return err
}

func isExceptions(errs []error) bool {
	for _, err := range errs {
		if !errors.As(err, new(*ExceptionError)) {
			return false
		}
	}
	return true
}

// decode turns an answer into fields of d's metrics.
func (d *device) decode(r *request, data []byte, at time.Time, scratch []byte) {
	fields := d.prof.fields
	for _, ref := range r.fields {
		f := &fields[ref.field]
		g := f.group
		if d.out[g] == nil {
			d.out[g] = make([]models.Field, d.prof.groups[g].fields)
		}
		var v models.Field
		switch {
		case r.kind.isBits():
			v = f.emitBool(bitAt(data, ref.off))
		case f.typ == typeString:
			v = f.decodeRegisters(data[2*ref.off:], d.strs[f.strSlot], scratch)
			d.strs[f.strSlot] = v.StringV()
		default:
			v = f.decodeRegisters(data[2*ref.off:], "", nil)
		}
		d.out[g][f.pos] = v
		if at.After(d.times[g]) {
			d.times[g] = at
		}
	}
}

// emit hands a metric per group that got fields to acc. Fields that were not read are left
// out; each device's tag slices are reused (RunningInput caches merged tags by slice identity).
func (d *device) emit(acc models.Accumulator) {
	for g, fs := range d.out {
		if fs == nil {
			continue
		}
		n := 0
		for _, f := range fs {
			if f.Key != "" {
				fs[n] = f
				n++
			}
		}
		acc.AddMetric(models.New(d.prof.groups[g].measurement, d.tags[g], fs[:n:n], d.times[g]))
		d.out[g], d.times[g] = nil, time.Time{}
	}
}

// report hands a poll's error to acc, once per errorRepeat while the same error lasts. Errors
// are the same when the same requests failed in the same way (the text may differ: a new
// connection has a new local port).
func (d *device) report(acc models.Accumulator, err error, now time.Time) {
	key := errorKey(err)
	if key == d.lastErr && now.Sub(d.lastErrAt) < errorRepeat {
		d.repeats++
		return
	}
	if key == d.lastErr && d.repeats > 0 {
		err = fmt.Errorf("%w (%d times in %s)", err, d.repeats+1, now.Sub(d.lastErrAt).Round(time.Second))
	}
	acc.AddError(err)
	d.lastErr, d.lastErrAt, d.repeats = key, now, 0
}

// errorKey names what failed in a poll: each request and how.
func errorKey(err error) string {
	var b strings.Builder
	var walk func(error)
	walk = func(err error) {
		var re *requestError
		var exc *ExceptionError
		var fe *frameError
		switch {
		case errors.As(err, &exc):
			fmt.Fprintf(&b, "%d:%d+%d:exception %d;", exc.Function, exc.Address, exc.Count, exc.Code)
		case errors.As(err, &re):
			fmt.Fprintf(&b, "%d:%d+%d:", re.r.kind, re.r.addr, re.r.count)
			switch {
			case errors.As(err, &fe):
				b.WriteString(fe.kind.Error())
			case errors.As(err, new(*errBackoff)):
				b.WriteString("not connected")
			default:
				b.WriteString(resilience.Classify(err).String())
			}
			b.WriteByte(';')
		default:
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			b.WriteString(err.Error() + ";")
		}
	}
	walk(err)
	return b.String()
}

// run polls the link's devices, each at its phase of every interval, until ctx is done. A poll
// that overruns delays the next ones of this link (they take turns), never the other links.
func (l *link) run(ctx context.Context, acc models.Accumulator, start time.Time, interval time.Duration) {
	defer l.close()
	defer l.release()
	for _, d := range l.devices {
		d.next = start.Add(d.phase)
		d.poll = func() error { return l.pollOnce(ctx, d, acc) }
	}
	for {
		d := l.devices[0]
		for _, x := range l.devices[1:] {
			if x.next.Before(d.next) {
				d = x
			}
		}
		if err := l.sleep(ctx, time.Until(d.next)); err != nil {
			return
		}
		err := d.breaker.Do(d.poll)
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, resilience.ErrOpen):
			l.st.breakerSkips.Incr()
		case err != nil:
			d.report(acc, err, now)
		case d.lastErr != "":
			l.log.Info("device answers again", "device", d.name)
			d.lastErr, d.repeats = "", 0
		}
		d.next = d.next.Add(interval)
		if !d.next.After(now) { // overran: skip the missed polls, keep the phase
			missed := now.Sub(d.next)/interval + 1
			d.next = d.next.Add(missed * interval)
			l.st.overruns.Add(int64(missed))
			if now.Sub(l.overrunLogged) >= errorRepeat {
				l.overrunLogged = now
				l.log.Warn("polls skipped: the devices of this connection take longer than the interval",
					"controller", l.target.String(), "device", d.name, "skipped", int64(missed), "interval", interval)
			}
		}
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
