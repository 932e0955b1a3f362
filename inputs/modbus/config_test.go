package modbus

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

// base is a valid config; cases change one line (marked with "# <-" where the error must point).
const base = `[[inputs.modbus]]
  timeout = "1s"
  [[inputs.modbus.profile]]
    name = "meter"
    measurement = "power"
    [[inputs.modbus.profile.field]]
      name = "voltage"
      register = "holding"
      address = 0
      data_type = "FLOAT32"
      byte_order = "ABCD"
    [[inputs.modbus.profile.field]]
      name = "serial"
      address = 10
      data_type = "STRING"
      length = 4
    [[inputs.modbus.profile.field]]
      name = "running"
      register = "coil"
      address = 3
  [[inputs.modbus.device]]
    name = "meter-1"
    controller = "tcp://127.0.0.1:5020"
    slave_id = 1
    profile = "meter"
  [[inputs.modbus.device]]
    name = "meter-2"
    controller = "tcp://127.0.0.1:5020"
    slave_id = 2
    profile = "meter"
    tags = { line = "A" }
`

// TestConfigErrors: every bad value fails at start with FILE:LINE of the key at fault.
func TestConfigErrors(t *testing.T) {
	if _, err := loadText(base); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, c := range []struct {
		name     string
		old, new string // replace old (first occurrence) by new in base
		want     string
	}{
		{"slave id", "slave_id = 2", "slave_id = 300 # <-", "device[1].slave_id: 300: must be 0..247"},
		{"data type", `data_type = "FLOAT32"`, `data_type = "REAL" # <-`, `profile[0].field[0].data_type: "REAL": want one of BIT, INT8L`},
		{"string length", "      length = 4\n", "", "profile[0].field[1].length: 0: a STRING needs its length in registers"},
		{"byte order", `byte_order = "ABCD"`, `byte_order = "ABDC" # <-`, `profile[0].field[0].byte_order: "ABDC" is not a byte order (ABCD or big, DCBA or little, BADC, CDAB, or AB, BA for one-register types)`},
		{"profile's 16-bit order on 32 bits", "      byte_order = \"ABCD\"\n", "", `profile[0].byte_order: "BA" is for one-register types; a value of several registers needs ABCD, DCBA, BADC or CDAB (field "voltage" is FLOAT32: give it a byte_order of its own)`},
		{"profile's byte order", `measurement = "power"`, "measurement = \"power\"\n    byte_order = \"CBAD\" # <-", `profile[0].byte_order: "CBAD" is not a byte order`},
		{"16-bit order on 32 bits", `byte_order = "ABCD"`, `byte_order = "BA" # <-`, `profile[0].field[0].byte_order: "BA" is for one-register types`},
		{"string word swap", "length = 4", "length = 4\n      byte_order = \"CDAB\" # <-", `profile[0].field[1].byte_order: "CDAB": a STRING is AB`},
		{"overlap", "address = 10", "address = 1 # <-", `profile[0].field[1].address: holding 1..4 of "serial" overlaps "voltage" (holding 0..1)`},
		{"address range", "address = 0", "address = 65535 # <-", "profile[0].field[0].address: 65535: holding FLOAT32 of 2 spans 65535..65536"},
		{"six-digit 1-based address", "address = 0", "address = 400001 # <-", "profile[0].field[0].address: 400001: holding FLOAT32 of 2 spans 400001..400002; addresses are 0..65535; 400001 is probably address 0 (the 1-based numbering of holding registers starts at 400001)"},
		{"type of a coil", `register = "coil"`, "register = \"coil\"\n      data_type = \"INT16\" # <-", "profile[0].field[2].data_type: INT16: a coil holds one bit"},
		{"bit of a register", `register = "coil"`, `register = "input"`, "profile[0].field[2].data_type: missing for an input register"},
		{"bit number", `register = "coil"`, "register = \"input\"\n      data_type = \"BIT\"", "profile[0].field[2].bit: a BIT of an input register needs bit = 0..15"},
		{"unknown profile", `profile = "meter"`, `profile = "meters" # <-`, `device[0].profile: "meters": no such profile (have: "meter")`},
		{"duplicate device", `name = "meter-2"`, `name = "meter-1" # <-`, `device[1].name: "meter-1" is also device[0]`},
		{"unreadable CA", `timeout = "1s"`, `tls_ca = "/nonexistent/ca.pem" # <-`, "tls_ca: open /nonexistent/ca.pem: no such file or directory"},
		{"client cert without key", `timeout = "1s"`, `tls_cert = "/nonexistent/c.pem" # <-`, "tls_cert: give its key in tls_key too"},
		{"controller scheme", `controller = "tcp://127.0.0.1:5020"`, `controller = "udp://127.0.0.1:5020" # <-`, `device[0].controller: "udp://127.0.0.1:5020": scheme "udp", want tcp, tls or file`},
		{"serial mode over tcp", `timeout = "1s"`, `transmission_mode = "rtu" # <-`, `transmission_mode: transmission_mode "rtu" is for serial lines (file://); over TCP use rtuovertcp`},
		{"mixed framing on one connection", "slave_id = 2", "slave_id = 2\n    transmission_mode = \"rtuovertcp\" # <-", `device[1].transmission_mode: tcp://127.0.0.1:5020 speaks tcp for device "meter-1"`},
		{"request size", `timeout = "1s"`, "max_request_registers = 200 # <-", "max_request_registers: 200: must be 1..125"},
		{"request size below a field", "slave_id = 2", "slave_id = 2\n    max_request_registers = 3 # <-", `device[1].max_request_registers: 3: field "serial" of profile "meter" spans 4 registers (device "meter-2")`},
		{"retries", "slave_id = 2", "slave_id = 2\n    retries = -1 # <-", "device[1].retries: -1: must be 0..10"},
		{"decimals", `data_type = "FLOAT32"`, "data_type = \"FLOAT32\"\n      decimals = 2 # <-", "profile[0].field[0].decimals: only FIXED and UFIXED"},
		{"parity", `timeout = "1s"`, `parity = "X" # <-`, `parity: "X": want N, E or O`},
		{"scale zero", `data_type = "FLOAT32"`, "data_type = \"FLOAT32\"\n      scale = 0.0 # <-", "profile[0].field[0].scale: 0: a scale must be a finite number other than 0"},
		{"string output", "length = 4", "length = 4\n      output = \"int\" # <-", "profile[0].field[1].output: a STRING has no scale, offset or numeric output"},
		{"duplicate field", `name = "running"`, `name = "voltage" # <-`, `profile[0].field[2].name: "voltage" is also field[0] of the same metric`},
		{"timeout and timeout_max", `timeout = "1s"`, "timeout = \"1s\" # <-\n  timeout_max = \"2s\"", "timeout: timeout is the older name of timeout_max: set one of them"},
		{"timeout_min over timeout_max", "slave_id = 2", "slave_id = 2\n    timeout_min = \"3s\" # <-", `device[1].timeout_min: timeout_min 3s is more than timeout_max 1s (device "meter-2")`},
		{"rtt_alpha", `timeout = "1s"`, "rtt_alpha = 0.0 # <-", "rtt_alpha: 0: must be more than 0 and at most 1"},
		{"timeout_factor", `measurement = "power"`, "measurement = \"power\"\n    timeout_factor = 0.5 # <-", "profile[0].timeout_factor: 0.5: must be 1 (the average round trip) or more"},
		{"retry waits", "slave_id = 2", "slave_id = 2\n    retry_wait_max = \"10ms\" # <-", `device[1].retry_wait_max: 10ms is less than retry_wait 100ms (device "meter-2")`},
		{"failure rate", `timeout = "1s"`, "breaker_failure_rate = 1.5 # <-", "breaker_failure_rate: 1.5: must be 0 (off) .. 1 (every poll failed)"},
		{"probes", "slave_id = 2", "slave_id = 2\n    breaker_probes = 0 # <-", "device[1].breaker_probes: 0: must be 1..100"},
		{"device rate", "slave_id = 2", "slave_id = 2\n    device_requests_per_second = -1.0 # <-", "device[1].device_requests_per_second: -1: must be 0 (no cap) or more"},
		{"two budgets on one connection", "slave_id = 2", "slave_id = 2\n    max_requests_per_second = 5.0 # <-", `device[1].max_requests_per_second: tcp://127.0.0.1:5020: device "meter-1" runs this connection with other settings (max_requests_per_second 0, not 5)`},
		{"two idle timeouts on one connection", "slave_id = 2", "slave_id = 2\n    idle_timeout = \"5s\" # <-", `device[1].idle_timeout: tcp://127.0.0.1:5020: device "meter-1" runs this connection with other settings (idle_timeout 1m0s, not 5s)`},
		{"backup is the controller", "slave_id = 2", "slave_id = 2\n    backup_controllers = [\"tcp://127.0.0.1:5020\"] # <-", `device[1].backup_controllers[0]: tcp://127.0.0.1:5020 is already a controller of device "meter-2"`},
		{"bad backup", "slave_id = 2", "slave_id = 2\n    backup_controllers = [\"udp://10.0.0.1\"] # <-", `device[1].backup_controllers[0]: "udp://10.0.0.1": scheme "udp"`},
		{"no devices", "  [[inputs.modbus.device]]\n    name = \"meter-1\"", "  [[inputs.modbus.devicex]] # <-\n    name = \"meter-1\"", "devicex: unknown key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(base, c.old) {
				t.Fatalf("%q not in base", c.old)
			}
			text := strings.Replace(base, c.old, c.new, 1)
			if strings.HasPrefix(c.name, "profile's 16-bit") { // the field inherits the profile's BA
				text = strings.Replace(text, `measurement = "power"`, "measurement = \"power\"\n    byte_order = \"BA\" # <-", 1)
			}
			line := 0
			for i, l := range strings.Split(text, "\n") {
				if strings.Contains(l, "# <-") {
					line = i + 1
				}
			}
			if line == 0 { // the key is missing: the error points at the field's table
				field := c.want[len("profile[0].field[") : len("profile[0].field[")+1]
				n := int(field[0] - '0')
				at := 0
				for range n + 1 {
					at += strings.Index(text[at:], "[[inputs.modbus.profile.field]]") + 1
				}
				line = strings.Count(text[:at], "\n") + 1
			}
			_, err := loadText(text)
			if err == nil {
				t.Fatalf("loaded")
			}
			want := fmt.Sprintf("test.conf:%d: inputs.modbus: %s", line, c.want)
			if c.name == "no devices" {
				want = fmt.Sprintf("test.conf:%d: ", line)
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
}

// TestOptionLevels: a device's settings come from the device, else its profile, else the top of
// [[inputs.modbus]], else the defaults; devices with the same settings share them.
func TestOptionLevels(t *testing.T) {
	m := load(t, `[[inputs.modbus]]
  timeout_max = "3s"
  retries = 2
  breaker_cool_down = "10s"
  [[inputs.modbus.profile]]
    name = "slow"
    timeout_min = "200ms"
    retries = 5
    stale_after = "1m"
    [[inputs.modbus.profile.field]]
      name = "v"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.profile]]
    name = "plain"
    [[inputs.modbus.profile.field]]
      name = "v"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "a"
    controller = "tcp://127.0.0.1:5020"
    profile = "slow"
    retries = 7
    backup_controllers = ["tcp://127.0.0.2:5020"]
  [[inputs.modbus.device]]
    name = "b"
    controller = "tcp://127.0.0.1:5021"
    profile = "slow"
  [[inputs.modbus.device]]
    name = "c"
    controller = "tcp://127.0.0.1:5022"
    profile = "plain"
  [[inputs.modbus.device]]
    name = "d"
    controller = "tcp://127.0.0.1:5023"
    profile = "plain"
`)
	a, b, c, d := m.devices[0].opts, m.devices[1].opts, m.devices[2].opts, m.devices[3].opts
	for _, x := range []struct {
		what      string
		got, want any
	}{
		{"a retries (device)", a.retry.Retries, 7},
		{"b retries (profile)", b.retry.Retries, 5},
		{"c retries (top)", c.retry.Retries, 2},
		{"a timeout_min (profile)", a.timeout.Min, 200 * time.Millisecond},
		{"c timeout_min (default)", c.timeout.Min, 50 * time.Millisecond},
		{"c timeout_max (top)", c.timeout.Max, 3 * time.Second},
		{"b stale_after (profile)", b.staleAfter, time.Minute},
		{"c stale_after (default: off)", c.staleAfter, time.Duration(0)},
		{"c cool-down (top)", c.breaker.coolDown, 10 * time.Second},
		{"c reconnect_max (half the cool-down)", c.link.reconnectMax, 5 * time.Second},
		{"c breaker_failures (default)", c.breaker.failures, 5},
		{"c retry waits (default)", fmt.Sprint(c.retry.Initial, c.retry.Max, c.retry.Multiplier), "100ms 900ms 3"},
		{"a backup", fmt.Sprint(m.devices[0].backups), "[tcp://127.0.0.2:5020]"},
		{"c and d share their options", c == d, true},
		{"a and b do not", a == b, false},
	} {
		if x.got != x.want {
			t.Errorf("%s: %v, want %v", x.what, x.got, x.want)
		}
	}
	if m.devices[1].staleTags == nil || m.devices[2].staleTags != nil {
		t.Error("stale tags made for the devices with stale_after only")
	}
}

// TestProfileByteOrder: a profile's byte order is the default of its fields; a STRING, a BIT and
// a field of one register take the order within a register from it (CDAB is AB to them, DCBA
// and little are BA), so that a profile of word-swapped 32-bit values keeps its strings. Read
// from modbussim (big endian) through its meter profile with a byte_order added.
func TestProfileByteOrder(t *testing.T) {
	at := time.Unix(1_800_000_005, 0) // second 5 of a minute: alarm on, status 3
	s := sim(t, "127.0.0.1:0", modbussim.Config{Now: func() time.Time { return at }})
	sec := float64(at.Unix())
	voltage := math.Float32bits(float32(230 + 3*math.Sin(2*math.Pi*sec/60+1))) // unit 1
	energy := uint32(uint64(at.Unix()) * 101)
	uptime := uint16(at.Unix())
	words := func(x uint32) uint32 { return x<<16 | x>>16 }
	for _, c := range []struct {
		order           string
		wide            func(uint32) uint32 // what the order does to 32 bits
		serial          string
		running, uptime any
	}{
		{"CDAB", words, "SIM-0001", true, uint64(uptime)},
		{"DCBA", bits.ReverseBytes32, "IS-M0010", false, uint64(bits.ReverseBytes16(uptime))},
		{"little", bits.ReverseBytes32, "IS-M0010", false, uint64(bits.ReverseBytes16(uptime))},
		{"big", func(x uint32) uint32 { return x }, "SIM-0001", true, uint64(uptime)},
	} {
		t.Run(c.order, func(t *testing.T) {
			profile := strings.Replace(modbussim.Profile, `measurement = "power"`, fmt.Sprintf("measurement = \"power\"\n    byte_order = %q", c.order), 1)
			m := load(t, fmt.Sprintf("[[inputs.modbus]]\n%s  [[inputs.modbus.device]]\n    name = \"d\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n", profile, s.Addr()))
			ms, err := gather(t, m)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"voltage":       float64(math.Float32frombits(c.wide(voltage))),
				"energy_wh":     uint64(c.wide(energy)),
				"serial_number": c.serial,
				"running":       c.running,
				"uptime":        c.uptime,
			}
			for k, w := range want {
				if got := field(t, ms, k).Value(); got != w {
					t.Errorf("%s: %v, want %v", k, got, w)
				}
			}
		})
	}
}

// TestOneBasedAddressWarning: an address of the 1-based numbering many manuals use (40001 for the
// first holding register, 30001 input, 10001 discrete) in a field of that table loads with a
// warning at the address's line; the same number in another table, or a coil's, does not.
func TestOneBasedAddressWarning(t *testing.T) {
	fields := []struct {
		register string
		address  int
		warn     string
	}{
		{"holding", 40001, "40001: addresses are 0-based; 40001 is probably address 0 (the 1-based numbering of holding registers starts at 40001)"},
		{"input", 30010, "30010: addresses are 0-based; 30010 is probably address 9 (the 1-based numbering of input registers starts at 30001)"},
		{"discrete", 10001, "10001: addresses are 0-based; 10001 is probably address 0 (the 1-based numbering of discrete inputs starts at 10001)"},
		{"holding", 30001, ""},
		{"input", 40001, ""},
		{"holding", 40000, ""},
		{"holding", 50000, ""},
		{"coil", 1, ""},
	}
	var b strings.Builder
	b.WriteString("[[inputs.modbus]]\n  [[inputs.modbus.profile]]\n    name = \"p\"\n")
	var want []string
	for i, f := range fields {
		typ := "      data_type = \"UINT16\"\n"
		if f.register == "coil" || f.register == "discrete" {
			typ = ""
		}
		fmt.Fprintf(&b, "    [[inputs.modbus.profile.field]]\n      name = \"f%d\"\n      register = %q\n      address = %d\n%s", i, f.register, f.address, typ)
		if f.warn != "" {
			line := strings.Count(b.String(), "\n") - strings.Count(typ, "\n")
			want = append(want, fmt.Sprintf("test.conf:%d: inputs.modbus: profile[0].field[%d].address: %s", line, i, f.warn))
		}
	}
	b.WriteString("  [[inputs.modbus.device]]\n    name = \"d\"\n    controller = \"tcp://127.0.0.1:5020\"\n    profile = \"p\"\n")
	cfg, err := loadText(b.String())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

// TestIllegalAddressHint: exception 2 (illegal data address) to a read at an address of the
// 1-based numbering says what the address probably is; at another address it does not.
func TestIllegalAddressHint(t *testing.T) {
	s := sim(t, "127.0.0.1:0", modbussim.Config{}) // 1000 addresses: past them, exception 2
	for _, c := range []struct {
		address int
		hint    bool
	}{{40001, true}, {20000, false}} {
		m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "v"
      address = %d
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "d"
    controller = "tcp://%s"
    profile = "p"
`, c.address, s.Addr()))
		_, err := gather(t, m)
		want := fmt.Sprintf("read holding %d..%d (function 3): exception 2 (illegal data address)", c.address, c.address)
		hint := "; addresses are 0-based; 40001 is probably address 0 (the 1-based numbering of holding registers starts at 40001)"
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), hint) != c.hint {
			t.Errorf("address %d: %v; want %q, with the hint %v", c.address, err, want, c.hint)
		}
	}
}

// TestTelegrafTable: a Telegraf inputs.modbus table gets, besides an error for each key, one
// line that says so, at the table's line; a table with one stray key does not.
func TestTelegrafTable(t *testing.T) {
	_, err := loadText(`[[inputs.modbus]]
  name = "Device"
  slave_id = 1
  timeout = "1s"
  controller = "tcp://127.0.0.1:502"
  configuration_type = "register"
  byte_order = "ABCD"
  coils = [
    { name = "motor1_run", address = [0]},
  ]
  holding_registers = [
    { name = "power_factor", byte_order = "AB", data_type = "FIXED", scale = 0.01, address = [8]},
  ]
`)
	hint := `test.conf:1: inputs.modbus "Device": this looks like a Telegraf inputs.modbus table; see README#coming-from-telegraf`
	if err == nil || strings.Count(err.Error(), hint) != 1 || !strings.HasPrefix(err.Error(), hint) ||
		!strings.Contains(err.Error(), `test.conf:6: inputs.modbus "Device": configuration_type: unknown key`) {
		t.Errorf("got\n%v\nwant first %q, then the unknown keys", err, hint)
	}
	_, err = loadText(strings.Replace(base, `timeout = "1s"`, `timeout = "1s"`+"\n  slave_id = 1", 1))
	if err == nil || strings.Contains(err.Error(), "Telegraf") {
		t.Errorf("one stray key: %v", err)
	}
}
