package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// simpleConfig is a gateway config: one device per unit on one controller, each reading holding
// 0..1 (0x1234, 0xFFFF on the peer) and, in a second request, holding 10.
func simpleConfig(controller, mode, extra string, units ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[[inputs.modbus]]
  transmission_mode = %q
%s
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "a"
      address = 0
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "b"
      address = 1
      data_type = "INT16"
    [[inputs.modbus.profile.field]]
      name = "c"
      address = 10
      data_type = "UINT16"
`, mode, extra)
	for _, u := range units {
		fmt.Fprintf(&b, `  [[inputs.modbus.device]]
    name = "unit-%d"
    controller = %q
    slave_id = %d
    profile = "p"
`, u, controller, u)
	}
	return b.String()
}

// checkSimple checks a device's metric against the peer's fixed layout.
func checkSimple(t *testing.T, ms []*models.Metric, device string) {
	t.Helper()
	d := byDevice(ms, device)
	if len(d) == 0 {
		t.Fatalf("no metric of %s", device)
	}
	m := d[len(d)-1]
	if a, _ := m.Field("a"); a.UintV() != 0x1234 {
		t.Errorf("%s: a = %v, the peer holds 0x1234", device, a.Value())
	}
	if b, _ := m.Field("b"); b.IntV() != -1 {
		t.Errorf("%s: b = %v, the peer holds -1", device, b.Value())
	}
	if c, _ := m.Field("c"); c.UintV() != 10 {
		t.Errorf("%s: c = %v, the peer holds 10", device, c.Value())
	}
}

// TestLateAnswerGateway: unit 3 answers after the client gave up on it; its late answer reaches
// the client while it waits for unit 1 on the same connection. The late answer is dropped by
// its transaction id and unit 1's answer is taken.
func TestLateAnswerGateway(t *testing.T) {
	p := startPymodbus(t, "--units", "1,3", "--fault", "3:delay:0.5")
	cfg := simpleConfig("tcp://"+p.addr, "tcp", "  retries = 0\n  timeout = \"2s\"", 3, 1)
	m := load(t, strings.Replace(cfg, `name = "unit-3"`, `name = "unit-3"
    timeout = "150ms"`, 1))
	ms, err := gather(t, m)
	if err == nil || !strings.Contains(err.Error(), `device "unit-3"`) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("want a timeout of unit-3, got %v", err)
	}
	if strings.Contains(err.Error(), "unit-1") {
		t.Fatalf("unit-1 must not fail: %v", err)
	}
	checkSimple(t, ms, "unit-1")
	// unit-3 has two reads: after the first timed out the second was tried too (a device is
	// taken to answer for its first intervals, and a timeout may be the one read it cannot
	// serve); both late answers are dropped.
	if got := m.st.wrongTID.Get(); got != 2 {
		t.Errorf("late answers dropped: got %d, want 2", got)
	}
	if got := m.st.reconnects.Get(); got != 0 {
		t.Errorf("reconnects: got %d, want 0 (MBAP stays framed)", got)
	}
}

// TestLateAnswerNextPollSucceeds is Telegraf's desync ("response transaction id 7616 does not
// match request 7617"): one answer comes after the timeout; the next request must succeed and
// so must every one after it.
func TestLateAnswerNextPollSucceeds(t *testing.T) {
	for _, c := range []struct{ name, transport, mode string }{
		{"tcp", "tcp", "tcp"},
		{"rtu over tcp", "rtu-over-tcp", "rtuovertcp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startPymodbus(t, "--transport", c.transport, "--fault", "1:delay1:0.4")
			m := load(t, simpleConfig("tcp://"+p.addr, c.mode, "  retries = 0\n  timeout = \"200ms\"\n  max_gap = 20", 1))
			ms, errs, st := serve(t, m, 300*time.Millisecond, "three good polls", func(ms []*models.Metric) bool { return len(ms) >= 3 })
			for _, x := range ms {
				checkSimple(t, []*models.Metric{x}, "unit-1")
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), "timeout") {
				t.Errorf("want exactly the first poll's timeout, got %v", errs)
			}
			if c.mode == "tcp" {
				if got := st.wrongTID.Get(); got != 1 {
					t.Errorf("late answers dropped: got %d, want 1", got)
				}
			} else if got := st.reconnects.Get(); got < 1 {
				t.Errorf("RTU over TCP reconnects after a timeout: got %d reconnects", got)
			}
		})
	}
}

// TestExceptions: every exception pymodbus answers names device, function, address range and
// exception, is counted, and the fields of the other requests are still reported. (Splitting
// failing reads is off: these units answer every read with their exception; TestSplit*
// test the splitting.)
func TestExceptions(t *testing.T) {
	p := startPymodbus(t, "--units", "1", "--exc-unit", "11:1", "--exc-unit", "12:2", "--exc-unit", "13:3",
		"--exc-unit", "14:4", "--exc-unit", "16:6", "--exc-unit", "20:10", "--exc-unit", "21:11")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  split_failing_reads = false", 11, 12, 13, 14, 16, 20, 21))
	ms, err := gather(t, m)
	if len(ms) != 0 {
		t.Errorf("%d metrics from units that answer only exceptions", len(ms))
	}
	for _, c := range []struct {
		unit int
		name string
	}{
		{11, "exception 1 (illegal function)"}, {12, "exception 2 (illegal data address)"},
		{13, "exception 3 (illegal data value)"}, {14, "exception 4 (server device failure)"},
		{16, "exception 6 (server device busy)"}, {20, "exception 10 (gateway path unavailable)"},
		{21, "exception 11 (gateway target device failed to respond)"},
	} {
		for _, rng := range []string{"0..1", "10..10"} {
			want := fmt.Sprintf(`device "unit-%d" (unit %d): read holding %s (function 3): %s`, c.unit, c.unit, rng, c.name)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("missing %q in\n%v", want, err)
			}
		}
	}
	if got := m.st.exceptions.Get(); got != 14 {
		t.Errorf("exceptions counted: %d, want 14", got)
	}
}

// TestPartialRead: a read past the peer's table (exception 2) and one into its failing range
// (exception 4) fail; the fields of the request that succeeded are reported.
func TestPartialRead(t *testing.T) {
	p := startPymodbus(t, "--fault-from", "90")
	m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "good"
      address = 0
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "failing"
      address = 95
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "beyond"
      register = "input"
      address = 99
      data_type = "UINT32"
    [[inputs.modbus.profile.field]]
      name = "input_good"
      register = "input"
      address = 5
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "meter"
    controller = "tcp://%s"
    profile = "p"
`, p.addr))
	ms, err := gather(t, m)
	if len(ms) != 1 {
		t.Fatalf("want one metric, got %d (%v)", len(ms), err)
	}
	if got := ms[0].Fields; len(got) != 2 || got[0].Key != "good" || got[0].UintV() != 0x1234 || got[1].Key != "input_good" || got[1].UintV() != 1005 {
		t.Errorf("fields: %+v", got)
	}
	for _, want := range []string{
		`device "meter" (unit 1): read holding 95..95 (function 3): exception 4 (server device failure)`,
		`device "meter" (unit 1): read input 99..100 (function 4): exception 2 (illegal data address)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

// TestBadFrames: answers pymodbus garbles on purpose are dropped and counted; the device behind
// the same connection that answers properly is still read.
func TestBadFrames(t *testing.T) {
	for _, c := range []struct {
		name, transport, mode, fault string
		want                         string
		counter                      func(*stats) int64
		reconnect                    bool
	}{
		{"wrong transaction id", "tcp", "tcp", "tid", "timeout", func(s *stats) int64 { return s.wrongTID.Get() }, false},
		{"wrong unit", "tcp", "tcp", "unit", "wrong unit id", func(s *stats) int64 { return s.wrongUnit.Get() }, false},
		{"short frame", "tcp", "tcp", "short", "short frame", func(s *stats) int64 { return s.shortFrames.Get() }, false},
		{"bad CRC", "rtu-over-tcp", "rtuovertcp", "crc", "checksum mismatch: CRC", func(s *stats) int64 { return s.badChecksums.Get() }, true},
		{"RTU wrong unit", "rtu-over-tcp", "rtuovertcp", "unit", "timeout", func(s *stats) int64 { return s.wrongUnit.Get() }, true},
		{"bad LRC", "ascii-over-tcp", "asciiovertcp", "crc", "checksum mismatch: LRC", func(s *stats) int64 { return s.badChecksums.Get() }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startPymodbus(t, "--transport", c.transport, "--units", "1,2", "--fault", "2:"+c.fault)
			m := load(t, simpleConfig("tcp://"+p.addr, c.mode, "  timeout = \"300ms\"\n  retries = 1", 2, 1))
			ms, err := gather(t, m)
			t.Log(err)
			checkSimple(t, ms, "unit-1")
			if len(byDevice(ms, "unit-2")) != 0 {
				t.Errorf("unit-2 gave a metric from garbled answers")
			}
			if err == nil || !strings.Contains(err.Error(), `device "unit-2"`) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want %q for unit-2, got\n%v", c.want, err)
			}
			if strings.Contains(err.Error(), "unit-1") {
				t.Errorf("unit-1 failed: %v", err)
			}
			if got := c.counter(m.st); got < 2 { // the request and its retry
				t.Errorf("dropped frames counted: %d, want ≥ 2", got)
			}
			if got := m.st.retries.Get(); got < 1 {
				t.Errorf("retries: %d", got)
			}
			if c.reconnect != (m.st.reconnects.Get() > 0) {
				t.Errorf("reconnects = %d: a lost stream is re-established, a framed one kept", m.st.reconnects.Get())
			}
		})
	}
}

// TestUnitNotAnswering: a unit the gateway does not serve times out; with the breaker's
// threshold reached its polls are skipped while the others go on.
func TestUnitNotAnswering(t *testing.T) {
	p := startPymodbus(t, "--units", "1")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  timeout = \"100ms\"\n  retries = 0\n  breaker_failures = 2\n  breaker_cool_down = \"1h\"", 9, 1))
	ms, errs, st := serve(t, m, 300*time.Millisecond, "breaker open and unit-1 polled on", func(ms []*models.Metric) bool {
		return m.st.breakerSkips.Get() >= 2 && len(byDevice(ms, "unit-1")) >= 6
	})
	checkSimple(t, ms, "unit-1")
	if len(byDevice(ms, "unit-9")) != 0 {
		t.Error("metrics of a unit that never answers")
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `device "unit-9"`) {
		t.Errorf("want the timeout of unit-9 reported once (the same error is not repeated), got %v", errs)
	}
	// Both polls try both reads (a device is taken to answer for its first three intervals, in
	// case only one read fails; the second poll starts within two intervals, its first timeout
	// ends 100 ms later, within the three): two polls without an answer open the breaker.
	if got := st.requests.Get() - int64(len(byDevice(ms, "unit-1"))*2); got != 4 {
		t.Errorf("requests to unit-9: %d, want 4 (then the breaker opened)", got)
	}
}
