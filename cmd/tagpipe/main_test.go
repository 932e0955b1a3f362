package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

var update = flag.Bool("update", false, "rewrite the root sample.conf from the plugins' sample.conf files")

var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "tagpipe-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tagpipe")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeConf(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "tagpipe.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// parseLines parses line protocol with the library's decoder and returns the measurements.
func parseLines(t *testing.T, data []byte) []string {
	t.Helper()
	var names []string
	for _, m := range lptest.Parse(t, data, lineprotocol.Nanosecond) {
		names = append(names, m.Name)
	}
	return names
}

func TestSampleConfIsTheSumOfThePlugins(t *testing.T) {
	want := config.Sample()
	if *update {
		if err := os.WriteFile("../../sample.conf", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("../../sample.conf")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("sample.conf differs from the plugins' sample.conf files: run go test ./cmd/tagpipe -run SampleConf -update")
	}
	out, err := exec.Command(binary, "config").Output()
	if err != nil || string(out) != want {
		t.Fatalf("tagpipe config does not print the sample: %v", err)
	}
	// It is valid and every plugin's sample passes its own Init.
	cfg, err := config.LoadText("sample.conf", want, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("the sample config does not load back: %v", err)
	}
	if len(cfg.Inputs) == 0 || len(cfg.Outputs) == 0 {
		t.Fatal("the sample config has no plugins")
	}
}

func TestTestPrintsLineProtocol(t *testing.T) {
	dir := t.TempDir()
	conf := writeConf(t, dir, `
[agent]
  omit_hostname = true
[global_tags]
  site = "plant-1"
[[inputs.internal]]
  alias = "self"
[[outputs.file]]
  files = ["`+filepath.Join(dir, "never.lp")+`"]
`)
	cmd := exec.Command(binary, "--config", conf, "--test")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	names := parseLines(t, out)
	if !strings.Contains(strings.Join(names, " "), "internal_process") {
		t.Fatalf("no internal_process in --test output:\n%s", out)
	}
	if !bytes.Contains(out, []byte("site=plant-1")) {
		t.Fatalf("global tags missing:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "never.lp")); err == nil {
		t.Fatal("--test wrote to an output")
	}
}

func TestConfigErrorsExitOne(t *testing.T) {
	dir := t.TempDir()
	conf := writeConf(t, dir, "[agent]\n  interval = \"1s\"\n\n[[inputs.internal]]\n  alias = \"self\"\n  collect_proces = true\n")
	cmd := exec.Command(binary, "--config", conf)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1", err)
	}
	want := conf + `:6: inputs.internal "self": collect_proces: unknown key`
	if !strings.Contains(string(out), want) {
		t.Fatalf("got %q\nwant %q", out, want)
	}
	out, err = exec.Command(binary, "--config", filepath.Join(dir, "missing.conf")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing.conf") {
		t.Fatalf("a missing file: %v %s", err, out)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	conf := writeConf(t, dir, "[[inputs.internal]]\n[[outputs.file]]\n")
	out, err := exec.Command(binary, "--config", conf, "--check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK: 1 inputs, 0 processors, 1 outputs") {
		t.Fatalf("%v: %s", err, out)
	}
}

func TestOnceWrites(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.lp")
	conf := writeConf(t, dir, "[[inputs.internal]]\n[[outputs.file]]\n  files = [\""+out+"\"]\n")
	if b, err := exec.Command(binary, "--config", conf, "--once").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	data, _ := os.ReadFile(out)
	if names := parseLines(t, data); len(names) == 0 {
		t.Fatal("--once wrote nothing")
	}
}

// agentProc runs the agent with a config and stops it at the end of the test.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func startAgent(t *testing.T, conf string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(binary, "--config", conf), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stderr = &syncWriter{b: p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("agent log:\n%s", p.log())
		}
	})
	return p
}

func (p *agentProc) log() string {
	w := p.cmd.Stderr.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return p.stderr.String()
}

