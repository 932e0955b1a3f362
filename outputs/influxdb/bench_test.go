package influxdb

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// cpuTime returns the CPU time (user + system) this process used so far.
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
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 on
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

const benchBatch = 5000

// BenchmarkWrite writes batches of 5,000 metrics (2 tags, 5 fields; no string field for
// VictoriaMetrics) to each real server on loopback, one batch per op, with new timestamps each
// time. It reports metrics/s, the CPU this process spent per metric (the output's cost: HTTP
// client, serializing, gzip) and the server's CPU per metric.
func BenchmarkWrite(b *testing.B) {
	for _, tc := range []struct {
		kind string
		v2   bool
	}{{influx167, false}, {influx183, false}, {influx183, true}, {victoria, false}, {victoria, true}} {
		for _, enc := range []string{"gzip", "identity"} {
			path := "v1"
			if tc.v2 {
				path = "v2"
			}
			b.Run(fmt.Sprintf("%s/%s/%s", tc.kind, path, enc), func(b *testing.B) {
				s := startServer(b, tc.kind, serverOptions{})
				var out models.Output
				if tc.v2 {
					if tc.kind != victoria {
						s.query("", "CREATE DATABASE bench", "", "")
					}
					out, _ = connect(b, "influxdb_v2", func(o *InfluxDBv2) {
						o.URLs, o.Bucket, o.ContentEncoding, o.UintSupport, o.Log = []string{s.URL}, "bench", enc, false, nil
					})
				} else {
					out, _ = connect(b, "influxdb", func(o *InfluxDB) {
						o.URLs, o.Database, o.ContentEncoding = []string{s.URL}, "bench", enc
					})
				}
				benchWrite(b, out, s.proc.Cmd.Process.Pid, tc.kind != victoria)
			})
		}
	}
}

func benchWrite(b *testing.B, out models.Output, serverPID int, withString bool) {
	ms := plcMetrics("bench", benchBatch, time.Now().Add(-24*time.Hour), withString)
	ctx := context.Background()
	base := time.Now().Add(-12 * time.Hour)
	write := func(round int) {
		for i, m := range ms {
			m.Time = base.Add(time.Duration(round*benchBatch+i) * time.Millisecond)
		}
		if err := out.Write(ctx, ms); err != nil {
			b.Fatal(err)
		}
	}
	write(0) // warm up: connections, shards
	round := 1
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, srv0, t0 := cpuTime(), procCPU(serverPID), time.Now()
	for b.Loop() {
		write(round)
		round++
	}
	elapsed := time.Since(t0)
	n := float64(benchBatch * (round - 1))
	b.ReportMetric(n/elapsed.Seconds(), "metrics/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/n, "cpu-ns/metric")
	b.ReportMetric(float64(procCPU(serverPID)-srv0)/n, "server-cpu-ns/metric")
}

// BenchmarkWriteDiscard writes to a server that reads and drops the body: the output's own cost
// without a database's.
func BenchmarkWriteDiscard(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	for _, enc := range []string{"gzip", "identity"} {
		b.Run(enc, func(b *testing.B) {
			out, _ := connect(b, "influxdb", func(o *InfluxDB) {
				o.URLs, o.ContentEncoding, o.SkipDatabaseCreation = []string{srv.URL}, enc, true
			})
			benchWrite(b, out, os.Getpid(), true)
		})
	}
}
