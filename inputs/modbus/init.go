package modbus

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/goburrow/serial"
	"github.com/tagpipe/tagpipe/config"
)

var baudRates = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
	38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
	2000000, 2500000, 3000000, 3500000, 4000000}

// Init checks the configuration and plans the requests, in steps: the plugin's own settings,
// the profiles, the devices (each resolved against its profile and the plugin, its reads
// planned), the connections the devices share, and TLS. It dials nothing. Errors name the key
// (config.KeyErrorf), so the loader reports FILE:LINE.
func (m *Modbus) Init() error {
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if m.inv.len() > 0 && m.Devices == nil {
		return nil // initialized already (the device tables are dropped then)
	}
	if err := m.checkPlugin(); err != nil {
		return err
	}
	profiles, err := m.compileProfiles()
	if err != nil {
		return err
	}
	b := &builder{m: m, profiles: profiles, plans: map[planKey][]request{}, kinds: map[kindKey]*deviceKind{},
		specs: make([]deviceSpec, len(m.Devices)), names: make(map[string]int, len(m.Devices)),
		links: make(map[string]linkOwner, len(m.Devices)), interned: map[deviceOptions]*deviceOptions{}, merged: map[*Options]*resolved{}}
	inv := newInventoryBuilder(len(m.Devices))
	for i := range m.Devices {
		spec, err := b.compileDevice(i)
		if err != nil {
			return err
		}
		if err := b.claimLinks(spec, i); err != nil {
			return err
		}
		inv.add(spec)
	}
	if err := m.loadTLS(b.usesTLS); err != nil {
		return err
	}
	inv.done(&m.inv)
	// The device tables are compiled into the inventory and not read again: dropped, they are
	// 400 bytes a device less (4 MB at 10,000 devices).
	m.Devices = nil
	return nil
}

// checkPlugin checks the settings of the plugin's own table.
func (m *Modbus) checkPlugin() error {
	if err := m.Options.check(""); err != nil {
		return err
	}
	if err := m.checkSerial(); err != nil {
		return err
	}
	switch m.Transport {
	case "", transportAuto, transportGoroutine:
	default:
		return config.KeyErrorf("transport", "%q: want %q (the event loop for plain Modbus TCP devices) or %q (a goroutine per connection)", m.Transport, transportAuto, transportGoroutine)
	}
	if len(m.Devices) == 0 {
		return config.KeyErrorf("device", "no [[inputs.modbus.device]]: nothing to poll")
	}
	return nil
}

// compiledProfile is a profile ready for its devices, with its index in the configuration and
// its key prefix ("profile[2]").
type compiledProfile struct {
	index  int
	prefix string
	*profile
}

// compileProfiles compiles every profile (fields, groups, byte orders), keyed by name. The
// warnings (addresses that look 1-based) go to m.warnings.
func (m *Modbus) compileProfiles() (map[string]compiledProfile, error) {
	out := map[string]compiledProfile{}
	for i := range m.Profiles {
		p := &m.Profiles[i]
		prefix := fmt.Sprintf("profile[%d]", i)
		if prev, dup := out[p.Name]; dup {
			return nil, config.KeyErrorf(prefix+".name", "%q is also profile[%d]", p.Name, prev.index)
		}
		if err := p.Options.check(prefix); err != nil {
			return nil, err
		}
		prof, warnings, err := compileProfile(p, prefix)
		if err != nil {
			return nil, err
		}
		m.warnings = append(m.warnings, warnings...)
		out[p.Name] = compiledProfile{i, prefix, prof}
	}
	return out, nil
}

// planKey is what a device's request plan depends on: devices of one profile with the same
// plan options share one plan.
type planKey struct {
	profile int
	opts    planOptions
}

// linkOwner is the first device on a connection, whose settings the others must match.
type linkOwner struct {
	spec *deviceSpec
	c    controller
}

// kindKey is what a device's kind depends on: its profile and its options (interned).
type kindKey struct {
	profile int
	opts    *deviceOptions
}

// builder is Init's state while it compiles the devices.
type builder struct {
	m        *Modbus
	profiles map[string]compiledProfile
	plans    map[planKey][]request
	kinds    map[kindKey]*deviceKind
	specs    []deviceSpec                     // every device's while Init runs, in one allocation
	names    map[string]int                   // device name → index
	links    map[string]linkOwner             // controller URL → the first device on it
	interned map[deviceOptions]*deviceOptions // devices with equal options share one copy
	merged   map[*Options]*resolved           // by profile: the options of a device that sets none
	usesTLS  bool
}

