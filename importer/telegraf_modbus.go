package importer

import (
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/inputs/modbus"
)

// Telegraf's register type tag values.
var telegrafTypeTag = map[string]string{
	"coil": "coil", "discrete": "discrete_input", "holding": "holding_register", "input": "input_register",
}

// telegrafModes maps transmission_mode to tagpipe's.
var telegrafModes = map[string]string{
	"": "", "auto": "", "TCP": "tcp", "RTUoverTCP": "rtuovertcp", "ASCIIoverTCP": "asciiovertcp", "RTU": "rtu", "ASCII": "ascii",
}

// byteOrders normalizes every byte order Telegraf accepts to ABCD, DCBA, BADC or CDAB.
var byteOrders = map[string]string{
	"": "ABCD", "AB": "ABCD", "ABCD": "ABCD", "ABCDEFGH": "ABCD", "MSW-BE": "ABCD", "MSW": "ABCD",
	"BA": "DCBA", "DCBA": "DCBA", "HGFEDCBA": "DCBA", "LSW-LE": "DCBA", "LSW": "DCBA",
	"BADC": "BADC", "BADCFEHG": "BADC", "MSW-LE": "BADC",
	"CDAB": "CDAB", "GHEFCDAB": "CDAB", "LSW-BE": "CDAB",
}

// slaveFields collects the fields of one unit (slave id) of a block.
type slaveFields struct {
	slave  int
	fields []field
	line   int
}

