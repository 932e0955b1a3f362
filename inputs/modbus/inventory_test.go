package modbus

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/models"
)

// TestInventoryRecords: what Init compiled comes back from the inventory's records: names and
// URLs of every length (a length of 128 or more takes two bytes), unit ids, framings, tags with
// the device tag over a tag of the same key, backups and per-group tags; devices alike share
// their kind and their tag set.
func TestInventoryRecords(t *testing.T) {
	long := strings.Repeat("n", 300)
	m := load(t, `[[inputs.modbus]]
  [[inputs.modbus.profile]]
    name = "meter"
    tags = { kind = "meter" }
    [[inputs.modbus.profile.field]]
      name = "v"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.profile]]
    name = "split"
    [[inputs.modbus.profile.field]]
      name = "v"
      address = 0
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "alarm"
      address = 1
      data_type = "UINT16"
      tags = { severity = "high" }
  [[inputs.modbus.device]]
    name = "a"
    controller = "tcp://127.0.0.1:5020"
    profile = "meter"
    tags = { line = "A" }
  [[inputs.modbus.device]]
    name = "b"
    controller = "tcp://127.0.0.1:5020"
    slave_id = 247
    profile = "meter"
    tags = { line = "A", device = "not-b" }
  [[inputs.modbus.device]]
    name = "`+long+`"
    controller = "tcp://127.0.0.1:5021"
    transmission_mode = "rtuovertcp"
    retries = 5
    slave_id = 0
    profile = "meter"
    tags = { line = "A" }
  [[inputs.modbus.device]]
    name = "d"
    controller = "tcp://127.0.0.1:5022"
    backup_controllers = ["tcp://127.0.0.1:5023"]
    transmission_mode = "asciiovertcp"
    profile = "split"
`)
	if m.inv.len() != 4 {
		t.Fatalf("%d devices", m.inv.len())
	}
	tagStr := func(tags []models.Tag) string {
		var b []string
		for _, t := range tags {
			b = append(b, t.Key+"="+t.Value)
		}
		return strings.Join(b, ",")
	}
	want := []struct {
		name, url, scheme, addr string
		unit                    byte
		framing                 framing
		tags, backups           string
	}{
		{"a", "tcp://127.0.0.1:5020", "tcp", "127.0.0.1:5020", 1, frameMBAP, "device=a,kind=meter,line=A", "[]"},
		{"b", "tcp://127.0.0.1:5020", "tcp", "127.0.0.1:5020", 247, frameMBAP, "device=b,kind=meter,line=A", "[]"},
		{long, "tcp://127.0.0.1:5021", "tcp", "127.0.0.1:5021", 0, frameRTU, "device=" + long + ",kind=meter,line=A", "[]"},
		{"d", "tcp://127.0.0.1:5022", "tcp", "127.0.0.1:5022", 1, frameASCII, "device=d", "[tcp://127.0.0.1:5023]"},
	}
	for i, w := range want {
		s := m.inv.spec(i)
		got := fmt.Sprint(s.name, s.controller.url, s.controller.scheme(), s.controller.addr(), s.unit, s.controller.framing,
			tagStr(s.withDevice()), fmt.Sprint(s.backups()))
		exp := fmt.Sprint(w.name, w.url, w.scheme, w.addr, w.unit, w.framing, w.tags, w.backups)
		if got != exp {
			t.Errorf("device %d:\n got %s\nwant %s", i, got, exp)
		}
		if dt := tagStr(m.inv.withDevice(i)); dt != w.tags {
			t.Errorf("device %d: the page's tags %s, want %s", i, dt, w.tags)
		}
	}
	d := m.inv.spec(3)
	if g := d.groupTags(); len(g) != 2 || tagStr(g[0]) != "device=d" || tagStr(g[1]) != "device=d,severity=high" {
		t.Errorf("per-group tags of d: %v", g)
	}
	a, b, c := m.inv.spec(0), m.inv.spec(1), m.inv.spec(2)
	if a.deviceKind != b.deviceKind || a.deviceKind == d.deviceKind {
		t.Error("devices of one profile with equal options do not share one kind, or devices of two profiles do")
	}
	if c.deviceKind == a.deviceKind {
		t.Error("a device of other options shares the kind of a device of the defaults")
	}
	if &a.tags[0] != &c.tags[0] || len(m.inv.tags) != 3 {
		t.Errorf("devices with equal tags do not share one set: %d sets", len(m.inv.tags))
	}
	if len(m.inv.more) != 2 || a.more != nil || d.more == nil {
		t.Errorf("extras: %d (want nil, then d's)", len(m.inv.more))
	}
}

// TestInventoryDecodeAllocatesNothing: decoding a device and reading its page tags (after the
// first time) allocate nothing: the device page lists every device every interval.
func TestInventoryDecodeAllocatesNothing(t *testing.T) {
	addrs := make([]string, 300)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.%d.%d:5020", i/250, 1+i%250)
	}
	m := load(t, devicesConfig("", addrs))
	var s deviceSpec
	m.inv.withDevice(0)
	if n := testing.AllocsPerRun(10, func() {
		for i := range m.inv.len() {
			m.inv.decode(i, &s)
			_ = m.inv.withDevice(i)
		}
	}); n != 0 {
		t.Errorf("%.0f allocations decoding %d devices", n, m.inv.len())
	}
	if s.name != "d0299" || s.controller.url != "tcp://127.0.1.50:5020" {
		t.Errorf("last device: %q on %q", s.name, s.controller.url)
	}
}
