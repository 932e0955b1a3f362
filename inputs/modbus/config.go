package modbus

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// Profile is a register map shared by devices.
type Profile struct {
	Name        string            `toml:"name"`
	Measurement string            `toml:"measurement"`
	ByteOrder   string            `toml:"byte_order"` // default of its fields
	Tags        map[string]string `toml:"tags"`
	Fields      []Field           `toml:"field"`
	Options                       // defaults of its devices
}

// Field is one value read from a device.
type Field struct {
	Name        string            `toml:"name"`
	Register    string            `toml:"register"`
	Address     *int              `toml:"address"`
	DataType    string            `toml:"data_type"`
	ByteOrder   string            `toml:"byte_order"`
	Length      int               `toml:"length"`   // registers: STRING (required), FIXED/UFIXED (1, 2 or 4)
	Decimals    int               `toml:"decimals"` // FIXED/UFIXED: implied decimal places
	Bit         *int              `toml:"bit"`      // BIT of a holding or input register: 0..15
	Scale       *float64          `toml:"scale"`
	Offset      float64           `toml:"offset"`
	Output      string            `toml:"output"` // native, float, int, uint
	Measurement string            `toml:"measurement"`
	Tags        map[string]string `toml:"tags"`
}

// Device is one unit to poll.
type Device struct {
	Name       string `toml:"name"`
	Controller string `toml:"controller"`
	// BackupControllers are polled in order when the controller's breaker is open.
	BackupControllers []string          `toml:"backup_controllers"`
	SlaveID           *int              `toml:"slave_id"`
	Profile           string            `toml:"profile"`
	Tags              map[string]string `toml:"tags"`
	Options
}

// RS485 sets the RS-485 mode of a serial line (Linux only).
type RS485 struct {
	DelayRTSBeforeSend config.Duration `toml:"delay_rts_before_send"`
	DelayRTSAfterSend  config.Duration `toml:"delay_rts_after_send"`
	RTSHighDuringSend  bool            `toml:"rts_high_during_send"`
	RTSHighAfterSend   bool            `toml:"rts_high_after_send"`
	RxDuringTx         bool            `toml:"rx_during_tx"`
}

// controller is where a device is reached: a TCP or TLS address, or a serial port, and the
// framing spoken there. It is kept as one string, its URL, which names the device's connection
// everywhere (unit identities, phases, messages): scheme and address are parts of it, so that
// the 10,000 controllers of a large inventory are one small string each.
type controller struct {
	url     string // scheme://addr: tcp://host:port, tls://host:port, file:///dev/ttyX
	framing framing
	split   uint8 // len(scheme)
}

// newController makes the controller scheme://addr.
func newController(scheme, addr string, fr framing) controller {
	return controller{url: scheme + "://" + addr, framing: fr, split: uint8(len(scheme))}
}

func (t controller) String() string { return t.url }

// scheme is tcp, tls or file.
func (t controller) scheme() string { return t.url[:t.split] }

// addr is host:port, or the serial device.
func (t controller) addr() string {
	if len(t.url) < int(t.split)+3 {
		return ""
	}
	return t.url[t.split+3:]
}

// profile is a Profile compiled: fields ready to decode, grouped into metrics.
type profile struct {
	name    string
	fields  []fieldSpec
	groups  []group
	strings int // STRING fields (each device caches their last value)
}

// group is the fields of one metric: same measurement, same field tags.
type group struct {
	measurement string
	tags        []models.Tag // profile and field tags
	fields      int
}

// deviceSpec is a Device compiled. It is read-only after Init. Init keeps every device's in
// the inventory (inventory.go), polled here or not, so it holds what a device needs alone:
// what devices of one profile with the same options share is one deviceKind, tag sets are
// shared, and what only a device polled here needs (its tags with the device tag, stale tags,
// frames) is made with its run-time state (newDevice).
type deviceSpec struct {
	*deviceKind
	name       string
	tags       []models.Tag // of its first group's metrics, without the device tag: sorted, shared
	controller controller   // its controller
	more       *specMore    // nil: no backup controllers, and every group has the first's tags
	unit       byte
}