// modbusBlock imports one [[inputs.modbus]] of Telegraf: one device per slave id, whose
// register map becomes (or joins) a profile of the tagpipe table with the same plugin-level
// settings.
func (im *telegrafImport) modbusBlock(order int, t *table) {
	name, _ := t.str("name")
	if name == "" {
		t.report("name", Bad, "a Telegraf modbus input needs a name; the block is left out")
		t.drop()
		return
	}
	controller, ok := t.str("controller")
	if !ok {
		t.report("controller", Bad, "missing; the block is left out")
		t.drop()
		return
	}
	ctrl, err := telegrafController(controller)
	if err != nil {
		t.report("controller", Bad, "%v; the block is left out", err)
		t.drop()
		return
	}
	if ctrl != controller {
		t.report("controller", Note, "written as %s", ctrl)
	}

	// Plugin-level settings: a tagpipe table holds the blocks that agree on them.
	plugin := commonInput(t, false)
	for _, k := range []string{"baud_rate", "data_bits", "stop_bits"} {
		if n, ok := t.integer(k); ok {
			plugin = append(plugin, kv{key: k, val: n})
		}
	}
	if p, ok := t.str("parity"); ok {
		plugin = append(plugin, kv{key: "parity", val: p})
	}
	var rs485 []kv
	if rs := t.sub("rs485"); rs != nil {
		rs485 = []kv{}
		for _, k := range []string{"delay_rts_before_send", "delay_rts_after_send"} {
			if d, ok := rs.duration(k); ok {
				rs485 = append(rs485, kv{key: k, val: d})
			}
		}
		for _, k := range []string{"rts_high_during_send", "rts_high_after_send", "rx_during_tx"} {
			if b, ok := rs.boolean(k); ok {
				rs485 = append(rs485, kv{key: k, val: b})
			}
		}
		rs.rest()
	}
	blockTags, _ := t.stringMap("tags")

	// Device settings.
	var opts []kv
	if m, ok := t.str("transmission_mode"); ok {
		mode, known := telegrafModes[m]
		switch {
		case !known:
			t.report("transmission_mode", Bad, "%q: Telegraf knows TCP, RTUoverTCP, ASCIIoverTCP, RTU, ASCII and auto; left out", m)
		case mode != "":
			opts = append(opts, kv{key: "transmission_mode", val: mode})
		}
	}
	if d, ok := t.duration("timeout"); ok && d > 0 {
		opts = append(opts, kv{key: "timeout_max", val: d})
		if d < 50*time.Millisecond {
			opts = append(opts, kv{key: "timeout_min", val: d})
		}
		t.report("timeout", Approximate, "timeout_max = %s: tagpipe's timeout adapts to the device's round trips, at most this long", tomlDuration(d))
	}
	if n, ok := t.integer("busy_retries"); ok {
		if n < 0 || n > 100 {
			t.report("busy_retries", Bad, "%d: tagpipe takes 0..100; left out", n)
		} else {
			opts = append(opts, kv{key: "busy_retries", val: n})
		}
	}
	if d, ok := t.duration("busy_retries_wait"); ok {
		opts = append(opts, kv{key: "busy_retries_wait", val: d})
	}
	t.skip("debug_connection", Unmapped, "tagpipe traces Modbus frames at debug level (--debug)")
	typeTag := true
	if b, ok := t.boolean("exclude_register_type_tag"); ok {
		typeTag = !b
	}
	var stringLocation string
	if w := t.sub("workarounds"); w != nil {
		for _, k := range []string{"pause_after_connect", "pause_between_requests"} {
			if d, ok := w.duration(k); ok && d > 0 {
				opts = append(opts, kv{key: k, val: d})
			}
		}
		for _, k := range []string{"close_connection_after_gather", "one_request_per_field", "read_coils_starting_at_zero"} {
			if b, ok := w.boolean(k); ok && b {
				opts = append(opts, kv{key: k, val: b})
			}
		}
		for _, k := range []struct{ telegraf, tagpipe string }{
			{"max_bit_registers_per_request", "max_request_bits"}, {"max_word_registers_per_request", "max_request_registers"},
		} {
			if n, ok := w.integer(k.telegraf); ok && n > 0 {
				opts = append(opts, kv{key: k.tagpipe, val: n})
			}
		}
		if s, ok := w.str("string_register_location"); ok && s != "" && s != "both" {
			stringLocation = s
			w.report("string_register_location", Unmapped, "%q: tagpipe reads both bytes of every register of a STRING; the STRING fields are left out", s)
		}
		w.rest()
	}

	style, _ := t.str("configuration_type")
	b := &blockFields{t: t, typeTag: typeTag, stringLocation: stringLocation}
	switch style {
	case "", "register":
		slave := int64(0)
		if n, ok := t.integer("slave_id"); ok {
			slave = n
		}
		b.registerStyle(int(slave))
	case "request":
		t.skip("slave_id", Note, "the request style names the unit of each request")
		b.requestStyle()
	case "metric":
		t.skip("slave_id", Note, "the metric style names the unit of each metric")
		b.metricStyle()
	default:
		t.report("configuration_type", Bad, "%q: Telegraf knows register, request and metric; the block is left out", style)
		t.drop()
		return
	}
	if b.maxGap > 0 {
		opts = append(opts, kv{key: "max_gap", val: b.maxGap})
	}
	t.rest()
	if len(b.slaves) == 0 {
		t.report("", Bad, "no fields: the block is left out")
		return
	}
	for _, s := range b.slaves {
		sort.SliceStable(s.fields, func(i, j int) bool { return s.fields[i].line < s.fields[j].line })
	}

	key := fmt.Sprint(plugin, rs485)
	tbl := im.modbus[key]
	if tbl == nil {
		tbl = newModbusTable(key)
		tbl.plugin, tbl.rs485 = plugin, rs485
		im.modbus[key] = tbl
		im.parts = append(im.parts, part{order: order, inputs: true, write: tbl.write})
	}
	tbl.comments = append(tbl.comments, fmt.Sprintf("From [[inputs.modbus]] %q at %s:%d.", name, t.src.file, t.line))
	for _, s := range b.slaves {
		devName := name
		if len(b.slaves) > 1 {
			devName = fmt.Sprintf("%s-%d", name, s.slave)
		}
		unique := tbl.uniqueDeviceName(devName)
		if unique != devName {
			t.report("name", Note, "a device is named %q already: this one is %q", devName, unique)
		}
		from := fmt.Sprintf("%s:%d", t.src.file, s.line)
		tags := map[string]string{"name": name, "slave_id": strconv.Itoa(s.slave)}
		for k, v := range blockTags {
			if _, clash := tags[k]; clash {
				t.report("tags", Approximate, "tag %q: the block's value %q replaces Telegraf's own", k, v)
			}
			tags[k] = v
		}
		prof := tbl.addProfile(name, s.fields, from)
		tbl.devices = append(tbl.devices, &device{name: unique, controller: ctrl, slave: s.slave, profile: prof,
			tags: tags, opts: opts, from: from})
	}
}

