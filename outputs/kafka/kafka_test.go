package kafka

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
)

// TestCodecsAndFormats writes with every compression, as line protocol one metric per message
// and as JSON batches, and reads every metric back with franz-go's consumer; each record's
// batch must carry the codec asked for.
func TestCodecsAndFormats(t *testing.T) {
	for _, tc := range []struct {
		codec string
		attr  uint8 // Kafka's codec id in the record batch attributes
	}{{"none", 0}, {"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}} {
		for _, format := range []string{"influx", "json"} {
			for _, batched := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/batch=%v", tc.codec, format, batched)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					c := newCluster(t)
					k, _ := newKafka(t, c, func(k *Kafka) {
						k.Compression, k.DataFormat, k.UseBatchFormat = tc.codec, format, batched
						k.RoutingTags = []string{"device"}
						k.MaxMessageBytes = 4000 // a few dozen metrics per batch message
					})
					ms := plcMetrics("plc", 1000, time.Now().Truncate(time.Second))
					if err := k.Write(context.Background(), ms); err != nil {
						t.Fatal(err)
					}
					got := consume(t, c.ListenAddrs(), []string{topic}, len(ms), format == "json")
					got.check(t, ms, format == "json", "")
					for _, r := range got.records {
						if r.Attrs.CompressionType() != tc.attr {
							t.Fatalf("record codec %d, want %d", r.Attrs.CompressionType(), tc.attr)
						}
						if !strings.HasPrefix(string(r.Key), "plc") || len(r.Key) != 4 {
							t.Fatalf("key %q, want the device tag", r.Key)
						}
						if len(r.Value)+len(r.Key)+messageOverhead > 4000 {
							t.Fatalf("a message of %d bytes, over max_message_bytes", len(r.Value))
						}
					}
					if perMsg := len(ms) / len(got.records); batched != (perMsg > 1) {
						t.Errorf("%d records for %d metrics", len(got.records), len(ms))
					}
				})
			}
		}
	}
}