// specMore is what few devices have: backup controllers, or groups whose tags differ.
type specMore struct {
	backups []controller   // backup_controllers
	tags    [][]models.Tag // per group, when the groups' tags differ
}

// backups are the device's backup_controllers.
func (s *deviceSpec) backups() []controller {
	if s.more == nil {
		return nil
	}
	return s.more.backups
}

// groupTags returns the tags of each group's metrics (one copy each; read-only: they are handed
// to every metric).
func (s *deviceSpec) groupTags() [][]models.Tag {
	if s.more != nil && s.more.tags != nil {
		return s.more.tags
	}
	first := s.withDevice()
	out := make([][]models.Tag, len(s.prof.groups))
	for g := range out {
		out[g] = first
	}
	return out
}

// withDevice returns the first group's tags with the device tag (a new set).
func (s *deviceSpec) withDevice() []models.Tag {
	return appendWithDevice(make([]models.Tag, 0, len(s.tags)+1), s.tags, s.name)
}

// deviceKind is what the devices of one profile with equal options share: the profile, its
// request plan for those options, and the options.
type deviceKind struct {
	prof *profile
	plan []request
	opts *deviceOptions
}

// modes maps transmission_mode to a framing; 0 is auto.
var modes = map[string]framing{
	"auto": 0, "tcp": frameMBAP, "rtuovertcp": frameRTU, "rtu-over-tcp": frameRTU,
	"asciiovertcp": frameASCII, "ascii-over-tcp": frameASCII, "rtu": frameRTU, "ascii": frameASCII,
}

// parseController reads tcp://host[:502], tls://host[:802] or file:///dev/ttyX and checks the
// transmission mode against it.
func parseController(s, mode string) (controller, error) {
	if s == "" {
		return controller{}, fmt.Errorf("missing: write tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return controller{}, fmt.Errorf("%q: write tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE", s)
	}
	fr := modes[mode]
	scheme, addr := strings.ToLower(u.Scheme), ""
	switch scheme {
	case "tcp", "tls":
		if u.Host == "" || u.Path != "" && u.Path != "/" {
			return controller{}, fmt.Errorf("%q: want %s://HOST:PORT", s, scheme)
		}
		port := u.Port()
		if port == "" {
			port = "502"
			if scheme == "tls" {
				port = "802" // Modbus/TCP Security's registered port
			}
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return controller{}, fmt.Errorf("%q: port %q is not 1..65535", s, port)
		}
		addr = net.JoinHostPort(u.Hostname(), port)
		switch {
		case fr == 0:
			fr = frameMBAP
		case mode == "rtu" || mode == "ascii":
			return controller{}, fmt.Errorf("transmission_mode %q is for serial lines (file://); over TCP use %sovertcp", mode, mode)
		case scheme == "tls" && fr != frameMBAP:
			return controller{}, fmt.Errorf("transmission_mode %q: Modbus/TCP Security (tls://) carries Modbus TCP frames only", mode)
		}
	case "file":
		addr = u.Path
		if u.Host != "" || addr == "" {
			return controller{}, fmt.Errorf("%q: want file:///dev/DEVICE (three slashes)", s)
		}
		switch {
		case fr == 0:
			fr = frameRTU
		case mode != "rtu" && mode != "ascii":
			return controller{}, fmt.Errorf("transmission_mode %q is for TCP; a serial line speaks rtu or ascii", mode)
		}
	default:
		return controller{}, fmt.Errorf("%q: scheme %q, want tcp, tls or file", s, u.Scheme)
	}
	return newController(scheme, addr, fr), nil
}

// compileProfile checks a profile and builds its fields and groups. The warnings name fields
// whose address looks 1-based.
func compileProfile(p *Profile, prefix string) (_ *profile, warnings []error, _ error) {
	if p.Name == "" {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "name"), "missing: devices name their profile")
	}
	if _, err := parseByteOrder(p.ByteOrder, false); err != nil {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "byte_order"), "%v", err)
	}
	if len(p.Fields) == 0 {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "name"), "profile %q has no [[inputs.modbus.profile.field]]", p.Name)
	}
	prof := &profile{name: p.Name}
	groupIdx := map[string]int{}
	names := map[string]int{} // group/field name → field index
	for i := range p.Fields {
		f := &p.Fields[i]
		fp := fmt.Sprintf("%s.field[%d]", prefix, i)
		spec, err := compileField(f, fp, p.ByteOrder, keyOf(prefix, "byte_order"))
		if err != nil {
			return nil, nil, err
		}
		if zero, ok := oneBased(spec.kind, int(spec.address)); ok {
			warnings = append(warnings, config.KeyErrorf(fp+".address", "%d: addresses are 0-based; %s", spec.address, oneBasedHint(spec.kind, int(spec.address), zero)))
		}
		meas := cmp.Or(f.Measurement, p.Measurement, defaultMeasure)
		tags := models.MergeTags(models.TagsFromMap(f.Tags), nil, models.TagsFromMap(p.Tags))
		key := meas + "\x00" + tagKey(tags)
		g, ok := groupIdx[key]
		if !ok {
			g = len(prof.groups)
			groupIdx[key] = g
			prof.groups = append(prof.groups, group{measurement: meas, tags: tags})
		}
		if j, dup := names[key+"\x00"+f.Name]; dup {
			return nil, nil, config.KeyErrorf(fp+".name", "%q is also field[%d] of the same metric", f.Name, j)
		}
		names[key+"\x00"+f.Name] = i
		spec.group, spec.pos = g, prof.groups[g].fields
		prof.groups[g].fields++
		if spec.typ == typeString {
			spec.strSlot = prof.strings
			prof.strings++
		}
		prof.fields = append(prof.fields, spec)
	}
	if err := checkOverlaps(prof.fields, prefix); err != nil {
		return nil, nil, err
	}
	return prof, warnings, nil
}

