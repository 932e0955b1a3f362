package modbus

import (
	"context"
	"hash/fnv"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Phase is the offset in the interval at which a device polls: a hash of its identity — its
// controller's URL as written ("tcp://10.0.0.5:502"), its unit id and its name — so that adding
// or removing a device (a reload) moves no other device, and a device keeps its phase on
// whichever agent polls it (cluster mode). The offset is in 10 ms slots when the interval is
// 100 ms or more, so that the devices of one slot wake the scheduler once; a hash spreads many
// devices evenly over the slots (TestPhaseSpread). cmd/loadtest reckons lateness against it.
func Phase(controller string, unit byte, name string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	// FNV-1a, then splitmix64's finaliser: FNV's low bits alone spread similar names (d00001,
	// d00002) poorly.
	f := fnv.New64a()
	io.WriteString(f, controller)
	f.Write([]byte{0, unit, 0})
	io.WriteString(f, name)
	h := f.Sum64()
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	if interval >= 100*time.Millisecond {
		slots := uint64(interval / phaseSlot)
		return time.Duration(h%slots) * phaseSlot
	}
	return time.Duration(h % uint64(interval))
}

// phaseSlot is the step of the phases (Phase).
const phaseSlot = 10 * time.Millisecond

// phaseOf is spec's Phase.
func phaseOf(spec *deviceSpec, interval time.Duration) time.Duration {
	return Phase(spec.controller.String(), spec.unit, spec.name, interval)
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
	*pollerEnv
	links   []*link
	devices []*device
	timer   *time.Timer
	// onErr takes a poll's error instead of acc (Gather returns them); nil: reported to acc.
	onErr func(error)

	started atomic.Int64 // Unix ns: when it started polling, for DeviceStates
}

// pollerEnv is what the pollers of one run (Start, Gather) share.
type pollerEnv struct {
	interval time.Duration
	acc      models.Accumulator
	st       *stats
	log      *slog.Logger
	debug    bool
	logs     *pollerLogs
}

func (m *Modbus) newPollerEnv(st *stats, interval time.Duration, acc models.Accumulator) *pollerEnv {
	return &pollerEnv{interval: interval, acc: acc, st: st, log: m.Log,
		debug: m.Log.Enabled(context.Background(), slog.LevelDebug), logs: newPollerLogs(m.Log, interval)}
}

// buildPollers makes the run-time state of every device and groups the devices into pollers,
// one per unit (units.go): devices whose controllers (backups included) overlap share one. It
// returns the pollers and every device, in configuration order; nothing is dialled yet.
func (m *Modbus) buildPollers(st *stats, interval time.Duration, acc models.Accumulator) ([]*poller, []*device) {
	env := m.newPollerEnv(st, interval, acc)
	units, places, byUnit := m.buildUnits()
	out := make([]*poller, len(units))
	for i := range units {
		out[i] = env.newPoller(m, m.specsOf(byUnit, &units[i]))
	}
	all := make([]*device, len(places))
	for i, pl := range places {
		all[i] = out[pl.unit].devices[pl.k]
	}
	return out, all
}

// newPoller makes the run-time state of a unit's devices — resilience state, request frames, metric
// scratch, links (connections, not dialled yet) — as a poller of its own.
func (env *pollerEnv) newPoller(m *Modbus, specs []*deviceSpec) *poller {
	p := &poller{pollerEnv: env, timer: time.NewTimer(time.Hour), devices: make([]*device, 0, len(specs))}
	p.timer.Stop()
	links := map[string]*link{} // a unit's controllers are no other unit's
	for _, spec := range specs {
		linkOf := func(t controller) *link {
			l := links[t.String()]
			if l == nil {
				l = m.newLink(t, &spec.opts.link, p)
				links[t.String()] = l
				p.links = append(p.links, l)
			}
			return l
		}
		d := newDevice(spec, p, linkOf)
		d.poller = p
		d.phase = phaseOf(spec, env.interval)
		p.devices = append(p.devices, d)
	}
	return p
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
		unconnected := p.unconnected()
		answered := p.poll(ctx, d, due)
		if ctx.Err() != nil {
			return
		}
		d.next = p.schedule(d, due, time.Now(), answered, p.unconnected() < unconnected)
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

// schedule returns d's next poll after the one due at due. A poll that overran is counted and
// reported to the summary of overruns (one line an interval at most for all pollers), unless it
// failed (its timeouts are reported already) or made a first connection (a device's first
// connect is not an overrun: 10,000 of them at the start of a busy machine are no news).
// now is the time the poll ended.
func (p *poller) schedule(d *device, due, now time.Time, answered, connected bool) time.Time {
	iv := p.interval
	next := due.Add(iv)
	if !next.After(now) { // overran: skip the missed polls, keep the phase
		missed := now.Sub(next)/iv + 1
		next = next.Add(missed * iv)
		p.st.overruns.Add(int64(missed))
		if answered && !connected {
			p.logs.overran(d, due, now, int64(missed))
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

// unconnected counts the poller's links that never connected.
func (p *poller) unconnected() int {
	n := 0
	for _, l := range p.links {
		if l.connects == 0 {
			n++
		}
	}
	return n
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
				p.log.Debug("idle connection closed", "controller", l.controller.String())
			}
			l.close()
			p.st.idleCloses.Incr()
		}
	}
}
