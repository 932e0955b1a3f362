package web

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// plant is a Source of n devices whose figures live in real resilience.Health and Timeout
// values, as an input's do: for the page's own tests and benchmarks (the tests in
// tests/devicepage run it on a real agent polling simulated devices).
type plant struct {
	devs    []*fakeDevice
	started time.Time
}

type fakeDevice struct {
	status  models.DeviceStatus
	tags    []models.Tag
	health  resilience.Health
	timeout *resilience.Timeout
}

func (d *fakeDevice) Figures(f *models.DeviceFigures) {
	d.health.Figures(f)
	f.Tags, f.RTT, f.Timeout = d.tags, d.timeout.EWMA(), d.timeout.Nominal()
}

func (d *fakeDevice) RTTs(dst []time.Duration) []time.Duration { return d.health.RTTs(dst) }

func (d *fakeDevice) Detail(now time.Time, x *models.DeviceDetail) {
	d.health.Log(x, func(int) string { return d.status.Controller })
}

// newPlant makes n devices: every 50th failing, every 200th with its breaker open, the rest
// answering with round trips of 1..20 ms.
func newPlant(n int) *plant {
	p := &plant{started: time.Now().Add(-time.Hour)}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for i := range n {
		d := &fakeDevice{timeout: resilience.NewTimeout(resilience.TimeoutConfig{})}
		d.status = models.DeviceStatus{
			Name:       fmt.Sprintf("plc-%05d", i),
			Controller: fmt.Sprintf("tcp://10.%d.%d.%d:502", i/65536, i/256%256, i%256),
			State:      models.DeviceOK,
			LastGood:   now.Add(-time.Duration(r.IntN(1000)) * time.Millisecond),
			Detail:     d,
		}
		d.tags = []models.Tag{{Key: "line", Value: fmt.Sprintf("L%d", i%40)}}
		for range models.RTTRing {
			rtt := time.Duration(1+r.IntN(20)) * time.Millisecond
			d.health.Request()
			d.health.Answered(rtt)
			d.timeout.Observe(rtt)
		}
		switch {
		case i%200 == 7:
			d.status.State = models.DeviceBreakerOpen
		case i%50 == 3:
			d.status.State = models.DeviceFailing
		}
		if d.status.State != models.DeviceOK {
			err := fmt.Errorf("device %q: connect %s: connection refused", d.status.Name, d.status.Controller)
			d.health.Failed(resilience.KindRefused)
			d.health.Logged(now, "refused", err)
			d.status.LastError, d.status.ErrorAt = err.Error(), now
		}
		p.devs = append(p.devs, d)
	}
	return p
}

func (p *plant) DeviceStates(_ time.Time, fn func(models.DeviceStatus)) {
	for _, d := range p.devs {
		fn(d.status)
	}
}

func (p *plant) Devices(fn func(string, models.DeviceReporter)) { fn(`inputs.modbus "plant"`, p) }

func (p *plant) Outputs() []Output {
	return []Output{{Name: "outputs.kafka", Buffered: 1200, BufferLimit: 100000, DiskBytes: 52 << 20, LastWrite: time.Now(), Written: 1e6}}
}

func (p *plant) Agent() Agent {
	return Agent{Version: "test", Running: true, Started: p.started, Since: p.started, Interval: time.Second}
}

// BenchmarkDevicesPage serves a page of 100 devices of 10,000 (the budget: 10 ms).
func BenchmarkDevicesPage(b *testing.B) {
	h := Handler(newPlant(10000))
	for _, q := range []string{"page=37&limit=100", "page=37&limit=100&sort=rtt&desc=1", "q=L7&page=2&limit=100", "state=failing&limit=100"} {
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
