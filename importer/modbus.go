package importer

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tagpipe/tagpipe/inputs/modbus"
)

// field is one profile field with where it came from.
type field struct {
	modbus.Field
	from    string // "telegraf.conf:31", "tags.csv:5"
	line    int    // of from, for the order of the fields
	comment string // a description, units: written above the field
	rate    int64  // Kepware: the scan rate in milliseconds
}

// profile is a register map; devices with equal maps share one.
type profile struct {
	name   string
	fields []field
	from   string
}

// device is one [[inputs.modbus.device]].
type device struct {
	name       string
	controller string
	slave      int
	profile    *profile
	tags       map[string]string
	opts       []kv // per-device options, in the order they were read
	from       string
}

// modbusTable is one [[inputs.modbus]]: plugin-level keys, its profiles and devices.
type modbusTable struct {
	key      string   // what the plugin-level keys are (tables are merged by it)
	comments []string // above the header
	plugin   []kv
	rs485    []kv // the [inputs.modbus.rs485] table; nil: none
	profiles []*profile
	devices  []*device
	byMap    map[string]*profile
}

func newModbusTable(key string) *modbusTable {
	return &modbusTable{key: key, byMap: map[string]*profile{}}
}

// addProfile returns the table's profile with these fields, adding one named after name
// (made unique) when no profile has the same register map.
func (t *modbusTable) addProfile(name string, fields []field, from string) *profile {
	key := registerMap(fields)
	if p, ok := t.byMap[key]; ok {
		return p
	}
	p := &profile{name: t.uniqueProfileName(name), fields: fields, from: from}
	t.byMap[key] = p
	t.profiles = append(t.profiles, p)
	return p
}

func (t *modbusTable) uniqueProfileName(name string) string {
	if name == "" {
		name = "profile"
	}
	return uniqueName(name, func(n string) bool {
		return slices.ContainsFunc(t.profiles, func(p *profile) bool { return p.name == n })
	})
}

// uniqueDeviceName returns name, or name-2, name-3... when a device has it already.
func (t *modbusTable) uniqueDeviceName(name string) string {
	return uniqueName(name, func(n string) bool {
		return slices.ContainsFunc(t.devices, func(d *device) bool { return d.name == n })
	})
}

// uniqueName returns name, or name-2, name-3... the first that is not taken.
func uniqueName(name string, taken func(string) bool) string {
	out := name
	for i := 2; taken(out); i++ {
		out = name + "-" + strconv.Itoa(i)
	}
	return out
}

// registerMap is a text that two fields lists share exactly when they read the same values the
// same way into the same names: the order of the fields does not matter.
func registerMap(fields []field) string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = fieldKey(f.Field)
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

func fieldKey(f modbus.Field) string {
	var b strings.Builder
	for _, x := range fieldKVs(f) {
		b.WriteString(x.key + "=" + tomlValue(x.val) + ";")
	}
	return b.String()
}

// fieldKVs returns the keys of a field as tagpipe writes them: defaults left out.
func fieldKVs(f modbus.Field) []kv {
	out := []kv{{key: "name", val: f.Name}}
	if f.Register != "" && f.Register != "holding" {
		out = append(out, kv{key: "register", val: f.Register})
	}
	if f.Address != nil {
		out = append(out, kv{key: "address", val: *f.Address})
	}
	bits := f.Register == "coil" || f.Register == "discrete"
	if f.DataType != "" && !(bits && f.DataType == "BIT") {
		out = append(out, kv{key: "data_type", val: f.DataType})
	}
	if f.ByteOrder != "" && f.ByteOrder != "ABCD" && f.ByteOrder != "AB" {
		out = append(out, kv{key: "byte_order", val: f.ByteOrder})
	}
	if f.Length != 0 {
		out = append(out, kv{key: "length", val: f.Length})
	}
	if f.Decimals != 0 {
		out = append(out, kv{key: "decimals", val: f.Decimals})
	}
	if f.Bit != nil {
		out = append(out, kv{key: "bit", val: *f.Bit})
	}
	if f.Scale != nil && *f.Scale != 1 {
		out = append(out, kv{key: "scale", val: *f.Scale})
	}
	if f.Offset != 0 {
		out = append(out, kv{key: "offset", val: f.Offset})
	}
	if f.Output != "" && f.Output != "native" {
		out = append(out, kv{key: "output", val: f.Output})
	}
	if f.Measurement != "" && f.Measurement != "modbus" {
		out = append(out, kv{key: "measurement", val: f.Measurement})
	}
	if len(f.Tags) > 0 {
		out = append(out, kv{key: "tags", val: f.Tags})
	}
	return out
}

