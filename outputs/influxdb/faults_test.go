package influxdb

import (
	"context"
	"errors"
	"fmt"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
)

func runningOutput(t testing.TB, o models.Output, batch int) *models.RunningOutput {
	return outputtest.RunningOutput(t, o, "influxdb", batch)
}

// mixBatch makes metrics of measurement "mix" that InfluxDB 1.6.7 partly refuses, once field
// "value" exists as an integer: i%5 == 1 send "value" as a float (field type conflict), i == 7
// has only a field named "time" (invalid field name), i == 13 and 18 carry an unsigned field (1.x
// cannot parse 123u). It returns the metrics and the indices InfluxDB must refuse.
func mixBatch(base time.Time) ([]*models.Metric, []int) {
	var ms []*models.Metric
	var bad []int
	for i := range 20 {
		fields := []models.Field{models.Int("value", int64(i))}
		switch {
		case i%5 == 1:
			fields = []models.Field{models.Float("value", float64(i)+0.5)}
			bad = append(bad, i)
		case i == 7:
			fields = []models.Field{models.Int("time", 1)} // with other fields, 1.6.7 drops just this one
			bad = append(bad, i)
		case i == 13 || i == 18:
			fields = append(fields, models.Uint("raw", 42))
			bad = append(bad, i)
		}
		ms = append(ms, models.New("mix", []models.Tag{{Key: "device", Value: fmt.Sprint("plc", i%3)}}, fields,
			base.Add(time.Duration(i)*time.Second)))
	}
	slices.Sort(bad)
	return ms, bad
}

// TestPartialWrite400 checks the 400 path against the real InfluxDB 1.6.7: exactly the lines it
// refuses are rejected (field type conflict, invalid field name, and lines that did not parse,
// which its first answer does not even mention), everything else is accepted and stored, the
// first refusal is logged once with the server's reason, and the rejects are counted.
func TestPartialWrite400(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{})
	o, logs := newV1(t, func(o *InfluxDB) {
		o.URLs, o.Database, o.UintSupport = []string{s.URL}, "plant", true
	})
	base := recentBase()
	s.WriteRaw("plant", fmt.Sprintf("mix,device=seed value=1i %d", base.Add(-time.Minute).UnixNano()))
	ms, bad := mixBatch(base)

	err := o.Write(context.Background(), ms)
	p, ok := models.AsPartialWrite(err)
	if !ok {
		t.Fatalf("Write: %v, want a partial write", err)
	}
	rej := slices.Sorted(slices.Values(p.Rejected))
	if !slices.Equal(rej, bad) {
		t.Errorf("rejected %v, want %v", rej, bad)
	}
	if len(p.Accepted)+len(p.Rejected) != len(ms) {
		t.Errorf("%d accepted + %d rejected, want every one of %d", len(p.Accepted), len(p.Rejected), len(ms))
	}
	var good []*models.Metric
	for i, m := range ms {
		if !slices.Contains(bad, i) {
			good = append(good, m)
		}
		if slices.Contains(bad, i) == slices.Contains(p.Accepted, i) {
			t.Errorf("metric %d: accepted %v, rejected %v", i, slices.Contains(p.Accepted, i), slices.Contains(bad, i))
		}
	}
	want := influxExpect(good)
	want[tsdb.PointKey("mix", map[string]string{"device": "seed"}, base.Add(-time.Minute).UnixNano())] = "value=1"
	compare(t, "InfluxDB after the partial write", s.Points("plant", "mix"), want)

	if n := logs.Count("refused lines", "count=7", "field type conflict", `mix,device=plc1 value=1.5`); n != 1 {
		t.Errorf("%d log lines naming the refusal, the first line and the reason, want 1:\n%s", n, logs)
	}
	if got := o.w.st.linesRejected.Get(); got != 7 {
		t.Errorf("lines_rejected = %d, want 7", got)
	}

	// The same through the agent's RunningOutput: rejects counted, nothing kept.
	ro := runningOutput(t, o, 100)
	ms2, bad2 := mixBatch(base.Add(time.Hour))
	ro.AddBatch(ms2)
	if err := ro.Flush(context.Background(), true); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if r, w, l := ro.MetricsRejected.Get(), ro.MetricsWritten.Get(), ro.Buffer.Len(); r != int64(len(bad2)) || w != int64(len(ms2)-len(bad2)) || l != 0 {
		t.Errorf("rejected %d, written %d, buffered %d; want %d, %d, 0", r, w, l, len(bad2), len(ms2)-len(bad2))
	}
	if got, want := s.Count("plant", "value", "mix"), int64(1+2*(len(ms)-len(bad))); got != want {
		t.Errorf("count(value) = %d, want %d", got, want)
	}
}