func tagKey(tags []models.Tag) string {
	var b strings.Builder
	for _, t := range tags {
		b.WriteString(t.Key + "=" + t.Value + "\x00")
	}
	return b.String()
}

// compileField checks one field; defOrder is the profile's byte order, set by defKey.
func compileField(f *Field, prefix, defOrder, defKey string) (fieldSpec, error) {
	key := func(k string) string { return prefix + "." + k }
	spec := fieldSpec{name: f.Name, scale: 1, divisor: 1}
	if f.Name == "" {
		return spec, config.KeyErrorf(key("name"), "missing")
	}
	kind, ok := parseKind(f.Register)
	if !ok {
		return spec, config.KeyErrorf(key("register"), "%q: want coil, discrete, holding or input", f.Register)
	}
	spec.kind = kind
	if f.Address == nil {
		return spec, config.KeyErrorf(key("name"), "field %q has no address", f.Name)
	}
	dt := strings.ToUpper(f.DataType)
	if dt == "" {
		if !kind.isBits() {
			return spec, config.KeyErrorf(key("data_type"), "missing for %s register: one of %s", article(kind), typeList)
		}
		dt = "BIT"
	}
	typ, ok := typeNames[dt]
	if !ok {
		return spec, config.KeyErrorf(key("data_type"), "%q: want one of %s", f.DataType, typeList)
	}
	spec.typ = typ
	if kind.isBits() && typ != typeBit {
		return spec, config.KeyErrorf(key("data_type"), "%s: a %s holds one bit; its data_type is BIT", dt, kind)
	}
	// Size, length and bit.
	regs := typ.registers()
	switch typ {
	case typeString:
		if f.Length < 1 || f.Length > maxRegisters {
			return spec, config.KeyErrorf(key("length"), "%d: a STRING needs its length in registers, 1..%d", f.Length, maxRegisters)
		}
		regs = f.Length
	case typeFixed, typeUfixed:
		switch f.Length {
		case 0, 1:
			regs = 1
		case 2, 4:
			regs = f.Length
		default:
			return spec, config.KeyErrorf(key("length"), "%d: %s spans 1, 2 or 4 registers", f.Length, dt)
		}
	default:
		if f.Length != 0 {
			return spec, config.KeyErrorf(key("length"), "only STRING, FIXED and UFIXED take a length (%s has %d registers)", dt, regs)
		}
	}
	if typ == typeFixed || typ == typeUfixed {
		if f.Decimals < 0 || f.Decimals > 18 {
			return spec, config.KeyErrorf(key("decimals"), "%d: must be 0..18", f.Decimals)
		}
		spec.divisor = math.Pow10(f.Decimals)
	} else if f.Decimals != 0 {
		return spec, config.KeyErrorf(key("decimals"), "only FIXED and UFIXED have implied decimals")
	}
	switch {
	case typ == typeBit && !kind.isBits():
		if f.Bit == nil || *f.Bit < 0 || *f.Bit > 15 {
			return spec, config.KeyErrorf(key("bit"), "a BIT of %s register needs bit = 0..15", article(kind))
		}
		spec.bit = uint8(*f.Bit)
	case f.Bit != nil:
		return spec, config.KeyErrorf(key("bit"), "only a BIT of a holding or input register has a bit number")
	}
	if kind.isBits() {
		regs = 1
	}
	spec.regs = uint16(regs)
	addr := *f.Address
	if addr < 0 || addr+regs > 65536 {
		hint := ""
		if zero, ok := oneBased(kind, addr); ok {
			hint = "; " + oneBasedHint(kind, addr, zero)
		}
		return spec, config.KeyErrorf(key("address"), "%d: %s %s of %d spans %d..%d; addresses are 0..65535%s", addr, kind, dt, regs, addr, addr+regs-1, hint)
	}
	spec.address = uint16(addr)
	// Byte order: the field's own, or else the profile's. Of the profile's, a field of one
	// register and a STRING (its registers are read in order) take the byte order within a
	// register alone: ABCD and CDAB are AB to them, DCBA and BADC are BA. A value of several
	// registers needs a four-letter order; the profile's AB or BA is an error at the profile.
	wide := regs > 1 && typ != typeString
	var bo byteOrder
	var err error
	if f.ByteOrder != "" {
		if bo, err = parseByteOrder(f.ByteOrder, wide); err != nil {
			return spec, config.KeyErrorf(key("byte_order"), "%v", err)
		}
		if typ == typeString && bo.wordSwap {
			return spec, config.KeyErrorf(key("byte_order"), "%q: a STRING is AB (first character in the high byte) or BA", f.ByteOrder)
		}
	} else {
		if bo, err = parseByteOrder(defOrder, wide); err != nil {
			return spec, config.KeyErrorf(defKey, "%v (field %q is %s: give it a byte_order of its own)", err, f.Name, dt)
		}
		if !wide {
			bo.wordSwap = false
		}
	}
	spec.order = bo
	// Output.
	out, ok := parseOutput(f.Output)
	if !ok {
		return spec, config.KeyErrorf(key("output"), "%q: want native, float, int or uint", f.Output)
	}
	spec.out = out
	if f.Scale != nil {
		if *f.Scale == 0 || math.IsNaN(*f.Scale) || math.IsInf(*f.Scale, 0) {
			return spec, config.KeyErrorf(key("scale"), "%v: a scale must be a finite number other than 0", *f.Scale)
		}
		spec.scale = *f.Scale
	}
	if math.IsNaN(f.Offset) || math.IsInf(f.Offset, 0) {
		return spec, config.KeyErrorf(key("offset"), "%v: must be a finite number", f.Offset)
	}
	spec.offset = f.Offset
	spec.scaled = spec.scale != 1 || spec.offset != 0
	if typ == typeString && (spec.scaled || out != outNative) {
		return spec, config.KeyErrorf(key("output"), "a STRING has no scale, offset or numeric output")
	}
	return spec, nil
}