// telegrafController checks a Telegraf controller and returns tagpipe's spelling of it.
func telegrafController(s string) (string, error) {
	if strings.Contains(s, "${") {
		return s, nil // tagpipe expands environment variables as Telegraf does; checked at load
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	switch u.Scheme {
	case "tcp":
		if u.Host == "" {
			return "", fmt.Errorf("%q: want tcp://HOST:PORT", s)
		}
		return "tcp://" + u.Host, nil
	case "file":
		p := u.Host + u.Path // Telegraf joins them: file://dev/ttyUSB0 is dev/ttyUSB0
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("%q: want file:///dev/DEVICE (an absolute path)", s)
		}
		return "file://" + p, nil
	case "":
		if strings.HasPrefix(s, "/") {
			return "file://" + s, nil
		}
		return "", fmt.Errorf("%q: a Windows serial port; tagpipe runs on Linux: write file:///dev/ttyS0 or the like", s)
	}
	return "", fmt.Errorf("%q: scheme %q; Telegraf and tagpipe take tcp:// and file://", s, u.Scheme)
}

// blockFields turns the fields of one block, in any style, into tagpipe fields per unit.
type blockFields struct {
	t              *table
	typeTag        bool
	stringLocation string
	slaves         []*slaveFields
	maxGap         int
}

func (b *blockFields) unit(slave, line int) *slaveFields {
	for _, s := range b.slaves {
		if s.slave == slave {
			return s
		}
	}
	s := &slaveFields{slave: slave, line: line}
	b.slaves = append(b.slaves, s)
	sort.SliceStable(b.slaves, func(i, j int) bool { return b.slaves[i].slave < b.slaves[j].slave })
	return s
}

// spec is a Telegraf field, whatever its style, before it is checked and converted.
type spec struct {
	e           *table // the field's table, for messages
	style       string
	register    string // coil, discrete, holding, input
	name        string
	address     int
	words       int    // register style: how many addresses the field lists
	dataType    string // Telegraf's
	order       string // ABCD, DCBA, BADC or CDAB
	scale       float64
	hasScale    bool
	output      string // Telegraf's output type ("" for the default)
	bit         int
	hasBit      bool
	length      int
	measurement string
	tags        map[string]string
}

// add converts sp and adds it to the unit's fields, unless it is wrong or overlaps.
func (b *blockFields) add(u *slaveFields, sp spec) {
	if b.stringLocation != "" && (sp.dataType == "STRING") {
		return // reported with string_register_location
	}
	f, ok := convertField(sp)
	if !ok {
		return
	}
	if sp.measurement == "" {
		sp.measurement = "modbus"
	}
	f.Measurement = sp.measurement
	tags := map[string]string{}
	if b.typeTag {
		tags["type"] = telegrafTypeTag[sp.register]
	}
	for k, v := range sp.tags {
		tags[k] = v
	}
	if len(tags) > 0 {
		f.Tags = tags
	}
	nf := field{Field: f, from: fmt.Sprintf("%s:%d", sp.e.src.file, sp.e.line), line: sp.e.line}
	for _, g := range u.fields {
		if g.Name == f.Name && g.Measurement == f.Measurement && fmt.Sprint(g.Tags) == fmt.Sprint(f.Tags) {
			sp.e.report("name", Bad, "%q is also the field at %s, in the same metric; left out", f.Name, g.from)
			return
		}
	}
	u.fields = append(u.fields, nf)
	if j := overlapping(u.fields, len(u.fields)-1); j >= 0 {
		u.fields = u.fields[:len(u.fields)-1]
		sp.e.report("address", Bad, "%s reads registers of %s (%s); tagpipe reads each register of a device into one field: left out",
			describeField(&f), describeField(&u.fields[j].Field), u.fields[j].from)
	}
}