// TestPartialWriteBisect: InfluxDB 1.6.7 refuses points older than the retention policy with a
// 400 that names no line ("points beyond retention policy dropped=N"); the writer finds them by
// bisecting and drops only them.
func TestPartialWriteBisect(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{})
	s.Query("", "CREATE DATABASE plant", "", "")
	s.Query("", "CREATE RETENTION POLICY short ON plant DURATION 1h REPLICATION 1", "", "")
	o, logs := newV1(t, func(o *InfluxDB) {
		o.URLs, o.Database, o.RetentionPolicy = []string{s.URL}, "plant", "short"
	})
	now := time.Now().Truncate(time.Second)
	var ms []*models.Metric
	var old []int
	for i := range 64 {
		ts := now.Add(-time.Duration(i) * time.Second)
		if i == 5 || i == 40 || i == 41 {
			ts = now.Add(-48 * time.Hour).Add(time.Duration(i) * time.Second)
			old = append(old, i)
		}
		ms = append(ms, models.New("ret", nil, []models.Field{models.Int("v", int64(i))}, ts))
	}
	err := o.Write(context.Background(), ms)
	p, ok := models.AsPartialWrite(err)
	if !ok {
		t.Fatalf("Write: %v, want a partial write", err)
	}
	if rej := slices.Sorted(slices.Values(p.Rejected)); !slices.Equal(rej, old) {
		t.Errorf("rejected %v, want %v", rej, old)
	}
	if len(p.Accepted) != len(ms)-len(old) {
		t.Errorf("%d accepted, want %d", len(p.Accepted), len(ms)-len(old))
	}
	a := s.Query("plant", `SELECT count(v) FROM "short"."ret"`, "", "")
	if got := fmt.Sprint(a.Results[0].Series[0].Values[0][1]); got != fmt.Sprint(len(ms)-len(old)) {
		t.Errorf("count(v) = %s, want %d", got, len(ms)-len(old))
	}
	if logs.Count("refused lines", "count=3", "beyond retention policy") != 1 {
		t.Errorf("no log line with the reason:\n%s", logs)
	}
	t.Logf("%d requests for %d lines with %d refused", o.w.requests, len(ms), len(old))
}

