package modbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// errNoAnswer marks a poll in which the device answered nothing: it counts against the breaker.
// A device that answers with exceptions is alive.
var errNoAnswer = errors.New("no answer")

// answered is the breakers' IsSuccessful: a poll failed for the breaker when nothing answered.
func answered(err error) bool { return !errors.Is(err, errNoAnswer) }

type noAnswerError struct{ err error }

func (e *noAnswerError) Error() string   { return e.err.Error() }
func (e *noAnswerError) Unwrap() []error { return []error{e.err, errNoAnswer} }

// requestError names the device, the controller and the request a transport or frame error
// happened to.
type requestError struct {
	d   *deviceSpec
	t   controller
	r   *request // not changed after Init or a split (a split makes new requests)
	err error
}

func (e *requestError) Error() string {
	return fmt.Sprintf("device %q (%s unit %d): read %s %d..%d: %v",
		e.d.name, e.t, e.d.unit, e.r.kind, e.r.addr, int(e.r.addr)+int(e.r.count)-1, e.err)
}
func (e *requestError) Unwrap() error { return e.err }

func (d *device) describe(r *request, t controller, err error) error {
	var exc *ExceptionError
	if errors.As(err, &exc) {
		exc.Device, exc.Unit, exc.Function, exc.Address, exc.Count = d.name, d.unit, byte(r.kind), r.addr, r.count
		return exc
	}
	return &requestError{d: d.deviceSpec, t: t, r: r, err: err}
}

// read sends read i of d through r, retrying what is worth retrying: a timeout or a garbled
// answer (resilience.Retry: the first retry at once, then growing waits), and a busy device
// after busy_retries_wait; never past the device's next poll.
// With first, the first exchange was made already (by the event loop) and this was its
// outcome.
func (p *poller) read(ctx context.Context, d *device, r *route, i int, first *exchanged) ([]byte, time.Time, error) {
	d.retry.Reset()
	busy := d.opts.busyRetries
	retrying := false
	for {
		var data []byte
		var at time.Time
		var err error
		if first != nil {
			data, at, err, first = first.data, first.at, first.err, nil
		} else {
			data, at, err = r.link.exchange(ctx, d, r, i, retrying)
		}
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
			p.st.busyRetries.Incr()
			wait = d.opts.busyWait
		case errors.As(err, new(*errBackoff)):
			// not connected (and waiting before dialling again): no request went out
			d.health.Failed(connectKind(err))
			return nil, at, err
		default:
			kind := resilience.Classify(err)
			if errors.As(err, new(*frameError)) {
				kind = resilience.KindFrame
			}
			d.health.Failed(kind)
			if (kind == resilience.KindReset || kind == resilience.KindRefused) && d.retry.Retries == 0 {
				return nil, at, err
			}
			w, ok := d.retry.Next()
			if !ok {
				return nil, at, err
			}
			wait = w
		}
		if !time.Now().Add(wait).Before(d.deadline) {
			return nil, at, err // the next poll is due
		}
		if exc == nil {
			p.st.retries.Incr()
			d.health.Retry()
		}
		if err := p.sleep(ctx, wait); err != nil {
			return nil, at, err
		}
		retrying = true
	}
}

// connectKind sorts a failed dial for the health metric: refused unless it timed out.
func connectKind(err error) resilience.ErrorKind {
	if k := resilience.Classify(err); k == resilience.KindTimeout {
		return k
	}
	return resilience.KindRefused
}

