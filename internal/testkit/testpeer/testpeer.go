// Package testpeer starts the real servers that tests talk to (pymodbus, node-opcua, InfluxDB,
// VictoriaMetrics) as child processes on loopback, waits until they serve and stops them, by
// their own PID, when the test ends. A peer that is not installed fails the test in CI
// (CI=true) and skips it elsewhere, saying how to install it.
package testpeer

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Python is the interpreter that sees Debian's python3-pymodbus (the first python3 on PATH may
// be another one).
const Python = "/usr/bin/python3"

// InCI reports whether the tests run in CI, where every peer must be present.
func InCI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// Missing stops a test whose peer is not installed: it fails in CI and skips elsewhere.
func Missing(t testing.TB, peer, install string, err error) {
	t.Helper()
	msg := peer + " is not available (" + install + ", or run scripts/test.sh as root)"
	if err != nil {
		msg += ": " + err.Error()
	}
	if InCI() {
		t.Fatal("CI: " + msg)
	}
	t.Skip(msg)
}

// Root returns the repository root (the folder holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// PeersDir is where scripts/peers.sh puts peers it builds or installs (.peers in the root).
func PeersDir(t testing.TB) string { return filepath.Join(Root(t), ".peers") }

// Process is a running peer.
type Process struct {
	Cmd   *exec.Cmd
	Ready []string // the fields after READY on the peer's first READY line

	t       testing.TB
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	stopped bool
}

// Options adjust Start.
type Options struct {
	Dir     string        // working directory
	Env     []string      // added to the environment
	Timeout time.Duration // to wait for READY (default 2m: a loaded CI machine starts node slowly)
	// ReadyPrefix is the start of the line that says the peer serves (default "READY").
	ReadyPrefix string
}

// Start runs name with args and waits for a line beginning with READY on its standard output.
// The peer is stopped (SIGTERM, then SIGKILL after 5 s) when the test ends; its standard error
// is logged if the test failed.
func Start(t testing.TB, opts Options, name string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), opts.Env...)
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Cmd: cmd, t: t, logPath: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.Log())
		}
	})
	prefix := opts.ReadyPrefix
	if prefix == "" {
		prefix = "READY"
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			logf.WriteString(line + "\n")
			if strings.HasPrefix(line, prefix) {
				ready <- strings.Fields(strings.TrimPrefix(line, prefix))
				break
			}
		}
		io.Copy(io.Discard, out) // keep draining: a full pipe would block the peer
	}()
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	select {
	case p.Ready = <-ready:
		return p
	case <-p.done:
		t.Fatalf("%s exited before it was ready:\n%s", name, p.Log())
	case <-time.After(timeout):
		t.Fatalf("%s was not ready after %s:\n%s", name, timeout, p.Log())
	}
	return nil
}

// Log returns what the peer wrote to standard error (and standard output up to READY).
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Stop ends the peer with SIGTERM (SIGKILL after 5 s) and waits for it. It is safe to call twice.
func (p *Process) Stop() { p.signal(syscall.SIGTERM, 5*time.Second) }

// Kill ends the peer with SIGKILL (a crash) and waits for it.
func (p *Process) Kill() { p.signal(syscall.SIGKILL, 5*time.Second) }

func (p *Process) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Done is closed when the peer has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// LookPath finds a peer's program; it calls Missing when there is none.
func LookPath(t testing.TB, file, install string) string {
	t.Helper()
	p, err := exec.LookPath(file)
	if err != nil {
		Missing(t, file, install, err)
	}
	return p
}

// Build builds the module's package pkg (e.g. "./cmd/tagpipe") into dir/name and returns its
// path: the tests that run the real binary.
func Build(t testing.TB, dir, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}