// oneBased reports whether addr of a table looks like a register number of the 1-based
// convention many device manuals use, and the 0-based address it would stand for: 30001–39999
// (300001–365536) are input registers, 40001–49999 (400001–465536) holding registers and
// 10001–19999 (100001–165536) discrete inputs. Coils (00001–09999) are left alone: their numbers
// cannot be told from addresses. A device may have registers that high (SunSpec maps start at
// holding 40000), so below 65536 this is a warning, not an error.
func oneBased(k regKind, addr int) (zero int, ok bool) {
	var first int
	switch k {
	case kindDiscrete:
		first = 1
	case kindInput:
		first = 3
	case kindHolding:
		first = 4
	default:
		return 0, false
	}
	for _, c := range []struct{ base, last int }{{first*10000 + 1, first*10000 + 9999}, {first*100000 + 1, first*100000 + 65536}} {
		if addr >= c.base && addr <= c.last {
			return addr - c.base, true
		}
	}
	return 0, false
}

// oneBasedHint says what a 1-based address probably means.
func oneBasedHint(k regKind, addr, zero int) string {
	table := map[regKind]string{kindDiscrete: "discrete inputs", kindInput: "input registers", kindHolding: "holding registers"}[k]
	return fmt.Sprintf("%d is probably address %d (the 1-based numbering of %s starts at %d)", addr, zero, table, addr-zero)
}

