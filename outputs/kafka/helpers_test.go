package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/lptest"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

const topic = "metrics"

// newCluster starts franz-go's kfake (the Kafka wire protocol, in process, on 127.0.0.1) with
// three brokers and topic "metrics" of three partitions.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, a := range c.ListenAddrs() {
		if host, _, _ := net.SplitHostPort(a); !net.ParseIP(host).IsLoopback() {
			t.Fatalf("broker on %s", a)
		}
	}
	return c
}

type logBuf = outputtest.Log

// newKafka returns a connected outputs.kafka made by its registry entry (its defaults) for the
// cluster's brokers, changed by mod.
func newKafka(t testing.TB, c *kfake.Cluster, mod func(*Kafka)) (*Kafka, *logBuf) {
	t.Helper()
	k := outputs.Registry["kafka"]().(*Kafka)
	var lb *logBuf
	k.Log, lb = outputtest.NewLogger(t)
	k.Brokers, k.Topic, k.MaxRetry = c.ListenAddrs(), topic, 1
	mod(k)
	if err := k.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if err := k.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return k, lb
}

// plcMetrics returns n metrics with every field type, one per millisecond from base.
func plcMetrics(name string, n int, base time.Time) []*models.Metric {
	ms := make([]*models.Metric, n)
	for i := range ms {
		ms[i] = models.New(name, []models.Tag{
			{Key: "device", Value: "plc" + strconv.Itoa(i%7)}, {Key: "line", Value: "L" + strconv.Itoa(i%3)},
		}, []models.Field{
			models.Float("temp", float64(i%1000)+0.25),
			models.Int("count", -int64(i)),
			models.Uint("raw", uint64(i)*3),
			models.Bool("on", i%2 == 0),
			models.String("state", "run "+strconv.Itoa(i)+` "q", \ x`),
		}, base.Add(time.Duration(i)*time.Millisecond))
	}
	return ms
}

// point is a metric as text, for comparing what was sent with what was read back:
// "name,k=v,k=v f=v(type),f=v(type) unixnano". Tags and fields are sorted.
func point(name string, tags map[string]string, fields map[string]string, t int64) string {
	var b strings.Builder
	b.WriteString(name)
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		fmt.Fprintf(&b, ",%s=%s", k, tags[k])
	}
	b.WriteByte(' ')
	for i, k := range slices.Sorted(maps.Keys(fields)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, fields[k])
	}
	fmt.Fprintf(&b, " %d", t)
	return b.String()
}

// want is how m must read back; json: as JSON carries it (numbers, second timestamps, no
// unsigned type), dropTag: a tag the output leaves out.
func want(m *models.Metric, jsonFormat bool, dropTag string) string {
	tags := map[string]string{}
	for _, t := range m.Tags {
		if t.Key != dropTag {
			tags[t.Key] = t.Value
		}
	}
	fields := map[string]string{}
	for _, f := range m.Fields {
		var v string
		switch f.Type() {
		case models.TypeFloat:
			v = strconv.FormatFloat(f.FloatV(), 'g', -1, 64) + "(float)"
		case models.TypeInt:
			v = strconv.FormatInt(f.IntV(), 10) + "(int)"
		case models.TypeUint:
			v = strconv.FormatUint(f.UintV(), 10) + "(uint)"
		case models.TypeBool:
			v = strconv.FormatBool(f.BoolV()) + "(bool)"
		case models.TypeString:
			v = strconv.Quote(f.StringV()) + "(string)"
		}
		if jsonFormat && f.Type() != models.TypeString && f.Type() != models.TypeBool {
			v = strconv.FormatFloat(must(f.Number()), 'g', -1, 64) + "(number)"
		}
		fields[f.Key] = v
	}
	ts := m.Time.UnixNano()
	if jsonFormat {
		ts = m.Time.Unix()
	}
	return point(m.Name, tags, fields, ts)
}

func must(v float64, ok bool) float64 {
	if !ok {
		panic("not a number")
	}
	return v
}

// decodeLines parses line protocol with the line-protocol library's decoder.
func decodeLines(t testing.TB, value []byte) []string {
	t.Helper()
	var out []string
	for _, m := range lptest.Parse(t, value, lineprotocol.Nanosecond) {
		out = append(out, want(m, false, ""))
	}
	return out
}

// decodeJSON parses one JSON metric object or a {"metrics":[...]} batch.
func decodeJSON(t testing.TB, value []byte) []string {
	t.Helper()
	type metric struct {
		Fields    map[string]any    `json:"fields"`
		Name      string            `json:"name"`
		Tags      map[string]string `json:"tags"`
		Timestamp int64             `json:"timestamp"`
	}
	var objs []metric
	if bytes.HasPrefix(value, []byte(`{"metrics":`)) {
		var b struct{ Metrics []metric }
		if err := json.Unmarshal(value, &b); err != nil {
			t.Fatalf("%q: %v", value, err)
		}
		objs = b.Metrics
	} else {
		var m metric
		if err := json.Unmarshal(value, &m); err != nil {
			t.Fatalf("%q: %v", value, err)
		}
		objs = []metric{m}
	}
	var out []string
	for _, m := range objs {
		fields := map[string]string{}
		for k, v := range m.Fields {
			switch x := v.(type) {
			case float64:
				fields[k] = strconv.FormatFloat(x, 'g', -1, 64) + "(number)"
			case bool:
				fields[k] = strconv.FormatBool(x) + "(bool)"
			case string:
				fields[k] = strconv.Quote(x) + "(string)"
			}
		}
		out = append(out, point(m.Name, m.Tags, fields, m.Timestamp))
	}
	return out
}

// consumed is what a kgo consumer read.
type consumed struct {
	records []*kgo.Record
	points  map[string]int // point → times seen
}

// consume reads topics from the start with franz-go's kgo until it has read points metrics,
// then for a moment longer to catch duplicates.
func consume(t testing.TB, addrs []string, topics []string, points int, jsonFormat bool, opts ...kgo.Opt) consumed {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := consumed{points: map[string]int{}}
	n := 0
	deadline := time.Now().Add(20 * time.Second)
	var settle time.Time
	for {
		wait := time.Until(deadline)
		if n >= points {
			if settle.IsZero() {
				settle = time.Now().Add(300 * time.Millisecond)
			}
			wait = time.Until(settle)
		}
		if wait <= 0 {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			got.records = append(got.records, r)
			var ps []string
			if jsonFormat {
				ps = decodeJSON(t, r.Value)
			} else {
				ps = decodeLines(t, r.Value)
			}
			for _, p := range ps {
				got.points[p]++
				n++
			}
		})
	}
	return got
}

// check fails unless got holds every metric of ms exactly once and nothing else.
func (got consumed) check(t testing.TB, ms []*models.Metric, jsonFormat bool, dropTag string) {
	t.Helper()
	var missing, dup, extra []string
	wantSet := map[string]bool{}
	for _, m := range ms {
		w := want(m, jsonFormat, dropTag)
		wantSet[w] = true
		switch got.points[w] {
		case 0:
			missing = append(missing, w)
		case 1:
		default:
			dup = append(dup, w)
		}
	}
	for p := range got.points {
		if !wantSet[p] {
			extra = append(extra, p)
		}
	}
	if len(missing)+len(dup)+len(extra) > 0 {
		first := func(s []string) []string { slices.Sort(s); return s[:min(len(s), 3)] }
		t.Fatalf("read back %d distinct metrics, want %d: %d missing %q, %d duplicated %q, %d unexpected %q",
			len(got.points), len(ms), len(missing), first(missing), len(dup), first(dup), len(extra), first(extra))
	}
}
