package influxdb

import (
	"context"
	"fmt"
	"testing"

	"github.com/tagpipe/tagpipe/models"
)

// TestReadBackV1 writes through /write to each real server, gzip'd and not, in several batches,
// and reads every point back.
func TestReadBackV1(t *testing.T) {
	for _, kind := range []string{influx167, influx183, victoria} {
		for _, enc := range []string{"gzip", "identity"} {
			t.Run(kind+"/"+enc, func(t *testing.T) {
				t.Parallel()
				s := startServer(t, kind, serverOptions{})
				o, _ := newV1(t, func(o *InfluxDB) {
					o.URLs, o.ContentEncoding, o.Database = []string{s.URL}, enc, "plant"
				})
				ms := plcMetrics("plc", 3000, recentBase(), kind != victoria)
				for i := 0; i < len(ms); i += 1000 {
					if err := o.Write(context.Background(), ms[i:i+1000]); err != nil {
						t.Fatalf("write %d..: %v", i, err)
					}
				}
				if kind == victoria {
					want := vmExpect(ms, map[string]string{"db": "plant"})
					compare(t, kind, s.waitVM("plc_.*", len(want)), want)
					return
				}
				compare(t, kind, s.points("plant", "plc"), influxExpect(ms))
			})
		}
	}
}

// TestReadBackV2 writes through /api/v2/write: InfluxDB 1.8.3 with auth on (token
// "user:password", bucket "db/rp") and VictoriaMetrics.
func TestReadBackV2(t *testing.T) {
	for _, kind := range []string{influx183, victoria} {
		for _, enc := range []string{"gzip", "identity"} {
			t.Run(kind+"/"+enc, func(t *testing.T) {
				t.Parallel()
				s := startServer(t, kind, serverOptions{auth: kind != victoria})
				if kind != victoria {
					s.query("", "CREATE DATABASE plant", "", "")
				}
				o, _ := newV2(t, func(o *InfluxDBv2) {
					o.URLs, o.ContentEncoding = []string{s.URL}, enc
					o.Token, o.Organization, o.Bucket = "admin:secret", "acme", "plant/autogen"
					o.UintSupport = false // 1.8 has no unsigned type
				})
				ms := plcMetrics("plc", 3000, recentBase(), kind != victoria)
				for i := 0; i < len(ms); i += 1000 {
					if err := o.Write(context.Background(), ms[i:i+1000]); err != nil {
						t.Fatalf("write %d..: %v", i, err)
					}
				}
				if kind == victoria {
					want := vmExpect(ms, nil)
					compare(t, kind, s.waitVM("plc_.*", len(want)), want)
					return
				}
				compare(t, kind, s.points("plant", "plc"), influxExpect(ms))
			})
		}
	}
}

var _ = fmt.Sprint
var _ models.Metric