// TestTopicsAndKeys: topic from a tag (left out of the message), suffixes from the measurement
// or tags, keys from tags or fixed, an invalid topic dropped, and a topic the brokers do not
// have keeps only its own metrics until it exists.
func TestTopicsAndKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "north", "south", "metrics_plc", "metrics_boiler", "metrics_L0", "metrics_L0_plc1"))
	base := time.Now().Truncate(time.Second)
	mk := func(name string, tags ...string) *models.Metric {
		var ts []models.Tag
		for i := 0; i < len(tags); i += 2 {
			ts = append(ts, models.Tag{Key: tags[i], Value: tags[i+1]})
		}
		base = base.Add(time.Millisecond)
		return models.New(name, ts, []models.Field{models.Int("v", 1)}, base)
	}

	k, logs := newKafka(t, c, func(k *Kafka) {
		k.TopicTag, k.ExcludeTopicTag, k.RoutingTags, k.RoutingKey = "site", true, []string{"line", "device"}, "fixed"
	})
	ms := []*models.Metric{
		mk("plc", "site", "north", "device", "d1", "line", "L1"), // north, key L1/d1
		mk("plc", "site", "south", "device", "d2"),               // south, key d2
		mk("plc"),                            // metrics, key "fixed"
		mk("plc", "site", "bad topic!"),      // invalid: dropped
		mk("plc", "site", "later", "x", "1"), // unknown topic: kept
	}
	err := k.Write(context.Background(), ms)
	p, ok := models.AsPartialWrite(err)
	if !ok || !slices.Equal(p.Rejected, []int{3}) || !slices.Equal(slices.Sorted(slices.Values(p.Accepted)), []int{0, 1, 2}) ||
		!strings.Contains(err.Error(), "topic later") {
		t.Fatalf("Write: %v (%+v)", err, p)
	}
	if logs.Count("dropped", "bad topic!", "not a valid topic") != 1 {
		t.Error("the invalid topic is not logged")
	}
	got := consume(t, c.ListenAddrs(), []string{"north", "south", topic}, 3, false)
	got.check(t, ms[:3], false, "site")
	keys := map[string]string{}
	for _, r := range got.records {
		keys[r.Topic] = string(r.Key)
	}
	if want := map[string]string{"north": "L1/d1", "south": "d2", topic: "fixed"}; fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("topic → key %v, want %v", keys, want)
	}
	// The kept metric is written once its topic exists.
	if err := c.CreateTopic("later", 1, nil); err != nil {
		t.Fatal(err)
	}
	// kafka-go caches metadata (6 s): the first writes after the creation may still fail.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := k.Write(context.Background(), ms[4:])
		if err == nil {
			break
		}
		if _, partial := models.AsPartialWrite(err); partial || time.Now().After(deadline) {
			t.Fatalf("after the topic was created: %v", err)
		}
	}
	consume(t, c.ListenAddrs(), []string{"later"}, 1, false).check(t, ms[4:], false, "site")

	for _, tc := range []struct {
		suffix TopicSuffix
		topics []string
	}{
		{TopicSuffix{Method: "measurement", Separator: "_"}, []string{"metrics_plc", "metrics_boiler"}},
		{TopicSuffix{Method: "tags", Keys: []string{"line", "device"}, Separator: "_"}, []string{"metrics_L0", "metrics_L0_plc1"}},
	} {
		k, _ := newKafka(t, c, func(k *Kafka) { k.TopicSuffix = tc.suffix })
		ms := []*models.Metric{mk("plc", "line", "L0"), mk("boiler", "line", "L0", "device", "plc1")}
		if err := k.Write(context.Background(), ms); err != nil {
			t.Fatal(err)
		}
		got := consume(t, c.ListenAddrs(), tc.topics, 2, false)
		for _, r := range got.records {
			t.Logf("%s: %s", r.Topic, r.Value)
		}
		if len(got.records) != 2 || got.records[0].Topic == got.records[1].Topic {
			t.Errorf("suffix %+v: records %d", tc.suffix, len(got.records))
		}
	}
}

// TestRequiredAcks checks the acks each produce request carries on the wire, and that the data
// arrives with each.
func TestRequiredAcks(t *testing.T) {
	for _, tc := range []struct {
		acks Acks
		wire int16
	}{{-1, -1}, {1, 1}, {0, 0}} {
		t.Run(fmt.Sprint(tc.acks), func(t *testing.T) {
			c := newCluster(t)
			seen := map[int16]int{}
			c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				seen[req.(*kmsg.ProduceRequest).Acks]++
				return nil, nil, false // kfake answers
			})
			k, _ := newKafka(t, c, func(k *Kafka) { k.RequiredAcks = tc.acks })
			ms := plcMetrics("acks", 100, time.Now())
			if err := k.Write(context.Background(), ms); err != nil {
				t.Fatal(err)
			}
			consume(t, c.ListenAddrs(), []string{topic}, len(ms), false).check(t, ms, false, "")
			if len(seen) != 1 || seen[tc.wire] == 0 {
				t.Errorf("acks on the wire %v, want only %d", seen, tc.wire)
			}
		})
	}
}