// write writes the table. Options that every device sets to the same value are written once,
// at the top of the table.
func (t *modbusTable) write(e *emitter) {
	for _, c := range t.comments {
		e.comment(0, c)
	}
	e.header(0, "[[inputs.modbus]]")
	plugin := append([]kv(nil), t.plugin...)
	if len(t.devices) > 1 {
		for _, x := range t.devices[0].opts {
			same := true
			for _, d := range t.devices[1:] {
				i := slices.IndexFunc(d.opts, func(y kv) bool { return y.key == x.key })
				if i < 0 || tomlValue(d.opts[i].val) != tomlValue(x.val) {
					same = false
					break
				}
			}
			if same {
				plugin = append(plugin, kv{key: x.key, val: x.val, comment: "every device"})
			}
		}
	}
	e.kvs(1, plugin)
	if t.rs485 != nil {
		e.header(1, "[inputs.modbus.rs485]")
		e.kvs(2, t.rs485)
	}
	for _, p := range t.profiles {
		e.blank()
		e.comment(1, "Register map first described at "+p.from+".")
		e.header(1, "[[inputs.modbus.profile]]")
		e.kvs(2, []kv{{key: "name", val: p.name}})
		for _, f := range p.fields {
			e.blank()
			if f.comment != "" {
				e.comment(2, f.comment)
			}
			e.header(2, "[[inputs.modbus.profile.field]]")
			list := fieldKVs(f.Field)
			list[0].comment = f.from
			e.kvs(3, list)
		}
	}
	lifted := map[string]bool{}
	for _, x := range plugin[len(t.plugin):] {
		lifted[x.key] = true
	}
	for _, d := range t.devices {
		e.blank()
		e.header(1, "[[inputs.modbus.device]]")
		list := []kv{{key: "name", val: d.name, comment: d.from}, {key: "controller", val: d.controller}, {key: "slave_id", val: d.slave},
			{key: "profile", val: d.profile.name}}
		if len(d.tags) > 0 {
			list = append(list, kv{key: "tags", val: d.tags})
		}
		for _, x := range d.opts {
			if !lifted[x.key] {
				list = append(list, x)
			}
		}
		e.kvs(2, list)
	}
}

// registers returns how many registers (or bits) a field of this tagpipe data type reads.
func registers(dataType string, length int) int {
	switch dataType {
	case "INT32", "UINT32", "FLOAT32":
		return 2
	case "INT64", "UINT64", "FLOAT64":
		return 4
	case "STRING":
		return length
	case "FIXED", "UFIXED":
		return max(length, 1)
	}
	return 1
}

// partMask is the part of one register a field reads (a bit, a byte); 0 for all of it.
func partMask(f *modbus.Field) uint16 {
	switch f.DataType {
	case "BIT":
		if f.Bit != nil && f.Register != "coil" && f.Register != "discrete" {
			return 1 << (*f.Bit & 15)
		}
	case "INT8L", "UINT8L":
		return 0x00FF
	case "INT8H", "UINT8H":
		return 0xFF00
	}
	return 0
}

func registerKind(r string) string {
	if r == "" {
		return "holding"
	}
	return r
}

// overlapping returns, for a field list, the index of an earlier field that reads a register
// (or bit) field i reads too, or -1. tagpipe reads each register of a profile into one field,
// except distinct bits or bytes of one register.
func overlapping(fields []field, i int) int {
	a := &fields[i].Field
	aEnd := *a.Address + registers(a.DataType, a.Length)
	for j := range fields[:i] {
		b := &fields[j].Field
		if registerKind(b.Register) != registerKind(a.Register) {
			continue
		}
		bEnd := *b.Address + registers(b.DataType, b.Length)
		if *b.Address >= aEnd || *a.Address >= bEnd {
			continue
		}
		ma, mb := partMask(a), partMask(b)
		if aEnd-*a.Address == 1 && bEnd-*b.Address == 1 && ma != 0 && mb != 0 && ma&mb == 0 {
			continue
		}
		return j
	}
	return -1
}

// describeField is a short text of a field for messages: `holding 4..5 FLOAT32 "power"`.
func describeField(f *modbus.Field) string {
	end := *f.Address + registers(f.DataType, f.Length) - 1
	span := strconv.Itoa(*f.Address)
	if end != *f.Address {
		span += ".." + strconv.Itoa(end)
	}
	return fmt.Sprintf("%s %s %s %q", registerKind(f.Register), span, f.DataType, f.Name)
}

// sortedKeys returns the keys of m sorted.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
