// Command tagpipe is an agent for industrial data: it polls Modbus and OPC UA devices, runs the
// readings through processors and ships them in batches to Kafka, InfluxDB and files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	_ "github.com/tagpipe/tagpipe/inputs/all"
	"github.com/tagpipe/tagpipe/internal/logging"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
	_ "github.com/tagpipe/tagpipe/outputs/all"
	_ "github.com/tagpipe/tagpipe/processors/all"
)

// Stamped by the build: -ldflags "-X main.version=… -X main.commit=… -X main.date=…".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

const usage = `tagpipe: an agent for industrial data (Modbus, OPC UA → Kafka, InfluxDB, files)

Usage:
  tagpipe --config FILE [--config-directory DIR] [--debug]   run the agent
  tagpipe --config FILE --test       gather once, print line protocol, no outputs
  tagpipe --config FILE --once       gather, process and write once, then exit
  tagpipe --config FILE --check      check the configuration and exit (0: good, 1: bad)
  tagpipe config                     print the full sample configuration
  tagpipe demo [DEMO FLAGS]          run against built-in simulated devices, print line protocol
  tagpipe import telegraf FILE|DIR... [IMPORT FLAGS]
                                     a Telegraf configuration as tagpipe's; what does not map is reported
  tagpipe import csv|xlsx FILE... [IMPORT FLAGS]
                                     tag lists (Kepware, Neuron, tagpipe's) and device lists as profiles and devices
  tagpipe export csv --profile NAME --config FILE [--out FILE]
                                     a profile as tagpipe's tag list (CSV), which imports back the same
  tagpipe passwd < FILE              print a bcrypt hash of the password on standard input,
                                     for [agent] http_password_hash
  tagpipe version                    print the version (also --version)
  tagpipe help                       print this help (also --help)

Flags (one dash or two):
`

// usageTail follows the flags in --help. The demo's flags are spelled out here because they
// belong to its own flag set (demo.go); a test in packaging/ checks that none is missing. The
// import flags follow them, printed from their flag set (import.go).
const usageTail = `
Demo flags (tagpipe demo):
  --duration D             stop after this long (0: run until Ctrl-C)
  --interval D             poll interval of the simulated devices (default 1s)
  --format F               "influx" or "json" (default influx)
  --debug                  log at debug level
  --print-config           print the demo's configuration to standard error
  --http ADDR              serve the device page, /healthz and /metrics on ADDR (127.0.0.1:9273)
  --mqtt ADDR              also publish to the MQTT broker at ADDR (host:port)
  --sparkplug              with --mqtt: as a Sparkplug B edge node
`

const usageEnd = `
Signals: SIGHUP reloads the configuration (a broken one is logged and the running one kept);
SIGINT and SIGTERM stop the inputs, flush every output once more and exit.

Exit status: 0 success, 1 a bad configuration or a failure, 2 a bad command line.

Installed from the package: /etc/tagpipe/tagpipe.conf, /etc/tagpipe/tagpipe.d/*.conf, state in
/var/lib/tagpipe, logs with journalctl -u tagpipe. The manual: man tagpipe.
`

// versionLine is what `tagpipe version` prints. The release build stamps version, commit and
// date; a plain `go build` or `go install` does not, and then the module version and the VCS
// revision and time that Go records in the binary stand in.
func versionLine() string {
	v, c, d, modified := version, commit, date, false
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && info.Main.Version != "" {
			v = info.Main.Version // "(devel)" when built in a checkout
		}
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "unknown":
				c = s.Value[:min(12, len(s.Value))]
			case s.Key == "vcs.time" && d == "unknown":
				d = s.Value
			case s.Key == "vcs.modified":
				modified = s.Value == "true" && commit == "unknown"
			}
		}
	}
	if modified {
		c += " with uncommitted changes"
	}
	return fmt.Sprintf("tagpipe %s (commit %s, built %s)", v, c, d)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, versionLine())
			return 0
		case "config":
			fmt.Fprint(stdout, config.Sample())
			return 0
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "import":
			return runImport(args[1:], stdout, stderr)
		case "export":
			return runExport(args[1:], stdout, stderr)
		case "passwd":
			return runPasswd(os.Stdin, stdout, stderr)
		case "help":
			args = []string{"--help"}
		}
	}
	fs := flag.NewFlagSet("tagpipe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files, dirs stringList
	fs.Var(&files, "config", "configuration `FILE` (may be given more than once)")
	fs.Var(&dirs, "config-directory", "read every *.conf in `DIR` (after --config files)")
	test := fs.Bool("test", false, "gather once, run the processors, print line protocol to stdout; no outputs")
	once := fs.Bool("once", false, "gather, process and write to the outputs once, then exit")
	check := fs.Bool("check", false, "load the configuration, report what is wrong and exit")
	debug := fs.Bool("debug", false, "log at debug level (overrides [agent] debug)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {} // --help goes to stdout, a bad flag's message to stderr: below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
			return 0
		}
		fmt.Fprintln(stderr, "see tagpipe --help")
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tagpipe: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	opts := config.Options{Files: files, Dirs: dirs}
	load := func() (*config.Config, error) {
		cfg, err := config.Load(opts)
		if err != nil {
			return nil, err
		}
		if *debug {
			cfg.Agent.Debug = true
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := setupLogging(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		slog.Warn(w)
	}
	switch {
	case *check:
		fmt.Fprintf(stdout, "configuration OK: %d inputs, %d processors, %d outputs (%s)\n",
			len(cfg.Inputs), len(cfg.Processors), len(cfg.Outputs), strings.Join(cfg.Files, ", "))
		return 0
	case *test:
		return runTest(cfg, stdout)
	case *once:
		return runOnce(cfg)
	}
	return runAgent(cfg, load)
}

// printUsage prints --help: the commands, every flag of fs, the demo's flags and the rest.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, usage)
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  %-24s %s\n", strings.TrimSpace("--"+f.Name+" "+arg), help)
	})
	fmt.Fprint(w, usageTail)
	fmt.Fprint(w, "\nImport flags (tagpipe import, tagpipe export):\n")
	newImportFlags("tagpipe import", io.Discard).fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  %-24s %s\n", strings.TrimSpace("--"+f.Name+" "+arg), help)
	})
	fmt.Fprint(w, usageEnd)
}

