package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

const benchBatch = 5000

// BenchmarkWrite writes batches of 5,000 metrics (2 tags, 4 fields) at QoS 1 to Debian's
// mosquitto on loopback (its own process, no subscriber), one batch per op: batched plain
// (line protocol, a message per topic of up to 256 KiB), a message per metric, and Sparkplug B
// (a DDATA per device). It reports metrics/s, this process's CPU per metric (the output, paho)
// and the broker's.
func BenchmarkWrite(b *testing.B) {
	broker := mqtttest.StartBroker(b, mqtttest.Options{})
	for _, tc := range []struct {
		name string
		mod  func(*MQTT)
	}{
		{"plain-batch", func(o *MQTT) { o.Layout = "batch"; o.Topic = `bench/{{.Tag "line"}}/{{.Name}}` }},
		{"plain-non-batch", func(o *MQTT) { o.Topic = `bench/{{.Tag "line"}}/{{.Name}}` }},
		{"sparkplug", sparkplugNode("bench", "edge", nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o, _ := newMQTT(b, broker, tc.mod)
			ms := lineMetrics(benchBatch, time.Now().Add(time.Second)) // after the birth: live values
			ctx := context.Background()
			if err := o.Write(ctx, ms); err != nil { // warm up
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, srv0, t0 := outputtest.CPU(), outputtest.ProcessCPU(broker.PID()), time.Now()
			n := 0
			for b.Loop() {
				if err := o.Write(ctx, ms); err != nil {
					b.Fatal(err)
				}
				n += benchBatch
			}
			outputtest.Throughput(b, n, time.Since(t0), outputtest.CPU()-cpu0, outputtest.ProcessCPU(broker.PID())-srv0)
		})
	}
}

// BenchmarkPlan is the output's own work on a batch of 5,000 metrics, without paho or a
// broker: topics and line protocol (plain, batched), and Sparkplug payloads.
func BenchmarkPlan(b *testing.B) {
	ms := lineMetrics(benchBatch, time.Now().Add(time.Hour))
	stats := models.RegisterStats("bench", nil)
	defer stats.Unregister()
	b.Run("plain-batch", func(b *testing.B) {
		o := outputs.Registry["mqtt"]().(*MQTT)
		o.Layout, o.Topic = "batch", `bench/{{.Tag "line"}}/{{.Name}}`
		if err := o.Init(); err != nil {
			b.Fatal(err)
		}
		p := o.w.(*plain)
		p.bind(stats)
		p.plan(ms) // grow the buffers: the loop measures the steady state
		b.ReportAllocs()
		for b.Loop() {
			p.verdict.reset()
			p.plan(ms)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/metric")
	})
	b.Run("sparkplug", func(b *testing.B) {
		o := outputs.Registry["mqtt"]().(*MQTT)
		sparkplugNode("bench", "edge", nil)(o)
		if err := o.Init(); err != nil {
			b.Fatal(err)
		}
		n := o.w.(*node)
		n.bind(stats)
		n.link.log = discardLog
		idx := make([]int32, len(ms))
		for i := range idx {
			idx[i] = int32(i)
		}
		now := time.Now()
		n.resetMsgs()
		n.plan(ms, idx, false, now)
		b.ReportAllocs()
		for b.Loop() {
			n.resetMsgs()
			n.plan(ms, idx, false, now)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/metric")
	})
}