// TestTooLarge413 uses InfluxDB's own max-body-size: a body above it is answered 413, the writer
// keeps the batch and halves the bodies at the next flush (one 413 a flush at most) until they
// pass, remembers the size, and a single line above the limit is rejected — the URL accepted a
// smaller body, so the limit lies between the two — instead of being retried forever. (InfluxDB
// 1.6.7 checks the size of the body as sent: identity encoding makes the limit easy to pass.)
func TestTooLarge413(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{MaxBody: 20_000})
	o, logs := newV1(t, func(o *InfluxDB) {
		o.URLs, o.Database, o.ContentEncoding = []string{s.URL}, "plant", "identity"
	})
	ro := runningOutput(t, o, 2000)
	ms := plcMetrics("big", 2000, recentBase(), true) // ~130 bytes a line: ~260 kB
	ro.AddBatch(ms)
	flushes := 0
	for ; ro.Buffer.Len() > 0 && flushes < 20; flushes++ {
		ro.Flush(context.Background(), true)
		if got := o.w.st.tooLarge.Get(); got > int64(flushes+1) {
			t.Fatalf("%d 413s in %d flushes: more than one a flush", got, flushes+1)
		}
	}
	compare(t, "after 413 splits", s.Points("plant", "big"), influxExpect(ms))
	if o.w.st.tooLarge.Get() == 0 || o.w.maxBody == 0 || o.w.maxBody > 20_000 {
		t.Errorf("413s %d, learned max body %d", o.w.st.tooLarge.Get(), o.w.maxBody)
	}
	if r := ro.MetricsRejected.Get(); r != 0 {
		t.Errorf("%d metrics rejected", r)
	}
	requests, splits := o.w.st.requests.Get(), o.w.st.tooLarge.Get()
	// Learned: the next batch is split before sending, with no 413.
	ms2 := plcMetrics("big", 2000, recentBase().Add(time.Minute), true)
	if err := o.Write(context.Background(), ms2); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	if again := o.w.st.tooLarge.Get(); again != splits {
		t.Errorf("%d more 413s after learning the limit", again-splits)
	}
	t.Logf("first batch: %d flushes, %d requests, %d answered 413; second: %d requests", flushes, requests, splits, o.w.st.requests.Get()-requests)

	huge := models.New("big", nil, []models.Field{models.String("blob", strings.Repeat("x", 30_000))}, recentBase())
	small := models.New("big", nil, []models.Field{models.Int("small", 1)}, recentBase())
	err := o.Write(context.Background(), []*models.Metric{small, huge})
	p, ok := models.AsPartialWrite(err)
	if !ok || !slices.Equal(p.Rejected, []int{1}) || !slices.Equal(p.Accepted, []int{0}) {
		t.Fatalf("Write with a line above the limit: %v", err)
	}
	if logs.Count("refused lines", "413") != 1 {
		t.Errorf("the oversized line is not logged:\n%s", logs)
	}
	if got := o.w.st.droppedTooLarge.Get(); got != 1 {
		t.Errorf("dropped_too_large = %d, want 1", got)
	}
}

// TestRestartExactlyOnce drives each output through the agent's RunningOutput while its
// database is stopped (or killed: InfluxDB syncs its WAL before it answers) in the middle of
// the run and started again: every metric arrives, and exactly once (InfluxDB's count equals
// what was sent; every point is compared).
func TestRestartExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		kind string
		v2   bool
		kill bool
	}{
		{tsdb.Influx167, false, true},
		{tsdb.Influx183, true, false},
		{tsdb.Victoria, false, false},
		// Not killed: VictoriaMetrics keeps the newest samples in memory for a second or so, and
		// a SIGKILL loses what it had acknowledged (seen here: the first third went missing).
		{tsdb.Victoria, true, false},
	} {
		name := fmt.Sprintf("%s/v2=%v/kill=%v", tc.kind, tc.v2, tc.kill)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := tsdb.Start(t, tc.kind, tsdb.Options{})
			var out models.Output
			if tc.v2 {
				if tc.kind != tsdb.Victoria {
					s.Query("", "CREATE DATABASE plant", "", "")
				}
				o, _ := newV2(t, func(o *InfluxDBv2) {
					o.URLs, o.Bucket, o.UintSupport, o.Timeout = []string{s.URL}, "plant", false, 2e9
				})
				out = o
			} else {
				o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.Database, o.Timeout = []string{s.URL}, "plant", 2e9 })
				out = o
			}
			ro := runningOutput(t, out, 500)
			const total = 15_000
			ms := plcMetrics("run", total, recentBase(), tc.kind != tsdb.Victoria)
			ctx := context.Background()
			failed := 0
			stopped := make(chan struct{})
			for i := 0; i < total; i += 250 {
				switch i {
				case total / 3:
					// Stopped while the flushes go on: a request may be cut in the middle.
					go func() {
						defer close(stopped)
						if tc.kill {
							s.Kill()
						} else {
							s.Stop()
						}
					}()
				case total/3 + 250:
					// The next flushes must find it down: a stop can outlast a few fast flushes.
					<-stopped
				case total * 2 / 3:
					s.Start()
				}
				ro.AddBatch(ms[i : i+250])
				if ro.Flush(ctx, false) != nil {
					failed++
				}
			}
			deadline := time.Now().Add(60 * time.Second)
			for ro.Buffer.Len() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d metrics still buffered after 60s", ro.Buffer.Len())
				}
				if ro.Flush(ctx, true) != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if failed == 0 {
				t.Fatal("no flush failed: the database was not down")
			}
			if d, r := ro.MetricsDropped.Get(), ro.MetricsRejected.Get(); d != 0 || r != 0 {
				t.Errorf("dropped %d, rejected %d", d, r)
			}
			if tc.kind == tsdb.Victoria {
				want := vmExpect(ms, map[string]string{"db": "plant"})
				if tc.v2 {
					want = vmExpect(ms, nil)
				}
				compare(t, name, s.WaitVM("run_.*", len(want)), want)
			} else {
				if n := s.Count("plant", "temp", "run"); n != total {
					t.Errorf("count(temp) = %d, want %d", n, total)
				}
				compare(t, name, s.Points("plant", "run"), influxExpect(ms))
			}
			t.Logf("%d flushes failed while the database was down; %d metrics written (resent included)", failed, ro.MetricsWritten.Get())
		})
	}
}

