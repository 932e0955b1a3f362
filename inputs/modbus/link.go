package modbus

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/goburrow/serial"

	"github.com/tagpipe/tagpipe/internal/resilience"
)

// conn is a connection to a controller: a TCP or TLS socket, or a serial line.
type conn interface {
	io.ReadWriteCloser
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
}

// link is one connection to a controller: a device of its own, a gateway whose units take
// turns, or a serial line. The goroutine of its poller owns it; nothing here is safe for
// concurrent use.
//
// The transport is ours rather than goburrow/modbus's (which has no context, no TLS and
// allocates per request): deadlines come from each device's adaptive timeout, the read buffer
// comes from a pool, and answers are framed from a buffered stream, so that a late answer (wrong
// transaction id) is drained and dropped instead of being taken for the next one.
type link struct {
	controller controller
	opts       *linkOptions // of the first device on it (the others agree)
	p          *poller
	st         *stats
	log        *slog.Logger
	debug      bool
	tlsConf    *tls.Config    // tls://
	serial     *serial.Config // file://

	c         conn
	mu        sync.Mutex // guards live
	live      conn       // c, for the poller's wake on Stop (another goroutine)
	connects  int
	retryAt   time.Time // after a failed dial: fail fast until then
	dialErr   error     // of the failed dial
	downSince time.Time // the first failed dial since the link was last connected
	backoff   *resilience.Backoff
	bucket    *resilience.Bucket // max_requests_per_second; nil: no cap

	tid       uint16
	buf       *buffers // pooled; kept between polls only while it holds bytes
	r, w      int      // unread bytes are buf[r:w]
	silent    int      // timeouts in a row with no byte received
	stray     int      // answers of other requests dropped while awaiting this one
	fresh     bool     // connected, nothing answered yet
	flushNext bool     // serial: discard stray bytes before the next request
	lastSend  time.Time
	lastRecv  time.Time
	lastUse   time.Time     // connected or sent: for idle_timeout
	frameGap  time.Duration // serial: the silence between frames (3.5 characters)

	wbuf [mbapHeader + 5]byte
}

// newLink returns the (unconnected) link to controller t, run with the options of its devices.
func (m *Modbus) newLink(t controller, o *linkOptions, p *poller) *link {
	l := &link{
		controller: t,
		opts:       o,
		p:          p,
		st:         p.st,
		log:        p.log,
		debug:      p.debug,
		backoff:    resilience.NewBackoff(o.reconnectMin, o.reconnectMax),
		bucket:     resilience.NewBucket(o.rate, o.burst),
	}
	switch t.scheme() {
	case "tls":
		l.tlsConf = m.tls.Clone()
		if l.tlsConf.ServerName == "" {
			l.tlsConf.ServerName = hostOf(t.addr())
		}
	case "file":
		c := m.serial
		c.Address = t.addr()
		l.serial, l.frameGap = &c, m.gap
	}
	return l
}

func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// buffers are what a poll needs besides the link's state. They come from a pool: of thousands
// of links only those polling at the moment hold one.
type buffers struct {
	read    [readBufSize]byte
	ascii   [maxASCIIFrame / 2]byte // decoded ASCII frames
	scratch [2 * maxRegisters]byte  // byte-swapped strings
}

var bufPool = sync.Pool{New: func() any { return new(buffers) }}

// acquire takes the buffers for a poll.
func (l *link) acquire() {
	if l.buf == nil {
		l.buf = bufPool.Get().(*buffers)
	}
}

// release returns the buffers unless the read buffer it holds bytes of a frame still to come.
func (l *link) release() {
	if l.buf != nil && l.r == l.w {
		bufPool.Put(l.buf)
		l.buf, l.r, l.w = nil, 0, 0
	}
}

// errBackoff is returned while a link is not connected: its dial failed just now, or it failed
// earlier and the link waits before dialling again. Its text is fixed when it is made, with times
// rather than waits, so that a page that shows the error later (/healthz) never reads a wait that
// has passed.
type errBackoff struct {
	since time.Time // the first failed dial since the link was last connected
	until time.Time // the next dial
	err   error     // of the last dial
	fresh bool      // the dial failed in this request (not waiting on an earlier failure)
}

func (e *errBackoff) Error() string {
	if e.fresh {
		return fmt.Sprintf("%v (next dial at %s)", e.err, clock(e.until, e.until))
	}
	return fmt.Sprintf("not connected since %s: %v (next dial at %s)", clock(e.since, e.until), e.err, clock(e.until, e.until))
}
func (e *errBackoff) Unwrap() error { return e.err }

// dialError says why a dial failed in plain words ("connection refused by 127.0.0.1:5020"),
// keeping the dialler's error for errors.Is and errors.As.
type dialError struct {
	controller controller
	timeout    time.Duration // of the dial
	err        error
}

