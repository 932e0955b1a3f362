// Package modbus is the inputs.modbus plugin: it polls Modbus devices over TCP, RTU or ASCII
// over TCP, Modbus/TCP Security (TLS) and serial lines (RTU, ASCII).
//
// Register maps are declared once as profiles and shared by devices. Init checks the whole
// configuration and plans each profile's reads into the fewest requests; Start runs one
// goroutine per connection (a device, a gateway whose units take turns, or a serial line), and
// each schedules its devices' polls at their own phase of the interval.
package modbus

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/goburrow/serial"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/internal/resilience"
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

	// Modbus/TCP Security (tls://).
	TLSCA              string `toml:"tls_ca"`
	TLSCert            string `toml:"tls_cert"`
	TLSKey             string `toml:"tls_key"`
	TLSServerName      string `toml:"tls_server_name"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`

	// MaxRequestsPerSecond caps the requests on one connection (0: no cap).
	MaxRequestsPerSecond float64 `toml:"max_requests_per_second"`
	// BreakerFailures polls in a row with no answer open a device's circuit breaker, which lets
	// no poll through for BreakerCoolDown.
	BreakerFailures int             `toml:"breaker_failures"`
	BreakerCoolDown config.Duration `toml:"breaker_cool_down"`

	Profiles []Profile `toml:"profile"`
	Devices  []Device  `toml:"device"`

	// Alias is the generic key of every plugin table, read here too to name the stats.
	Alias string       `toml:"alias"`
	Log   *slog.Logger `toml:"-"`

	interval time.Duration
	devices  []*deviceSpec
	tls      *tls.Config
	serial   serial.Config
	gap      time.Duration

	mu     sync.Mutex
	st     *stats
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func init() {
	inputs.Add("modbus", func() models.Input { return &Modbus{} })
}

// SampleConfig implements models.Input.
func (*Modbus) SampleConfig() string { return sampleConfig }

// SetInterval implements models.IntervalSetter: the agent tells the interval before Start.
func (m *Modbus) SetInterval(d time.Duration) { m.interval = d }

var baudRates = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
	38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
	2000000, 2500000, 3000000, 3500000, 4000000}

