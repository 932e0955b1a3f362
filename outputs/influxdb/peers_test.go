package influxdb

import (
	"context"
	"fmt"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// TestReadBackV1 writes through /write to each real server, gzip'd and not, in several batches,
// and reads every point back.
func TestReadBackV1(t *testing.T) {
	for _, kind := range []string{tsdb.Influx167, tsdb.Influx183, tsdb.Victoria} {
		for _, enc := range []string{"gzip", "identity"} {
			t.Run(kind+"/"+enc, func(t *testing.T) {
				t.Parallel()
				s := tsdb.Start(t, kind, tsdb.Options{})
				o, _ := newV1(t, func(o *InfluxDB) {
					o.URLs, o.ContentEncoding, o.Database = []string{s.URL}, enc, "plant"
				})
				ms := plcMetrics("plc", 3000, recentBase(), kind != tsdb.Victoria)
				for i := 0; i < len(ms); i += 1000 {
					if err := o.Write(context.Background(), ms[i:i+1000]); err != nil {
						t.Fatalf("write %d..: %v", i, err)
					}
				}
				if kind == tsdb.Victoria {
					want := vmExpect(ms, map[string]string{"db": "plant"})
					compare(t, kind, s.WaitVM("plc_.*", len(want)), want)
					return
				}
				compare(t, kind, s.Points("plant", "plc"), influxExpect(ms))
			})
		}
	}
}

// TestReadBackV2 writes through /api/v2/write: InfluxDB 1.8.3 with auth on (token
// "user:password", bucket "db/rp") and VictoriaMetrics.
func TestReadBackV2(t *testing.T) {
	for _, kind := range []string{tsdb.Influx183, tsdb.Victoria} {
		for _, enc := range []string{"gzip", "identity"} {
			t.Run(kind+"/"+enc, func(t *testing.T) {
				t.Parallel()
				s := tsdb.Start(t, kind, tsdb.Options{Auth: kind != tsdb.Victoria})
				if kind != tsdb.Victoria {
					s.Query("", "CREATE DATABASE plant", "", "")
				}
				o, _ := newV2(t, func(o *InfluxDBv2) {
					o.URLs, o.ContentEncoding = []string{s.URL}, enc
					o.Token, o.Organization, o.Bucket = "admin:secret", "acme", "plant/autogen"
					o.UintSupport = false // 1.8 has no unsigned type
				})
				ms := plcMetrics("plc", 3000, recentBase(), kind != tsdb.Victoria)
				for i := 0; i < len(ms); i += 1000 {
					if err := o.Write(context.Background(), ms[i:i+1000]); err != nil {
						t.Fatalf("write %d..: %v", i, err)
					}
				}
				if kind == tsdb.Victoria {
					want := vmExpect(ms, nil)
					compare(t, kind, s.WaitVM("plc_.*", len(want)), want)
					return
				}
				compare(t, kind, s.Points("plant", "plc"), influxExpect(ms))
			})
		}
	}
}

// TestPrecision writes with precision 1s and 1ms to InfluxDB 1.6.7 (/write) and 1.8.3
// (/api/v2/write): the stored times are the metrics' times truncated to that unit.
func TestPrecision(t *testing.T) {
	for _, p := range []time.Duration{time.Second, time.Millisecond, time.Microsecond} {
		for _, kind := range []string{tsdb.Influx167, tsdb.Influx183} {
			t.Run(fmt.Sprintf("%s/%s", kind, p), func(t *testing.T) {
				t.Parallel()
				s := tsdb.Start(t, kind, tsdb.Options{})
				s.Query("", "CREATE DATABASE plant", "", "")
				base := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
				var ms []*models.Metric
				for i := range 10 { // a second apart: truncation keeps them distinct
					ms = append(ms, models.New("prec", nil, []models.Field{models.Int("v", int64(i))},
						base.Add(time.Duration(i)*time.Second+time.Duration(i)*777)))
				}
				var out models.Output
				if kind == tsdb.Influx183 {
					out, _ = newV2(t, func(o *InfluxDBv2) { o.URLs, o.Bucket, o.Precision = []string{s.URL}, "plant", config.Duration(p) })
				} else {
					out, _ = newV1(t, func(o *InfluxDB) { o.URLs, o.Database, o.Precision = []string{s.URL}, "plant", config.Duration(p) })
				}
				if err := out.Write(context.Background(), ms); err != nil {
					t.Fatal(err)
				}
				want := map[string]string{}
				for i, m := range ms {
					want[tsdb.PointKey("prec", nil, m.Time.Truncate(p).UnixNano())] = fmt.Sprintf("v=%d", i)
				}
				compare(t, "precision "+p.String(), s.Points("plant", "prec"), want)
			})
		}
	}
}