func (b *blockFields) registerStyle(slave int) {
	for _, list := range []struct{ key, register string }{
		{"coils", "coil"}, {"discrete_inputs", "discrete"}, {"holding_registers", "holding"}, {"input_registers", "input"},
	} {
		for _, e := range b.t.tables(list.key) {
			e.where = b.t.where
			sp := spec{e: e, style: "register", register: list.register}
			sp.name, _ = e.str("name")
			sp.measurement, _ = e.str("measurement")
			addrs, ok := e.get("address")
			words, first, good := addressList(addrs)
			if !ok || !good {
				e.report("address", Bad, "want a list of consecutive addresses, e.g. [0] or [4, 5]; the field is left out")
				e.drop()
				continue
			}
			sp.address, sp.words = first, words
			sp.dataType, _ = e.str("data_type")
			bo, _ := e.str("byte_order")
			order, known := byteOrders[bo]
			if !known && list.register != "coil" && list.register != "discrete" {
				e.report("byte_order", Bad, "%q is not a byte order Telegraf knows; the field is left out", bo)
				e.drop()
				continue
			}
			sp.order = order
			if s, ok := e.number("scale"); ok {
				sp.scale, sp.hasScale = s, true
			}
			if n, ok := e.integer("bit"); ok {
				sp.bit, sp.hasBit = int(n), true
			}
			e.rest()
			b.add(b.unit(slave, b.t.line), sp)
		}
	}
}

// addressList reads register style addresses: consecutive, 1, 2 or 4 of them (or any number
// for a STRING).
func addressList(v any) (n, first int, ok bool) {
	list, isList := v.([]any)
	if !isList || len(list) == 0 {
		return 0, 0, false
	}
	for i, x := range list {
		a, isInt := x.(int64)
		if !isInt || a < 0 || a > 65535 || i > 0 && int(a) != first+i {
			return 0, 0, false
		}
		if i == 0 {
			first = int(a)
		}
	}
	return len(list), first, true
}

func (b *blockFields) requestStyle() {
	for _, r := range b.t.tables("request") {
		r.where = b.t.where
		slave, _ := r.integer("slave_id")
		order, ok := styleOrder(r, "request")
		if !ok {
			continue
		}
		register, _ := r.str("register")
		if register == "" {
			register = "holding"
		}
		if telegrafTypeTag[register] == "" {
			r.report("register", Bad, "%q: want coil, discrete, holding or input; the request is left out", register)
			r.drop()
			continue
		}
		measurement, _ := r.str("measurement")
		b.optimization(r)
		var tags map[string]string
		if _, list := r.m["tags"].([]map[string]any); list { // [[inputs.modbus.request.tags]], as older samples write it
			tags = map[string]string{}
			for _, tt := range r.tables("tags") {
				for k := range tt.m {
					if s, ok := tt.str(k); ok {
						tags[k] = s
					}
				}
				tt.rest()
			}
		} else {
			tags, _ = r.stringMap("tags")
		}
		u := b.unit(int(slave), r.line)
		for _, e := range r.tables("fields") {
			e.where = b.t.where
			if omit, _ := e.boolean("omit"); omit {
				name, _ := e.str("name")
				e.report("omit", Note, "field %q (omit = true) is not read: tagpipe plans its requests itself; set max_gap to read across gaps", name)
				for k := range e.m {
					e.used[k] = true
				}
				continue
			}
			sp := spec{e: e, style: "request", register: register, order: order, measurement: measurement, tags: tags}
			b.requestField(e, &sp)
			b.add(u, sp)
		}
		r.rest()
	}
}

