package predict

import (
	"context"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// TestLinkRiskBoard: a started predict publishes each link's disconnect_risk, named by the health
// metric's device and controller, for the device page; Stop takes it off again.
func TestLinkRiskBoard(t *testing.T) {
	p := load(t, "[[processors.predict]]\n  window = 4\n")
	key := models.LinkKey{Device: "plc-7", Controller: "tcp://127.0.0.1:502"}
	tagged := func(sec int, rtt float64) *models.Metric {
		m := health(sec, rtt, 0)
		m.Tags = models.SortTags(append(m.Tags, models.Tag{Key: "controller", Value: key.Controller}))
		return m
	}
	p.Apply(tagged(0, 10)) // before Start (--test): nothing published
	if _, ok := models.LinkRiskOf(key); ok {
		t.Fatal("published before Start")
	}
	p.table = nil
	p.Init()
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, rtt := range []float64{10, 20, 30} {
		p.Apply(tagged(i, rtt))
	}
	if _, ok := models.LinkRiskOf(key); ok {
		t.Fatal("a risk published while the window warms up")
	}
	p.Apply(tagged(3, 40)) // as TestLinkTrend: risk 2/3
	if r, ok := models.LinkRiskOf(key); !ok || !near(r, 2.0/3) {
		t.Fatalf("risk on the board %v (%v), want 2/3", r, ok)
	}
	p.now = func() time.Time { return time.Now().Add(2 * time.Hour) } // past series_ttl: forgotten
	p.Apply(value(0, models.Float("x", 1)))
	if _, ok := models.LinkRiskOf(key); ok {
		t.Fatal("a forgotten series stays on the board")
	}
	p.now = time.Now
	for i, rtt := range []float64{10, 20, 30, 40} {
		p.Apply(tagged(i, rtt))
	}
	p.Stop()
	if _, ok := models.LinkRiskOf(key); ok {
		t.Fatal("on the board after Stop")
	}
}
