package modbus

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/configcase"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

// TestConfigCases: every bad configuration in testcases/ fails at start with the error kept
// beside it, FILE:LINE of the key at fault included (see internal/testkit/configcase). A bug
// report about a config error becomes a folder there.
func TestConfigCases(t *testing.T) { configcase.Run(t, "testcases") }

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
	a, b, c, d := m.inv.spec(0).opts, m.inv.spec(1).opts, m.inv.spec(2).opts, m.inv.spec(3).opts
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
		{"a backup", fmt.Sprint(m.inv.spec(0).backups()), "[tcp://127.0.0.2:5020]"},
		{"c and d share their options", c == d, true},
		{"a and b do not", a == b, false},
	} {
		if x.got != x.want {
			t.Errorf("%s: %v, want %v", x.what, x.got, x.want)
		}
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
	// One stray key gets no hint: testcases/one-stray-key-no-telegraf-hint.
}