// Init checks the configuration and plans the requests. It dials nothing.
func (m *Modbus) Init() error {
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if err := m.Options.check(""); err != nil {
		return err
	}
	if err := m.checkSerial(); err != nil {
		return err
	}
	if m.BreakerFailures < 0 {
		return config.KeyErrorf("breaker_failures", "%d: must be 0 (default 5) or more", m.BreakerFailures)
	}
	if m.MaxRequestsPerSecond < 0 {
		return config.KeyErrorf("max_requests_per_second", "%v: must be 0 (no cap) or more", m.MaxRequestsPerSecond)
	}
	if len(m.Devices) == 0 {
		return config.KeyErrorf("device", "no [[inputs.modbus.device]]: nothing to poll")
	}

	profiles := map[string]int{}
	compiled := make([]*profile, len(m.Profiles))
	for i := range m.Profiles {
		p := &m.Profiles[i]
		prefix := fmt.Sprintf("profile[%d]", i)
		if j, dup := profiles[p.Name]; dup {
			return config.KeyErrorf(prefix+".name", "%q is also profile[%d]", p.Name, j)
		}
		prof, err := compileProfile(p, prefix)
		if err != nil {
			return err
		}
		profiles[p.Name], compiled[i] = i, prof
	}

	type planKey struct {
		profile int
		opts    planOptions
	}
	plans := map[planKey][]request{}
	names := map[string]int{}
	links := map[string]int{} // controller → first device on it
	m.devices = m.devices[:0]
	usesTLS := false
	for i := range m.Devices {
		d := &m.Devices[i]
		prefix := fmt.Sprintf("device[%d]", i)
		if d.Name == "" {
			return config.KeyErrorf(prefix+".name", "missing: it is the device tag of every metric")
		}
		if j, dup := names[d.Name]; dup {
			return config.KeyErrorf(prefix+".name", "%q is also device[%d]", d.Name, j)
		}
		names[d.Name] = i
		if err := d.Options.check(prefix); err != nil {
			return err
		}
		unit := intOr(d.SlaveID, 1)
		if unit < 0 || unit > 247 {
			return config.KeyErrorf(prefix+".slave_id", "%d: must be 0..247", unit)
		}
		pi, ok := profiles[d.Profile]
		if !ok {
			return config.KeyErrorf(prefix+".profile", "%q: no such profile (have: %s)", d.Profile, strings.Join(m.profileNames(), ", "))
		}
		opts, err := m.resolve(d, prefix)
		if err != nil {
			return err
		}
		key := opts.target.String()
		if j, ok := links[key]; ok {
			if other := m.devices[j]; other.opts.target.framing != opts.target.framing {
				return config.KeyErrorf(prefix+".transmission_mode", "%s speaks %s for device %q; one connection has one framing",
					key, other.opts.target.framing, other.name)
			}
		} else {
			links[key] = len(m.devices)
		}
		usesTLS = usesTLS || opts.target.scheme == "tls"
		prof := compiled[pi]
		for fi := range prof.fields {
			f := &prof.fields[fi]
			if f.kind.isBits() || int(f.regs) <= opts.plan.maxRegisters {
				continue // a bit always fits
			}
			key := "max_request_registers"
			if d.MaxRequestRegisters != nil {
				key = prefix + "." + key
			}
			return config.KeyErrorf(key, "%d: field %q of profile %q spans %d registers (device %q)",
				opts.plan.maxRegisters, f.name, prof.name, f.regs, d.Name)
		}
		pk := planKey{pi, opts.plan}
		reqs, ok := plans[pk]
		if !ok {
			reqs = plan(prof.fields, opts.plan)
			plans[pk] = reqs
		}
		m.devices = append(m.devices, &deviceSpec{
			index: i, name: d.Name, unit: byte(unit), prof: prof, plan: reqs,
			tags: deviceTags(prof, d), opts: opts,
		})
	}
	if usesTLS || m.TLSCA != "" || m.TLSCert != "" || m.TLSKey != "" {
		conf, err := m.tlsConfig()
		if err != nil {
			return err
		}
		m.tls = conf
	}
	return nil
}