// styleOrder reads the byte order of a request or a metric (what); a byte order Telegraf
// refuses there leaves the table out.
func styleOrder(t *table, what string) (string, bool) {
	bo, _ := t.str("byte_order")
	order, known := byteOrders[bo]
	if !known || bo == "AB" || bo == "BA" {
		t.report("byte_order", Bad, "%q: the byte order of a %s is ABCD, DCBA, BADC, CDAB or MSW-BE, MSW-LE, LSW-BE, LSW-LE; the %s is left out", bo, what, what)
		t.drop()
		return "", false
	}
	return order, true
}

// requestField reads the keys a field has in the request and metric styles.
func (b *blockFields) requestField(e *table, sp *spec) {
	sp.name, _ = e.str("name")
	if a, ok := e.integer("address"); ok {
		sp.address = int(a)
	} else {
		sp.address = -1
	}
	sp.dataType, _ = e.str("type")
	if s, ok := e.number("scale"); ok && s != 0 {
		sp.scale, sp.hasScale = s, true
	}
	sp.output, _ = e.str("output")
	if n, ok := e.integer("bit"); ok {
		sp.bit, sp.hasBit = int(n), true
	}
	if n, ok := e.integer("length"); ok {
		sp.length = int(n)
	}
	if m, ok := e.str("measurement"); ok && m != "" {
		sp.measurement = m
	}
	e.rest()
}

// optimization maps a request's (or the metric style's) request optimization to max_gap.
func (b *blockFields) optimization(t *table) {
	opt, _ := t.str("optimization")
	fill, hasFill := t.integer("optimization_max_register_fill")
	switch opt {
	case "", "none", "shrink", "rearrange":
		if opt != "" {
			t.report("optimization", Note, "%q: tagpipe plans its own requests, the fewest that read no register between fields (max_gap = 0)", opt)
		}
	case "max_insert":
		if !hasFill {
			fill = 50 // Telegraf's default
		}
		b.maxGap = max(b.maxGap, int(fill))
		t.report("optimization", Approximate, "max_insert: max_gap = %d, tagpipe's planner reads across gaps of up to that many registers", fill)
	case "aggressive":
		b.maxGap = max(b.maxGap, 124)
		t.report("optimization", Approximate, "aggressive: max_gap = 124, so that tagpipe reads across any gap a request can span")
	default:
		t.report("optimization", Bad, "%q: Telegraf knows none, shrink, rearrange, aggressive and max_insert; left out", opt)
	}
	if hasFill && opt != "max_insert" {
		t.report("optimization_max_register_fill", Note, "only used by max_insert")
	}
}

func (b *blockFields) metricStyle() {
	b.optimization(b.t)
	for _, m := range b.t.tables("metric") {
		m.where = b.t.where
		slave, _ := m.integer("slave_id")
		order, ok := styleOrder(m, "metric")
		if !ok {
			continue
		}
		measurement, _ := m.str("measurement")
		tags, _ := m.stringMap("tags")
		u := b.unit(int(slave), m.line)
		for _, e := range m.tables("fields") {
			e.where = b.t.where
			register, _ := e.str("register")
			if register == "" {
				register = "holding"
			}
			if telegrafTypeTag[register] == "" {
				e.report("register", Bad, "%q: want coil, discrete, holding or input; the field is left out", register)
				e.drop()
				continue
			}
			sp := spec{e: e, style: "metric", register: register, order: order, measurement: measurement, tags: tags}
			b.requestField(e, &sp)
			b.add(u, sp)
		}
		m.rest()
	}
}