// TestMaxMessageBytes: a metric over max_message_bytes is dropped with a log line and counted,
// never retried; a message the broker refuses as too large (its topic limit is lower) is dropped
// too when it is alone; the rest arrives.
func TestMaxMessageBytes(t *testing.T) {
	c := newCluster(t)
	if err := c.CreateTopic("small", 1, map[string]string{"max.message.bytes": "3000"}); err != nil {
		t.Fatal(err)
	}
	for _, batched := range []bool{false, true} {
		k, logs := newKafka(t, c, func(k *Kafka) {
			k.MaxMessageBytes, k.UseBatchFormat = 2000, batched
		})
		ms := plcMetrics("mmb", 5, time.Now())
		ms[2] = models.New("mmb", nil, []models.Field{models.String("blob", strings.Repeat("x", 2500))}, time.Now())
		ro := runningOutput(t, k)
		ro.AddBatch(ms)
		if err := ro.Flush(context.Background(), true); err != nil {
			t.Fatalf("batch=%v: Flush: %v", batched, err)
		}
		if ro.MetricsRejected.Get() != 1 || ro.MetricsWritten.Get() != 4 || ro.Buffer.Len() != 0 {
			t.Errorf("batch=%v: rejected %d, written %d, buffered %d", batched, ro.MetricsRejected.Get(), ro.MetricsWritten.Get(), ro.Buffer.Len())
		}
		if logs.Count("dropped", "over max_message_bytes") != 1 || k.p.st.tooLarge.Get() != 1 {
			t.Errorf("batch=%v: the oversized metric is not logged or counted", batched)
		}
	}

	// The broker's own limit: 3000 bytes on topic "small", ours is 1,000,000.
	k, logs := newKafka(t, c, func(k *Kafka) { k.Topic = "small" })
	big := models.New("mmb", nil, []models.Field{models.String("blob", strings.Repeat("y", 5000))}, time.Now())
	ok := models.New("mmb", nil, []models.Field{models.Int("v", 1)}, time.Now())
	err := k.Write(context.Background(), []*models.Metric{big})
	if p, partial := models.AsPartialWrite(err); !partial || !slices.Equal(p.Rejected, []int{0}) {
		t.Fatalf("a message over the broker's limit: %v", err)
	}
	if logs.Count("dropped", "the broker refused it as too large") != 1 {
		t.Error("the broker's refusal is not logged")
	}
	if err := k.Write(context.Background(), []*models.Metric{ok}); err != nil {
		t.Fatal(err)
	}
}

func runningOutput(t testing.TB, o models.Output) *models.RunningOutput {
	return outputtest.RunningOutput(t, o, "kafka", 1000)
}

// TestInjectedFaults makes kfake fail chosen produce requests: a retriable error on one
// partition keeps exactly the metrics bound for it (kafka-go's per-message errors mapped to
// the batch), an authorization error keeps everything; once the faults go, every metric
// arrives exactly once.
func TestInjectedFaults(t *testing.T) {
	c := newCluster(t)
	k, _ := newKafka(t, c, func(k *Kafka) { k.RoutingTags = []string{"device"} })
	ro := runningOutput(t, k)
	ms := plcMetrics("fault", 700, time.Now().Truncate(time.Second))
	ctx := context.Background()

	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{1},
		Err: kerr.NotLeaderForPartition, Count: -1})
	ro.AddBatch(ms)
	err := ro.Flush(ctx, true)
	if err == nil {
		t.Fatal("Flush succeeded with partition 1 failing")
	}
	kept := ro.Buffer.Len()
	if kept == 0 || kept == len(ms) || ro.MetricsWritten.Get() != int64(len(ms)-kept) || ro.MetricsRejected.Get() != 0 {
		t.Fatalf("kept %d, written %d, rejected %d of %d", kept, ro.MetricsWritten.Get(), ro.MetricsRejected.Get(), len(ms))
	}
	got := consume(t, c.ListenAddrs(), []string{topic}, len(ms)-kept, false)
	for _, r := range got.records {
		if r.Partition == 1 {
			t.Fatal("a record on the failing partition")
		}
	}
	t.Logf("partition 1 failing: %d of %d metrics kept: %v", kept, len(ms), err)
	h.Remove()

	authz := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.TopicAuthorizationFailed, Count: -1})
	if err := ro.Flush(ctx, true); err == nil || ro.Buffer.Len() != kept || ro.MetricsRejected.Get() != 0 {
		t.Fatalf("authorization failure: %v, buffered %d, rejected %d", err, ro.Buffer.Len(), ro.MetricsRejected.Get())
	}
	authz.Remove()

	if err := ro.Flush(ctx, true); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
	consume(t, c.ListenAddrs(), []string{topic}, len(ms), false).check(t, ms, false, "")
}

