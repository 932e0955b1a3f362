package influxdb

// Answers a real database will not give on demand (429, 503 with Retry-After, 500 on one URL
// of two, a slow answer) come from a small HTTP server in the test, on loopback. What the real
// databases do is tested in peers_test.go and faults_test.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
)

type fakeRequest struct {
	header http.Header
	query  string
	path   string
	lines  []string
}

// fake plays an InfluxDB whose answers the test chooses.
type fake struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []fakeRequest
	answer func(n int, r fakeRequest) (status int, header map[string]string, body string)
}

func newFake(t *testing.T, answer func(n int, r fakeRequest) (int, map[string]string, string)) *fake {
	f := &fake{answer: answer}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	return f
}

func (f *fake) start(t *testing.T, tlsCfg *tls.Config) *fake {
	if tlsCfg != nil {
		f.srv.TLS = tlsCfg
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	b, err := outputtest.RequestBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := fakeRequest{header: r.Header.Clone(), query: r.URL.RawQuery, path: r.URL.Path,
		lines: strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")}
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	status, header, msg := f.answer(n, req)
	for k, v := range header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	io.WriteString(w, msg)
}

func (f *fake) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func ok204(int, fakeRequest) (int, map[string]string, string) { return http.StatusNoContent, nil, "" }

// keptWhole fails unless err keeps the whole batch (an error that is not a partial write).
func keptWhole(t *testing.T, what string, err error) {
	t.Helper()
	if _, partial := models.AsPartialWrite(err); err == nil || partial {
		t.Fatalf("%s: %v, want an error that keeps the batch", what, err)
	}
}

func TestRetryAfter(t *testing.T) {
	var date string // set when the 503 is answered
	f := newFake(t, func(n int, _ fakeRequest) (int, map[string]string, string) {
		switch n {
		case 0:
			return http.StatusTooManyRequests, map[string]string{"Retry-After": "1"}, `{"error":"slow down"}`
		case 2:
			date = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) // whole seconds: ≥1s ahead
			return http.StatusServiceUnavailable, map[string]string{"Retry-After": date}, "maintenance"
		case 4:
			return http.StatusTooManyRequests, nil, "no header: backoff"
		}
		return http.StatusNoContent, nil, ""
	}).start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	ms := plcMetrics("ra", 10, recentBase(), true)
	ctx := context.Background()

	start := time.Now()
	err := o.Write(ctx, ms)
	keptWhole(t, "429", err)
	if !strings.Contains(err.Error(), "Retry-After 1s") || !strings.Contains(err.Error(), "slow down") {
		t.Errorf("429 error %q names neither the wait nor the server's message", err)
	}
	// Writes are kept, and nothing is sent, until Retry-After has passed (after the 429, which
	// came after start); then the next write goes out.
	for refused := 0; ; refused++ {
		err := o.Write(ctx, ms)
		if err == nil {
			if waited := time.Since(start); waited < time.Second || refused == 0 {
				t.Fatalf("written %v after a 429 with Retry-After 1s, after %d writes were kept", waited, refused)
			}
			break
		}
		keptWhole(t, "write before Retry-After passed", err)
		if n := len(f.requests()); n != 1 {
			t.Fatalf("%d requests before Retry-After passed, want 1", n)
		}
		if time.Since(start) > 15*time.Second {
			t.Fatal("no write 15s after a 429 with Retry-After 1s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 503 with an HTTP date.
	start = time.Now()
	keptWhole(t, "503", o.Write(ctx, ms))
	keptWhole(t, "write before the Retry-After date", o.Write(ctx, ms))
	if n := len(f.requests()); n != 3 {
		t.Fatalf("%d requests, want 3: the write before the date must not be sent", n)
	}
	for o.Write(ctx, ms) != nil {
		if time.Since(start) > 15*time.Second {
			t.Fatal("no write 15s after a Retry-After date 2s ahead")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("wrote %v after a 503 with Retry-After %s", waited, date)
	}

	// 429 without Retry-After: the backoff decides.
	keptWhole(t, "429 without Retry-After", o.Write(ctx, ms))
	time.Sleep(150 * time.Millisecond)
	if err := o.Write(ctx, ms); err != nil {
		t.Fatalf("write after the backoff: %v", err)
	}
	if got := o.w.st.retryAfter.Get(); got != 3 {
		t.Errorf("retry_after = %d, want 3", got)
	}
	reqs := f.requests()
	if last := reqs[len(reqs)-1]; len(last.lines) != len(ms) {
		t.Errorf("the last request had %d lines, want %d", len(last.lines), len(ms))
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f := func(h string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := parseRetryAfter(h, now)
		if got != want || ok != wantOK {
			t.Errorf("%q: %v %v, want %v %v", h, got, ok, want, wantOK)
		}
	}
	f("", 0, false)
	f("7", 7*time.Second, true)
	f(" 0 ", 0, true)
	f("-3", 0, false)
	f("soon", 0, false)
	f("Wed, 25 Nov 2026 12:00:30 GMT", 30*time.Second, true)
	f("Wed, 25 Nov 2026 11:00:00 GMT", 0, true) // in the past: at once
	f("99999999999999999", time.Duration(1<<63-1)/time.Second*time.Second, true)
}

// TestFailover: a URL answering 500 and a dead one are skipped; the batch goes to the next URL
// that works, which is then used first. When every URL fails, the batch is kept and the URLs
// back off.
func TestFailover(t *testing.T) {
	bad := newFake(t, func(int, fakeRequest) (int, map[string]string, string) {
		return http.StatusInternalServerError, nil, `{"error":"engine: disk full"}`
	}).start(t, nil)
	good := newFake(t, ok204).start(t, nil)
	dead := "http://" + tsdb.FreeAddr(t) // nothing listens
	o, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.SkipDatabaseCreation = []string{dead, bad.srv.URL, good.srv.URL}, true
	})
	ms := plcMetrics("fo", 10, recentBase(), true)
	if err := o.Write(context.Background(), ms); err != nil {
		t.Fatalf("write with one good URL of three: %v", err)
	}
	if err := o.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if b, g := len(bad.requests()), len(good.requests()); b != 1 || g != 2 {
		t.Errorf("requests: bad %d, good %d; want 1 and 2 (the good URL is used first once it worked)", b, g)
	}
	if o.w.st.serverErrors.Get() != 1 || o.w.st.networkErrors.Get() != 1 {
		t.Errorf("server errors %d, network errors %d; want 1 and 1", o.w.st.serverErrors.Get(), o.w.st.networkErrors.Get())
	}

	// Every URL fails: kept; an immediate retry asks nobody (backoff); a later one asks again.
	all, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{dead, bad.srv.URL}, true })
	err := all.Write(context.Background(), ms)
	keptWhole(t, "all URLs failing", err)
	if !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say what each URL answered", err)
	}
	n := len(bad.requests())
	keptWhole(t, "retry at once", all.Write(context.Background(), ms))
	if len(bad.requests()) != n {
		t.Error("a URL in backoff was asked again at once")
	}
	time.Sleep(150 * time.Millisecond)
	keptWhole(t, "retry after the backoff", all.Write(context.Background(), ms))
	if len(bad.requests()) != n+1 {
		t.Error("a URL was not asked again after its backoff")
	}
}

// TestTimeout: a server slower than timeout costs the batch nothing; it is written later. The
// server holds its first answer until the write has returned: only the output's own timeout can
// end that write.
func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	f := newFake(t, func(n int, _ fakeRequest) (int, map[string]string, string) {
		if n == 0 {
			<-release
		}
		return http.StatusNoContent, nil, ""
	}).start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.SkipDatabaseCreation, o.Timeout = []string{f.srv.URL}, true, 1e8
	})
	ms := plcMetrics("to", 10, recentBase(), true)
	err := o.Write(context.Background(), ms)
	close(release)
	keptWhole(t, "timeout", err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v, want a deadline error (timeout 100ms)", err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := o.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
}