func (m *Modbus) profileNames() []string {
	var out []string
	for _, p := range m.Profiles {
		out = append(out, fmt.Sprintf("%q", p.Name))
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

func (m *Modbus) checkSerial() error {
	c := serial.Config{BaudRate: defaultBaudRate, DataBits: 8, Parity: "E", StopBits: 1}
	if m.BaudRate != 0 {
		found := false
		for _, b := range baudRates {
			found = found || b == m.BaudRate
		}
		if !found {
			return config.KeyErrorf("baud_rate", "%d: not a baud rate this platform sets (e.g. 9600, 19200, 38400, 115200)", m.BaudRate)
		}
		c.BaudRate = m.BaudRate
	}
	switch m.DataBits {
	case 0:
	case 7, 8:
		c.DataBits = m.DataBits
	default:
		return config.KeyErrorf("data_bits", "%d: Modbus uses 7 (ASCII) or 8 data bits", m.DataBits)
	}
	switch p := strings.ToUpper(m.Parity); p {
	case "":
	case "N", "E", "O":
		c.Parity = p
	default:
		return config.KeyErrorf("parity", "%q: want N, E or O", m.Parity)
	}
	switch m.StopBits {
	case 0:
	case 1, 2:
		c.StopBits = m.StopBits
	default:
		return config.KeyErrorf("stop_bits", "%d: want 1 or 2", m.StopBits)
	}
	if r := m.RS485; r != nil {
		c.RS485 = serial.RS485Config{
			Enabled:            true,
			DelayRtsBeforeSend: time.Duration(r.DelayRTSBeforeSend),
			DelayRtsAfterSend:  time.Duration(r.DelayRTSAfterSend),
			RtsHighDuringSend:  r.RTSHighDuringSend,
			RtsHighAfterSend:   r.RTSHighAfterSend,
			RxDuringTx:         r.RxDuringTx,
		}
	}
	m.serial = c
	m.gap = frameGap(c.BaudRate, c.DataBits, c.Parity, c.StopBits)
	return nil
}

// stats returns the plugin's counters, registering them on first use.
func (m *Modbus) stats() *stats {
	if m.st == nil {
		name := m.Alias
		if name == "" && len(m.devices) > 0 {
			name = m.devices[0].name
		}
		m.st = newStats(name)
	}
	return m.st
}

// phase spreads device i of n evenly over the interval, in 10 ms slots so that devices that
// fall together wake the scheduler once.
func phase(i, n int, interval time.Duration) time.Duration {
	p := time.Duration(int64(interval) * int64(i) / int64(n))
	if interval >= 100*time.Millisecond {
		p = p.Truncate(10 * time.Millisecond)
	}
	return p
}

// buildLinks groups the devices by controller: one link (connection) per controller.
func (m *Modbus) buildLinks(st *stats) []*link {
	interval := m.interval
	if interval <= 0 {
		interval = time.Second
	}
	debug := m.Log.Enabled(context.Background(), slog.LevelDebug)
	// Reconnects back off to at most half the breaker's cool-down, so that the probe of a
	// half-open breaker always dials instead of failing on the backoff.
	coolDown := time.Duration(m.BreakerCoolDown)
	if coolDown <= 0 {
		coolDown = defaultCoolDown
	}
	maxBackoff := max(100*time.Millisecond, min(30*time.Second, coolDown/2))
	byKey := map[string]*link{}
	var links []*link
	for i, spec := range m.devices {
		key := spec.opts.target.String()
		l := byKey[key]
		if l == nil {
			l = &link{
				target:  spec.opts.target,
				st:      st,
				log:     m.Log,
				debug:   debug,
				backoff: resilience.NewBackoff(100*time.Millisecond, maxBackoff),
				bucket:  resilience.NewBucket(m.MaxRequestsPerSecond, 1),
				timer:   time.NewTimer(time.Hour),
			}
			l.timer.Stop()
			switch l.target.scheme {
			case "tls":
				l.tlsConf = m.tls.Clone()
				if l.tlsConf.ServerName == "" {
					l.tlsConf.ServerName = hostOf(l.target.addr)
				}
			case "file":
				c := m.serial
				c.Address = l.target.addr
				l.serial, l.frameGap = &c, m.gap
			}
			byKey[key] = l
			links = append(links, l)
		}
		d := newDevice(spec, m, m.Log)
		d.phase = phase(i, len(m.devices), interval)
		l.devices = append(l.devices, d)
	}
	return links
}

func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// Start implements models.ServiceInput: one goroutine per connection, until Stop.
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
	links := m.buildLinks(m.stats())
	ctx, m.cancel = context.WithCancel(ctx)
	start := time.Now()
	for _, l := range links {
		m.wg.Go(func() { l.run(ctx, acc, start, interval) })
	}
	m.Log.Info("polling", "devices", len(m.devices), "connections", len(links), "interval", interval)
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
	if m.st != nil {
		m.st.set.Unregister()
		m.st = nil
	}
}

// Gather implements models.Input (--test, --once): every device is polled once, connections in
// parallel, and closed again. The errors name device and request.
func (m *Modbus) Gather(ctx context.Context, acc models.Accumulator) error {
	m.mu.Lock()
	st := m.stats()
	m.mu.Unlock()
	links := m.buildLinks(st)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Go(func() {
			defer l.close()
			for _, d := range l.devices {
				if err := l.pollOnce(ctx, d, acc); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
