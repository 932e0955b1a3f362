package devicepage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	_ "github.com/tagpipe/tagpipe/inputs/all"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	_ "github.com/tagpipe/tagpipe/outputs/all"
	_ "github.com/tagpipe/tagpipe/processors/all"
	"github.com/tagpipe/tagpipe/web"
)

// requestsPerPoll is how many requests a poll of modbussim.Profile makes: holding 0..18,
// coil 0 and input 0.
const requestsPerPoll = 3

// unitLog counts what a simulator received, per unit.
type unitLog struct {
	mu    sync.Mutex
	count map[byte]int
	last  map[byte]time.Time
}

func (u *unitLog) onRequest(unit byte, _ []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.count == nil {
		u.count, u.last = map[byte]int{}, map[byte]time.Time{}
	}
	u.count[unit]++
	u.last[unit] = time.Now()
}

func (u *unitLog) get(unit byte) (int, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.count[unit], u.last[unit]
}

// plant builds the configuration of simulated devices and serves them. Devices are added with
// the methods below; conf returns the whole configuration.
type plant struct {
	t       testing.TB
	b       strings.Builder
	servers []*modbussim.Server
}

func newPlant(t testing.TB, interval time.Duration, extra string) *plant {
	p := &plant{t: t}
	fmt.Fprintf(&p.b, "[agent]\n  interval = %q\n  round_interval = false\n  flush_interval = \"1s\"\n  omit_hostname = true\n\n", interval.String())
	fmt.Fprintf(&p.b, "[[outputs.file]]\n  files = [%q]\n\n", filepath.Join(t.TempDir(), "metrics.out"))
	p.b.WriteString(extra)
	p.b.WriteString("[[inputs.modbus]]\n  timeout = \"200ms\"\n  retries = 0\n  reconnect_min = \"50ms\"\n  reconnect_max = \"200ms\"\n" + modbussim.Profile)
	t.Cleanup(func() {
		for _, s := range p.servers {
			s.Close()
		}
	})
	return p
}

// server starts a simulator (its listeners are added by the caller).
func (p *plant) server(cfg modbussim.Config) *modbussim.Server {
	s := modbussim.New(cfg)
	p.servers = append(p.servers, s)
	return s
}

func (p *plant) listen(s *modbussim.Server) string {
	addr, err := s.AddListener("127.0.0.1:0")
	if err != nil {
		p.t.Fatal(err)
	}
	return addr
}

// device adds a device; extra is more of its TOML table.
func (p *plant) device(name, addr string, unit int, extra string) {
	fmt.Fprintf(&p.b, "  [[inputs.modbus.device]]\n    name = %q\n    controller = \"tcp://%s\"\n    slave_id = %d\n    profile = \"meter\"\n%s",
		name, addr, unit, extra)
}

// refusing returns a loopback address nothing listens on.
func refusing(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// run starts the agent on the plant and its HTTP endpoint with o (Listen is chosen here), and
// returns the endpoint's address.
func (p *plant) run(o agent.HTTPOptions) string { return p.serve(o).Addr() }

// serve starts the agent on the plant and its HTTP endpoint with o.
func (p *plant) serve(o agent.HTTPOptions) *agent.Server {
	t := p.t
	t.Helper()
	cfg, err := config.LoadText("devicepage.conf", p.b.String(), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, p.b.String())
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	o.Listen = "127.0.0.1:0"
	srv, err := agent.Listen(o, func() *agent.Agent { return a })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv
}

// getJSON GETs url into v, failing the test unless the answer is 200.
func getJSON(t testing.TB, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", u, err, b)
	}
}

// devices returns every device by name.
func devices(t testing.TB, base string) (web.Listing, map[string]web.Device) {
	t.Helper()
	var l web.Listing
	getJSON(t, base+"/api/devices?limit=1000", &l)
	byName := map[string]web.Device{}
	for _, d := range l.Devices {
		byName[d.Name] = d
	}
	return l, byName
}

// waitFor polls cond every 50 ms until it holds, failing after limit (generous: a loaded
// machine; the tests count intervals, not time).
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
