package modbus

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

// TestSimulator reads modbussim over each framing (ASCII over TCP too: pymodbus serves it, and
// so does our simulator) and checks the values its documentation says.
func TestSimulator(t *testing.T) {
	at := time.Unix(1_800_000_005, 0)
	for _, c := range []struct {
		fr   modbussim.Framing
		mode string
	}{{modbussim.TCP, "tcp"}, {modbussim.RTU, "rtuovertcp"}, {modbussim.ASCII, "asciiovertcp"}} {
		t.Run(c.mode, func(t *testing.T) {
			s, err := modbussim.Listen("127.0.0.1:0", modbussim.Config{Framing: c.fr, Units: []byte{4, 5}, Now: func() time.Time { return at }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  transmission_mode = %q
%s
  [[inputs.modbus.device]]
    name = "m4"
    controller = "tcp://%s"
    slave_id = 4
    profile = "meter"
  [[inputs.modbus.device]]
    name = "m5"
    controller = "tcp://%s"
    slave_id = 5
    profile = "meter"
`, c.mode, modbussim.Profile, s.Addr(), s.Addr()))
			ms, err := gather(t, m)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 2 {
				t.Fatalf("%d metrics", len(ms))
			}
			sec := float64(at.Unix())
			v := float32(230 + 3*math.Sin(2*math.Pi*sec/60+5))
			want := map[string]any{
				"voltage":        float64(v),
				"energy_wh":      uint64(uint32(uint64(at.Unix()) * 105)),
				"frequency":      (5000 + math.Round(5*math.Sin(2*math.Pi*sec/30))) / 100,
				"temperature":    (215 + math.Round(30*math.Sin(2*math.Pi*sec/300+5))) / 10,
				"serial_number":  "SIM-0005",
				"running":        true,
				"alarm":          true, // second 5 of the minute
				"breaker_closed": (at.Unix()/10+5)%2 == 0,
				"uptime":         uint64(uint16(at.Unix())),
			}
			for k, w := range want {
				if got := field(t, byDevice(ms, "m5"), k).Value(); got != w {
					t.Errorf("%s: got %v, want %v", k, got, w)
				}
			}
			if got := m.st.requests.Get(); got != 6 { // holding 0..18, coil 0, input 0 per device
				t.Errorf("requests %d, want 6", got)
			}
		})
	}
}
