package mqtt

// Tests with the whole agent: the real tagpipe binary killed with SIGKILL (the last will),
// and an agent with the counter input below, in process and as a child process (this test
// binary, re-executed), through broker outages and kills.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// counter is a service input that hands over metric "count" with field n = from, from+1, ...
// every period (device tag "dev-<n mod 3>", stamped now) and reports each n once AddMetric
// returned.
type counter struct {
	from   int64
	period time.Duration
	report func(n int64)
	quit   chan struct{}
	ended  chan struct{}
}

func (*counter) SampleConfig() string                             { return "" }
func (*counter) Gather(context.Context, models.Accumulator) error { return nil }

func (c *counter) Start(_ context.Context, acc models.Accumulator) error {
	c.quit, c.ended = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(c.ended)
		tick := time.NewTicker(c.period)
		defer tick.Stop()
		for n := c.from; ; n++ {
			select {
			case <-c.quit:
				return
			case <-tick.C:
			}
			dev := []models.Tag{{Key: "dev", Value: "dev-" + strconv.FormatInt(n%3, 10)}}
			acc.AddMetric(models.New("count", dev, []models.Field{models.Int("n", n)}, time.Now()))
			c.report(n)
		}
	}()
	return nil
}

func (c *counter) Stop() { close(c.quit); <-c.ended }

// agentConf is the config of the agents below: the counter's metrics to outputs.mqtt at addr.
func agentConf(addr, bufferDir string) string {
	buffer := ""
	if bufferDir != "" {
		buffer = fmt.Sprintf("  buffer_strategy = \"disk\"\n  buffer_directory = %q\n  buffer_fsync = \"batch\"\n", bufferDir)
	}
	return fmt.Sprintf(`
[agent]
  omit_hostname = true
  flush_interval = "50ms"
  metric_batch_size = 500
  metric_buffer_limit = 1000000
%s
[[outputs.mqtt]]
  servers = [%q]
  client_id = "tagpipe-agent"
  topic = 'count/{{.Tag "dev"}}'
  layout = "batch"
  qos = 1
  timeout = "2s"
  reconnect_max = "500ms"
`, buffer, addr)
}