// compileDevice checks device i, resolves its options over its profile's and the plugin's, and
// plans its reads.
func (b *builder) compileDevice(i int) (*deviceSpec, error) {
	m := b.m
	d := &m.Devices[i]
	prefix := "device[" + strconv.Itoa(i) + "]"
	if d.Name == "" {
		return nil, config.KeyErrorf(prefix+".name", "missing: it is the device tag of every metric")
	}
	if j, dup := b.names[d.Name]; dup {
		return nil, config.KeyErrorf(prefix+".name", "%q is also device[%d]", d.Name, j)
	}
	b.names[d.Name] = i
	if err := d.Options.check(prefix); err != nil {
		return nil, err
	}
	unit := intOr(d.SlaveID, 1)
	if unit < 0 || unit > 247 {
		return nil, config.KeyErrorf(prefix+".slave_id", "%d: must be 0..247", unit)
	}
	prof, ok := b.profiles[d.Profile]
	if !ok {
		return nil, config.KeyErrorf(prefix+".profile", "%q: no such profile (have: %s)", d.Profile, strings.Join(m.profileNames(), ", "))
	}
	o, c, backups, err := m.resolve(d, prefix, &m.Profiles[prof.index], prof.prefix, b.merged)
	if err != nil {
		return nil, err
	}
	opts := b.interned[o]
	if opts == nil {
		opts = new(deviceOptions) // a copy: o itself stays off the heap
		*opts = o
		b.interned[o] = opts
	}
	for fi := range prof.fields {
		f := &prof.fields[fi]
		if f.kind.isBits() || int(f.regs) <= opts.plan.maxRegisters {
			continue // a bit always fits
		}
		key := "max_request_registers"
		if d.MaxRequestRegisters != nil {
			key = prefix + "." + key
		}
		return nil, config.KeyErrorf(key, "%d: field %q of profile %q spans %d registers (device %q)",
			opts.plan.maxRegisters, f.name, prof.name, f.regs, d.Name)
	}
	kk := kindKey{prof.index, opts}
	kind := b.kinds[kk]
	if kind == nil {
		pk := planKey{prof.index, opts.plan}
		reqs, ok := b.plans[pk]
		if !ok {
			reqs = plan(prof.fields, opts.plan)
			b.plans[pk] = reqs
		}
		kind = &deviceKind{prof: prof.profile, plan: reqs, opts: opts}
		b.kinds[kk] = kind
	}
	// The name is a part of the configuration's text until the inventory copies it.
	spec := &b.specs[i]
	tags, perGroup := deviceTags(prof.profile, d.Name, d.Tags)
	*spec = deviceSpec{deviceKind: kind, name: d.Name, unit: byte(unit), tags: tags, controller: c}
	if perGroup != nil || len(backups) > 0 {
		spec.more = &specMore{backups: backups, tags: perGroup}
	}
	return spec, nil
}

// claimLinks records the connections device i (spec) uses: one connection per controller, so
// its devices must agree on how it is spoken and run.
func (b *builder) claimLinks(spec *deviceSpec, i int) error {
	m, d := b.m, &b.m.Devices[i]
	prefix := "device[" + strconv.Itoa(i) + "]"
	backups := spec.backups()
	for j := -1; j < len(backups); j++ {
		c := &spec.controller
		if j >= 0 {
			c = &backups[j]
		}
		owner, ok := b.links[c.url]
		if !ok {
			b.links[c.url] = linkOwner{spec, *c}
			b.usesTLS = b.usesTLS || c.scheme() == "tls"
			continue
		}
		c.url = owner.c.url // backups on one gateway share its URL's string
		key := prefix + ".controller"
		if j >= 0 {
			key = fmt.Sprintf("%s.backup_controllers[%d]", prefix, j)
		}
		if owner.c.framing != c.framing {
			return config.KeyErrorf(prefix+".transmission_mode", "%s speaks %s for device %q; one connection has one framing",
				c, owner.c.framing, owner.spec.name)
		}
		if owner.spec.opts.link != spec.opts.link {
			pi := b.profiles[d.Profile].index
			lv := &levels{opts: [3]*Options{&d.Options, &m.Profiles[pi].Options, &m.Options},
				prefixes: [3]string{prefix, "profile[" + strconv.Itoa(pi) + "]", ""}}
			key, diff := linkConflict(&owner.spec.opts.link, &spec.opts.link, lv, key)
			return config.KeyErrorf(key, "%s: device %q runs this connection with other settings (%s); one connection has one keep-alive, idle timeout, reconnect backoff and request budget",
				c, owner.spec.name, diff)
		}
	}
	return nil
}

// loadTLS reads the TLS files when a controller is tls:// or TLS keys are set: TLS 1.2 or
// later, the device's CA, a client certificate for mutual authentication, an optional server
// name. Files are read now, so an unreadable one fails at start.
func (m *Modbus) loadTLS(used bool) error {
	if !used && !m.Client.Set() {
		return nil
	}
	conf, err := m.Client.Config()
	if err != nil {
		return err
	}
	m.tls = conf
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
