package kafka

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

// startKfakeProcess builds testdata/kfakepeer and runs it: kfake in its own process, so that
// this process's CPU is the output's alone.
func startKfakeProcess(b *testing.B, brokers int) (*testpeer.Process, []string) {
	bin := filepath.Join(b.TempDir(), "kfakepeer")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/kfakepeer").CombinedOutput(); err != nil {
		b.Fatalf("build kfakepeer: %v\n%s", err, out)
	}
	p := testpeer.Start(b, testpeer.Options{}, bin, "-brokers", strconv.Itoa(brokers), "-topic", topic)
	return p, strings.Split(p.Ready[0], ",")
}

const benchBatch = 5000

// BenchmarkWrite writes batches of 5,000 metrics (2 tags, 5 fields) to kfake running as its own
// process on loopback (one broker, three partitions, acks=all), one batch per op: one metric per
// message and a batch per message, uncompressed and with each codec. It reports metrics/s, this
// process's CPU per metric (the output: serializing, kafka-go, compression) and the broker's.
func BenchmarkWrite(b *testing.B) {
	proc, addrs := startKfakeProcess(b, 1)
	for _, batched := range []bool{false, true} {
		for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
			b.Run(fmt.Sprintf("batch=%v/%s", batched, codec), func(b *testing.B) {
				k := outputs.Registry["kafka"]().(*Kafka)
				k.Brokers, k.Topic, k.Compression, k.UseBatchFormat = addrs, topic, codec, batched
				k.RoutingTags = []string{"device"}
				if err := k.Init(); err != nil {
					b.Fatal(err)
				}
				if err := k.Connect(context.Background()); err != nil {
					b.Fatal(err)
				}
				defer k.Close()
				benchWrite(b, k, proc.Cmd.Process.Pid)
			})
		}
	}
}

func benchWrite(b *testing.B, out models.Output, brokerPID int) {
	ms := plcMetrics("bench", benchBatch, time.Now())
	ctx := context.Background()
	if err := out.Write(ctx, ms); err != nil { // warm up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, srv0, t0 := outputtest.CPU(), outputtest.ProcessCPU(brokerPID), time.Now()
	n := 0
	for b.Loop() {
		if err := out.Write(ctx, ms); err != nil {
			b.Fatal(err)
		}
		n += benchBatch
	}
	outputtest.Throughput(b, n, time.Since(t0), outputtest.CPU()-cpu0, outputtest.ProcessCPU(brokerPID)-srv0)
}

// BenchmarkPlan is the output's own work on a batch: topics, keys and values of 5,000 metrics,
// without kafka-go or a broker.
func BenchmarkPlan(b *testing.B) {
	for _, batched := range []bool{false, true} {
		b.Run(fmt.Sprintf("batch=%v", batched), func(b *testing.B) {
			k := outputs.Registry["kafka"]().(*Kafka)
			k.UseBatchFormat, k.RoutingTags = batched, []string{"device"}
			if err := k.Init(); err != nil {
				b.Fatal(err)
			}
			k.p.st = producerStats{messages: &models.Stat{}, tooLarge: &models.Stat{}, badTopic: &models.Stat{}, writeErrors: &models.Stat{}}
			ms := plcMetrics("bench", benchBatch, time.Now())
			k.p.plan(ms) // grow the buffers: the loop measures the steady state
			b.ReportAllocs()
			for b.Loop() {
				k.p.plan(ms)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/metric")
		})
	}
}
