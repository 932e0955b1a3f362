package modbus

import (
	"context"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tagpipe/tagpipe/models"
)

// The event loop is hand-written on epoll (golang.org/x/sys/unix): gnet v2's client mode was
// measured slower than the goroutine floor, and io_uring has no maintained Go library and needs
// system calls that the packaged systemd unit's SystemCallFilter=@system-service refuses
// (docs/scale.md).

// eventLoop owns the connections of its devices while they are polled as planned.
type eventLoop struct {
	m      *Modbus
	epfd   int
	wakeFD int // eventfd: a device handed back, or stop
	devs   []*loopDev
	due    []dueDev   // idle devices, a min-heap by next poll
	epoch  time.Time  // of the heap's keys
	flight []*loopDev // devices awaiting an answer

	acc loopAcc // what the polls on the loop emit, handed over once a round

	polled atomic.Int64 // polls that ended on the loop
	handed atomic.Int64 // polls handed over to a goroutine

	free []int // slots of devs given up (cluster mode), for the next devices added

	mu      sync.Mutex
	back    []*loopDev // handed back by their goroutines
	adds    []*loopDev // cluster mode: units started here, for the loop to take
	removes []*loopDev // cluster mode: units stopped, for the loop to give up
	closed  bool       // the loop has ended: a goroutine closes its poller itself
}

// loopDev is a device of the loop and where its poll is.
type loopDev struct {
	idx    int
	p      *poller
	d      *device
	l      *link
	r      *route
	due    time.Time // of the poll under way
	i      int       // its read awaiting an answer
	ans    int       // reads answered in this poll
	sent   time.Time
	until  time.Time // the answer's deadline
	flying bool
	listed bool // in flight
	event  bool // epoll reported the connection while no answer was awaited
	away   bool // a goroutine has it

	// Cluster mode (units.go), under eventLoop.mu: the unit is stopped (removing), and the
	// cancel of the context of a goroutine that has its poll. open (cluster mode only) is done
	// when its connection is closed (shut): by the loop, or by the goroutine that has it.
	removing bool
	cancel   context.CancelFunc
	attached bool
	open     sync.WaitGroup
}

// shut closes ld's connections, for good.
func (ld *loopDev) shut() {
	ld.p.close()
	if ld.attached {
		ld.open.Done()
	}
}

// wait returns when the connections of a device attached in cluster mode are closed.
func (ld *loopDev) wait() { ld.open.Wait() }

const wakeData = ^uint64(0)

// acc takes the metrics of the polls that end on the loop.
func newEventLoop(m *Modbus, acc models.Accumulator, pollers []*poller) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setData(&ev, wakeData)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	lp := &eventLoop{m: m, epfd: epfd, wakeFD: wfd}
	lp.acc.Accumulator = acc
	lp.acc.batch, _ = acc.(models.BatchAccumulator)
	for i, p := range pollers {
		lp.devs = append(lp.devs, newLoopDev(i, p))
	}
	return lp, nil
}

func newLoopDev(idx int, p *poller) *loopDev {
	d := p.devices[0]
	return &loopDev{idx: idx, p: p, d: d, l: p.links[0], r: &d.routes[0]}
}

// attach gives the loop a loopable poller started in cluster mode: its first poll is the first
// of its phase after start. detach stops it, and its wait returns when its connection is
// closed. It returns nil when the loop has ended.
func (lp *eventLoop) attach(p *poller, start time.Time) *loopDev {
	ld := newLoopDev(-1, p)
	ld.attached = true
	ld.open.Add(1)
	ld.d.next = nextSlot(start, ld.d.phase, p.interval)
	lp.mu.Lock()
	if lp.closed {
		lp.mu.Unlock()
		return nil
	}
	lp.adds = append(lp.adds, ld)
	lp.mu.Unlock()
	lp.wake()
	return ld
}

// detach asks the loop to give ld up and close its connection; a goroutine that has its poll
// ends it, and closes the connection itself.
func (lp *eventLoop) detach(ld *loopDev) {
	lp.mu.Lock()
	ld.removing = true
	if ld.cancel != nil {
		ld.cancel()
	}
	lp.removes = append(lp.removes, ld)
	lp.mu.Unlock()
	lp.wake()
}

// setData stores v in an event's data (the Fd and Pad fields of x/sys's EpollEvent).
func setData(ev *unix.EpollEvent, v uint64) {
	ev.Fd, ev.Pad = int32(uint32(v)), int32(uint32(v>>32))
}

func dataOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (lp *eventLoop) wake() {
	var one = [8]byte{1}
	unix.Write(lp.wakeFD, one[:])
}

