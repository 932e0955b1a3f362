package opcua

// Tests against gopcua's own server package (v0.9.1), through internal/sim/opcuasim.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
)

func TestGopcuaServer(t *testing.T) {
	sim := startSim(t, opcuasim.Options{Secure: true})
	state := t.TempDir()
	for _, sec := range []struct{ policy, mode string }{{"None", "None"}, {"Basic256Sha256", "Sign"}, {"Basic256Sha256", "SignAndEncrypt"}} {
		for _, mode := range []string{"read", "subscribe"} {
			t.Run(sec.policy+"/"+sec.mode+"/"+mode, func(t *testing.T) {
				o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "gopcua"
  endpoint = %q
  mode = %q
  interval = "100ms"
  publishing_interval = "100ms"
  security_policy = %q
  security_mode = %q
  server_fingerprint = %q
  state_directory = %q
  [[inputs.opcua.group]]
    namespace_uri = %q
    [[inputs.opcua.group.node]]
      name = "counter"
      id = "s=Counter"
    [[inputs.opcua.group.node]]
      id = "s=Status"
    [[inputs.opcua.group.node]]
      name = "int16"
      id = "i=1001"
`, sim.Endpoint(), mode, sec.policy, sec.mode, certFingerprint(sim.Certificate()), state, opcuasim.NamespaceURI))
				logs := captureLog(o)
				acc := start(t, o)
				waitFor(t, 10*time.Second, "5 counter values", func() bool { return len(acc.values("opcua", "counter")) >= 5 })
				o.Stop()
				if len(logs.lines("msg=connected", "policy="+sec.policy, "mode="+sec.mode)) != 1 {
					t.Fatalf("not connected as asked:\n%s", logs)
				}
				if v := field(t, acc.values("opcua", "Status")[0], "Status"); v != "ok" {
					t.Fatalf("Status = %v", v)
				}
				if v := field(t, acc.values("opcua", "int16")[0], "int16"); v != int64(-7) {
					t.Fatalf("int16 = %v", v)
				}
				// a change is published once; a poll may see the same value twice (the server
				// stamps every read with a new source time)
				vals := acc.values("opcua", "counter")
				for i := 1; i < len(vals); i++ {
					a, b := vals[i-1].Fields[0].UintV(), vals[i].Fields[0].UintV()
					if b < a || (b == a && mode == "subscribe") {
						t.Fatalf("Counter went %d → %d:\n%s", a, b, fmtMetrics(vals))
					}
				}
				if last := vals[len(vals)-1].Fields[0].UintV(); last > uint64(sim.Counter()) || last+20 < uint64(sim.Counter()) {
					t.Fatalf("last Counter %d, the server is at %d", last, sim.Counter())
				}
				noDuplicates(t, acc.all())
			})
		}
	}
}

// 1000 changing variables found by browsing gopcua's server, read in requests of its
// advertised MaxNodesPerRead (32) and monitored in one subscription; every value is N + tick.
func TestGopcuaServerBulk(t *testing.T) {
	sim := startSim(t, opcuasim.Options{Tags: 1000, Period: 200 * time.Millisecond})
	for _, mode := range []string{"read", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "bulk"
  endpoint = %q
  mode = %q
  interval = "500ms"
  publishing_interval = "100ms"
  [[inputs.opcua.group]]
    measurement = "sim"
    namespace_uri = %q
    browse = "s=Sim"
`, sim.Endpoint(), mode, opcuasim.NamespaceURI))
			acc := start(t, o)
			waitFor(t, 15*time.Second, "3000 tag values", func() bool { return o.stats.values.Get() >= 3000 })
			o.Stop()
			seen := map[string]bool{}
			for _, m := range acc.all() {
				if m.Name != "sim" || !strings.HasPrefix(m.Fields[0].Key, "Tag.") {
					continue
				}
				var n int
				fmt.Sscanf(m.Fields[0].Key, "Tag.%d", &n)
				tick := m.Fields[0].FloatV() - float64(n)
				if tick < 1 || tick > float64(sim.Counter()) || tick != float64(int(tick)) {
					t.Fatalf("%s = %v: not N + tick (server tick %d)", m.Fields[0].Key, m.Fields[0].FloatV(), sim.Counter())
				}
				seen[m.Fields[0].Key] = true
			}
			if len(seen) != 1000 {
				t.Fatalf("%d distinct tags, want 1000", len(seen))
			}
			if mode == "read" && o.stats.operationSplits.Get() != 0 {
				t.Fatalf("requests were split although they fit the advertised limit")
			}
			noDuplicates(t, acc.all())
		})
	}
}