// partMask is the part of a register a sub-register field reads; 0 for a whole register.
func partMask(f *fieldSpec) uint16 {
	switch f.typ {
	case typeBit:
		return 1 << f.bit
	case typeInt8L, typeUint8L:
		return 0x00FF
	case typeInt8H, typeUint8H:
		return 0xFF00
	}
	return 0
}

// checkOverlaps refuses two fields reading the same register or bit, unless both read
// distinct parts (bits, bytes) of one register.
func checkOverlaps(fields []fieldSpec, prefix string) error {
	idx := make([]int, len(fields))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		fa, fb := &fields[a], &fields[b]
		if fa.kind != fb.kind {
			return int(fa.kind) - int(fb.kind)
		}
		return int(fa.address) - int(fb.address)
	})
	for n, i := range idx {
		a := &fields[i]
		for _, j := range idx[n+1:] {
			b := &fields[j]
			if b.kind != a.kind || int(b.address) >= a.end() {
				break
			}
			ma, mb := partMask(a), partMask(b)
			if a.regs == 1 && b.regs == 1 && !a.kind.isBits() && ma != 0 && mb != 0 && ma&mb == 0 {
				continue
			}
			later, earlier := max(i, j), min(i, j)
			l, e := &fields[later], &fields[earlier]
			return config.KeyErrorf(fmt.Sprintf("%s.field[%d].address", prefix, later),
				"%s %d..%d of %q overlaps %q (%s %d..%d)", l.kind, l.address, l.end()-1, l.name, e.name, e.kind, e.address, e.end()-1)
		}
	}
	return nil
}

// deviceTags builds the tags of a device's metrics: the group's tags, the device's own over
// them (copies: the configuration's text is not kept for them), and the device tag over both.
// first are the first group's, without the device tag (newDevice adds it: devices with the
// same tags share one set); perGroup those of every group, with it (read-only: a group with
// the same tags as the one before shares its copy), nil when the profile's groups all have the
// same tags.
func deviceTags(prof *profile, name string, own map[string]string) (first []models.Tag, perGroup [][]models.Tag) {
	tags := models.TagsFromMap(own)
	for i := range tags {
		tags[i].Key, tags[i].Value = strings.Clone(tags[i].Key), strings.Clone(tags[i].Value)
	}
	first = slices.Clip(models.MergeTags(tags, nil, prof.groups[0].tags))
	differ := func(gr group) bool { return !slices.Equal(gr.tags, prof.groups[0].tags) }
	if !slices.ContainsFunc(prof.groups, differ) {
		return first, nil
	}
	device := []models.Tag{{Key: "device", Value: strings.Clone(name)}}
	perGroup = make([][]models.Tag, len(prof.groups))
	for g := range prof.groups {
		if g > 0 && slices.Equal(prof.groups[g].tags, prof.groups[g-1].tags) {
			perGroup[g] = perGroup[g-1]
		} else {
			perGroup[g] = slices.Clip(models.MergeTags(tags, device, prof.groups[g].tags))
		}
	}
	return first, perGroup
}

// staleTags returns tags with quality=stale added to each set.
func staleTags(tags [][]models.Tag) [][]models.Tag {
	out := make([][]models.Tag, len(tags))
	for g, t := range tags {
		out[g] = slices.Clip(models.MergeTags(t, []models.Tag{{Key: "quality", Value: "stale"}}, nil))
	}
	return out
}

// article returns "a holding" or "an input".
func article(k regKind) string {
	if k == kindInput {
		return "an input"
	}
	return "a " + k.String()
}