// run polls the loop's devices until ctx is done, then closes their connections (those a
// goroutine has are closed by it).
func (lp *eventLoop) run(ctx context.Context, start time.Time) {
	stop := context.AfterFunc(ctx, lp.wake)
	defer stop()
	defer unix.Close(lp.wakeFD)
	defer unix.Close(lp.epfd)
	lp.epoch = start
	for _, ld := range lp.devs {
		ld.d.next = nextSlot(start, ld.d.phase, ld.p.interval)
		lp.push(ld)
	}
	events := make([]unix.EpollEvent, 256)
	for ctx.Err() == nil {
		now := time.Now()
		for key := lp.key(now); len(lp.due) > 0 && lp.due[0].at <= key; {
			lp.start(ctx, lp.pop())
		}
		next := time.Time{}
		if len(lp.due) > 0 {
			next = lp.due[0].ld.d.next
		}
		for j := 0; j < len(lp.flight); j++ {
			ld := lp.flight[j]
			if !ld.flying {
				continue
			}
			if !ld.until.After(now) {
				lp.timeout(ctx, ld)
				continue
			}
			if next.IsZero() || ld.until.Before(next) {
				next = ld.until
			}
		}
		lp.compact()
		lp.acc.flush()
		wait := -1
		if !next.IsZero() {
			wait = int((time.Until(next) + time.Millisecond - 1) / time.Millisecond)
			wait = max(wait, 0)
		}
		n, err := unix.EpollWait(lp.epfd, events, wait)
		if err != nil && err != unix.EINTR {
			lp.m.Log.Error("event loop: epoll_wait failed: polling stops", "error", err)
			break
		}
		for k := range max(n, 0) {
			v := dataOf(&events[k])
			if v == wakeData {
				lp.handBack()
				continue
			}
			ld := lp.devs[v]
			if ld == nil || ld.away {
				continue // given up, or its goroutine's connection now: a stale event
			}
			if !ld.flying {
				ld.event = true
				continue
			}
			lp.readable(ctx, ld)
		}
	}
	lp.acc.flush()
	lp.mu.Lock()
	lp.closed = true
	back, adds := lp.back, lp.adds
	lp.back, lp.adds = nil, nil
	lp.mu.Unlock()
	for _, ld := range back { // handed back, not taken yet: the loop's again
		ld.away = false
	}
	for _, ld := range slices.Concat(lp.devs, adds) {
		if ld != nil && !ld.away {
			ld.shut()
		}
	}
}

// start begins d's poll due now. A poll that cannot go as planned from the start (not
// connected, its breaker open) is handed over whole.
func (lp *eventLoop) start(ctx context.Context, ld *loopDev) {
	d, p, l := ld.d, ld.p, ld.l
	ld.due = d.next
	p.begin(d, ld.due)
	if _, ok := l.c.(*loopConn); !ok || !ld.r.breaker.OpenUntil().IsZero() {
		lp.handOver(ctx, ld, nil)
		return
	}
	if !allow(ld.r) {
		lp.done(ld, p.end(d, -1, nil), time.Now())
		return
	}
	d.cur = 0
	l.acquire()
	ld.ans = 0
	lp.send(ctx, ld, 0)
}

// send sends read i of the poll under way.
func (lp *eventLoop) send(ctx context.Context, ld *loopDev, i int) {
	d, l := ld.d, ld.l
	d.retry.Reset() // as poller.read does
	ld.i = i
	sent, until, err := l.prepare(ctx, d, ld.r, false)
	if err == nil {
		err = l.send(d, ld.r, i, sent)
	}
	if err != nil {
		lp.handOver(ctx, ld, &resume{i: i, answered: ld.ans, first: exchanged{err: err}})
		return
	}
	ld.sent, ld.until, ld.flying = sent, until, true
	if !ld.listed {
		ld.listed = true
		lp.flight = append(lp.flight, ld)
	}
	if ld.event { // the connection had news before the request: see now
		ld.event = false
		lp.readable(ctx, ld)
	}
}

// readable takes what the connection of a device awaiting an answer has.
func (lp *eventLoop) readable(ctx context.Context, ld *loopDev) {
	d, l := ld.d, ld.l
	data, err := l.answer(d, &d.reqs[ld.i])
	if err == errWouldBlock {
		return
	}
	ld.flying = false
	data, at, err := l.received(d, ld.r, ld.sent, data, err)
	if err != nil {
		lp.handOver(ctx, ld, &resume{i: ld.i, answered: ld.ans, first: exchanged{data: data, at: at, err: err}})
		return
	}
	ld.ans++
	d.took(ld.i, data, at, l)
	if ld.i+1 < len(d.reqs) {
		lp.send(ctx, ld, ld.i+1)
		return
	}
	// every read answered: the end of pollRoute and of poll
	err = ld.p.routeDone(d, l, ld.ans, false, nil)
	l.release()
	ld.p.routeOutcome(d, ld.r, err, at)
	lp.done(ld, ld.p.endAt(d, 0, err, at, &lp.acc), at)
}