// TestRequestShape checks what goes on the wire: paths, query parameters, headers, gzip, and
// unsigned fields written as clamped integers for InfluxDB 1.x.
func TestRequestShape(t *testing.T) {
	f := newFake(t, ok204).start(t, nil)
	m := models.New("shape", []models.Tag{{Key: "site", Value: "north"}, {Key: "unit", Value: "1"}},
		[]models.Field{models.Uint("big", 1<<63+5), models.Uint("small", 7), models.Float("f", 1.5)},
		time.Unix(1795600000, 123456789))
	ctx := context.Background()

	v1, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL + "/proxy"}, true
		o.Database, o.RetentionPolicy, o.WriteConsistency, o.Precision = "plant db", "one year", "quorum", 1e6
		o.Username, o.Password = "writer", "pw"
		o.HTTPHeaders = map[string]string{"X-Plant": "north"}
	})
	if err := v1.Write(ctx, []*models.Metric{m}); err != nil {
		t.Fatal(err)
	}
	v1id, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.SkipDatabaseCreation, o.ContentEncoding, o.UintSupport = []string{f.srv.URL}, true, "identity", true
	})
	if err := v1id.Write(ctx, []*models.Metric{m}); err != nil {
		t.Fatal(err)
	}
	v2, _ := newV2(t, func(o *InfluxDBv2) {
		o.URLs, o.Token, o.Organization, o.Bucket, o.Precision = []string{f.srv.URL}, "s3cr3t", "acme", "plant", 1e9
	})
	if err := v2.Write(ctx, []*models.Metric{m}); err != nil {
		t.Fatal(err)
	}

	reqs := f.requests()
	for i, want := range []struct {
		path, query, line, enc, auth string
	}{
		{"/proxy/write", "consistency=quorum&db=plant+db&precision=ms&rp=one+year",
			"shape,site=north,unit=1 big=9223372036854775807i,small=7i,f=1.5 1795600000123", "gzip",
			"Basic d3JpdGVyOnB3"}, // writer:pw
		{"/write", "db=tagpipe&precision=ns", "shape,site=north,unit=1 big=9223372036854775813u,small=7u,f=1.5 1795600000123456789", "", ""},
		{"/api/v2/write", "bucket=plant&org=acme&precision=s", "shape,site=north,unit=1 big=9223372036854775813u,small=7u,f=1.5 1795600000", "gzip", "Token s3cr3t"},
	} {
		r := reqs[i]
		if r.path != want.path || r.query != want.query || len(r.lines) != 1 || r.lines[0] != want.line ||
			r.header.Get("Content-Encoding") != want.enc || r.header.Get("Authorization") != want.auth ||
			r.header.Get("User-Agent") != "tagpipe" {
			t.Errorf("request %d: %s?%s %q enc %q auth %q ua %q\nwant %s?%s %q enc %q auth %q", i, r.path, r.query, r.lines,
				r.header.Get("Content-Encoding"), r.header.Get("Authorization"), r.header.Get("User-Agent"),
				want.path, want.query, want.line, want.enc, want.auth)
		}
	}
	if reqs[0].header.Get("X-Plant") != "north" {
		t.Errorf("http_headers not sent: %v", reqs[0].header)
	}
}