// convertField maps a Telegraf field to a tagpipe field: the data type, its length, the byte
// order, scale and output, so that tagpipe writes the value Telegraf would (same name, type and
// scaled value). It reports what it cannot map on the field's own line.
func convertField(sp spec) (modbus.Field, bool) {
	e := sp.e
	var f modbus.Field
	if sp.name == "" {
		e.report("name", Bad, "missing; the field is left out")
		return f, false
	}
	if sp.address < 0 || sp.address > 65535 {
		e.report("address", Bad, "missing or not 0..65535; the field is left out")
		return f, false
	}
	f.Name, f.Register = sp.name, sp.register
	addr := sp.address
	f.Address = &addr
	bits := sp.register == "coil" || sp.register == "discrete"
	if bits {
		// Telegraf writes a coil or discrete input as 0 or 1 (UINT16) unless BOOL.
		out := sp.output
		if sp.style == "register" {
			out = sp.dataType
		}
		switch out {
		case "", "UINT16":
			f.Output = "uint"
		case "BOOL":
		default:
			e.report(map[bool]string{true: "data_type", false: "output"}[sp.style == "register"], Bad,
				"%q: a coil or discrete input is UINT16 or BOOL; the field is left out", out)
			return f, false
		}
		return f, true
	}

	// The data type, its class (i int, u uint, f float, s string) and size in registers.
	dt := sp.dataType
	var class byte
	regs := 1
	switch dt {
	case "INT8L", "INT8H", "INT16", "INT32", "INT64":
		class = 'i'
	case "UINT8L", "UINT8H", "UINT16", "UINT32", "UINT64":
		class = 'u'
	case "FLOAT16", "FLOAT32", "FLOAT64":
		class = 'f'
		if sp.style == "register" {
			if dt != "FLOAT32" {
				e.report("data_type", Bad, "%q: the register style spells it %s-IEEE; the field is left out", dt, dt)
				return f, false
			}
			// FLOAT32 in the register style is the deprecated name of UFIXED.
			dt, class = "UFIXED", 'x'
			e.report("data_type", Note, "FLOAT32 is Telegraf's old name of UFIXED (an unsigned integer, scaled): written as UFIXED")
		}
	case "FLOAT16-IEEE", "FLOAT32-IEEE", "FLOAT64-IEEE":
		if sp.style != "register" {
			e.report("type", Bad, "%q: the %s style spells it %s; the field is left out", dt, sp.style, strings.TrimSuffix(dt, "-IEEE"))
			return f, false
		}
		dt, class = strings.TrimSuffix(dt, "-IEEE"), 'f'
	case "FIXED", "UFIXED":
		if sp.style != "register" {
			e.report("type", Bad, "%q is a register style type; the field is left out", dt)
			return f, false
		}
		class = 'x'
	case "BIT":
		class = 'b'
		if !sp.hasBit || sp.bit < 0 || sp.bit > 15 {
			e.report("bit", Bad, "a BIT needs bit = 0..15; the field is left out")
			return f, false
		}
		bit := sp.bit
		f.Bit = &bit
	case "STRING":
		class = 's'
	case "":
		e.report(map[bool]string{true: "data_type", false: "type"}[sp.style == "register"], Bad, "missing; the field is left out")
		return f, false
	default:
		e.report(map[bool]string{true: "data_type", false: "type"}[sp.style == "register"], Bad, "%q is not a Telegraf data type; the field is left out", dt)
		return f, false
	}
	if sp.hasBit && class != 'b' && sp.bit != 0 {
		e.report("bit", Bad, "only a BIT has a bit; the field is left out")
		return f, false
	}
	f.DataType = dt
	switch dt {
	case "INT32", "UINT32", "FLOAT32":
		regs = 2
	case "INT64", "UINT64", "FLOAT64":
		regs = 4
	}
	switch {
	case class == 'x':
		if sp.words != 1 && sp.words != 2 && sp.words != 4 {
			e.report("address", Bad, "%s spans 1, 2 or 4 registers, not %d; the field is left out", sp.dataType, sp.words)
			return f, false
		}
		regs = sp.words
		if regs > 1 {
			f.Length = regs
		}
	case class == 's':
		n := sp.length
		if sp.style == "register" {
			n = sp.words
		}
		if n < 1 || n > 125 {
			e.report("length", Bad, "a STRING needs its length, 1..125 registers; the field is left out")
			return f, false
		}
		regs, f.Length = n, n
		e.report(map[bool]string{true: "data_type", false: "type"}[sp.style == "register"], Approximate,
			"STRING: tagpipe ends the text at its first NUL and cuts trailing spaces")
	case sp.style == "register" && sp.words != regs:
		e.report("address", Bad, "%s needs %d addresses, not %d; the field is left out", sp.dataType, regs, sp.words)
		return f, false
	}
	if sp.address+regs > 65536 {
		e.report("address", Bad, "%d..%d is past 65535; the field is left out", sp.address, sp.address+regs-1)
		return f, false
	}

	// Byte order: the four-letter orders for wide values; AB or BA for one register.
	switch {
	case regs > 1 && class != 's':
		if sp.order != "ABCD" {
			f.ByteOrder = sp.order
		}
	case sp.order == "DCBA" || sp.order == "BADC":
		f.ByteOrder = "BA"
	}

	// Scale and output.
	scale := 1.0
	if sp.hasScale {
		scale = sp.scale
	}
	if sp.style == "register" && class != 's' && class != 'b' && sp.hasScale && scale == 0 {
		e.report("scale", Bad, "0: the register style needs a scale other than 0; the field is left out")
		return f, false
	}
	if class == 's' {
		if sp.hasScale && scale != 1 || sp.output != "" && sp.output != "STRING" {
			e.report("scale", Bad, "a STRING has no scale or numeric output; the field is left out")
			return f, false
		}
		return f, true
	}
	if scale != 1 {
		s := scale
		f.Scale = &s
	}
	// out is the type Telegraf writes: i, u or f.
	var out byte
	switch {
	case sp.style == "register":
		switch class {
		case 'x':
			out = 'f'
		case 'b':
			out = 'u'
		default:
			out = class // native: the type of the input, even when scaled
			if class != 'f' && scale != 1 && scale != math.Trunc(scale) {
				e.report("scale", Approximate, "Telegraf truncates %s·%v toward zero to keep an integer; tagpipe rounds it to the nearest", dt, scale)
			}
			if class == 'f' && scale != 1 && dt != "FLOAT64" {
				e.report("scale", Approximate, "Telegraf multiplies a %s by the scale in 32-bit precision, tagpipe in 64-bit: the last digits may differ", dt)
			}
		}
	default:
		switch sp.output {
		case "":
			switch {
			case sp.hasScale:
				out = 'f'
			case class == 'b':
				out = 'u'
			default:
				out = class
			}
		case "INT64":
			out = 'i'
		case "UINT64":
			out = 'u'
		case "FLOAT64":
			out = 'f'
		default:
			e.report("output", Bad, "%q: Telegraf writes INT64, UINT64 or FLOAT64; the field is left out", sp.output)
			return f, false
		}
		if out != 'f' && (class == 'f' || scale != math.Trunc(scale)) {
			e.report("output", Approximate, "Telegraf truncates toward zero to write an integer; tagpipe rounds to the nearest")
		}
	}
	// tagpipe's own default: integers stay integers, a scaled value is a float, BIT is a bool.
	def := class
	if class == 'b' {
		def = 'B'
	}
	if scale != 1 || class == 'x' {
		def = 'f'
	}
	if out != def {
		f.Output = map[byte]string{'i': "int", 'u': "uint", 'f': "float"}[out]
	}
	return f, true
}