func (e *dialError) Error() string {
	switch resilience.Classify(e.err) {
	case resilience.KindRefused:
		return "connection refused by " + e.controller.addr()
	case resilience.KindTimeout:
		return fmt.Sprintf("no connection to %s within %s (timeout_max)", e.controller.addr(), e.timeout)
	}
	if errors.Is(e.err, syscall.EHOSTUNREACH) || errors.Is(e.err, syscall.ENETUNREACH) {
		return e.controller.addr() + " is unreachable (no route)"
	}
	return fmt.Sprintf("connect %s: %v", e.controller, e.err)
}
func (e *dialError) Unwrap() error { return e.err }

// clock formats t to the millisecond in local time, with its date when that is not ref's.
func clock(t, ref time.Time) string {
	if y, m, d := t.Date(); y == ref.Year() && m == ref.Month() && d == ref.Day() {
		return t.Format("15:04:05.000")
	}
	return t.Format("2006-01-02 15:04:05.000")
}

// connect dials the controller unless connected. After a failed dial it fails at once until
// the backoff has passed, so a dead controller costs no time of the devices behind it.
func (l *link) connect(ctx context.Context, d *device) error {
	if l.c != nil {
		return nil
	}
	now := time.Now()
	if now.Before(l.retryAt) {
		return &errBackoff{since: l.downSince, until: l.retryAt, err: l.dialErr}
	}
	c, err := l.dial(ctx, d.opts.timeout.Max)
	if err != nil {
		l.st.connectErrors.Incr()
		if l.downSince.IsZero() {
			l.downSince = now
		}
		l.retryAt = time.Now().Add(l.backoff.Next())
		l.dialErr = &dialError{controller: l.controller, timeout: d.opts.timeout.Max, err: err}
		return &errBackoff{since: l.downSince, until: l.retryAt, err: l.dialErr, fresh: true}
	}
	l.backoff.Reset()
	l.downSince = time.Time{}
	l.c, l.silent, l.flushNext, l.fresh, l.lastUse = c, 0, false, true, time.Now()
	l.mu.Lock()
	l.live = c
	l.mu.Unlock()
	if ctx.Err() != nil { // stopped meanwhile: the wake may have missed c
		c.SetDeadline(time.Unix(1, 0))
	}
	if l.connects > 0 {
		l.st.reconnects.Incr()
	}
	l.connects++
	l.st.connects.Incr()
	if l.debug {
		l.log.Debug("connected", "controller", l.controller.String())
	}
	return l.p.sleep(ctx, d.opts.pauseAfterConn)
}

