package internal

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

type collect struct {
	mu sync.Mutex
	ms []*models.Metric
}

func (c *collect) AddMetric(m *models.Metric) { c.mu.Lock(); c.ms = append(c.ms, m); c.mu.Unlock() }
func (c *collect) AddError(error)             {}

func (c *collect) find(name string, tags ...string) *models.Metric {
	for _, m := range c.ms {
		if m.Name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(tags); i += 2 {
			if v, _ := m.Tag(tags[i]); v != tags[i+1] {
				ok = false
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

func TestReportsStatsAndProcess(t *testing.T) {
	s := models.RegisterStats("internal_output", map[string]string{"output": "probe"})
	defer s.Unregister()
	s.Get("metrics_dropped").Add(7)
	in := &Internal{CollectProcess: true}
	acc := &collect{}
	if err := in.Gather(context.Background(), acc); err != nil {
		t.Fatal(err)
	}
	out := acc.find("internal_output", "output", "probe")
	if out == nil {
		t.Fatal("no internal_output for the registered stats")
	}
	if f, _ := out.Field("metrics_dropped"); f.IntV() != 7 {
		t.Fatalf("metrics_dropped %v", f.Value())
	}
	p := acc.find("internal_process")
	if p == nil {
		t.Fatal("no internal_process")
	}
	for _, k := range []string{"rss_bytes", "open_fds", "goroutines", "heap_alloc_bytes", "cpu_seconds"} {
		if f, ok := p.Field(k); !ok {
			t.Errorf("internal_process has no %s", k)
		} else if n, _ := f.Number(); n <= 0 && k != "cpu_seconds" {
			t.Errorf("%s = %v", k, n)
		}
	}
	// cpu_percent needs two gathers.
	if _, ok := p.Field("cpu_percent"); ok {
		t.Error("cpu_percent after one gather")
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU
	}
	acc2 := &collect{}
	in.Gather(context.Background(), acc2)
	f, ok := acc2.find("internal_process").Field("cpu_percent")
	if !ok || f.FloatV() <= 0 || f.FloatV() > 200*2 {
		t.Fatalf("cpu_percent %v after spinning", f.Value())
	}
	s.Unregister()
	acc3 := &collect{}
	in.Gather(context.Background(), acc3)
	if acc3.find("internal_output", "output", "probe") != nil {
		t.Fatal("unregistered stats still reported")
	}
}
