package reliability

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
	_ "github.com/tagpipe/tagpipe/outputs/all"
	"github.com/tagpipe/tagpipe/outputs/influxdb"
)

// writerStat returns the internal_influxdb counter key of the output writing to url.
func writerStat(url, key string) int64 {
	for _, m := range models.StatsSnapshot(time.Now()) {
		if u, _ := m.Tag("url"); m.Name != "internal_influxdb" || u != url {
			continue
		}
		if f, ok := m.Field(key); ok {
			return f.IntV()
		}
	}
	return -1
}

// TestInflux413OverSizeLine (issue 18, item 1): InfluxDB 1.6.7 with a max-body-size of 4 KiB
// gets a batch of 300 small lines and one line of ~11 KB of random text (over the limit even
// gzip'd). Flushed as the agent flushes, the output learns the limit from 413s (one per flush at
// most), writes every small line, and drops exactly the large one — only once a smaller body was
// accepted by the same URL, so that the limit is known to lie between the two.
func TestInflux413OverSizeLine(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx167, tsdb.Options{MaxBody: 4096})
	log, logs := outputtest.NewLogger(t)
	o := outputs.Registry["influxdb"]().(*influxdb.InfluxDB)
	o.URLs, o.Database, o.Log = []string{s.URL}, "plant", log
	if err := o.Init(); err != nil {
		t.Fatal(err)
	}
	if err := o.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	ro := models.NewRunningOutput(o, &models.PluginConfig{Name: "influxdb"},
		models.OutputSettings{BatchSize: 1000, BufferLimit: 10_000, FlushInterval: time.Second}, nil, nil, log)
	t.Cleanup(func() { ro.Close() })

	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	blob := make([]byte, 8192)
	rand.Read(blob)
	var ms []*models.Metric
	const small, bigAt = 300, 150
	for i := range small {
		if i == bigAt {
			ms = append(ms, models.New("big", nil, []models.Field{models.String("blob", base64.StdEncoding.EncodeToString(blob))}, base))
		}
		ms = append(ms, models.New("line", []models.Tag{{Key: "device", Value: fmt.Sprint("plc", i%10)}},
			[]models.Field{models.Int("seq", int64(i)), models.Float("temp", float64(i)/4)}, base.Add(time.Duration(i)*time.Millisecond)))
	}
	ro.AddBatch(ms)
	flushes := 0
	for ro.Buffer.Len() > 0 && flushes < 30 {
		ro.Flush(t.Context(), true)
		flushes++
	}
	requests, tooLarge := writerStat(s.URL, "requests"), writerStat(s.URL, "too_large")
	t.Logf("%d flushes, %d requests, %d answered 413", flushes, requests, tooLarge)
	if n := ro.Buffer.Len(); n != 0 {
		t.Fatalf("%d metrics still buffered after %d flushes", n, flushes)
	}
	if got := s.Count("plant", "seq", "line"); got != small {
		t.Errorf("InfluxDB holds %d small lines, want %d", got, small)
	}
	if got := s.Count("plant", "blob", "big"); got != 0 {
		t.Errorf("InfluxDB holds %d large lines: the limit is not working", got)
	}
	if r, d := ro.MetricsRejected.Get(), ro.MetricsDropped.Get(); r != 1 || d != 0 {
		t.Errorf("metrics_rejected %d, metrics_dropped %d; want 1, 0", r, d)
	}
	if got := writerStat(s.URL, "dropped_too_large"); got != 1 {
		t.Errorf("dropped_too_large = %d, want 1", got)
	}
	if tooLarge < 1 || tooLarge > int64(flushes) {
		t.Errorf("%d 413s in %d flushes: want at least one, at most one a flush", tooLarge, flushes)
	}
	if logs.Count("refused lines", "over the server's limit", "between") != 1 {
		t.Errorf("the dropped line is not logged once with the limit's bounds:\n%s", logs)
	}
}

// seqInput hands over gathers metrics a gather, numbered from 0 in field "seq".
type seqInput struct{ next *atomic.Int64 }

func (*seqInput) SampleConfig() string { return "" }

func (s *seqInput) Gather(_ context.Context, acc models.Accumulator) error {
	now := time.Now()
	for range 5 {
		n := s.next.Add(1) - 1
		acc.AddMetric(models.New("seq", []models.Tag{{Key: "device", Value: fmt.Sprint("d", n%7)}},
			[]models.Field{models.Int("seq", n)}, now.Add(time.Duration(n%5)*time.Microsecond)))
	}
	return nil
}

var seqNext atomic.Int64

func init() {
	inputs.Add("reliability_seq", func() models.Input { return &seqInput{next: &seqNext} })
}

// influxStub is an InfluxDB stand-in: /query answers an empty result, /write answers 413 until
// accept is set, then 204, keeping the "seq" of every line it took.
type influxStub struct {
	writes atomic.Int64 // /write requests
	accept atomic.Bool
	mu     sync.Mutex
	seen   map[int64]int // seq → times received
}