func (p *agentProc) waitLog(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.log(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the agent's log", substr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop after SIGTERM")
	}
}

// TestSIGTERMFlushesAndExitsZero: SIGTERM flushes every output once more. One output flushes
// only then (flush_interval an hour); another every 100 ms shows the gathers under way, and the
// test stops the agent once it wrote three. At the end both hold the same metrics.
func TestSIGTERMFlushesAndExitsZero(t *testing.T) {
	dir := t.TempDir()
	out, progress := filepath.Join(dir, "out.lp"), filepath.Join(dir, "progress.lp")
	conf := writeConf(t, dir, `
[agent]
  interval = "100ms"
  round_interval = false
  flush_interval = "1h"
[[inputs.internal]]
[[outputs.file]]
  files = ["`+out+`"]
[[outputs.file]]
  alias = "progress"
  flush_interval = "100ms"
  files = ["`+progress+`"]
`)
	p := startAgent(t, conf)
	p.waitLog(t, "agent started")
	gathers := func(file string) int {
		data, _ := os.ReadFile(file)
		return strings.Count(strings.Join(parseLines(t, data), " "), "internal_process")
	}
	// while the agent writes, count whole lines only
	written := func(file string) int {
		data, _ := os.ReadFile(file)
		n := 0
		for _, line := range strings.Split(string(data[:bytes.LastIndexByte(data, '\n')+1]), "\n") {
			if i := strings.IndexAny(line, ", "); i > 0 && line[:i] == "internal_process" {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(30 * time.Second); written(progress) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d gathers written in 30s by the output flushing every 100ms", written(progress))
		}
	}
	p.stop(t)
	if n, want := gathers(out), gathers(progress); n != want || n < 3 {
		t.Fatalf("%d gathers written at shutdown; the other output wrote %d", n, want)
	}
}

func TestSIGHUPReloadKeepsBufferedMetrics(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.lp")
	confText := func(file string) string {
		return `
[agent]
  interval = "100ms"
  round_interval = false
  flush_interval = "100ms"
[[inputs.internal]]
[[outputs.file]]
  alias = "sink"
  files = ["` + file + `"]
`
	}
	// The output cannot open its file: metrics wait in its buffer.
	conf := writeConf(t, dir, confText(filepath.Join(dir, "no-such-dir", "out.lp")))
	p := startAgent(t, conf)
	p.waitLog(t, "connect failed")
	time.Sleep(500 * time.Millisecond)

	// A broken config is logged and the running one stays.
	writeConf(t, dir, "[[inputs.internal]]\n  bogus = 1\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reload failed")

	reloadAt := time.Now()
	writeConf(t, dir, confText(out))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "configuration reloaded")
	deadline := time.Now().Add(30 * time.Second)
	for before, _ := countBefore(t, out, reloadAt); before == 0; before, _ = countBefore(t, out, reloadAt) {
		if time.Now().After(deadline) {
			t.Fatal("no metric gathered before the reload reached the output in 30s; the buffer was lost")
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop(t)
	// Every metric the output's buffer took before the reload was written: as many as the last
	// internal_output of the sink gathered before the reload counted (metrics_added).
	before, added := countBefore(t, out, reloadAt)
	t.Logf("%d metrics gathered before the reload written; the buffer had taken %d before the last gather", before, added)
	if before < added {
		t.Fatalf("%d metrics gathered before the reload reached the output, of %d the buffer took", before, added)
	}
}

// countBefore counts the lines in file stamped before at, and returns the largest metrics_added
// of the sink's internal_output among them.
func countBefore(t *testing.T, file string, at time.Time) (n, added int) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, 0
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1] // whole lines: the agent may be writing
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		ts, _ := strconv.ParseInt(line[strings.LastIndexByte(line, ' ')+1:], 10, 64)
		if ts >= at.UnixNano() {
			continue
		}
		n++
		if strings.HasPrefix(line, "internal_output,") && strings.Contains(line, ",alias=sink") {
			_, v, _ := strings.Cut(line, " metrics_added=")
			if v == "" {
				_, v, _ = strings.Cut(line, ",metrics_added=")
			}
			k, _ := strconv.Atoi(v[:max(strings.IndexByte(v, 'i'), 0)])
			added = max(added, k)
		}
	}
	return n, added
}