func setupLogging(cfg *config.Config) error {
	return logging.Setup(logging.Options{
		Debug: cfg.Agent.Debug, Quiet: cfg.Agent.Quiet, Logfile: cfg.Agent.Logfile, Format: cfg.Agent.LogFormat,
	})
}

func runTest(cfg *config.Config, stdout io.Writer) int {
	a, err := agent.New(cfg, nil)
	if err != nil {
		slog.Error(err.Error())
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ms, gatherErr := a.Test(ctx)
	printMetrics(stdout, ms)
	if gatherErr != nil {
		return 1
	}
	return 0
}

// printMetrics writes metrics as line protocol, sorted by series then time, for stable output.
func printMetrics(w io.Writer, ms []*models.Metric) {
	slices.SortStableFunc(ms, func(a, b *models.Metric) int {
		if c := strings.Compare(a.SeriesKey(), b.SeriesKey()); c != 0 {
			return c
		}
		return a.Time.Compare(b.Time)
	})
	ser := serializer.NewInflux(0)
	var buf []byte
	for _, m := range ms {
		var err error
		if buf, err = ser.Append(buf, m); err != nil {
			slog.Warn("metric not printable", "error", err)
		}
	}
	w.Write(buf)
}

func runOnce(cfg *config.Config) int {
	a, err := agent.New(cfg, nil)
	if err != nil {
		slog.Error(err.Error())
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := a.Once(ctx); err != nil {
		return 1 // logged where it happened: each input error, failed write or connect on its own
	}
	return 0
}

// runAgent runs until SIGINT or SIGTERM. SIGHUP reloads the configuration: a broken one is
// logged and the running one kept; outputs that stay keep their buffered metrics. The HTTP
// endpoint ([agent] http_listen) lives across reloads and always reports the running agent.
// Under systemd (Type=notify) it reports READY, RELOADING and STOPPING.
func runAgent(cfg *config.Config, load func() (*config.Config, error)) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var running atomic.Pointer[agent.Agent]
	var web *agent.Server
	defer func() {
		if web != nil {
			web.Close()
		}
	}()
	if cfg.Agent.HTTPListen != "" {
		var err error
		if web, err = agent.Listen(agent.HTTPOptionsOf(&cfg.Agent, versionLine()), running.Load); err != nil {
			slog.Error(err.Error())
			return 1
		}
	}
	var buffers map[string]models.Buffer
	for {
		a, err := agent.New(cfg, buffers)
		if err != nil {
			slog.Error(err.Error())
			return 1
		}
		running.Store(a)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		sdNotify("READY=1")
		next, stop := waitSignal(sigs, load)
		if stop {
			sdNotify("STOPPING=1")
		} else {
			sdNotify("RELOADING=1")
		}
		if next != nil {
			ids := make([]string, 0, len(next.Outputs))
			for _, o := range next.Outputs {
				ids = append(ids, o.Identity)
			}
			a.HandOver(ids)
		}
		cancel()
		if err := <-done; err != nil {
			slog.Error(err.Error())
			return 1
		}
		if stop {
			return 0
		}
		buffers, cfg = a.Buffers(), next
		if err := setupLogging(cfg); err != nil {
			slog.Error("reload: logging", "error", err)
		}
		web = relisten(web, agent.HTTPOptionsOf(&cfg.Agent, versionLine()), running.Load)
		slog.Info("configuration reloaded", "files", strings.Join(cfg.Files, ", "))
	}
}

// relisten restarts the HTTP endpoint after a reload that changed its options (an empty address
// turns it off). When the new options cannot be served, the error is logged and the endpoint
// stays off until the next reload.
func relisten(web *agent.Server, o agent.HTTPOptions, current func() *agent.Agent) *agent.Server {
	if web != nil && web.Options() == o {
		return web
	}
	if web != nil {
		web.Close()
		web = nil
	}
	if o.Listen == "" {
		return nil
	}
	web, err := agent.Listen(o, current)
	if err != nil {
		slog.Error("reload: the HTTP endpoint is off", "error", err)
		return nil
	}
	return web
}

// waitSignal waits for SIGINT/SIGTERM (stop) or a SIGHUP with a configuration that loads.
func waitSignal(sigs <-chan os.Signal, load func() (*config.Config, error)) (next *config.Config, stop bool) {
	for sig := range sigs {
		if sig != syscall.SIGHUP {
			slog.Info("signal received, shutting down", "signal", sig.String())
			return nil, true
		}
		start := time.Now()
		cfg, err := load()
		if err != nil {
			slog.Error("reload failed; the running configuration stays", "error", err)
			continue
		}
		for _, w := range cfg.Warnings {
			slog.Warn(w)
		}
		slog.Info("reloading", "took", time.Since(start).Round(time.Millisecond))
		return cfg, false
	}
	return nil, true
}
