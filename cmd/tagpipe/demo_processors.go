package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// The processors in the demo, in the order an operator would chain them: predict sees every value,
// ratelimit thins the agent's own process metric (gathered every 5 s; one token per 9 s lets
// every other one through, with the largest values of both, though the gathers jitter), dedup last drops what did not move by 1 % (2 points of CPU) and
// keeps its state in a folder that lives as long as the demo. predict's link model works on the
// health metrics of the simulated Modbus and OPC UA devices, when their demo parts are there.
const demoProcessors = `[[processors.predict]]
  order = 1
  health_measurements = ["modbus_health", "opcua_health"]
  window = 10
  forecast_fields = ["cpu_percent", "heap_alloc_bytes", "goroutines"]
  warmup = 5

[[processors.ratelimit]]
  order = 2
  namepass = ["internal_process"]
  rate = 1
  period = "9s"
  fold = "max"

[[processors.dedup]]
  order = 3
  dedup_interval = "1m"
  deadband_pct = 1.0
  state_file = '%s'
  state_save_interval = "10s"
  [[processors.dedup.deadband]]
    fields = ["cpu_percent*"]
    abs = 2.0`

func init() {
	demoParts = append(demoParts, demoPart{name: "processors", start: startProcessorsDemo})
}

// startProcessorsDemo starts nothing: it returns the processor tables and a folder for dedup's
// state, removed when the demo ends.
func startProcessorsDemo(context.Context) (string, func(), error) {
	dir, err := os.MkdirTemp("", "tagpipe-demo-")
	if err != nil {
		return "", nil, err
	}
	tables := fmt.Sprintf(demoProcessors, filepath.Join(dir, "dedup.state"))
	return tables, func() { os.RemoveAll(dir) }, nil
}
