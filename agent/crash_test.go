package agent

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	_ "github.com/tagpipe/tagpipe/outputs/file"
	_ "github.com/tagpipe/tagpipe/outputs/influxdb"
)

// seqInput emits metric n = start, start+1, ... every period, stamped start+n milliseconds after
// a fixed epoch, and prints "N n" on stdout once AddMetric returned.
type seqInput struct {
	start  int64
	period time.Duration
	stop   chan struct{}
	done   chan struct{}
}

func (*seqInput) SampleConfig() string                             { return "" }
func (*seqInput) Gather(context.Context, models.Accumulator) error { return nil }
func (s *seqInput) Start(_ context.Context, acc models.Accumulator) error {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.period)
		defer t.Stop()
		for n := s.start; ; n++ {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			acc.AddMetric(models.New("seq", seqTags[n%3], []models.Field{models.Int("n", n)}, seqTime(n)))
			fmt.Fprintf(os.Stdout, "N %d\n", n) // unbuffered: printed means handed over
		}
	}()
	return nil
}
func (s *seqInput) Stop() { close(s.stop); <-s.done }

var seqTags = [3][]models.Tag{{{Key: "dev", Value: "d0"}}, {{Key: "dev", Value: "d1"}}, {{Key: "dev", Value: "d2"}}}

func seqTime(n int64) time.Time {
	return time.Unix(1700000000, 0).Add(time.Duration(n) * time.Millisecond)
}

// TestMain turns the test binary into an agent when TAGPIPE_CRASH_CHILD is set.
func TestMain(m *testing.M) {
	if os.Getenv("TAGPIPE_CRASH_CHILD") != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

func crashChild() int {
	start, _ := strconv.ParseInt(os.Getenv("SEQ_START"), 10, 64)
	output := fmt.Sprintf("[[outputs.file]]\n  alias = \"sink\"\n  files = [%q]\n", os.Getenv("OUT_FILE"))
	if u := os.Getenv("INFLUX_URL"); u != "" {
		output = fmt.Sprintf("[[outputs.influxdb]]\n  alias = \"sink\"\n  urls = [%q]\n  database = \"crash\"\n  timeout = \"2s\"\n", u)
	}
	text := fmt.Sprintf(`
[agent]
  omit_hostname = true
  flush_interval = "50ms"
  metric_batch_size = 200
  buffer_strategy = "disk"
  buffer_directory = %q
  buffer_fsync = "batch"
`, os.Getenv("BUFFER_DIR")) + output
	cfg, err := config.LoadText("crash.conf", text, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.Inputs = append(cfg.Inputs, &config.Input{Plugin: &seqInput{start: start, period: 500 * time.Microsecond},
		Config: &models.PluginConfig{Name: "seq"}, Log: quiet})
	a, err := New(cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	a.Run(ctx)
	return 0
}

func startChild(t *testing.T, env ...string) *outputtest.Child {
	t.Helper()
	return outputtest.StartChild(t, append(env, "TAGPIPE_CRASH_CHILD=1")...)
}

// delivered reads the output file: how often each n of the seq measurement arrived.
func delivered(t *testing.T, file string) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	data, err := os.ReadFile(file)
	if err != nil {
		return got
	}
	// The agent may be writing: only complete lines count.
	data = data[:strings.LastIndexByte(string(data), '\n')+1]
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "seq,") {
			continue
		}
		var dev, n, ts int64
		if _, err := fmt.Sscanf(line, "seq,dev=d%d n=%di %d", &dev, &n, &ts); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		if ts != seqTime(n).UnixNano() || dev != n%3 {
			t.Fatalf("metric %d arrived as %q", n, line)
		}
		got[n]++
	}
	return got
}

// The promise: kill -9 the agent while its output is down and while it writes; after
// the restart every metric produced before the kill arrives, with its timestamp. Metrics still in
// the pipeline's channels when the kill lands (handed to the accumulator, not yet in the disk
// buffer: at most a few milliseconds of them) are the one exception, bounded below.
func TestKillNineLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts agents as processes")
	}
	dir := t.TempDir()
	bufDir := filepath.Join(dir, "buffer")
	out := filepath.Join(dir, "out.lp")
	const slack = 200 // 100 ms of metrics at 2,000/s: the in-flight bound asserted

	// 1. The output cannot open its file: everything goes to the disk buffer. Kill -9.
	c1 := startChild(t, "SEQ_START=0", "BUFFER_DIR="+bufDir, "OUT_FILE="+filepath.Join(dir, "missing", "out.lp"))
	waitFor(t, "the first run to produce", func() bool { return c1.Produced.Load() >= 1500 })
	c1.Cmd.Process.Kill()
	c1.Cmd.Wait()
	produced1 := c1.Produced.Load()

	// 2. The output works: the agent writes while it is killed.
	c2 := startChild(t, "SEQ_START=1000000", "BUFFER_DIR="+bufDir, "OUT_FILE="+out)
	waitFor(t, "the second run to deliver the first run's metrics", func() bool { return len(delivered(t, out)) > int(produced1)-slack })
	waitFor(t, "the second run to produce", func() bool { return c2.Produced.Load() >= 1001500 })
	c2.Cmd.Process.Kill()
	c2.Cmd.Wait()
	produced2 := c2.Produced.Load()

	// 3. A clean run delivers the rest, then stops with SIGTERM (which drains everything).
	c3 := startChild(t, "SEQ_START=2000000", "BUFFER_DIR="+bufDir, "OUT_FILE="+out)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := delivered(t, out)
		if got[produced2-slack] > 0 && c3.Produced.Load() >= 2000200 {
			break
		}
		if time.Now().After(deadline) {
			max2 := int64(-1)
			for n := range got {
				if n >= 1000000 && n < 2000000 && n > max2 {
					max2 = n
				}
			}
			t.Fatalf("third run: second run produced up to %d, delivered up to %d; third produced %d", produced2, max2, c3.Produced.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c3.Cmd.Process.Signal(syscall.SIGTERM)
	if err := c3.Cmd.Wait(); err != nil {
		t.Fatalf("agent after SIGTERM: %v", err)
	}
	produced3 := c3.Produced.Load()

	got := delivered(t, out)
	dups := 0
	for run, r := range []struct{ from, last int64 }{{0, produced1}, {1000000, produced2}, {2000000, produced3}} {
		// Everything from the run's first metric up to some k arrived, with no gap; k may stop
		// short of the last one printed only by the in-flight bound (none for a SIGTERM).
		k := r.from
		for got[k] > 0 {
			dups += got[k] - 1
			k++
		}
		lost := r.last + 1 - k
		for n := k; n <= r.last+slack; n++ {
			if got[n] > 0 {
				t.Fatalf("run %d: metric %d missing but %d arrived: a gap", run+1, k, n)
			}
		}
		limit := int64(slack)
		if run == 2 {
			limit = 0
		}
		if lost > limit {
			t.Fatalf("run %d: produced up to %d, delivered up to %d: %d lost (allowed %d in flight)", run+1, r.last, k-1, lost, limit)
		}
		t.Logf("run %d: produced %d, delivered %d, in flight at the kill %d", run+1, r.last-r.from+1, k-r.from, lost)
	}
	// Duplicates come only from a batch written before its acknowledgement was persisted.
	t.Logf("duplicates (at least once delivery): %d", dups)
	if dups > 2*200 {
		t.Fatalf("%d duplicates: more than the batch in flight at each kill", dups)
	}
	if n := len(mustGlob(t, filepath.Join(bufDir, "*", "*.seg"))); n != 1 {
		t.Fatalf("%d segments left after everything was delivered", n)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