// dial connects on a goroutine of its own: the net package's dialling (and a TLS handshake)
// needs an 8 KB stack, which a poller would keep until a garbage collection halves it. With
// 10,000 pollers connecting in their first interval that was 40 MB more at the start.
func (l *link) dial(ctx context.Context, timeout time.Duration) (conn, error) {
	type dialed struct {
		c   conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := l.dialHere(ctx, timeout)
		ch <- dialed{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (l *link) dialHere(ctx context.Context, timeout time.Duration) (conn, error) {
	// Keep-alive probes after keepAlive of silence, keepAlive apart, 3 of them: a peer gone
	// without a word is noticed after 4 periods even while no request is under way.
	nd := &net.Dialer{Timeout: timeout, KeepAlive: -1}
	if ka := l.opts.keepAlive; ka > 0 {
		nd.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: ka, Interval: ka, Count: 3}
	}
	switch l.controller.scheme() {
	case "tls":
		return (&tls.Dialer{NetDialer: nd, Config: l.tlsConf}).DialContext(ctx, "tcp", l.controller.addr())
	case "file":
		return openSerial(l.serial)
	}
	return nd.DialContext(ctx, "tcp", l.controller.addr())
}

// close drops the connection (and with it any bytes of half-read frames).
func (l *link) close() {
	if l.c == nil {
		return
	}
	l.mu.Lock()
	l.live = nil
	l.mu.Unlock()
	l.c.Close()
	l.c, l.r, l.w = nil, 0, 0
}

// unblock makes a read or write under way on the connection return at once (Stop). Safe for
// concurrent use.
func (l *link) unblock() {
	l.mu.Lock()
	if l.live != nil {
		l.live.SetDeadline(time.Unix(1, 0))
	}
	l.mu.Unlock()
}

// pace waits before a request of d as the device, the serial line and the request budget ask.
func (l *link) pace(ctx context.Context, d *device) error {
	if d.opts.pauseBetween <= 0 && l.frameGap <= 0 && d.bucket == nil && l.bucket == nil {
		return nil // nothing to wait for, no clock to read
	}
	now := time.Now()
	var wait time.Duration
	if p := d.opts.pauseBetween; p > 0 && !l.lastSend.IsZero() {
		wait = l.lastSend.Add(p).Sub(now)
	}
	if l.frameGap > 0 && !l.lastRecv.IsZero() {
		wait = max(wait, l.lastRecv.Add(l.frameGap).Sub(now))
	}
	if err := l.p.sleep(ctx, wait); err != nil {
		return err
	}
	for _, b := range [2]*resilience.Bucket{d.bucket, l.bucket} {
		for b != nil {
			w := b.Take(time.Now())
			if w == 0 {
				break
			}
			if err := l.p.sleep(ctx, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush discards what a serial line still carries after a lost frame: it reads until the line
// has been quiet for a while (a second at most, should it never be).
func (l *link) flush(ctx context.Context) {
	l.flushNext, l.r, l.w = false, 0, 0
	quiet := max(20*time.Millisecond, 4*l.frameGap)
	for end := time.Now().Add(time.Second); ctx.Err() == nil && time.Now().Before(end); {
		l.c.SetDeadline(time.Now().Add(quiet))
		if _, err := l.c.Read(l.buf.read[:]); err != nil {
			return
		}
	}
}

// exchange sends read i of d through route rt and returns the answer's data (valid until the
// next exchange) and when it arrived. The answer is awaited for rt's adaptive timeout; a retry
// never waits past the device's next poll. The event loop (loop_linux.go) runs the same steps
// without blocking: prepare, send, then answer when bytes came and received.
func (l *link) exchange(ctx context.Context, d *device, rt *route, i int, retry bool) ([]byte, time.Time, error) {
	sent, deadline, err := l.prepare(ctx, d, rt, retry)
	if err != nil {
		return nil, time.Time{}, err
	}
	// A read deadline only: a request is a dozen bytes and a connection that stays silent is
	// closed long before its send buffer could fill, so a write never waits.
	l.c.SetReadDeadline(deadline)
	if err := l.send(d, rt, i, sent); err != nil {
		return nil, time.Time{}, err
	}
	data, err := l.answer(d, &d.reqs[i])
	return l.received(d, rt, sent, data, err)
}

// prepare readies the link for a request of d: connected, paced, flushed. It returns when the
// request is sent and the deadline of its answer.
func (l *link) prepare(ctx context.Context, d *device, rt *route, retry bool) (sent, deadline time.Time, err error) {
	if err := l.connect(ctx, d); err != nil {
		return sent, deadline, err
	}
	if err := l.pace(ctx, d); err != nil {
		return sent, deadline, err
	}
	// The poll's buffers, taken here and not before the dial: at the start of 10,000 devices
	// thousands of dials wait at once on a busy machine, and held ~10 MB of buffers meanwhile.
	l.acquire()
	if l.flushNext {
		l.flush(ctx)
	}
	if err := ctx.Err(); err != nil {
		return sent, deadline, err
	}
	sent = time.Now()
	deadline = sent.Add(rt.timeout.Current())
	if retry && deadline.After(d.deadline) {
		deadline = d.deadline
	}
	return sent, deadline, nil
}

// send writes read i of d; a failed write closes the connection.
func (l *link) send(d *device, rt *route, i int, sent time.Time) error {
	r := &d.reqs[i]
	var req []byte
	if l.controller.framing == frameMBAP {
		l.tid++
		req = l.mbapRequest(l.tid, d.unit, r)
	} else {
		req = rt.frames[i]
	}
	l.st.requests.Incr()
	d.health.Request()
	l.stray = 0
	if _, err := l.c.Write(req); err != nil {
		l.close()
		return err
	}
	l.lastSend, l.lastUse = sent, sent
	return nil
}

// received takes the outcome of answer (or a timeout of the event loop): the round trip is
// observed, or the failure decides what becomes of the connection.
func (l *link) received(d *device, rt *route, sent time.Time, data []byte, err error) ([]byte, time.Time, error) {
	at := time.Now()
	if err != nil {
		if l.fresh && l.controller.scheme() == "tls" && resilience.Classify(err) == resilience.KindReset {
			// TLS 1.3 servers refuse a client certificate after the handshake, often by
			// just closing the connection.
			err = fmt.Errorf("%w (the server closed the connection right after the TLS handshake: does it accept the client certificate?)", err)
		}
		l.failed(err)
		return nil, at, err
	}
	l.silent, l.lastRecv, l.fresh = 0, at, false
	rtt := at.Sub(sent)
	rt.timeout.Observe(rtt)
	d.health.Answered(rtt)
	return data, at, nil
}

// failed decides what a failed exchange means for the connection.
func (l *link) failed(err error) {
	switch {
	case resilience.Classify(err) == resilience.KindTimeout:
		l.st.timeouts.Incr()
		l.silent++
		switch {
		case l.controller.scheme() == "file":
			l.flushNext = true // a late answer may still be on its way
		case l.controller.framing != frameMBAP:
			// RTU and ASCII carry no transaction id: a late answer could be taken for the
			// next one. Start over on a fresh connection.
			l.close()
		case l.silent >= 3:
			// MBAP keeps its framing across a timeout (late answers are dropped by their
			// transaction id), but a link that stays silent is likely half-open.
			l.close()
		}
	case errors.Is(err, errStreamLost), errors.Is(err, errBadChecksum) && l.controller.framing == frameRTU:
		if l.controller.scheme() == "file" {
			l.flushNext = true
		} else {
			l.close()
		}
	case errors.As(err, new(*frameError)), errors.As(err, new(*ExceptionError)):
		// the stream is still framed: keep it
	default:
		l.close() // reset, closed, broken pipe
	}
}

// mbapRequest writes a read request ADU into the link's write buffer.
func (l *link) mbapRequest(tid uint16, unit byte, r *request) []byte {
	b := l.wbuf[:]
	binary.BigEndian.PutUint16(b[0:], tid)
	binary.BigEndian.PutUint16(b[2:], 0) // protocol id
	binary.BigEndian.PutUint16(b[4:], 6) // unit id + PDU
	b[6] = unit
	b[7] = byte(r.kind)
	binary.BigEndian.PutUint16(b[8:], r.addr)
	binary.BigEndian.PutUint16(b[10:], r.count)
	return b
}

// answer reads frames until the answer to r arrives, dropping (and counting, in l.stray) late
// answers to earlier requests and answers of other units.
func (l *link) answer(d *device, r *request) ([]byte, error) {
	fc := byte(r.kind)
	for {
		frame, err := l.next()
		if err != nil {
			if err != errWouldBlock {
				err = l.strayErr(err)
			}
			return nil, err
		}
		var unit byte
		var pdu []byte
		switch l.controller.framing {
		case frameMBAP:
			if tid := binary.BigEndian.Uint16(frame); tid != l.tid {
				l.st.wrongTID.Incr()
				l.stray++
				if l.debug {
					l.log.Debug("late answer dropped", "device", d.name, "tid", tid, "want", l.tid)
				}
				continue
			}
			unit, pdu = frame[6], frame[mbapHeader:]
			if unit != d.unit {
				l.st.wrongUnit.Incr()
				return nil, frameErr(errWrongUnit, "answer of unit %d to a request to unit %d", unit, d.unit)
			}
		case frameRTU:
			if unit, pdu, err = unpackRTU(frame); err != nil {
				l.st.badChecksums.Incr()
				return nil, err
			}
		case frameASCII:
			if unit, pdu, err = unpackASCII(frame, l.buf.ascii[:]); err != nil {
				l.st.badChecksums.Incr()
				return nil, err
			}
		}
		if unit != d.unit { // RTU, ASCII: an answer of another unit, late
			l.st.wrongUnit.Incr()
			l.stray++
			continue
		}
		data, err := readData(pdu, fc, r.dataBytes())
		if err != nil {
			var exc *ExceptionError
			switch {
			case errors.As(err, &exc):
				l.st.exceptions.Incr()
			case errors.Is(err, errWrongFunc):
				l.st.wrongFunc.Incr()
			default:
				l.st.shortFrames.Incr()
			}
		}
		return data, err
	}
}

// strayErr is err of a read that awaited an answer, saying how many answers to other requests
// were dropped meanwhile.
func (l *link) strayErr(err error) error {
	if l.stray > 0 {
		err = fmt.Errorf("%w (meanwhile %d %s of other requests dropped)", err, l.stray, plural(l.stray, "answer"))
	}
	return err
}

// errWouldBlock is the event loop's read of a connection that has no bytes for now
// (loop_linux.go): answer returns it and is called again when bytes come.
var errWouldBlock = errors.New("no bytes yet")

// next returns the next whole frame from the connection (valid until the next read).
func (l *link) next() ([]byte, error) {
	for {
		var n int
		var err error
		b := l.buf.read[l.r:l.w]
		switch l.controller.framing {
		case frameMBAP:
			n, err = splitMBAP(b)
		case frameRTU:
			n, err = splitRTU(b)
		default:
			n, err = splitASCII(b)
		}
		if err != nil {
			l.st.streamLost.Incr()
			return nil, err
		}
		if n > 0 {
			l.r += n
			if l.r == l.w {
				l.r, l.w = 0, 0 // the frame's bytes stay valid until the next read
			}
			return b[:n], nil
		}
		if l.w == len(l.buf.read) { // make room: move the partial frame to the front
			l.w = copy(l.buf.read[:], l.buf.read[l.r:l.w])
			l.r = 0
		}
		k, err := l.c.Read(l.buf.read[l.w:])
		l.w += k
		if k > 0 {
			l.silent = 0
			continue
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, err
	}
}