// TestAuthV1 runs InfluxDB 1.6.7 with authentication: a user it does not know gets 401, a user
// without the write privilege 403; each keeps the batch and is logged once when it starts, not
// once per write; once the user may write, the kept batch is written and the recovery logged.
func TestAuthV1(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{Auth: true})
	s.Query("", "CREATE DATABASE plant", "", "")
	o, logs := newV1(t, func(o *InfluxDB) {
		o.URLs, o.Database, o.Username, o.Password = []string{s.URL}, "plant", "writer", "pw"
	})
	ro := runningOutput(t, o, 100)
	ms := plcMetrics("auth", 50, recentBase(), true)
	ro.AddBatch(ms)
	for range 4 {
		if err := ro.Flush(context.Background(), true); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("Flush with an unknown user: %v, want a 401", err)
		}
		time.Sleep(120 * time.Millisecond) // past the backoff: each flush asks the server
	}
	if n := logs.Count("refused the credentials"); n != 1 {
		t.Errorf("%d log lines about the credentials after 4 refused writes, want 1", n)
	}
	if ro.Buffer.Len() != len(ms) || o.w.st.authErrors.Get() < 4 {
		t.Fatalf("buffered %d, auth errors %d", ro.Buffer.Len(), o.w.st.authErrors.Get())
	}
	// The user exists but may not write: 403, logged once more (a change), still kept.
	s.Query("", "CREATE USER writer WITH PASSWORD 'pw'", "", "")
	for range 3 {
		time.Sleep(120 * time.Millisecond)
		if err := ro.Flush(context.Background(), true); err == nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("Flush without the write privilege: %v, want a 403", err)
		}
	}
	if n, m := logs.Count("refused the credentials", "401"), logs.Count("refused the credentials", "403"); n != 1 || m != 1 {
		t.Errorf("logged the 401 %d times and the 403 %d times, want once each", n, m)
	}
	s.Query("", "GRANT WRITE ON plant TO writer", "", "")
	time.Sleep(120 * time.Millisecond)
	if err := ro.Flush(context.Background(), true); err != nil {
		t.Fatalf("Flush once the user may write: %v", err)
	}
	compare(t, "after auth", s.Points("plant", "auth"), influxExpect(ms))
	if logs.Count("accepts the credentials again") != 1 {
		t.Errorf("recovery not logged:\n%s", logs)
	}
}