// TestClientCertificate: the TLS client certificate reaches a server that demands one (InfluxDB
// 1.x cannot check client certificates, so this server is Go's).
func TestClientCertificate(t *testing.T) {
	files := tlstest.New(t)
	f := newFake(t, ok204).start(t, files.ServerConfig(t, true))
	ms := plcMetrics("cc", 5, recentBase(), true)
	with, _ := newV1(t, func(o *InfluxDB) {
		o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true
		o.CA, o.Cert, o.Key = files.CA, files.ClientCert, files.ClientKey
	})
	if err := with.Write(context.Background(), ms); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	without, _ := newV2(t, func(o *InfluxDBv2) {
		o.URLs, o.Bucket, o.CA = []string{f.srv.URL}, "b", files.CA
	})
	keptWhole(t, "without a client certificate", without.Write(context.Background(), ms))
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests reached the server, want 1", n)
	}
}

// TestCancelled: a cancelled context ends the write at once and keeps the batch.
func TestCancelled(t *testing.T) {
	f := newFake(t, ok204).start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := o.Write(ctx, plcMetrics("c", 5, recentBase(), true))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
	keptWhole(t, "cancelled", err)
}

// TestUnserializable: a metric with no field that line protocol can carry is rejected, the
// rest written.
func TestUnserializable(t *testing.T) {
	f := newFake(t, ok204).start(t, nil)
	o, logs := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	ms := plcMetrics("u", 3, recentBase(), true)
	ms[1] = models.New("u", nil, nil, recentBase())
	p, ok := models.AsPartialWrite(o.Write(context.Background(), ms))
	if !ok || !slices.Equal(p.Rejected, []int{1}) || !slices.Equal(p.Accepted, []int{0, 2}) {
		t.Fatalf("got %+v", p)
	}
	if logs.Count("refused lines", "no field") != 1 {
		t.Errorf("not logged:\n%s", logs)
	}
	if got := f.requests()[0].lines; len(got) != 2 || !bytes.HasPrefix([]byte(got[0]), []byte("u,")) {
		t.Errorf("sent %q", got)
	}
}

