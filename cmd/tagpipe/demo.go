package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/logging"
)

// demoPart is one set of simulated devices in `tagpipe demo`: start serves them on loopback and
// returns the config tables that read them; stop ends them. Device simulators add themselves in
// init (demo_*.go), so that each lives beside nothing else.
type demoPart struct {
	name  string
	start func(ctx context.Context) (tables string, stop func(), err error)
}

var demoParts []demoPart

const demoHead = `# tagpipe demo: simulated devices on loopback, metrics to standard output
[agent]
  interval = "%s"
  round_interval = false
  flush_interval = "1s"
  metric_batch_size = 1000
  omit_hostname = true

[[inputs.internal]]
  interval = "5s"
  collect_process = true
`

const demoTail = `
[[outputs.file]]
  files = ["stdout"]
  data_format = "%s"
`

func runDemo(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("tagpipe demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	interval := fs.Duration("interval", time.Second, "poll interval of the simulated devices")
	format := fs.String("format", "influx", "\"influx\" or \"json\"")
	debug := fs.Bool("debug", false, "log at debug level")
	printConfig := fs.Bool("print-config", false, "print the demo's configuration to stderr")
	httpAddr := fs.String("http", "", "serve the device page, /healthz and /metrics on this `address` (127.0.0.1:9273)")
	mqttAddr := fs.String("mqtt", "", "also publish to this MQTT broker (host:port)")
	sparkplug := fs.Bool("sparkplug", false, "with --mqtt: as a Sparkplug B edge node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := logging.Setup(logging.Options{Debug: *debug}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	var b strings.Builder
	fmt.Fprintf(&b, demoHead, *interval)
	for _, p := range demoParts {
		tables, stop, err := p.start(ctx)
		if err != nil {
			slog.Error("demo: simulated devices did not start", "part", p.name, "error", err)
			return 1
		}
		defer stop()
		b.WriteString("\n" + tables + "\n")
	}
	fmt.Fprintf(&b, demoTail, *format)
	b.WriteString(demoMQTT(*mqttAddr, *sparkplug))
	if *printConfig {
		fmt.Fprintln(stderr, b.String())
	}
	cfg, err := config.LoadText("demo.conf", b.String(), nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *httpAddr != "" {
		web, err := agent.Listen(agent.HTTPOptions{Listen: *httpAddr, Version: versionLine()}, func() *agent.Agent { return a })
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer web.Close()
	}
	if *duration > 0 { // the agent's run: the simulators may take a while to start on a busy machine
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, *duration)
		defer c()
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