// pollRoute reads d's reads through route ri and keeps what they gave in d.out: the fields that
// were read, even when others failed. It returns the failures, each naming device, controller
// and request; an error wrapping errNoAnswer when the device answered nothing.
//
// After a read got no answer the poll goes on with the next if the device answered lately (in
// this poll or the last few intervals) and time is left, in case only that read fails (a
// device that cannot serve a large read); it ends when the connection is gone, the device did
// not answer lately, or two reads that used to answer got none.
//
// With rs the poll was begun by the event loop, which hands it over at read rs.i.
func (p *poller) pollRoute(ctx context.Context, d *device, ri int, rs *resume) error {
	r := &d.routes[ri]
	l := r.link
	defer l.release() // the buffers are taken once connected (prepare), not while dialling
	var errs []error
	answered, lost, exc4, start := 0, 0, false, 0
	var first *exchanged
	if rs != nil {
		answered, start, first = rs.answered, rs.i, &rs.first
	}
	for i := start; i < len(d.reqs); i++ {
		data, at, err := p.read(ctx, d, r, i, first)
		first = nil
		if err == nil {
			answered++
			d.took(i, data, at, l)
			continue
		}
		if ctx.Err() != nil {
			break // stopping: not the device's fault
		}
		var exc *ExceptionError
		if errors.As(err, &exc) && (exc.Code == ExcIllegalAddress || exc.Code == ExcIllegalValue) && p.split(d, i, err) {
			i-- // the device says the range is wrong: read its first half now
			continue
		}
		errs = append(errs, d.describe(&d.reqs[i], l.controller, err))
		if exc != nil {
			if exc.Code == ExcServerFailure {
				d.rs[i].pending, exc4 = true, true
			}
			continue // the device answers: the other reads may work
		}
		if errors.As(err, new(*frameError)) {
			continue
		}
		d.rs[i].pending = resilience.Classify(err) == resilience.KindTimeout
		if d.rs[i].ok {
			lost++
		}
		now := time.Now()
		live := answered > 0 || now.Sub(d.lastAnswer) < 3*p.interval
		if n := len(d.reqs) - i - 1; n > 0 && (!live || lost >= 2 || !d.rs[i].pending || !now.Before(d.deadline)) {
			errs = append(errs, fmt.Errorf("device %q: %d more %s skipped in this poll", d.name, n, plural(n, "request")))
			break
		}
	}
	return p.routeDone(d, l, answered, exc4, errs)
}

// exchanged is the outcome of an exchange.
type exchanged struct {
	data []byte
	at   time.Time
	err  error
}

// resume is how far the event loop got in a poll it hands over to a goroutine: route 0 was
// allowed by its breaker, reads before i were answered (answered of them), and read i's first
// exchange ended as first says.
type resume struct {
	i, answered int
	first       exchanged
}

// took keeps what read i answered at at.
func (d *device) took(i int, data []byte, at time.Time, l *link) {
	d.lastAnswer = at
	d.rs[i] = readState{ok: true}
	d.decode(&d.reqs[i], data, at, l.buf.scratch[:])
}

// routeDone ends a poll through l in which answered reads were answered and errs failed.
func (p *poller) routeDone(d *device, l *link, answered int, exc4 bool, errs []error) error {
	d.answered += answered
	p.splitFailing(d, answered > 0 || exc4)
	if d.opts.closeAfterGather {
		l.close()
	}
	if len(errs) == 0 {
		return nil
	}
	p.st.pollErrors.Incr()
	var err error = pollErrors(errs)
	if answered == 0 && !isExceptions(errs) {
		return &noAnswerError{err}
	}
	return err
}

// pollErrors are the failures of one poll of a device, each naming the device and what failed.
// They read as one line ("; " between them): a device's failed poll is one log record.
type pollErrors []error

