package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

// newMQTT returns an outputs.mqtt made by its registry entry (its defaults) for broker b,
// changed by mod, initialized and connected; it is closed when the test ends.
func newMQTT(t testing.TB, b *mqtttest.Broker, mod func(*MQTT)) (*MQTT, *outputtest.Log) {
	t.Helper()
	o := outputs.Registry["mqtt"]().(*MQTT)
	var lb *outputtest.Log
	o.Log, lb = outputtest.NewLogger(t)
	o.Servers = []string{b.Addr}
	o.ClientID = "tagpipe-" + strings.ReplaceAll(t.Name(), "/", "-")
	o.Timeout = config.Duration(5 * time.Second)
	o.ReconnectMax = config.Duration(500 * time.Millisecond)
	if mod != nil {
		mod(o)
	}
	if err := o.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if err := o.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o, lb
}

// lineMetrics returns n metrics of measurement "press" on 4 lines, with a sequence number in
// field n, one per millisecond from base.
func lineMetrics(n int, base time.Time) []*models.Metric {
	ms := make([]*models.Metric, n)
	for i := range ms {
		ms[i] = models.New("press", []models.Tag{
			{Key: "line", Value: "L" + strconv.Itoa(i%4)}, {Key: "device", Value: "press-" + strconv.Itoa(i%5)},
		}, []models.Field{
			models.Int("n", int64(i)),
			models.Float("force_kn", float64(i%700)/7),
			models.Bool("running", i%3 != 0),
			models.String("recipe", "R-"+strconv.Itoa(i%11)),
		}, base.Add(time.Duration(i)*time.Millisecond))
	}
	return ms
}

// flushAll writes every buffered metric through ro, failing the test on an error.
func flushAll(t testing.TB, ro *models.RunningOutput) {
	t.Helper()
	if err := ro.Flush(context.Background(), true); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if n := ro.Buffer.Len(); n != 0 {
		t.Fatalf("%d metrics left in the buffer", n)
	}
}

// seqOf reads the metrics in a message (line protocol or JSON, a batch or one) and returns
// their field n by topic.
func seqOf(t testing.TB, m mqtttest.Message, json bool) []int64 {
	t.Helper()
	var ns []int64
	if json {
		for _, jm := range jsonMetrics(t, m.Payload) {
			ns = append(ns, int64(jm.Fields["n"].(float64)))
		}
		return ns
	}
	for _, pm := range lptest.Parse(t, m.Payload, lineprotocol.Nanosecond) {
		f, ok := pm.Field("n")
		if !ok {
			t.Fatalf("no field n in %q", m.Payload)
		}
		ns = append(ns, f.IntV())
	}
	return ns
}

type jsonMetric struct {
	Name      string            `json:"name"`
	Tags      map[string]string `json:"tags"`
	Fields    map[string]any    `json:"fields"`
	Timestamp int64             `json:"timestamp"`
}

// jsonMetrics decodes a JSON message: one metric, or {"metrics":[...]}.
func jsonMetrics(t testing.TB, payload []byte) []jsonMetric {
	t.Helper()
	var batch struct {
		Metrics []jsonMetric `json:"metrics"`
	}
	if err := json.Unmarshal(payload, &batch); err == nil && batch.Metrics != nil {
		return batch.Metrics
	}
	var one jsonMetric
	if err := json.Unmarshal(payload, &one); err != nil {
		t.Fatalf("not JSON: %v: %q", err, payload)
	}
	return []jsonMetric{one}
}

// countSeq counts how often each n arrived in the messages on topics under prefix.
func countSeq(t testing.TB, msgs []mqtttest.Message, prefix string, json bool) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for _, m := range msgs {
		if !strings.HasPrefix(m.Topic, prefix) {
			continue
		}
		for _, n := range seqOf(t, m, json) {
			got[n]++
		}
	}
	return got
}

// exactlyOnce fails the test unless 0..n-1 each arrived once.
func exactlyOnce(t testing.TB, got map[int64]int, n int) {
	t.Helper()
	var missing, dup []int64
	for i := range int64(n) {
		switch got[i] {
		case 1:
		case 0:
			missing = append(missing, i)
		default:
			dup = append(dup, i)
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(got) != n {
		t.Fatalf("%d distinct of %d: missing %s, duplicated %s", len(got), n, head(missing), head(dup))
	}
}

func head(ns []int64) string {
	if len(ns) > 10 {
		return fmt.Sprint(ns[:10], "...")
	}
	return fmt.Sprint(ns)
}

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))
