package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// phase spreads device i of n evenly over the interval, in 10 ms slots so that devices that
// fall together wake the scheduler once.
func phase(i, n int, interval time.Duration) time.Duration {
	p := time.Duration(int64(interval) * int64(i) / int64(n))
	if interval >= 100*time.Millisecond {
		p = p.Truncate(10 * time.Millisecond)
	}
	return p
}

// nextSlot is the first time at or after t that is phase past a multiple of interval since the
// Unix epoch: polls keep their place in the interval across restarts, and their schedule can be
// known from outside (cmd/loadtest checks lateness against it).
func nextSlot(t time.Time, phase, interval time.Duration) time.Time {
	iv := int64(interval)
	x := t.UnixNano() - int64(phase)
	k := x / iv
	if k*iv < x {
		k++
	}
	return time.Unix(0, k*iv+int64(phase))
}

// poller is one goroutine: the connection to one controller (a device, a gateway whose units
// take turns, a serial line), or the connections to several controllers that devices tie
// together with backup_controllers, and the devices polled through them, in turn. Only its
// goroutine touches it and everything it holds.
type poller struct {
	links    []*link
	devices  []*device
	interval time.Duration
	timer    *time.Timer
	acc      models.Accumulator
	st       *stats
	log      *slog.Logger
	debug    bool
	// onErr takes a poll's error instead of acc (Gather returns them); nil: reported to acc.
	onErr func(error)

	overrunLogged time.Time
}

// buildPollers makes the run-time state of every device and groups the devices into pollers:
// devices whose controllers (backups included) overlap share one. Links (connections) are made
// per controller; nothing is dialled yet.
func (m *Modbus) buildPollers(st *stats, interval time.Duration, acc models.Accumulator) ([]*poller, []*device) {
	debug := m.Log.Enabled(context.Background(), slog.LevelDebug)
	// Union-find over controllers: a device joins its controller and its backups.
	parent := map[string]string{}
	var find func(string) string
	find = func(k string) string {
		p, ok := parent[k]
		if !ok || p == k {
			parent[k] = k
			return k
		}
		r := find(p)
		parent[k] = r
		return r
	}
	for _, spec := range m.devices {
		a := find(spec.target.String())
		for _, b := range spec.backups {
			if r := find(b.String()); r != a {
				parent[r] = a
			}
		}
	}
	byRoot := map[string]*poller{}
	links := map[string]*link{}
	var out []*poller
	all := make([]*device, 0, len(m.devices))
	for i, spec := range m.devices {
		root := find(spec.target.String())
		p := byRoot[root]
		if p == nil {
			p = &poller{interval: interval, timer: time.NewTimer(time.Hour), acc: acc, st: st, log: m.Log, debug: debug}
			p.timer.Stop()
			byRoot[root] = p
			out = append(out, p)
		}
		linkOf := func(t target) *link {
			l := links[t.String()]
			if l == nil {
				l = m.newLink(t, &spec.opts.line, p)
				links[t.String()] = l
				p.links = append(p.links, l)
			}
			return l
		}
		d := newDevice(spec, p, linkOf)
		d.phase = phase(i, len(m.devices), interval)
		p.devices = append(p.devices, d)
		all = append(all, d)
	}
	return out, all
}

// sleep waits d on the poller's timer, or until ctx is done. It receives from the timer alone,
// without a select, and a done ctx fires the timer (wakeOnDone): a parked poller keeps a small
// stack, and 10,000 of them wake cheaper.
func (p *poller) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	p.timer.Reset(d)
	if err := ctx.Err(); err != nil { // done before the Reset: its firing was undone
		p.timer.Stop()
		return err
	}
	<-p.timer.C
	return ctx.Err()
}

// close drops every connection.
func (p *poller) close() {
	for _, l := range p.links {
		l.close()
	}
}

// run polls the devices, each at its phase of every interval (aligned to the Unix epoch), until
// ctx is done. A poll that overruns delays the next ones of this poller (its devices take
// turns), never another poller's. A device whose every controller has an open breaker is not
// woken until the first cool-down ends.
func (p *poller) run(ctx context.Context, start time.Time) {
	defer p.close()
	for _, d := range p.devices {
		d.next = nextSlot(start, d.phase, p.interval)
	}
	for {
		d := p.devices[0]
		for _, x := range p.devices[1:] {
			if x.next.Before(d.next) {
				d = x
			}
		}
		p.closeIdle(time.Now(), d.next)
		if err := p.sleep(ctx, time.Until(d.next)); err != nil {
			return
		}
		due := d.next
		answered := p.poll(ctx, d, due)
		if ctx.Err() != nil {
			return
		}
		d.next = p.schedule(d, due, answered)
	}
}

// wake makes the poller return from what it waits on: its timer fires, and a read or write
// under way on one of its connections returns (Stop). Safe for concurrent use.
func (p *poller) wake() {
	p.timer.Reset(0)
	for _, l := range p.links {
		l.unblock()
	}
}

// wakeOnDone wakes every poller when ctx is done: one context watch for all (each is an entry
// in ctx's children, 300 bytes at 10,000 devices each with a poller of its own).
func wakeOnDone(ctx context.Context, pollers []*poller) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		for _, p := range pollers {
			p.wake()
		}
	})
}

