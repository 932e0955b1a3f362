package main

import (
	"testing"

	"github.com/tagpipe/tagpipe/config"
)

// The demo's processor tables load, in the chain's order, and their folder goes away at stop.
func TestDemoProcessors(t *testing.T) {
	tables, stop, err := startProcessorsDemo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cfg, err := config.LoadText("demo.conf", tables, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range cfg.Processors {
		names = append(names, p.Config.Name)
	}
	if len(names) != 3 || names[0] != "predict" || names[1] != "ratelimit" || names[2] != "dedup" {
		t.Fatalf("processors %v, want predict, ratelimit, dedup", names)
	}
}
