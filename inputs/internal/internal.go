// Package internal is the input that reports the agent's own metrics: the counters every running
// plugin keeps (models.Stats) and the process's CPU, memory, goroutines and open files.
package internal

import (
	"context"
	_ "embed"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/models"
)

//go:embed sample.conf
var sampleConfig string

// Internal gathers models.StatsSnapshot and the process's own figures.
type Internal struct {
	CollectProcess bool `toml:"collect_process"`

	mu       sync.Mutex
	proc     *process.Process
	lastCPU  float64 // seconds of CPU used, at lastWall
	lastWall time.Time
}

func init() {
	inputs.Add("internal", func() models.Input { return &Internal{CollectProcess: true} })
}

// SampleConfig implements models.Input.
func (*Internal) SampleConfig() string { return sampleConfig }

// Gather implements models.Input.
func (in *Internal) Gather(_ context.Context, acc models.Accumulator) error {
	now := time.Now()
	for _, m := range models.StatsSnapshot(now) {
		acc.AddMetric(m)
	}
	if !in.CollectProcess {
		return nil
	}
	m, err := in.processMetric(now)
	if err != nil {
		return err
	}
	acc.AddMetric(m)
	return nil
}

func (in *Internal) processMetric(now time.Time) (*models.Metric, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == nil {
		p, err := process.NewProcess(int32(os.Getpid()))
		if err != nil {
			return nil, err
		}
		in.proc = p
	}
	fields := make([]models.Field, 0, 8)
	times, err := in.proc.Times()
	if err != nil {
		return nil, err
	}
	cpu := times.User + times.System
	if !in.lastWall.IsZero() {
		if wall := now.Sub(in.lastWall).Seconds(); wall > 0 {
			fields = append(fields, models.Float("cpu_percent", (cpu-in.lastCPU)/wall*100))
		}
	}
	in.lastCPU, in.lastWall = cpu, now
	fields = append(fields, models.Float("cpu_seconds", cpu))
	if mem, err := in.proc.MemoryInfo(); err == nil {
		fields = append(fields, models.Uint("rss_bytes", mem.RSS), models.Uint("vms_bytes", mem.VMS))
	}
	if fds, err := in.proc.NumFDs(); err == nil {
		fields = append(fields, models.Int("open_fds", int64(fds)))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fields = append(fields,
		models.Int("goroutines", int64(runtime.NumGoroutine())),
		models.Uint("heap_alloc_bytes", ms.HeapAlloc),
		models.Uint("gc_count", uint64(ms.NumGC)),
	)
	return models.New("internal_process", nil, fields, now), nil
}