// TestBrokersDownAndBack runs through the agent's RunningOutput while the whole cluster is shut
// down and started again on the same ports with the same data folder: the batches written
// meanwhile are kept, and every metric arrives exactly once.
func TestBrokersDownAndBack(t *testing.T) {
	dir := t.TempDir()
	c1, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topic), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	addrs := c1.ListenAddrs()
	var ports []int
	for _, a := range addrs {
		var p int
		fmt.Sscanf(a[strings.LastIndexByte(a, ':')+1:], "%d", &p)
		ports = append(ports, p)
	}
	k, _ := newKafka(t, c1, func(k *Kafka) { k.Timeout = 2e9 })
	ro := runningOutput(t, k)
	ms := plcMetrics("down", 6000, time.Now().Truncate(time.Second))
	ctx := context.Background()
	failed := 0
	var c2 *kfake.Cluster
	for i := 0; i < len(ms); i += 500 {
		switch i {
		case 2000:
			c1.Close()
		case 4000:
			if c2, err = kfake.NewCluster(kfake.NumBrokers(3), kfake.Ports(ports...), kfake.DataDir(dir)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c2.Close)
		}
		ro.AddBatch(ms[i : i+500])
		if ro.Flush(ctx, false) != nil {
			failed++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for ro.Buffer.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d metrics still buffered", ro.Buffer.Len())
		}
		if ro.Flush(ctx, true) != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if failed == 0 {
		t.Fatal("no flush failed while the brokers were down")
	}
	if ro.MetricsDropped.Get() != 0 || ro.MetricsRejected.Get() != 0 {
		t.Errorf("dropped %d, rejected %d", ro.MetricsDropped.Get(), ro.MetricsRejected.Get())
	}
	consume(t, c2.ListenAddrs(), []string{topic}, len(ms), false).check(t, ms, false, "")
	t.Logf("%d flushes failed while the brokers were down", failed)
}

// TestCancelled: a cancelled write keeps the batch and leaves its buffers to kafka-go.
func TestCancelled(t *testing.T) {
	c := newCluster(t)
	k, _ := newKafka(t, c, func(*Kafka) {})
	ms := plcMetrics("c", 10, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := k.Write(ctx, ms)
	if _, partial := models.AsPartialWrite(err); err == nil || partial {
		t.Fatalf("%v, want an error keeping the batch", err)
	}
	if k.p.buf != nil || k.p.msgs != nil {
		t.Error("buffers kafka-go may still read were kept for reuse")
	}
	if err := k.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	consume(t, c.ListenAddrs(), []string{topic}, len(ms), false).check(t, ms, false, "")
}

var _ = kgo.Record{}

// TestPlanAllocatesNothing: building the messages of a batch (topics, keys, values) allocates
// nothing per metric once the buffers have grown, in every format.
func TestPlanAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful with -race")
	}
	c := newCluster(t)
	for _, format := range []string{"influx", "json"} {
		for _, batched := range []bool{false, true} {
			k, _ := newKafka(t, c, func(k *Kafka) {
				k.DataFormat, k.UseBatchFormat, k.RoutingTags = format, batched, []string{"device", "line"}
				k.TopicSuffix, k.TopicTag, k.ExcludeTopicTag = TopicSuffix{Method: "tags", Keys: []string{"line"}, Separator: "-"}, "device", true
			})
			ms := plcMetrics("plan", 5000, time.Now())
			k.p.plan(ms)
			if len(k.p.msgs) == 0 || len(k.p.rejected) != 0 {
				t.Fatalf("%d messages, %d rejected", len(k.p.msgs), len(k.p.rejected))
			}
			// AllocsPerRun counts the whole process, and the in-process broker allocates on its
			// own goroutines meanwhile (a few per run under load): allow a handful per batch,
			// which one allocation per metric (5,000) would exceed by far.
			if n := testing.AllocsPerRun(20, func() { k.p.plan(ms) }); n > 20 {
				t.Errorf("%s batch=%v: %.1f allocations per batch of %d", format, batched, n, len(ms))
			}
		}
	}
}
