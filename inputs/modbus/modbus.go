// Package modbus is the inputs.modbus plugin: it polls Modbus devices over TCP, RTU or ASCII
// over TCP, Modbus/TCP Security (TLS) and serial lines (RTU, ASCII).
//
// Register maps are declared once as profiles and shared by devices. Init (init.go) checks the
// whole configuration and plans each profile's reads into the fewest requests; Start runs one
// goroutine per poller, and each schedules its devices' polls at their own phase of the
// interval.
//
// Four words name the parts of a connection, each in one file:
//
//   - controller (config.go): where a device is reached — tcp://host:port, tls://host:port or a
//     serial port (file:///dev/ttyX) — and the framing spoken there. A device has one, and may
//     have backup_controllers.
//   - link (link.go): the one connection to a controller, shared by every device behind it (a
//     gateway's units take turns on it); its settings are linkOptions.
//   - route (device.go): a device reached through one of its controllers: the link, and the
//     device's adaptive timeout and circuit breaker on it.
//   - poller (poller.go): one goroutine that owns some links and the devices polled through
//     them, in turn: a device, a gateway or serial line with its units, or devices tied
//     together by backup controllers. A poll of one device is poll.go's.
package modbus

import (
	"cmp"
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goburrow/serial"

	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
	"github.com/tagpipe/tagpipe/models"
)

//go:embed sample.conf
var sampleConfig string

// Modbus is the inputs.modbus plugin.
type Modbus struct {
	Options // defaults of every device

	// Serial lines (file://).
	BaudRate int    `toml:"baud_rate"`
	DataBits int    `toml:"data_bits"`
	Parity   string `toml:"parity"`
	StopBits int    `toml:"stop_bits"`
	RS485    *RS485 `toml:"rs485"`

	// Modbus/TCP Security (tls://): tls_ca, tls_cert, tls_key, tls_server_name,
	// insecure_skip_verify, spelled and checked as every plugin's.
	tlsconfig.Client

	Profiles []Profile `toml:"profile"`
	Devices  []Device  `toml:"device"`

	// Transport is "auto" (the event loop for plain Modbus TCP devices, loop.go) or "goroutine"
	// (a goroutine per connection for every device).
	Transport string `toml:"transport"`

	// Alias is the generic key of every plugin table, read here too to name the stats.
	Alias string       `toml:"alias"`
	Log   *slog.Logger `toml:"-"`

	interval time.Duration
	inv      inventory // every device's spec (Init)
	tls      *tls.Config
	serial   serial.Config
	gap      time.Duration
	warnings []error // of Init: fields whose address looks 1-based

	mu      sync.Mutex
	st      *stats
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running atomic.Pointer[running] // between Start and Stop
	units   unitControl             // cluster mode (units.go)
	grouped sync.Once               // group and nunits are made (units.go)
	group   []int32                 // each device's unit
	nunits  int
	loop    *eventLoop // of the last Start, if it has one
}

func init() {
	inputs.Add("modbus", func() models.Input { return &Modbus{} })
}

// SampleConfig implements models.Input.
func (*Modbus) SampleConfig() string { return sampleConfig }

// ConfigWarnings implements config.Warner: what Init found that looks wrong but may be meant
// (an address of the 1-based convention, like 40001).
func (m *Modbus) ConfigWarnings() []error { return m.warnings }

// telegrafKeys are keys of Telegraf's inputs.modbus table that [[inputs.modbus]] does not have
// at its top; true marks those no other mistake would put there.
var telegrafKeys = map[string]bool{
	"controller": false, "slave_id": false, "name": false, "byte_order": false,
	"configuration_type": true, "holding_registers": true, "input_registers": true, "coils": true,
	"discrete_inputs": true, "request": true, "metric": true, "workarounds": true,
	"optimization": true, "optimization_max_register_fill": true, "string_register_location": true,
	"exclude_register_type_tag": true, "debug_connection": true,
}

// UnknownKeysHint implements config.KeyHinter: a table with keys of Telegraf's inputs.modbus
// (one of its register lists or sections, or two of its device keys) gets a pointer to the
// README's section on coming from Telegraf, besides an error for each key.
func (*Modbus) UnknownKeysHint(keys []string) string {
	seen := map[string]bool{}
	for _, k := range keys {
		top, _, _ := strings.Cut(k, ".")
		if sure, ok := telegrafKeys[top]; ok {
			if sure {
				seen[""] = true
			}
			seen[top] = true
		}
	}
	if seen[""] || len(seen) >= 2 {
		return "this looks like a Telegraf inputs.modbus table; see README#coming-from-telegraf: tagpipe import telegraf FILE writes it as tagpipe's (register maps in [[inputs.modbus.profile]], devices in [[inputs.modbus.device]])"
	}
	return ""
}

// SetInterval implements models.IntervalSetter: the agent tells the interval before Start.
func (m *Modbus) SetInterval(d time.Duration) { m.interval = d }

// stats returns the plugin's counters, registering them on first use.
func (m *Modbus) stats() *stats {
	if m.st == nil {
		m.st = newStats(cmp.Or(m.Alias, "modbus"))
	}
	return m.st
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
	ctx, m.cancel = context.WithCancel(ctx)
	start := time.Now()
	run := &running{ctx: ctx, started: start, stale: models.StaleIntervals * interval}
	if keep := m.units.keep; keep != nil {
		// Cluster mode: every unit is described, and only those kept get a poller, each on its
		// own (units.go).
		run.env = m.newPollerEnv(m.stats(), interval, acc)
		run.units, run.places, run.byUnit = m.buildUnits()
		run.loop = m.startLoop(ctx, acc, nil, start)
		m.running.Store(run)
		for i := range run.units {
			if keep(i) {
				m.startPoller(run, &run.units[i], start, true)
			}
		}
		m.Log.Info("polling the units of this agent's shards", "connections", run.active(), "of", len(run.units), "devices", m.inv.len(), "interval", interval)
		return nil
	}
	pollers, devices := m.buildPollers(m.stats(), interval, acc)
	run.devices, run.pollers, run.env = devices, pollers, pollers[0].pollerEnv
	links := 0
	for _, p := range pollers {
		links += len(p.links)
		p.started.Store(start.UnixNano())
	}
	m.running.Store(run)
	wakeOnDone(ctx, pollers) // runs once ctx is done
	m.startPollers(ctx, pollers, start)
	m.Log.Info("polling", "devices", m.inv.len(), "connections", links, "interval", interval)
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
	if run := m.running.Load(); run != nil && run.env != nil {
		run.env.logs.stop() // what the summaries hold is written
	}
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
