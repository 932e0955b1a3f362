package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	_ "github.com/tagpipe/tagpipe/inputs/all"
	"github.com/tagpipe/tagpipe/internal/logging"
	_ "github.com/tagpipe/tagpipe/outputs/all"
)

// measurement is the name of the data metrics the generated profile makes.
const measurement = "loadtest"

// agentConfig is the configuration the agent runs: every device polled every interval with
// o.fields fields in o.requests requests (20 fields: ten FLOAT32 and ten UINT16, 30 registers),
// written as line protocol to standard output, where the parent reads them (-compare: to a
// file, which the parent reads as it grows). With -split, agent part of o.agents polls its own
// share of the devices (part counts from 0; -1: every device).
func agentConfig(o *options, part int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[agent]
  interval = %q
  flush_interval = "1s"
  precision = "0s"
  omit_hostname = true
%s
[[outputs.file]]
  files = [%q]
  data_format = "influx"

[[inputs.modbus]]
%s
  [[inputs.modbus.profile]]
    name = "meter"
    measurement = %q
`, o.interval, pageListen(o.page), cmp.Or(o.outFile, "stdout"), o.inputExtra, measurement)
	tables := []string{"holding"}
	if o.requests == 2 {
		tables = []string{"holding", "input"}
	}
	addr := map[string]int{}
	for i := range o.fields {
		table := tables[i%len(tables)]
		typ, regs := "FLOAT32", 2
		if (i/len(tables))%2 == 1 {
			typ, regs = "UINT16", 1
		}
		fmt.Fprintf(&b, "    [[inputs.modbus.profile.field]]\n      name = \"f%02d\"\n      register = %q\n      address = %d\n      data_type = %q\n",
			i, table, addr[table], typ)
		addr[table] += regs
	}
	lo, hi := 0, o.devices
	if part >= 0 {
		lo, hi = part*o.devices/o.agents, (part+1)*o.devices/o.agents
	}
	for i, a := range deviceAddrs(o.base, o.devices) {
		if i < lo || i >= hi {
			continue
		}
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"%s\"\n    controller = \"tcp://%s\"\n    profile = \"meter\"\n",
			deviceName(i), netip.AddrPortFrom(a, uint16(o.port)))
	}
	return b.String()
}

func deviceName(i int) string { return fmt.Sprintf("d%05d", i) }

// runAgent is the agent process when no -tagpipe binary is given: what `tagpipe --config FILE`
// runs (config.Load, agent.New, Run until SIGTERM), plus a CPU profile of the steady window
// when asked for.
func runAgent(o *options) {
	if o.memProfile != "" {
		// A finer sample than the default 512 KiB, so that a few hundred bytes a device show.
		runtime.MemProfileRate = 4096
	}
	cfg, err := config.Load(config.Options{Files: []string{o.config}})
	if err != nil {
		fatalf("agent: %v", err)
	}
	if err := logging.Setup(logging.Options{Debug: cfg.Agent.Debug, Quiet: cfg.Agent.Quiet}); err != nil {
		fatalf("agent: %v", err)
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		fatalf("agent: %v", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if cfg.Agent.HTTPListen != "" { // -page: as `tagpipe` serves it
		srv, err := agent.Listen(agent.HTTPOptionsOf(&cfg.Agent, "loadtest"), func() *agent.Agent { return a })
		if err != nil {
			fatalf("agent: %v", err)
		}
		defer srv.Close()
	}
	if o.cpuProfile != "" {
		go profile(ctx, o.cpuProfile, o.profileAt, o.profileFor)
	}
	if o.memProfile != "" {
		go memProfile(ctx, o.memProfile, o.profileAt.Add(o.profileFor))
	}
	if err := a.Run(ctx); err != nil {
		fatalf("agent: %v", err)
	}
}

// memProfile writes a heap profile at the given time (after a GC) and logs the Go runtime's
// memory figures.
func memProfile(ctx context.Context, path string, at time.Time) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(at)):
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mib := func(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
	slog.Info("loadtest memory", "heap_inuse", mib(ms.HeapInuse), "heap_alloc", mib(ms.HeapAlloc), "stack_inuse", mib(ms.StackInuse),
		"sys", mib(ms.Sys), "heap_released", mib(ms.HeapReleased), "gc_cycles", ms.NumGC, "goroutines", runtime.NumGoroutine())
	f, err := os.Create(path)
	if err != nil {
		slog.Error("heap profile", "error", err)
		return
	}
	defer f.Close()
	pprof.WriteHeapProfile(f)
}

// profile writes a CPU profile of [at, at+length) (Unix times) to path.
func profile(ctx context.Context, path string, at time.Time, length time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(at)):
	}
	f, err := os.Create(path)
	if err != nil {
		slog.Error("cpu profile", "error", err)
		return
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		slog.Error("cpu profile", "error", err)
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(length):
	}
	pprof.StopCPUProfile()
}