func (f *influxStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/query":
		io.WriteString(w, `{"results":[{"statement_id":0}]}`)
		return
	case "/write":
	default:
		http.NotFound(w, r)
		return
	}
	f.writes.Add(1)
	if !f.accept.Load() {
		http.Error(w, `{"error":"Request Entity Too Large"}`, http.StatusRequestEntityTooLarge)
		return
	}
	b, err := outputtest.RequestBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// seq,device=d3 seq=42i 1795600000000000000
		parts := strings.Fields(line)
		var seq int64
		if len(parts) != 3 || !strings.HasPrefix(parts[1], "seq=") {
			http.Error(w, "bad line "+line, http.StatusBadRequest)
			return
		}
		if _, err := fmt.Sscanf(parts[1], "seq=%di", &seq); err != nil {
			http.Error(w, "bad line "+line, http.StatusBadRequest)
			return
		}
		f.seen[seq]++
	}
	w.WriteHeader(http.StatusNoContent)
}

// TestInflux413EverythingLosesNothing (issue 18, items 1 and 2): behind a proxy that answers 413
// to every write, the agent's outputs.influxdb keeps every metric (none dropped or rejected),
// sends at most one write a flush interval (counted: /write requests against the output's failed
// flushes), shows the output failing in its health while it backs off, and logs the repeated
// error once, not once a flush. When the proxy lets writes through, every metric arrives, once.
func TestInflux413EverythingLosesNothing(t *testing.T) {
	stub := &influxStub{seen: map[int64]int{}}
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)

	log, logs := outputtest.NewLogger(t)
	prev := slog.Default()
	slog.SetDefault(log)
	t.Cleanup(func() { slog.SetDefault(prev) })

	seqNext.Store(0)
	cfg, err := config.LoadText("413.conf", fmt.Sprintf(`
[agent]
  interval = "100ms"
  flush_interval = "100ms"
  metric_batch_size = 50
  omit_hostname = true
[[inputs.reliability_seq]]
[[outputs.influxdb]]
  urls = [%q]
  database = "plant"
`, srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ro := a.Outputs()[0]
	// The input gathers once an interval, which is also the flush interval: its gathers are the
	// clock the requests are counted against.
	const intervals = 40
	for deadline := time.Now().Add(2 * time.Minute); seqNext.Load()/5 < intervals; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d gathers in 2 minutes", seqNext.Load()/5)
		}
	}
	writes, gathers, failed := stub.writes.Load(), seqNext.Load()/5, ro.Errors.Get()
	t.Logf("%d /write requests in %d flush intervals (%d failed flushes); %d metrics buffered", writes, gathers, failed, ro.BufferSize.Get())
	if writes > gathers+1 {
		t.Errorf("%d /write requests in %d flush intervals: splitting runs faster than the flush interval", writes, gathers)
	}
	if failed == 0 {
		t.Errorf("no failed flush: the writes behind the proxy are counted as done")
	}
	if d, r, w := ro.MetricsDropped.Get(), ro.MetricsRejected.Get(), ro.MetricsWritten.Get(); d+r+w != 0 {
		t.Errorf("dropped %d, rejected %d, written %d behind a proxy answering 413 to everything; want 0", d, r, w)
	}
	if got := writerStat(srv.URL, "dropped_too_large"); got != 0 {
		t.Errorf("dropped_too_large = %d, want 0", got)
	}
	var problem string
	for _, p := range a.Health(time.Now(), time.Second) {
		if p.Plugin == "outputs.influxdb" {
			problem = p.Reason
		}
	}
	if !strings.Contains(problem, "413") {
		t.Errorf("health of outputs.influxdb: %q, want it failing with the 413", problem)
	}
	// Item 2: one failure, logged once (within the minute it lasted), however many flushes.
	if n := logs.Count("write failed"); n != 1 {
		t.Errorf("%d log records of the failed writes in %d flushes, want 1 (folded)", n, failed)
	}
	if n := logs.Count("413 Request Entity Too Large; batches are split"); n != 1 {
		t.Errorf("%d log records of the split, want 1 (folded)", n)
	}

	stub.accept.Store(true)
	for deadline := time.Now().Add(2 * time.Minute); ro.MetricsWritten.Get() == 0 || ro.BufferSize.Get() > 50; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing written within 2 minutes of the proxy letting writes through; %d buffered", ro.BufferSize.Get())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred receive
	produced := seqNext.Load()
	stub.mu.Lock()
	defer stub.mu.Unlock()
	missing, dup := 0, 0
	for n := range produced {
		switch stub.seen[n] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	t.Logf("%d metrics produced; %d received, %d missing, %d duplicated", produced, len(stub.seen), missing, dup)
	if missing != 0 || dup != 0 || int64(len(stub.seen)) != produced {
		t.Errorf("%d produced, %d received: %d missing, %d duplicated", produced, len(stub.seen), missing, dup)
	}
	if n := logs.Count("output writes again"); n != 1 {
		t.Errorf("%d records of the output writing again, want 1", n)
	}
}