// TestNoAllocationPerMetric: a Write allocates the same for 100 metrics as for 5,000 (per
// request: the HTTP client's request and response), nothing per metric or field.
func TestNoAllocationPerMetric(t *testing.T) {
	srv := discardServer(t)
	for _, enc := range []string{"gzip", "identity"} {
		o, _ := newV2(t, func(o *InfluxDBv2) {
			o.URLs, o.Bucket, o.ContentEncoding, o.UintSupport = []string{srv.URL}, "b", enc, false // uints converted: the scratch path
			o.BucketTag = "line"                                                                    // three groups: the grouping path
		})
		ms := plcMetrics("alloc", 5000, recentBase(), true)
		allocs := func(n int) float64 {
			return testing.AllocsPerRun(20, func() {
				if err := o.Write(context.Background(), ms[:n]); err != nil {
					t.Fatal(err)
				}
			})
		}
		allocs(5000) // grow the reused buffers
		small, large := allocs(100), allocs(5000)
		t.Logf("%s: %.0f allocations for 100 metrics, %.0f for 5000", enc, small, large)
		if large > small+50 { // one allocation per metric would add 4,900
			t.Errorf("%s: %.0f allocations for 100 metrics, %.0f for 5000: something allocates per metric", enc, small, large)
		}
	}
}

// TestBadRequestNotAboutPoints: a 400 that blames the request, not its lines, keeps the batch
// (a wrong setting must not drop data line by line).
func TestBadRequestNotAboutPoints(t *testing.T) {
	f := newFake(t, func(int, fakeRequest) (int, map[string]string, string) {
		return http.StatusBadRequest, nil, `{"error":"invalid consistency level"}`
	}).start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	err := o.Write(context.Background(), plcMetrics("br", 10, recentBase(), true))
	keptWhole(t, "400 invalid consistency level", err)
	if !strings.Contains(err.Error(), "invalid consistency level") || len(f.requests()) != 1 {
		t.Errorf("%v after %d requests", err, len(f.requests()))
	}
}

// discardServer reads and drops every body and answers 204.
func discardServer(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestConnectionReset: a server that drops the connection in the middle of the request keeps
// the batch; it is written at the next try.
func TestConnectionReset(t *testing.T) {
	f := newFake(t, ok204)
	var mu sync.Mutex
	resets := 0
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reset := resets == 0
		resets++
		mu.Unlock()
		if reset {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				io.ReadFull(r.Body, make([]byte, 100)) // part of the body, then gone
				conn.(*net.TCPConn).SetLinger(0)       // RST, not FIN
				conn.Close()
			}
			return
		}
		inner.ServeHTTP(w, r)
	})
	f.start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	ms := plcMetrics("reset", 100, recentBase(), true)
	err := o.Write(context.Background(), ms)
	keptWhole(t, "connection reset", err)
	t.Logf("reset: %v", err)
	time.Sleep(150 * time.Millisecond)
	if err := o.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if reqs := f.requests(); len(reqs) != 1 || len(reqs[0].lines) != len(ms) {
		t.Errorf("%d requests reached the handler", len(reqs))
	}
}

// Test413ServerFault: a URL that accepted bodies of a size answers 413 to a single line far
// below it (a proxy gone wrong): the line is a server fault, not too large. Nothing is dropped,
// nothing is split, the URL backs off (no request until it passes), and once it accepts again
// everything is written.
func Test413ServerFault(t *testing.T) {
	var broken atomic.Bool
	f := newFake(t, func(_ int, r fakeRequest) (int, map[string]string, string) {
		if broken.Load() {
			return http.StatusRequestEntityTooLarge, nil, "Request Entity Too Large"
		}
		return http.StatusNoContent, nil, ""
	}).start(t, nil)
	o, _ := newV1(t, func(o *InfluxDB) { o.URLs, o.SkipDatabaseCreation = []string{f.srv.URL}, true })
	ctx := context.Background()
	if err := o.Write(ctx, plcMetrics("sf", 50, recentBase(), true)); err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	one := plcMetrics("sf", 1, recentBase().Add(time.Minute), true)
	err := o.Write(ctx, one)
	keptWhole(t, "413 on one line far below the accepted size", err)
	if !strings.Contains(err.Error(), "server fault") {
		t.Errorf("error %q does not call it a server fault", err)
	}
	n := len(f.requests())
	keptWhole(t, "write during the backoff", o.Write(ctx, one))
	if len(f.requests()) != n {
		t.Errorf("a request during the backoff")
	}
	if o.w.st.droppedTooLarge.Get() != 0 || o.w.st.linesRejected.Get() != 0 || o.w.maxBody != 0 {
		t.Errorf("dropped %d, rejected %d, split to %d bytes; want none", o.w.st.droppedTooLarge.Get(), o.w.st.linesRejected.Get(), o.w.maxBody)
	}
	broken.Store(false)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := o.Write(ctx, one); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("not written after the URL recovered: %v", err)
		}
	}
}