// timeout ends the wait for an answer that did not come in time, as a read deadline would.
func (lp *eventLoop) timeout(ctx context.Context, ld *loopDev) {
	ld.flying = false
	lc := ld.l.c.(*loopConn)
	err := ld.l.strayErr(&net.OpError{Op: "read", Net: "tcp", Source: lc.laddr, Addr: lc.raddr, Err: os.ErrDeadlineExceeded})
	data, at, err := ld.l.received(ld.d, ld.r, ld.sent, nil, err)
	lp.handOver(ctx, ld, &resume{i: ld.i, answered: ld.ans, first: exchanged{data: data, at: at, err: err}})
}

// done schedules the device's next poll after one that ended on the loop at now (the time its
// last answer came: the loop reads the clock once an answer).
func (lp *eventLoop) done(ld *loopDev, answered bool, now time.Time) {
	lp.polled.Add(1)
	ld.d.next = ld.p.schedule(ld.d, ld.due, now, answered, false) // connects are handed over
	ld.p.closeIdle(now, ld.d.next)
	lp.push(ld)
}

// handOver gives the poll under way to a goroutine of its own, which runs the rest as the
// goroutine transport does (retries, failover, breakers) on a net.Conn, and gives the device
// back when its next poll is scheduled. rs nil: the whole poll after begin.
func (lp *eventLoop) handOver(ctx context.Context, ld *loopDev, rs *resume) {
	ld.away, ld.flying, ld.event = true, false, false
	lp.handed.Add(1)
	// A context of the poll's own, which detach cancels (cluster mode), made only while a
	// goroutine has it.
	ctx, cancel := context.WithCancel(ctx)
	lp.mu.Lock()
	ld.cancel = cancel
	if ld.removing {
		cancel()
	}
	lp.mu.Unlock()
	lp.m.wg.Go(func() {
		defer cancel()
		stop := context.AfterFunc(ctx, ld.p.wake)
		defer stop()
		l, p, d := ld.l, ld.p, ld.d
		if lc, ok := l.c.(*loopConn); ok {
			lp.toNet(l, lc)
		}
		unconnected := p.unconnected()
		answered := p.pollFrom(ctx, d, rs)
		if ctx.Err() == nil {
			now := time.Now()
			d.next = p.schedule(d, ld.due, now, answered, p.unconnected() < unconnected)
			p.closeIdle(now, d.next)
			if c, ok := l.c.(*net.TCPConn); ok {
				lp.toLoop(ld, c)
			}
		}
		lp.mu.Lock()
		closed := lp.closed || ctx.Err() != nil || ld.removing
		if !closed {
			lp.back = append(lp.back, ld)
		}
		ld.cancel = nil
		lp.mu.Unlock()
		if closed {
			ld.shut()
			return
		}
		lp.wake()
	})
}

// handBack takes the devices their goroutines gave back.
func (lp *eventLoop) handBack() {
	var b [8]byte
	unix.Read(lp.wakeFD, b[:])
	lp.mu.Lock()
	back, adds, removes := lp.back, lp.adds, lp.removes
	lp.back, lp.adds, lp.removes = nil, nil, nil
	lp.mu.Unlock()
	for _, ld := range back {
		ld.away = false
		lp.push(ld)
	}
	for _, ld := range adds { // before the removes: a unit stopped after it started
		if n := len(lp.free); n > 0 {
			ld.idx, lp.free = lp.free[n-1], lp.free[:n-1]
			lp.devs[ld.idx] = ld
		} else {
			ld.idx = len(lp.devs)
			lp.devs = append(lp.devs, ld)
		}
		lp.push(ld)
	}
	if len(removes) > 0 {
		lp.remove(removes)
	}
}

// remove gives up the devices of units stopped (cluster mode): those on the loop have their
// connection closed now, and their slots are taken again by later devices (an event still
// pending for one finds no device, or one not awaiting an answer, which ignores it); those a
// goroutine has are closed by it, and their slots are not taken again (the goroutine may still
// watch the connection under it for a moment).
func (lp *eventLoop) remove(removes []*loopDev) {
	for _, ld := range removes {
		lp.devs[ld.idx] = nil
		if ld.away {
			continue // its goroutine ends the poll and closes the connection
		}
		lp.free = append(lp.free, ld.idx)
		ld.flying = false // compact drops it from flight
		ld.shut()
	}
	due := lp.due[:0]
	for _, e := range lp.due {
		if lp.devs[e.ld.idx] == e.ld {
			due = append(due, e)
		}
	}
	clear(lp.due[len(due):])
	lp.due = due
	for j := len(due)/2 - 1; j >= 0; j-- {
		lp.down(j)
	}
}

