package modbus

import (
	"context"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// The event loop (loop_linux.go) polls the plain Modbus TCP devices on one goroutine: at each
// 10 ms slot it writes the requests of every device due, then harvests the answers as epoll
// reports them, instead of waking a goroutine per device. Its devices are those of pollers
// that it can serve without waiting anywhere but on a socket (loopable); the others (RTU and
// ASCII over TCP, TLS, serial lines, gateways with several units, backup controllers, request
// pacing) run on their goroutines as before.
//
// Only the polls that go as planned stay on the loop: a connection to make, a breaker that
// is not closed, a timeout, an error or an exception hands the poll over to a goroutine of
// its own at the point it reached (poller.pollFrom with a resume), which runs the same code as
// the goroutine transport (retries, failover, breakers, health) and gives the device back when
// the poll is scheduled. So a device behaves the same on either transport.

// Transport values of [[inputs.modbus]].
const (
	transportAuto      = "auto"      // the event loop for what it serves, where it can run
	transportGoroutine = "goroutine" // a goroutine per connection for every device
)

// newLoop makes the event loop (a variable: tests make it fail).
var newLoop = newEventLoop

// loopable says whether the event loop can poll p's devices: one device on one plain Modbus
// TCP connection, with no pacing of its requests.
func loopable(p *poller) bool {
	if len(p.devices) != 1 || len(p.links) != 1 {
		return false
	}
	d, l := p.devices[0], p.links[0]
	return len(d.routes) == 1 && l.controller.scheme() == "tcp" && l.controller.framing == frameMBAP &&
		d.opts.pauseBetween <= 0 && d.bucket == nil && l.bucket == nil && l.frameGap <= 0
}

// startPollers runs the pollers (Start, outside cluster mode): the loopable ones on the event
// loop unless the transport is "goroutine" or the loop cannot start here (then with one INFO
// line), the others on goroutines of their own.
func (m *Modbus) startPollers(ctx context.Context, pollers []*poller, start time.Time) {
	var onLoop, rest []*poller
	for _, p := range pollers {
		if m.Transport != transportGoroutine && loopable(p) {
			onLoop = append(onLoop, p)
		} else {
			rest = append(rest, p)
		}
	}
	if len(onLoop) > 0 && m.startLoop(ctx, onLoop[0].acc, onLoop, start) == nil {
		rest = pollers
	}
	for _, p := range rest {
		m.wg.Go(func() { p.run(ctx, start) })
	}
}

// startLoop starts an event loop with the given pollers' devices (cluster mode: none; the
// loopable units are attached to it as they start, units.go), unless the transport is
// "goroutine" or the loop cannot start here (then with one INFO line). nil: none.
func (m *Modbus) startLoop(ctx context.Context, acc models.Accumulator, pollers []*poller, start time.Time) *eventLoop {
	if m.Transport == transportGoroutine {
		return nil
	}
	lp, err := newLoop(m, acc, pollers)
	if err != nil {
		m.Log.Info("the event loop cannot run here: every connection is polled on a goroutine of its own", "error", err)
		return nil
	}
	m.loop = lp
	m.wg.Go(func() { lp.run(ctx, start) })
	return lp
}