// TestAuthV2 writes to InfluxDB 1.8.3's /api/v2/write with a wrong token (401, kept) and a
// right one.
func TestAuthV2(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx183, tsdb.Options{Auth: true})
	s.Query("", "CREATE DATABASE plant", "", "")
	ms := plcMetrics("auth", 10, recentBase(), true)
	bad, logs := newV2(t, func(o *InfluxDBv2) {
		o.URLs, o.Bucket, o.Token, o.UintSupport = []string{s.URL}, "plant", "admin:wrong", false
	})
	if err := bad.Write(context.Background(), ms); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	if strings.Contains(logs.String(), "wrong") {
		t.Errorf("the token is in the log:\n%s", logs)
	}
	good, _ := newV2(t, func(o *InfluxDBv2) {
		o.URLs, o.Bucket, o.Token, o.UintSupport = []string{s.URL}, "plant", "admin:secret", false
	})
	if err := good.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	compare(t, "v2 with a token", s.Points("plant", "auth"), influxExpect(ms))
}

// TestDatabaseCreation: Connect creates the database; skip_database_creation does not, and a
// write to a missing database keeps the batch; a database dropped while running is created
// again by the next write.
func TestDatabaseCreation(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{})
	hasDB := func(name string) bool {
		for _, r := range s.Query("", "SHOW DATABASES", "", "").Results {
			for _, ser := range r.Series {
				for _, v := range ser.Values {
					if v[0] == name {
						return true
					}
				}
			}
		}
		return false
	}
	ms := plcMetrics("db", 10, recentBase(), true)

	skip, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.Database, o.SkipDatabaseCreation = []string{s.URL}, "skipped", true })
	if hasDB("skipped") {
		t.Fatal("skip_database_creation created the database")
	}
	if err := skip.Write(context.Background(), ms); err == nil || !strings.Contains(err.Error(), "database not found") {
		t.Fatalf("write to a missing database: %v", err)
	}
	if _, partial := models.AsPartialWrite(skip.Write(context.Background(), ms)); partial {
		t.Fatal("a missing database rejected metrics")
	}

	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.Database = []string{s.URL}, `we"ird db` })
	if !hasDB(`we"ird db`) {
		t.Fatal("Connect did not create the database")
	}
	s.Query("", `DROP DATABASE "we\"ird db"`, "", "")
	if err := o.Write(context.Background(), ms); err != nil {
		t.Fatalf("write after the database was dropped: %v", err)
	}
	compare(t, "recreated database", s.Points(`we"ird db`, "db"), influxExpect(ms))
}

// TestTLS writes to InfluxDB 1.6.7 serving https with a certificate from a test CA.
func TestTLS(t *testing.T) {
	f := tlstest.New(t)
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{TLS: f})
	ms := plcMetrics("tls", 20, recentBase(), true)

	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.Database, o.CA = []string{s.URL}, "plant", f.CA })
	if err := o.Write(context.Background(), ms[:10]); err != nil {
		t.Fatal(err)
	}
	named, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.Database, o.CA, o.ServerName = []string{s.URL}, "plant", f.CA, tlstest.ServerName
	})
	if err := named.Write(context.Background(), ms[10:]); err != nil {
		t.Fatalf("tls_server_name: %v", err)
	}
	compare(t, "over TLS", s.Points("plant", "tls"), influxExpect(ms))

	for what, mod := range map[string]func(*InfluxDB){
		"untrusted CA": func(o *InfluxDB) { o.CA = f.OtherCA },
		"wrong name":   func(o *InfluxDB) { o.CA, o.ServerName = f.CA, "other.test" },
	} {
		o, _ := newV1(t, func(o *InfluxDB) {
			o.URLs, o.Database, o.SkipDatabaseCreation = []string{s.URL}, "plant", true
			mod(o)
		})
		err := o.Write(context.Background(), ms)
		var p *models.PartialWriteError
		if err == nil || errors.As(err, &p) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a certificate error that keeps the batch", what, err)
		}
	}
}
