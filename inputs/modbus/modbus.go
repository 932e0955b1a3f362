// Package modbus is the inputs.modbus plugin: it polls Modbus devices over TCP, RTU or ASCII
// over TCP, Modbus/TCP Security (TLS) and serial lines (RTU, ASCII).
//
// Register maps are declared once as profiles and shared by devices. Init checks the whole
// configuration and plans each profile's reads into the fewest requests; Start runs one
// goroutine per connection (a device, a gateway whose units take turns, or a serial line), and
// each schedules its devices' polls at their own phase of the interval.
package modbus

import (
	"cmp"
	"context"
	"crypto/tls"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goburrow/serial"

	"github.com/tagpipe/tagpipe/config"
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

	// Alias is the generic key of every plugin table, read here too to name the stats.
	Alias string       `toml:"alias"`
	Log   *slog.Logger `toml:"-"`

	interval time.Duration
	devices  []*deviceSpec
	tls      *tls.Config
	serial   serial.Config
	gap      time.Duration
	warnings []error // of Init: fields whose address looks 1-based

	mu      sync.Mutex
	st      *stats
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running atomic.Pointer[running] // between Start and Stop
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

var baudRates = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
	38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
	2000000, 2500000, 3000000, 3500000, 4000000}

// Init checks the configuration and plans the requests. It dials nothing.
func (m *Modbus) Init() error {
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if len(m.devices) > 0 && m.Devices == nil {
		return nil // initialized already (the device tables are dropped then)
	}
	if err := m.Options.check(""); err != nil {
		return err
	}
	if err := m.checkSerial(); err != nil {
		return err
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
		if err := p.Options.check(prefix); err != nil {
			return err
		}
		prof, warnings, err := compileProfile(p, prefix)
		if err != nil {
			return err
		}
		m.warnings = append(m.warnings, warnings...)
		profiles[p.Name], compiled[i] = i, prof
	}

	type planKey struct {
		profile int
		opts    planOptions
	}
	plans := map[planKey][]request{}
	names := map[string]int{}
	type lineOwner struct {
		spec *deviceSpec
		t    target
	}
	lines := map[string]lineOwner{} // controller → the first device on it
	interned := map[deviceOptions]*deviceOptions{}
	m.devices = m.devices[:0]
	usesTLS := false
	for i := range m.Devices {
		d := &m.Devices[i]
		prefix := "device[" + strconv.Itoa(i) + "]"
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
		o, tgt, backups, err := m.resolve(d, prefix, &m.Profiles[pi], "profile["+strconv.Itoa(pi)+"]")
		if err != nil {
			return err
		}
		opts := interned[o]
		if opts == nil {
			opts = &o
			interned[o] = opts
		}
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
		spec := &deviceSpec{
			index: i, name: d.Name, unit: byte(unit), prof: prof, plan: reqs,
			tags: deviceTags(prof, d), opts: opts, target: tgt, backups: backups,
		}
		// One connection per controller: its devices must agree on how it is spoken and run.
		for j, t := range append([]target{tgt}, backups...) {
			key := prefix + ".controller"
			if j > 0 {
				key = fmt.Sprintf("%s.backup_controllers[%d]", prefix, j-1)
			}
			owner, ok := lines[t.String()]
			if !ok {
				lines[t.String()] = lineOwner{spec, t}
				usesTLS = usesTLS || t.scheme == "tls"
				continue
			}
			if owner.t.framing != t.framing {
				return config.KeyErrorf(prefix+".transmission_mode", "%s speaks %s for device %q; one connection has one framing",
					t, owner.t.framing, owner.spec.name)
			}
			if owner.spec.opts.line != opts.line {
				lv := &levels{opts: [3]*Options{&d.Options, &m.Profiles[pi].Options, &m.Options},
					prefixes: [3]string{prefix, "profile[" + strconv.Itoa(pi) + "]", ""}}
				key, diff := lineConflict(&owner.spec.opts.line, &opts.line, lv, key)
				return config.KeyErrorf(key, "%s: device %q runs this connection with other settings (%s); one connection has one keep-alive, idle timeout, reconnect backoff and request budget",
					t, owner.spec.name, diff)
			}
		}
		if opts.staleAfter > 0 {
			spec.staleTags = staleTags(spec.tags)
		}
		m.devices = append(m.devices, spec)
	}
	if usesTLS || m.Client.Set() {
		// TLS 1.2 or later, the device's CA, a client certificate for mutual authentication, an
		// optional server name; files are read now, so an unreadable one fails at start.
		conf, err := m.Client.Config()
		if err != nil {
			return err
		}
		m.tls = conf
	}
	// The device tables are compiled into m.devices and not read again: dropped, they are 400
	// bytes a device less (4 MB at 10,000 devices).
	m.Devices = nil
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
		m.st = newStats(cmp.Or(m.Alias, "modbus"))
	}
	return m.st
}