// toLoop moves a connection a goroutine made (or kept) to the loop: a duplicate of its socket
// is watched by the loop's epoll, and the net.Conn closed, so that the runtime's poller no
// longer hears of it. Failing that the connection stays a net.Conn, and the device's polls go
// to goroutines until it is made again.
func (lp *eventLoop) toLoop(ld *loopDev, c *net.TCPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	fd := -1
	if cerr := raw.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil || err != nil {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET}
	setData(&ev, uint64(ld.idx))
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return
	}
	lc := &loopConn{fd: fd, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	ld.l.setConn(lc)
	c.Close()
}

// toNet moves a connection of the loop back to a net.Conn for a goroutine. The bytes of a
// frame read so far stay in the link's buffer.
func (lp *eventLoop) toNet(l *link, lc *loopConn) {
	unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, lc.fd, nil)
	f := os.NewFile(uintptr(lc.fd), "modbus")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil { // as if the connection broke: the goroutine dials again
		l.setConn(nil)
		l.r, l.w = 0, 0
		return
	}
	l.setConn(c)
}

// setConn replaces the link's connection (nil: none) without closing the one it had.
func (l *link) setConn(c conn) {
	l.c = c
	l.mu.Lock()
	l.live = c
	l.mu.Unlock()
}

// dueDev is an entry of the heap of idle devices: its key is the device's next poll as the
// monotonic time since the loop's epoch, kept beside it so that the heap's comparisons read
// neither the device nor a time.Time (the heap was 6% of the loop's CPU at 10,000 devices).
type dueDev struct {
	at int64
	ld *loopDev
}

func (lp *eventLoop) key(t time.Time) int64 { return int64(t.Sub(lp.epoch)) }

func (lp *eventLoop) push(ld *loopDev) {
	lp.due = append(lp.due, dueDev{at: lp.key(ld.d.next), ld: ld})
	h := lp.due
	for j := len(h) - 1; j > 0; {
		parent := (j - 1) / 2
		if h[j].at >= h[parent].at {
			break
		}
		h[j], h[parent] = h[parent], h[j]
		j = parent
	}
}

func (lp *eventLoop) pop() *loopDev {
	h := lp.due
	top := h[0].ld
	last := len(h) - 1
	h[0] = h[last]
	h[last] = dueDev{}
	lp.due = h[:last]
	lp.down(0)
	return top
}

// down moves the device at j of the due heap down to its place.
func (lp *eventLoop) down(j int) {
	h := lp.due
	for {
		c := 2*j + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1].at < h[c].at {
			c++
		}
		if h[c].at >= h[j].at {
			break
		}
		h[j], h[c] = h[c], h[j]
		j = c
	}
}

// compact drops the devices no longer awaiting an answer from flight.
func (lp *eventLoop) compact() {
	n := 0
	for _, ld := range lp.flight {
		if ld.flying {
			lp.flight[n] = ld
			n++
		} else {
			ld.listed = false
		}
	}
	clear(lp.flight[n:])
	lp.flight = lp.flight[:n]
}

// loopAcc gathers the metrics of the polls that end on the loop in a round (the devices whose
// answers one epoll_wait reported), and hands them to the agent in one step before the loop
// waits again: the agent's pipeline is then woken once a round, not once a metric (a channel
// send and often a futex wake each, 20,000 a second at 10,000 devices). Errors go straight on.
type loopAcc struct {
	models.Accumulator
	batch models.BatchAccumulator // the same, when it takes batches
	out   []*models.Metric
}

func (a *loopAcc) AddMetric(m *models.Metric) { a.out = append(a.out, m) }

func (a *loopAcc) flush() {
	if len(a.out) == 0 {
		return
	}
	if a.batch != nil {
		a.batch.AddMetrics(a.out)
	} else {
		for _, m := range a.out {
			a.Accumulator.AddMetric(m)
		}
	}
	clear(a.out)
	a.out = a.out[:0]
}

// loopConn is a socket of the event loop: reads never wait (errWouldBlock), deadlines are the
// loop's. Its errors are those a net.Conn gives.
type loopConn struct {
	fd           int
	laddr, raddr net.Addr
}

func (c *loopConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError("read", err)}
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *loopConn) Write(b []byte) (int, error) {
	for {
		n, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &net.OpError{Op: "write", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError("write", err)}
		}
		if n < len(b) { // a dozen bytes into an empty send buffer
			return n, &net.OpError{Op: "write", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: io.ErrShortWrite}
		}
		return n, nil
	}
}

// Close closes the socket, which leaves the loop's epoll with it.
func (c *loopConn) Close() error {
	if err := unix.Close(c.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// SetDeadline and SetReadDeadline do nothing: the loop keeps each answer's deadline, and at Stop
// its goroutine ends by the context.
func (c *loopConn) SetDeadline(time.Time) error     { return nil }
func (c *loopConn) SetReadDeadline(time.Time) error { return nil }
