package influxdb

import (
	"context"
	"fmt"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
)

const benchBatch = 5000

// BenchmarkWrite writes batches of 5,000 metrics (2 tags, 5 fields; no string field for
// VictoriaMetrics) to each real server on loopback, one batch per op, with new timestamps each
// time. It reports metrics/s, the CPU this process spent per metric (the output's cost: HTTP
// client, serializing, gzip) and the server's CPU per metric.
func BenchmarkWrite(b *testing.B) {
	for _, tc := range []struct {
		kind string
		v2   bool
	}{{tsdb.Influx167, false}, {tsdb.Influx183, false}, {tsdb.Influx183, true}, {tsdb.Victoria, false}, {tsdb.Victoria, true}} {
		for _, enc := range []string{"gzip", "identity"} {
			path := "v1"
			if tc.v2 {
				path = "v2"
			}
			b.Run(fmt.Sprintf("%s/%s/%s", tc.kind, path, enc), func(b *testing.B) {
				s := tsdb.Start(b, tc.kind, tsdb.Options{})
				var out models.Output
				if tc.v2 {
					if tc.kind != tsdb.Victoria {
						s.Query("", "CREATE DATABASE bench", "", "")
					}
					out, _ = connect(b, "influxdb_v2", func(o *InfluxDBv2) {
						o.URLs, o.Bucket, o.ContentEncoding, o.UintSupport, o.Log = []string{s.URL}, "bench", enc, false, nil
					})
				} else {
					out, _ = connect(b, "influxdb", func(o *InfluxDB) {
						o.URLs, o.Database, o.ContentEncoding = []string{s.URL}, "bench", enc
					})
				}
				benchWrite(b, out, s.PID(), tc.kind != tsdb.Victoria)
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
	cpu0, srv0, t0 := outputtest.CPU(), outputtest.ProcessCPU(serverPID), time.Now()
	for b.Loop() {
		write(round)
		round++
	}
	outputtest.Throughput(b, benchBatch*(round-1), time.Since(t0), outputtest.CPU()-cpu0, outputtest.ProcessCPU(serverPID)-srv0)
}

// BenchmarkWriteDiscard writes to a server that reads and drops the body: the output's own cost
// without a database's.
func BenchmarkWriteDiscard(b *testing.B) {
	srv := discardServer(b)
	for _, enc := range []string{"gzip", "identity"} {
		b.Run(enc, func(b *testing.B) {
			out, _ := connect(b, "influxdb", func(o *InfluxDB) {
				o.URLs, o.ContentEncoding, o.SkipDatabaseCreation = []string{srv.URL}, enc, true
			})
			benchWrite(b, out, 0, true)
		})
	}
}
