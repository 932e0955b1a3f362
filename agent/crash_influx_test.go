package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
)

// influxSeq reads the seq measurement back from InfluxDB: n by series and timestamp. InfluxDB
// keeps one point per series and timestamp, so a batch sent twice after a crash shows once.
func influxSeq(t *testing.T, db *tsdb.Server) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	a := db.Query("crash", "SELECT n, dev FROM seq", "", "")
	for _, r := range a.Results {
		for _, s := range r.Series {
			for _, row := range s.Values {
				ts, _ := row[0].(json.Number).Int64()
				n, _ := row[1].(json.Number).Int64()
				dev, _ := row[2].(string)
				if ts != seqTime(n).UnixNano() || dev != seqTags[n%3][0].Value {
					t.Fatalf("point %v does not hold what was produced", row)
				}
				got[n]++
			}
		}
	}
	return got
}

// The disk buffer's promise against a real InfluxDB: the database is stopped for a while and
// started again, the agent is killed with SIGKILL during the outage and again while it writes,
// and every metric produced before each kill arrives, once per series and timestamp.
func TestDiskBufferWithInfluxDBOutagesAndKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts InfluxDB and agents as processes")
	}
	db := tsdb.Start(t, tsdb.Influx167, tsdb.Options{})
	db.Query("", "CREATE DATABASE crash", "", "") // so that the test can read before the agent creates it
	dir := t.TempDir()
	env := []string{"BUFFER_DIR=" + filepath.Join(dir, "buffer"), "INFLUX_URL=" + db.URL}
	const slack = 200 // 100 ms of metrics at 2,000/s: the in-flight bound asserted
	count := func() int { return len(influxSeq(t, db)) }

	// Run 1 writes; the database goes away; the agent keeps buffering, then is killed.
	c1 := startChild(t, append(env, "SEQ_START=0")...)
	waitFor(t, "run 1 to write to InfluxDB", func() bool { return count() > 500 })
	db.Stop()
	stoppedAt := c1.Produced.Load()
	waitFor(t, "run 1 to buffer during the outage", func() bool { return c1.Produced.Load() > stoppedAt+2000 })
	c1.Cmd.Process.Kill()
	c1.Cmd.Wait()
	produced1 := c1.Produced.Load()

	// Run 2 starts while the database is still down, then the database comes back.
	c2 := startChild(t, append(env, "SEQ_START=1000000")...)
	waitFor(t, "run 2 to produce", func() bool { return c2.Produced.Load() >= 1000500 })
	db.Start()
	waitFor(t, "run 1's metrics to arrive", func() bool { got := influxSeq(t, db); return got[produced1-slack] > 0 })
	// Killed while it writes.
	waitFor(t, "run 2 to write its own", func() bool { got := influxSeq(t, db); return got[1000400] > 0 })
	c2.Cmd.Process.Kill()
	c2.Cmd.Wait()
	produced2 := c2.Produced.Load()

	// Run 3 delivers the rest and stops cleanly.
	c3 := startChild(t, append(env, "SEQ_START=2000000")...)
	waitFor(t, "run 2's metrics to arrive", func() bool {
		got := influxSeq(t, db)
		return got[produced2-slack] > 0 && got[2000300] > 0
	})
	c3.Cmd.Process.Signal(syscall.SIGTERM)
	if err := c3.Cmd.Wait(); err != nil {
		t.Fatalf("agent after SIGTERM: %v", err)
	}
	produced3 := c3.Produced.Load()

	got := influxSeq(t, db)
	for run, r := range []struct{ from, last, allowed int64 }{{0, produced1, slack}, {1000000, produced2, slack}, {2000000, produced3, 0}} {
		k := r.from
		for got[k] == 1 {
			k++
		}
		if got[k] > 1 {
			t.Fatalf("run %d: metric %d is %d points in InfluxDB", run+1, k, got[k])
		}
		for n := k; n <= r.last+slack; n++ {
			if got[n] > 0 {
				t.Fatalf("run %d: metric %d missing but %d arrived: a gap", run+1, k, n)
			}
		}
		if lost := r.last + 1 - k; lost > r.allowed {
			t.Fatalf("run %d: produced up to %d, InfluxDB has up to %d: %d lost (allowed %d in flight)", run+1, r.last, k-1, lost, r.allowed)
		} else {
			t.Logf("run %d: produced %d, in InfluxDB %d (once each), in flight at the kill %d", run+1, r.last-r.from+1, k-r.from, lost)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "buffer", "*", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("%d segments left after everything was delivered", len(segs))
	}
}

// In order per series: after an outage the disk buffer hands the output its metrics oldest
// first, so a series' points arrive in the order they were produced.
func TestDiskBufferDeliversInOrderPerSeries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts agents as processes")
	}
	dir := t.TempDir()
	missing := filepath.Join(dir, "later", "out.lp") // the output's folder appears later: an outage
	c := startChild(t, "SEQ_START=0", "BUFFER_DIR="+filepath.Join(dir, "buffer"), "OUT_FILE="+missing)
	waitFor(t, "metrics to wait in the buffer", func() bool { return c.Produced.Load() > 3000 })
	os.Mkdir(filepath.Dir(missing), 0o755)
	waitFor(t, "the backlog to arrive", func() bool { return len(delivered(t, missing)) > 3000 })
	c.Cmd.Process.Signal(syscall.SIGTERM)
	c.Cmd.Wait()
	data, _ := os.ReadFile(missing)
	last := [3]int64{-1, -1, -1}
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var dev, n, ts int64
		if _, err := fmt.Sscanf(line, "seq,dev=d%d n=%di %d", &dev, &n, &ts); err != nil {
			t.Fatalf("bad line %q", line)
		}
		if n <= last[dev] {
			t.Fatalf("series d%d: %d arrived after %d", dev, n, last[dev])
		}
		last[dev] = n
		lines++
	}
	if int64(lines) != c.Produced.Load()+1 {
		t.Fatalf("%d lines for %d metrics produced", lines, c.Produced.Load()+1)
	}
}
