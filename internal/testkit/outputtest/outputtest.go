// Package outputtest holds what the tests and benchmarks of several outputs share: a log that a
// test can search, the agent's RunningOutput around an output, CPU time of this and other
// processes, and the test binary run again as an agent in a child process.
package outputtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/tagpipe/tagpipe/models"
)

// RequestBody reads the body of a request a test server got, gunzipped when its
// Content-Encoding says gzip.
func RequestBody(r *http.Request) ([]byte, error) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		z, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		body = z
	}
	return io.ReadAll(body)
}

// Log collects log lines (and repeats them in the test's log). Safe for concurrent use.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  testing.TB
}

// NewLogger returns a debug-level text logger writing into a Log.
func NewLogger(t testing.TB) (*slog.Logger, *Log) {
	l := &Log{t: t}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("log: %s", bytes.TrimSpace(p))
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count returns how many lines contain every one of subs.
func (l *Log) Count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// RunningOutput wraps o as the agent does, with a memory buffer of a million metrics, and
// closes it when the test ends.
func RunningOutput(t testing.TB, o models.Output, name string, batch int) *models.RunningOutput {
	log, _ := NewLogger(t)
	ro := models.NewRunningOutput(o, &models.PluginConfig{Name: name},
		models.OutputSettings{BatchSize: batch, BufferLimit: 1_000_000, FlushInterval: time.Second}, nil, nil, log)
	t.Cleanup(func() { ro.Close() })
	return ro
}

// CPU returns the CPU time (user + system) this process has used.
func CPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessCPU returns the CPU time of process pid from /proc, in clock ticks of 10 ms (0 when it
// cannot be read).
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // from field 3, the state
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Throughput reports, for n metrics written in elapsed with cpu of this process and peerCPU of
// the peer's, metrics/s and the CPU per metric of both.
func Throughput(b *testing.B, n int, elapsed, cpu, peerCPU time.Duration) {
	b.ReportMetric(float64(n)/elapsed.Seconds(), "metrics/s")
	b.ReportMetric(float64(cpu)/float64(n), "cpu-ns/metric")
	b.ReportMetric(float64(peerCPU)/float64(n), "peer-cpu-ns/metric")
}

// Child is the running test binary started again as a child process: an agent, which the
// test's TestMain runs when it finds the variable the test sets in env. The child prints
// "N n" on standard output for each metric n it handed over; Produced is the last n (-1
// before the first).
type Child struct {
	Cmd      *exec.Cmd
	Produced atomic.Int64
}

// StartChild starts the child with env added to the environment and no test to run; it is
// killed when the test ends.
func StartChild(t testing.TB, env ...string) *Child {
	t.Helper()
	c := &Child{Cmd: exec.Command(os.Args[0], "-test.run=^$")}
	c.Cmd.Env = append(os.Environ(), env...)
	c.Cmd.Stderr = io.Discard
	out, err := c.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.Produced.Store(-1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "N "), 10, 64); err == nil {
				c.Produced.Store(n)
			}
		}
	}()
	t.Cleanup(func() { c.Cmd.Process.Kill(); c.Cmd.Wait() })
	return c
}
