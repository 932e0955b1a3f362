package modbus

import (
	"fmt"
	"time"

	"github.com/goburrow/modbus"
	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// device is a deviceSpec at run time: its resilience state and the scratch of a poll. Only the
// goroutine of its poller touches it.
type device struct {
	*deviceSpec
	tags   [][]models.Tag // per group: sorted, with the device tag; handed to every metric
	routes []route        // its controller, then its backups
	cur    int            // the route of the last poll
	reqs   []request      // the reads in force: the plan, until a failing read is split
	rs     []readState    // per read in reqs
	retry  *resilience.Retry
	bucket *resilience.Bucket // device_requests_per_second; nil: no cap
	health resilience.Health
	phase  time.Duration // offset of its polls in the interval
	next   time.Time     // its next poll

	deadline   time.Time // of the poll under way: when the next is due
	answered   int       // reads answered in the poll under way
	lastAnswer time.Time // when a read was last answered (the start before the first)

	out   []*models.Metric // per group, during a poll
	strs  []string         // last value of each STRING field
	stale *staleState      // stale_after > 0

	status status // for DeviceStates (/healthz, the device page), read by other goroutines

	poller *poller // the poller it belongs to
	// fresh: its poller was started by a takeover (cluster mode) and it has not been answered
	// since; its metrics carry models.Metric.Fresh.
	fresh bool
}

// readState is what a device remembers of one of its reads.
type readState struct {
	ok      bool  // it was answered since it was planned (or split off)
	fails   uint8 // polls in a row it got no answer or exception 4 while the device answered
	pending bool  // failed so in the poll under way
}

// route is a device reached through one controller: its connection, and the timeout and
// breaker of the device on it.
type route struct {
	name    string // the controller's URL, as DeviceStatus.Controller gives it
	link    *link
	timeout *resilience.Timeout
	breaker *resilience.Breaker
	frames  [][]byte     // RTU and ASCII: the request ADUs of reqs, encoded by goburrow's packagers
	tags    []models.Tag // of the health metric: controller and device

	errLog models.ErrorFold // what failed last (errorKey), reported once per errorRepeat
}

// staleState keeps the last good value of every field of a device, for stale_after.
type staleState struct {
	tags [][]models.Tag // the device's tags with quality=stale, per group
	last []models.Field // per profile field
	at   []int64        // when it was read (Unix ns); 0: never
	out  []*models.Metric
}

// errorRepeat is how often the same error of a device is reported again while it lasts (a
// variable for tests).
var errorRepeat = time.Minute

// healthFields is the number of fields resilience.Health.AppendFields appends.
const healthFields = 12

func newDevice(spec *deviceSpec, p *poller, linkOf func(controller) *link) *device {
	d := &device{
		deviceSpec: spec,
		reqs:       spec.plan,
		retry:      resilience.NewRetry(spec.opts.retry),
		bucket:     resilience.NewBucket(spec.opts.deviceRate, spec.opts.deviceBurst),
		tags:       spec.groupTags(),
		rs:         make([]readState, len(spec.plan)),
		out:        make([]*models.Metric, len(spec.prof.groups)),
		strs:       make([]string, spec.prof.strings),
		// Until its first polls a device is taken to answer: a read that times out in the first
		// poll does not keep the others from being tried.
		lastAnswer: time.Now(),
	}
	if spec.opts.staleAfter > 0 {
		n := len(spec.prof.fields)
		d.stale = &staleState{tags: staleTags(d.tags), last: make([]models.Field, n), at: make([]int64, n), out: make([]*models.Metric, len(spec.prof.groups))}
	}
	controllers := append([]controller{spec.controller}, spec.backups()...)
	d.routes = make([]route, len(controllers))
	for i, t := range controllers {
		r := &d.routes[i]
		r.link, r.name = linkOf(t), t.String()
		r.timeout = resilience.NewTimeout(spec.opts.timeout)
		r.errLog.Period = errorRepeat
		r.tags = []models.Tag{{Key: "controller", Value: t.String()}, {Key: "device", Value: spec.name}}
		cfg := spec.opts.breaker.config()
		cfg.IsSuccessful = answered
		cfg.OnChange = func(from, to string) {
			d.health.BreakerChanged(time.Now(), i, to)
			switch {
			case to == "closed":
				p.logs.closed.add(spec.name, 1, fmt.Sprintf("%s on %s", spec.name, t))
			case to == "open" && from == "closed":
				p.logs.opened.add(spec.name, 1, fmt.Sprintf("%s on %s (cool-down %s)", spec.name, t, spec.opts.breaker.coolDown))
			case p.debug: // half-open, and open again after a failed probe: every cool-down
				p.log.Debug("circuit breaker "+to, "device", spec.name, "controller", t.String(), "from", from)
			}
		}
		r.breaker = resilience.NewBreaker(cfg)
		r.encode(d)
	}
	return d
}

// encode makes the request frames of d's reads for r's framing (RTU and ASCII; Modbus TCP
// frames carry a transaction id and are written per request).
func (r *route) encode(d *device) {
	f := r.link.controller.framing
	if f == frameMBAP {
		return
	}
	var p modbus.Packager
	if f == frameRTU {
		h := modbus.NewRTUClientHandler("")
		h.SlaveId = d.unit
		p = h
	} else {
		h := modbus.NewASCIIClientHandler("")
		h.SlaveId = d.unit
		p = h
	}
	r.frames = r.frames[:0]
	for i := range d.reqs {
		q := &d.reqs[i]
		adu, err := p.Encode(&modbus.ProtocolDataUnit{FunctionCode: byte(q.kind),
			Data: []byte{byte(q.addr >> 8), byte(q.addr), byte(q.count >> 8), byte(q.count)}})
		if err != nil { // a read request is 6 bytes: cannot exceed the ADU limit
			panic(err)
		}
		r.frames = append(r.frames, adu)
	}
}

// openUntil returns when the first of d's open breakers turns half-open, or zero unless every
// one is open.
func (d *device) openUntil() time.Time {
	var first time.Time
	for i := range d.routes {
		u := d.routes[i].breaker.OpenUntil()
		if u.IsZero() {
			return time.Time{}
		}
		if first.IsZero() || u.Before(first) {
			first = u
		}
	}
	return first
}
