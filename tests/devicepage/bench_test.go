package devicepage_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/web"
)

// BenchmarkAPIDevices10k serves pages of 100 devices of an agent polling 10,000 simulated
// devices (100 gateways of 100 units on loopback, every 10 s), through the agent's own handler
// (auth and headers included; no socket): the budget is 10 ms a page.
func BenchmarkAPIDevices10k(b *testing.B) {
	p := newPlant(b, 10*time.Second, "")
	sim := p.server(modbussim.Config{})
	for g := range 100 {
		addr := p.listen(sim)
		for u := 1; u <= 100; u++ {
			p.device(fmt.Sprintf("gw%02d-unit%03d", g, u), addr, u, "")
		}
	}
	srv := p.serve(agent.HTTPOptions{})
	base := "http://" + srv.Addr()
	waitFor(b, 2*time.Minute, "10,000 devices answering", func() bool {
		var l web.Listing
		getJSON(b, base+"/api/devices?limit=1", &l)
		return l.Counts["ok"] == 10000
	})
	h := srv.Handler()
	for _, q := range []string{"page=37&limit=100", "page=37&limit=100&sort=rtt", "q=unit042&limit=100", "state=failing&limit=100"} {
		b.Run(q, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/api/devices?"+q, nil)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