// runAgent runs an agent with the counter until ctx is done.
func runAgent(ctx context.Context, conf string, from int64, report func(int64)) error {
	cfg, err := config.LoadText("agent.conf", conf, nil)
	if err != nil {
		return err
	}
	cfg.Inputs = append(cfg.Inputs, &config.Input{Plugin: &counter{from: from, period: time.Millisecond, report: report},
		Config: &models.PluginConfig{Name: "counter"}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a, err := agent.New(cfg, nil)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// TestMain turns this test binary into an agent when TAGPIPE_MQTT_CHILD is set.
func TestMain(m *testing.M) {
	if os.Getenv("TAGPIPE_MQTT_CHILD") != "" {
		from, _ := strconv.ParseInt(os.Getenv("COUNT_FROM"), 10, 64)
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer cancel()
		err := runAgent(ctx, agentConf(os.Getenv("BROKER"), os.Getenv("BUFFER_DIR")), from, func(n int64) {
			fmt.Fprintf(os.Stdout, "N %d\n", n) // unbuffered: printed means handed over
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startChildAgent(t *testing.T, env ...string) *outputtest.Child {
	t.Helper()
	return outputtest.StartChild(t, append(env, "TAGPIPE_MQTT_CHILD=1")...)
}

// counted returns how often each n of the counter arrived, checking each metric's topic.
func counted(t testing.TB, msgs []mqtttest.Message) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for _, m := range msgs {
		for _, pm := range lptest.Parse(t, m.Payload, lineprotocol.Nanosecond) {
			f, _ := pm.Field("n")
			dev, _ := pm.Tag("dev")
			if want := "count/" + dev; m.Topic != want || dev != "dev-"+strconv.FormatInt(f.IntV()%3, 10) {
				t.Fatalf("n=%d (%s) on %s", f.IntV(), dev, m.Topic)
			}
			got[f.IntV()]++
		}
	}
	return got
}

// gaps describes the ranges of from..to that did not arrive.
func gaps(got map[int64]int, from, to int64) string {
	var b strings.Builder
	for n := from; n <= to; n++ {
		if got[n] > 0 {
			continue
		}
		e := n
		for e+1 <= to && got[e+1] == 0 {
			e++
		}
		fmt.Fprintf(&b, " %d..%d", n, e)
		n = e
		if b.Len() > 200 {
			break
		}
	}
	return b.String()
}

// contiguous returns the first n ≥ from that did not arrive, and the duplicates before it.
func contiguous(got map[int64]int, from int64) (int64, int) {
	dups := 0
	for got[from] > 0 {
		dups += got[from] - 1
		from++
	}
	return from, dups
}

// outage is how long the broker is away in TestBrokerOutage: the 20 s, or 3 s with
// -short. The mechanism (writes fail and keep their metrics, the connection is retried every
// reconnect_max, the backlog drains once it is back) does not depend on the length.
func outage() time.Duration {
	if testing.Short() {
		return 3 * time.Second
	}
	return 20 * time.Second
}

// The broker is stopped for 20 s while the agent produces 1,000 metrics a second: everything
// produced meanwhile arrives once it is back, none missing. The subscriber keeps its session
// (and the broker persists it), so that what is published before it reconnects waits for it.
func TestBrokerOutage(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{Persist: true})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"count/#"}, ClientID: "reader", Persistent: true, QoS: 1})
	var produced atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, agentConf(b.Addr, ""), 0, func(n int64) { produced.Store(n) }) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	sub.WaitFor("the first 1,000", 20*time.Second, func(ms []mqtttest.Message) bool { return len(counted(t, ms)) >= 1000 })
	b.Stop()
	before := produced.Load()
	time.Sleep(outage())
	during := produced.Load() - before
	b.Start()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := counted(t, sub.Messages())
		if k, _ := contiguous(got, 0); k > before+during+500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the outage: missing%s (produced up to %d)", gaps(got, 0, produced.Load()), produced.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	last := produced.Load()
	msgs := sub.WaitFor("the rest after SIGTERM-like stop", 20*time.Second, func(ms []mqtttest.Message) bool {
		k, _ := contiguous(counted(t, ms), 0)
		return k > last
	})
	got := counted(t, msgs)
	k, dups := contiguous(got, 0)
	if k != last+1 || int64(len(got)) != last+1 {
		t.Fatalf("produced 0..%d, arrived 0..%d without a gap, %d distinct", last, k-1, len(got))
	}
	t.Logf("outage %s: %d metrics produced meanwhile, %d in all, duplicates %d (at least once)", outage(), during, last+1, dups)
	if dups > 2*500 {
		t.Fatalf("%d duplicates: more than the batches in flight when the broker went", dups)
	}
}

// With the disk buffer, the agent is killed (SIGKILL) while the broker is away, and started
// again: nothing produced before the kill is lost, except what was still in the pipeline's
// channels (not yet in the disk buffer; bounded below), and nothing after.
func TestDiskBufferKillDuringOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts agents as processes")
	}
	b := mqtttest.StartBroker(t, mqtttest.Options{Persist: true})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"count/#"}, ClientID: "reader", Persistent: true, QoS: 1})
	bufDir := filepath.Join(t.TempDir(), "buffer")
	const slack = 200 // 200 ms of metrics at 1,000/s: the in-flight bound asserted

	c1 := startChildAgent(t, "COUNT_FROM=0", "BROKER="+b.Addr, "BUFFER_DIR="+bufDir)
	sub.WaitFor("the first run's first 500", 20*time.Second, func(ms []mqtttest.Message) bool { return len(counted(t, ms)) >= 500 })
	b.Stop()
	at := c1.Produced.Load()
	waitTrue(t, "2,000 more during the outage", func() bool { return c1.Produced.Load() >= at+2000 })
	c1.Cmd.Process.Kill()
	c1.Cmd.Wait()
	produced1 := c1.Produced.Load()

	c2 := startChildAgent(t, "COUNT_FROM=1000000", "BROKER="+b.Addr, "BUFFER_DIR="+bufDir)
	waitTrue(t, "the second run to produce during the outage", func() bool { return c2.Produced.Load() >= 1000500 })
	b.Start()
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := counted(t, sub.Messages())
		k, _ := contiguous(got, 0)
		k2, _ := contiguous(got, 1000000)
		if k > produced1-slack && c2.Produced.Load() >= 1002000 {
			break
		}
		last = fmt.Sprintf("run 1 produced up to %d, arrived up to %d without a gap; run 2 produced up to %d, arrived up to %d; %d distinct; run 1 missing%s",
			produced1, k-1, c2.Produced.Load(), k2-1, len(got), gaps(got, 0, produced1))
		if time.Now().After(deadline) {
			t.Fatalf("the first run's metrics: not after 60s: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c2.Cmd.Process.Signal(syscall.SIGTERM)
	if err := c2.Cmd.Wait(); err != nil {
		t.Fatalf("agent after SIGTERM: %v", err)
	}
	produced2 := c2.Produced.Load()
	msgs := sub.WaitFor("the second run's metrics", 30*time.Second, func(ms []mqtttest.Message) bool {
		k, _ := contiguous(counted(t, ms), 1000000)
		return k > produced2
	})
	got := counted(t, msgs)
	k1, d1 := contiguous(got, 0)
	for n := k1; n <= produced1+slack; n++ {
		if got[n] > 0 {
			t.Fatalf("run 1: metric %d missing but %d arrived: a gap", k1, n)
		}
	}
	if lost := produced1 + 1 - k1; lost > slack {
		t.Fatalf("run 1: produced up to %d, arrived up to %d: %d lost (allowed %d in flight)", produced1, k1-1, lost, slack)
	}
	k2, d2 := contiguous(got, 1000000)
	if k2 != produced2+1 {
		t.Fatalf("run 2: produced up to %d, arrived up to %d", produced2, k2-1)
	}
	t.Logf("run 1: produced %d, arrived %d (in flight at the kill %d); run 2: %d; duplicates %d", produced1+1, k1,
		produced1+1-k1, produced2-999999, d1+d2)
	if d1+d2 > 2*500 {
		t.Fatalf("%d duplicates: more than a batch in flight at each stop", d1+d2)
	}
}

// tagpipeBinary builds cmd/tagpipe once per test run.
var tagpipeBinary = func() func(t *testing.T) string {
	var path string
	return func(t *testing.T) string {
		t.Helper()
		if path != "" {
			return path
		}
		dir, err := os.MkdirTemp("", "tagpipe-mqtt-")
		if err != nil {
			t.Fatal(err)
		}
		path = testpeer.Build(t, dir, "./cmd/tagpipe", "tagpipe")
		return path
	}
}()

// The real binary, killed with SIGKILL: the broker publishes its last will (plain mode), or its
// NDEATH with the NBIRTH's bdSeq (Sparkplug).
func TestLastWillOnKill(t *testing.T) {
	bin := tagpipeBinary(t)
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	for _, tc := range []struct{ name, table string }{
		{"plain", `
  topic = 'will-test/{{.Name}}'
  will_topic = "will-test/status"
  will_payload = "gone"
  birth_topic = "will-test/status"
  birth_payload = "up"`},
		{"sparkplug", `
  sparkplug = true
  group_id = "will"
  edge_node_id = "edge"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"will-test/#", "spBv1.0/will/#"}})
			conf := filepath.Join(t.TempDir(), "tagpipe.conf")
			text := fmt.Sprintf("[agent]\n  interval = \"100ms\"\n  flush_interval = \"100ms\"\n  omit_hostname = true\n"+
				"[[inputs.internal]]\n[[outputs.mqtt]]\n  servers = [%q]\n  client_id = %q%s\n", b.Addr, "will-"+tc.name, tc.table)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "--config", conf)
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			// Up and writing: the birth, then some data.
			sub.WaitFor("data from the agent", 20*time.Second, func(ms []mqtttest.Message) bool {
				return len(ms) >= 3 && (strings.Contains(ms[len(ms)-1].Topic, "internal") || strings.Contains(ms[len(ms)-1].Topic, "DATA"))
			})
			cmd.Process.Kill()
			msgs := sub.WaitFor("the will", 10*time.Second, func(ms []mqtttest.Message) bool {
				last := ms[len(ms)-1]
				return strings.HasSuffix(last.Topic, "/status") || strings.Contains(last.Topic, "NDEATH")
			})
			if tc.name == "plain" {
				if string(msgs[0].Payload) != "up" || string(msgs[len(msgs)-1].Payload) != "gone" {
					t.Fatalf("birth %q, will %q", msgs[0].Payload, msgs[len(msgs)-1].Payload)
				}
				return
			}
			sp := mqtttest.DecodeSparkplug(t, msgs)
			if sp[0].Kind() != "NBIRTH" || sp[len(sp)-1].Kind() != "NDEATH" {
				t.Fatalf("messages %v", kinds(sp))
			}
			if a, z := bdSeqOf(t, sp[0]), bdSeqOf(t, sp[len(sp)-1]); a != z {
				t.Fatalf("NBIRTH bdSeq %s, NDEATH bdSeq %s", a, z)
			}
		})
	}
}