// schedule returns d's next poll after the one due at due.
func (p *poller) schedule(d *device, due time.Time, answered bool) time.Time {
	iv := p.interval
	now := time.Now()
	next := due.Add(iv)
	if !next.After(now) { // overran: skip the missed polls, keep the phase
		missed := now.Sub(next)/iv + 1
		next = next.Add(missed * iv)
		p.st.overruns.Add(int64(missed))
		// A poll that failed overran because of its timeouts, which are reported already.
		if answered && now.Sub(p.overrunLogged) >= errorRepeat {
			p.overrunLogged = now
			p.log.Warn("polls skipped: the devices of this connection take longer than the interval",
				"controller", d.routes[d.cur].link.target.String(), "device", d.name, "skipped", int64(missed), "interval", iv)
		}
	}
	if until := d.openUntil(); until.After(next) {
		// Every breaker open: sleep through the cool-down. The polls it skips are counted now.
		wake := nextSlot(until, d.phase, iv)
		p.st.breakerSkips.Add(int64(wake.Sub(next) / iv))
		next = wake
	}
	return next
}

// closeIdle closes the connections that were not used for their idle_timeout or will not be
// before the next wake-up is that far away.
func (p *poller) closeIdle(now, wake time.Time) {
	for _, l := range p.links {
		idle := l.opts.idleTimeout
		if l.c == nil || idle <= 0 {
			continue
		}
		if wake.Sub(now) > idle || now.Sub(l.lastUse) > idle {
			if p.debug {
				p.log.Debug("idle connection closed", "controller", l.target.String())
			}
			l.close()
			p.st.idleCloses.Incr()
		}
	}
}

// poll polls d once, due at due: through its controller, or else the first backup whose
// breaker lets it; when one gives no answer at all and there is time before the next poll,
// through the next. It hands over what was read (and the stale values asked for) and d's
// health, and reports whether the device answered.
func (p *poller) poll(ctx context.Context, d *device, due time.Time) bool {
	p.st.polls.Incr()
	d.deadline = due.Add(p.interval)
	d.answered = 0
	used := -1
	for ri := range d.routes {
		r := &d.routes[ri]
		if until := r.breaker.OpenUntil(); !until.IsZero() && time.Now().Before(until) {
			continue
		}
		if r.breaker.Allow() != nil { // half-open, its probes taken
			continue
		}
		used, d.cur = ri, ri
		err := p.pollRoute(ctx, d, ri)
		if ctx.Err() != nil {
			r.breaker.Done(nil) // stopping: not the device's fault
			return false
		}
		r.breaker.Done(err)
		now := time.Now()
		switch {
		case err != nil:
			p.fail(d, r, err, now)
		case r.lastErr != "":
			p.log.Info("device answers again", "device", d.name, "controller", r.link.target.String())
			r.lastErr, r.repeats = "", 0
		}
		if err == nil || !errors.Is(err, errNoAnswer) || !now.Before(d.deadline) {
			break
		}
	}
	if used < 0 {
		p.st.breakerSkips.Incr()
		return false
	}
	if used > 0 {
		p.st.backupPolls.Incr()
	}
	now := time.Now()
	d.polled(now)
	d.emit(p.acc, now, p.st)
	if d.opts.health {
		d.emitHealth(p.acc, &d.routes[d.cur], now)
	}
	return d.answered > 0
}

// fail reports a failed poll of d through r: to onErr (Gather), or to acc once per
// errorRepeat while the same error lasts. Errors are the same when the same requests failed in
// the same way (the text may differ: a new connection has a new local port).
func (p *poller) fail(d *device, r *route, err error, now time.Time) {
	d.failed(err, now)
	if p.onErr != nil {
		p.onErr(err)
		return
	}
	key := errorKey(err)
	if key == r.lastErr && now.Sub(r.lastErrAt) < errorRepeat {
		r.repeats++
		return
	}
	if key == r.lastErr && r.repeats > 0 {
		err = fmt.Errorf("%w (%d times in %s)", err, r.repeats+1, now.Sub(r.lastErrAt).Round(time.Second))
	}
	p.acc.AddError(err)
	r.lastErr, r.lastErrAt, r.repeats = key, now, 0
}

// Start implements models.ServiceInput: one goroutine per poller, until Stop.
func (m *Modbus) Start(ctx context.Context, acc models.Accumulator) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		return errors.New("already started")
	}
	interval := m.interval
	if interval <= 0 {
		interval = time.Second
	}
	pollers, devices := m.buildPollers(m.stats(), interval, acc)
	ctx, m.cancel = context.WithCancel(ctx)
	wakeOnDone(ctx, pollers) // runs once ctx is done
	start := time.Now()
	m.running.Store(&running{devices: devices, started: start, stale: models.StaleIntervals * interval})
	links := 0
	for _, p := range pollers {
		links += len(p.links)
		m.wg.Go(func() { p.run(ctx, start) })
	}
	m.Log.Info("polling", "devices", len(m.devices), "connections", links, "interval", interval)
	return nil
}

// Stop implements models.ServiceInput: it cancels every poll and returns when every goroutine
// has ended and every connection is closed.
func (m *Modbus) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.wg.Wait()
	m.cancel = nil
	m.running.Store(nil)
	if m.st != nil {
		m.st.set.Unregister()
		m.st = nil
	}
}

// Gather implements models.Input (--test, --once): every device is polled once, pollers in
// parallel, and the connections closed again. The errors name device and request.
func (m *Modbus) Gather(ctx context.Context, acc models.Accumulator) error {
	m.mu.Lock()
	st := m.stats()
	m.mu.Unlock()
	interval := m.interval
	if interval <= 0 {
		interval = time.Second
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	pollers, _ := m.buildPollers(st, interval, acc)
	defer wakeOnDone(ctx, pollers)()
	for _, p := range pollers {
		p.onErr = func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		wg.Go(func() {
			defer p.close()
			for _, d := range p.devices {
				p.poll(ctx, d, time.Now())
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