func TestVersionAndHelp(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tagpipe ") {
		t.Fatalf("%v %s", err, out)
	}
	// A plain go build in a checkout stamps no -ldflags: the commit and its time come from the
	// build info Go records (-buildvcs, on by default; this machine's GOFLAGS may turn it off).
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		plain := filepath.Join(t.TempDir(), "tagpipe")
		if b, err := exec.Command("go", "build", "-buildvcs=true", "-o", plain, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, b)
		}
		if info, _ := exec.Command("go", "version", "-m", plain).Output(); !strings.Contains(string(info), "vcs.revision=") {
			// Go stamps nothing in a git worktree (its .git is a file): CI's clean clone is where
			// this is checked.
			t.Logf("go build recorded no VCS information here; the fallback is not exercised:\n%s", info)
			return
		}
		out, err := exec.Command(plain, "version").Output()
		if want := "(commit " + string(head[:12]); err != nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "unknown") {
			t.Errorf("version: %q (%v), want the checkout's commit %s… and its time", out, err, head[:12])
		}
	}
	out, _ = exec.Command(binary, "--help").CombinedOutput()
	for _, flagName := range []string{"-config", "-config-directory", "-test", "-once", "-check", "-debug", "-version", "demo", "config"} {
		if !strings.Contains(string(out), flagName) {
			t.Errorf("--help does not mention %s", flagName)
		}
	}
}

func TestDemoPrintsLineProtocol(t *testing.T) {
	// The race detector and a loaded machine make the first devices slow to start: 8 s, not 3.
	cmd := exec.Command(binary, "demo", "--duration", "8s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if names := parseLines(t, out); len(names) == 0 {
		t.Fatalf("demo printed no line protocol; log:\n%s", stderr.String())
	}
	// The log is the agent's: no start-up chatter of the OPC UA simulator's library.
	for _, chatter := range []string{"New Node Set", "doing objects", "Started listening"} {
		if strings.Contains(stderr.String(), chatter) {
			t.Errorf("the demo's log carries the simulator's %q:\n%s", chatter, stderr.String())
		}
	}
}

// TestOnceLogsEachDevice: --once with two Modbus devices whose ports refuse logs one record per
// device (not one record joining both), each saying the connection was refused and by whom, and
// exits 1.
func TestOnceLogsEachDevice(t *testing.T) {
	dir := t.TempDir()
	a, b := testpeer.FreeAddr(t), testpeer.FreeAddr(t) // nothing listens
	conf := writeConf(t, dir, fmt.Sprintf(`
[[inputs.modbus]]
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "c"
      register = "coil"
      address = 0
  [[inputs.modbus.device]]
    name = "meter-a"
    controller = "tcp://%s"
    profile = "p"
  [[inputs.modbus.device]]
    name = "meter-b"
    controller = "tcp://%s"
    profile = "p"
[[outputs.file]]
  files = [%q]
`, a, b, filepath.Join(dir, "out.lp")))
	cmd := exec.Command(binary, "--config", conf, "--once")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s", err, stderr.String())
	}
	var records []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			records = append(records, line)
		}
	}
	for _, dev := range []struct{ name, addr string }{{"meter-a", a}, {"meter-b", b}} {
		n := 0
		for _, r := range records {
			if strings.Contains(r, dev.name) {
				n++
				if !strings.Contains(r, "connection refused by "+dev.addr) {
					t.Errorf("%s: %s; want \"connection refused by %s\"", dev.name, r, dev.addr)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s is named in %d error records, want 1", dev.name, n)
		}
	}
	if len(records) != 2 || strings.Contains(stderr.String(), `\n`) {
		t.Errorf("%d error records, want 2, one line each:\n%s", len(records), stderr.String())
	}
}
