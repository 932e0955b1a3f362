package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// TestBusyRetries: pymodbus answers "busy" to two requests, then properly.
func TestBusyRetries(t *testing.T) {
	p := startPymodbus(t, "--fault", "1:busy:2")
	t.Run("enough retries", func(t *testing.T) {
		m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  busy_retries = 2\n  busy_retries_wait = \"20ms\"\n  max_gap = 20", 1))
		ms, err := gather(t, m)
		if err != nil {
			t.Fatal(err)
		}
		checkSimple(t, ms, "unit-1")
		if got := m.st.busyRetries.Get(); got != 2 {
			t.Errorf("busy retries: %d, want 2", got)
		}
	})
	t.Run("too few", func(t *testing.T) {
		m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  busy_retries = 1\n  max_gap = 20", 1))
		_, err := gather(t, m)
		if err == nil || !strings.Contains(err.Error(), "exception 6 (server device busy)") {
			t.Fatalf("want busy, got %v", err)
		}
	})
}

// TestPauses: pause_after_connect and pause_between_requests hold requests back.
func TestPauses(t *testing.T) {
	p := startPymodbus(t)
	for _, c := range []struct {
		extra string
		least time.Duration
	}{
		{"  pause_after_connect = \"300ms\"", 300 * time.Millisecond},
		{"  pause_between_requests = \"150ms\"", 150 * time.Millisecond}, // two requests: one pause
	} {
		m := load(t, simpleConfig("tcp://"+p.addr, "tcp", c.extra, 1))
		start := time.Now()
		ms, err := gather(t, m)
		if err != nil {
			t.Fatal(err)
		}
		checkSimple(t, ms, "unit-1")
		if took := time.Since(start); took < c.least {
			t.Errorf("%s: the poll took %s", c.extra, took)
		}
	}
}

// TestOneRequestPerFieldAndCoilsFromZero checks both plan quirks on the wire's count and values.
func TestOneRequestPerFieldAndCoilsFromZero(t *testing.T) {
	p := startPymodbus(t)
	m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  one_request_per_field = true
  read_coils_starting_at_zero = true
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "c5"
      register = "coil"
      address = 5
    [[inputs.modbus.profile.field]]
      name = "c6"
      register = "coil"
      address = 6
    [[inputs.modbus.profile.field]]
      name = "h0"
      address = 0
      data_type = "UINT16"
    [[inputs.modbus.profile.field]]
      name = "h1"
      address = 1
      data_type = "INT16"
  [[inputs.modbus.device]]
    name = "d"
    controller = "tcp://%s"
    profile = "p"
`, p.addr))
	if r := m.inv.spec(0).plan[0]; r.kind != kindCoil || r.addr != 0 || r.count != 6 {
		t.Errorf("first coil request %s %d+%d, want coil 0+6", r.kind, r.addr, r.count)
	}
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.st.requests.Get(); got != 4 {
		t.Errorf("requests: %d, want 4", got)
	}
	for key, want := range map[string]any{"c5": false, "c6": true, "h0": uint64(0x1234), "h1": int64(-1)} {
		if got := field(t, ms, key).Value(); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
}

// TestCloseAfterGather: the connection is closed after every poll and opened for the next.
func TestCloseAfterGather(t *testing.T) {
	p := startPymodbus(t)
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  close_connection_after_gather = true", 1))
	ms, _, st := serve(t, m, 100*time.Millisecond, "three polls", func(ms []*models.Metric) bool { return len(ms) >= 3 })
	checkSimple(t, ms, "unit-1")
	if got, polls := st.connects.Get(), st.polls.Get(); got != polls {
		t.Errorf("connects %d, polls %d: want one connection per poll", got, polls)
	}
}

// TestRequestBudget: max_requests_per_second spaces the requests on one connection.
func TestRequestBudget(t *testing.T) {
	p := startPymodbus(t, "--units", "1,2,3")
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "  max_requests_per_second = 10.0", 1, 2, 3))
	start := time.Now()
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"unit-1", "unit-2", "unit-3"} {
		checkSimple(t, ms, d)
	}
	// six requests, the first at once, then one every 100 ms
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Errorf("six requests at 10/s took %s", took)
	}
}
