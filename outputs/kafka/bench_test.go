package kafka

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testpeer"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the CPU time of another process from /proc (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

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
	cpu0, srv0, t0 := cpuTime(), procCPU(brokerPID), time.Now()
	n := 0
	for b.Loop() {
		if err := out.Write(ctx, ms); err != nil {
			b.Fatal(err)
		}
		n += benchBatch
	}
	elapsed := time.Since(t0)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "metrics/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/metric")
	b.ReportMetric(float64(procCPU(brokerPID)-srv0)/float64(n), "broker-cpu-ns/metric")
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
			b.ReportAllocs()
			for b.Loop() {
				k.p.plan(ms)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/metric")
		})
	}
}