func (e pollErrors) Error() string {
	var b strings.Builder
	for i, err := range e {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}
func (e pollErrors) Unwrap() []error { return e }

func isExceptions(errs []error) bool {
	for _, err := range errs {
		if !errors.As(err, new(*ExceptionError)) {
			return false
		}
	}
	return true
}

// splitFailing counts the reads that failed in this poll with a timeout or exception 4 while
// the device answered (alive): a read that fails so in splitAfter polls in a row is split in
// two for the next poll (split_failing_reads). A timeout of a device that answered nothing says
// nothing about the read: it is not counted.
func (p *poller) splitFailing(d *device, alive bool) {
	for i := len(d.rs) - 1; i >= 0; i-- { // backwards: a split shifts the reads after it
		st := &d.rs[i]
		if !st.pending {
			continue
		}
		st.pending = false
		if !alive {
			continue
		}
		st.fails = min(st.fails+1, 255)
		if st.fails >= splitAfter {
			p.split(d, i, errSplitAfter)
		}
	}
}

var errSplitAfter = fmt.Errorf("no answer or exception 4 in %d polls in a row while the device answered its other reads", splitAfter)

// split splits read i of d in two to isolate the range that fails (split_failing_reads); the
// first half takes its place at i. A read that cannot be split (one field, or fields on the
// same registers) is left as it is, and split returns false.
func (p *poller) split(d *device, i int, cause error) bool {
	if !d.opts.splitReads {
		return false
	}
	a, b, ok := splitRequest(&d.reqs[i], d.prof.fields)
	if !ok {
		return false
	}
	old := d.reqs[i]
	a.note = fmt.Sprintf("split from %s at %s: %v", rangeOf(&old), time.Now().UTC().Format(time.TimeOnly), cause)
	b.note = a.note
	reqs := make([]request, 0, len(d.reqs)+1)
	reqs = append(reqs, d.reqs[:i]...)
	reqs = append(reqs, a, b)
	d.reqs = append(reqs, d.reqs[i+1:]...)
	rs := make([]readState, 0, len(d.rs)+1)
	rs = append(rs, d.rs[:i]...)
	rs = append(rs, readState{}, readState{})
	d.rs = append(rs, d.rs[i+1:]...)
	for ri := range d.routes {
		d.routes[ri].encode(d)
	}
	p.st.readsSplit.Incr()
	p.log.Info("a failing read is split to isolate the range that fails", "device", d.name,
		"read", rangeOf(&old), "into", rangeOf(&a)+" and "+rangeOf(&b), "cause", cause)
	return true
}

func rangeOf(r *request) string {
	return fmt.Sprintf("%s %d..%d", r.kind, r.addr, int(r.addr)+int(r.count)-1)
}

// splitRequest splits r into two reads of about half its fields each, at a field that starts
// past every field before it (fields that share registers stay together). A read that cannot
// be split (one field, or fields all on the same registers) gives ok false.
func splitRequest(r *request, fields []fieldSpec) (a, b request, ok bool) {
	n := len(r.fields)
	cut := -1
	ends := make([]int, n+1) // ends[k]: the furthest end of the first k fields
	for k, ref := range r.fields {
		ends[k+1] = max(ends[k], fields[ref.field].end())
	}
	for off := 0; off < n && cut < 0; off++ {
		for _, k := range []int{n/2 + off, n/2 - off} {
			if k > 0 && k < n && int(fields[r.fields[k].field].address) >= ends[k] {
				cut = k
				break
			}
		}
	}
	if cut < 0 {
		return a, b, false
	}
	sub := func(refs []fieldRef, start int) request {
		end := start
		out := request{kind: r.kind, addr: uint16(start), fields: make([]fieldRef, 0, len(refs))}
		for _, ref := range refs {
			f := &fields[ref.field]
			end = max(end, f.end())
			out.fields = append(out.fields, fieldRef{field: ref.field, off: int(f.address) - start})
		}
		out.count = uint16(end - start)
		return out
	}
	// The first half keeps the read's start (read_coils_starting_at_zero starts below its
	// first field).
	return sub(r.fields[:cut], int(r.addr)), sub(r.fields[cut:], int(fields[r.fields[cut].field].address)), true
}

// decode turns an answer into fields of d's metrics.
func (d *device) decode(r *request, data []byte, at time.Time, scratch []byte) {
	fields := d.prof.fields
	for _, ref := range r.fields {
		f := &fields[ref.field]
		g := f.group
		m := d.out[g]
		if m == nil {
			n := d.prof.groups[g].fields
			m = models.NewMetric(d.prof.groups[g].measurement, d.tags[g], n, at)
			m.Fields = m.Fields[:n]
			clear(m.Fields)
			d.out[g] = m
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
		m.Fields[f.pos] = v
		if at.After(m.Time) {
			m.Time = at
		}
	}
}

// emit hands a metric per group that got fields to acc (fields that were not read are left
// out; each device's tag slices are reused: RunningInput caches merged tags by slice identity),
// and before it, with stale_after, the last good values of the fields that were not read.
func (d *device) emit(acc models.Accumulator, now time.Time, st *stats) {
	if d.stale != nil {
		d.emitStale(acc, now, st)
	}
	for g, m := range d.out {
		if m == nil {
			continue
		}
		n := 0
		for _, f := range m.Fields {
			if f.Key != "" {
				m.Fields[n] = f
				n++
			}
		}
		m.Fields = m.Fields[:n] // the capacity after it is the room processors reserved
		m.Fresh = d.fresh
		acc.AddMetric(m)
		d.out[g] = nil
	}
}

// emitStale remembers the fields read in this poll and reports, tagged quality=stale and timed
// now, the last good value of each field that was not, if it is at most stale_after old.
func (d *device) emitStale(acc models.Accumulator, now time.Time, st *stats) {
	s := d.stale
	limit := now.Add(-d.opts.staleAfter).UnixNano()
	for fi := range d.prof.fields {
		f := &d.prof.fields[fi]
		if m := d.out[f.group]; m != nil && m.Fields[f.pos].Key != "" {
			s.last[fi], s.at[fi] = m.Fields[f.pos], m.Time.UnixNano()
			continue
		}
		if s.at[fi] == 0 || s.at[fi] < limit {
			continue
		}
		sm := s.out[f.group]
		if sm == nil {
			sm = models.NewMetric(d.prof.groups[f.group].measurement, d.stale.tags[f.group], d.prof.groups[f.group].fields, now)
			s.out[f.group] = sm
		}
		sm.Fields = append(sm.Fields, s.last[fi])
	}
	for g, sm := range s.out {
		if sm != nil {
			acc.AddMetric(sm)
			st.staleMetrics.Incr()
			s.out[g] = nil
		}
	}
}

// emitHealth hands over d's modbus_health metric: its counters since the start, and the
// round-trip average, timeout and breaker of the controller in use.
func (d *device) emitHealth(acc models.Accumulator, r *route, now time.Time) {
	// with the room processors.predict reserved for its fields (models.ReserveFieldRoom)
	m := models.NewMetric("modbus_health", r.tags, healthFields, now)
	m.Fresh = d.fresh
	m.Fields = d.health.AppendFields(m.Fields, r.timeout, r.breaker)
	acc.AddMetric(m)
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

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// poll polls d once, due at due: through its controller, or else the first backup whose
// breaker lets it; when one gives no answer at all and there is time before the next poll,
// through the next. It hands over what was read (and the stale values asked for) and d's
// health, and reports whether the device answered.
func (p *poller) poll(ctx context.Context, d *device, due time.Time) bool {
	p.begin(d, due)
	return p.pollFrom(ctx, d, nil)
}

// begin starts a poll of d due at due.
func (p *poller) begin(d *device, due time.Time) {
	p.st.polls.Incr()
	d.deadline = due.Add(p.interval)
	d.answered = 0
}

// allow says whether r's breaker lets a poll through it.
func allow(r *route) bool {
	if until := r.breaker.OpenUntil(); !until.IsZero() && time.Now().Before(until) {
		return false
	}
	return r.breaker.Allow() == nil // else half-open, its probes taken
}

// pollFrom is poll after begin; with rs the event loop polled route 0 as far as rs says.
func (p *poller) pollFrom(ctx context.Context, d *device, rs *resume) bool {
	used := -1
	var lastErr error // of the last route tried
	for ri := range d.routes {
		r := &d.routes[ri]
		if (rs == nil || ri > 0) && !allow(r) {
			continue
		}
		used, d.cur = ri, ri
		err := p.pollRoute(ctx, d, ri, rs)
		rs = nil
		if ctx.Err() != nil {
			r.breaker.Done(nil) // stopping: not the device's fault
			return false
		}
		now := time.Now()
		p.routeOutcome(d, r, err, now)
		lastErr = err
		if err == nil || !errors.Is(err, errNoAnswer) || !now.Before(d.deadline) {
			break
		}
	}
	return p.end(d, used, lastErr)
}

// routeOutcome tells r's breaker how a poll through it went, and reports a failure or that the
// device answers again.
func (p *poller) routeOutcome(d *device, r *route, err error, now time.Time) {
	r.breaker.Done(err)
	switch {
	case err != nil:
		p.fail(d, r, err, now)
	case r.errLog.Failing():
		p.logs.answers(d, r, r.errLog.Clear())
	}
}

// end ends a poll of d in which route used was polled last (-1: none, every breaker open) with
// lastErr: it hands over what was read and d's health, and reports whether the device answered.
func (p *poller) end(d *device, used int, lastErr error) bool {
	return p.endAt(d, used, lastErr, time.Now(), p.acc)
}

// endAt is end at now, handing the metrics to acc (the event loop reads the clock once a poll,
// and hands the metrics of a round over together).
func (p *poller) endAt(d *device, used int, lastErr error, now time.Time, acc models.Accumulator) bool {
	if used < 0 {
		p.st.breakerSkips.Incr()
		return false
	}
	if used > 0 {
		p.st.backupPolls.Incr()
	}
	d.health.Polled(lastErr != nil)
	if d.watched(now) { // someone has its detail open: copy what this poll read
		d.copySnapshot(now)
	}
	d.polled(now)
	d.emit(acc, now, p.st)
	if d.opts.health {
		d.emitHealth(acc, &d.routes[d.cur], now)
	}
	if d.answered > 0 {
		d.fresh = false
	}
	return d.answered > 0
}

// fail reports a failed poll of d through r: to onErr (Gather), or to acc once per
// errorRepeat while the same error lasts. Errors are the same when the same requests failed in
// the same way (the text may differ: a new connection has a new local port).
func (p *poller) fail(d *device, r *route, err error, now time.Time) {
	key := errorKey(err)
	d.failed(err, key, now)
	if p.onErr != nil {
		p.onErr(err)
		return
	}
	held := r.errLog.Held()
	log, note := r.errLog.Add(key, now)
	if !log {
		return
	}
	if note != "" {
		// Still failing as reported: counted, and named in one line for every device that is
		// (pollerLogs.failing), not in a line of its own.
		p.logs.failing.add(d.name, int64(held+1), fmt.Sprintf("%v %s", err, note))
		return
	}
	p.acc.AddError(err)
}
