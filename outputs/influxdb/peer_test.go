package influxdb

// Real databases for the tests, each started on free loopback ports with its own folders and
// config file, stopped by its PID when the test ends (internal/testpeer). InfluxDB and
// VictoriaMetrics print no READY line: the command line is wrapped as
// `sh -c 'echo READY; exec …'` (the server keeps the shell's PID) and the test then waits for
// /ping or /health.

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testpeer"
	"github.com/tagpipe/tagpipe/internal/tlsconfig/tlstest"
)

const (
	influx167 = "influxdb-1.6.7" // Debian's influxd: v1 /write only
	influx183 = "influxdb-1.8.3" // built by scripts/peers.d/30-influxdb.sh: /api/v2/write too
	victoria  = "victoria-metrics"
)

// server is a database started for one test.
type server struct {
	t       testing.TB
	kind    string
	URL     string // http(s)://127.0.0.1:port
	bin     string
	args    []string
	ready   string // path answering 2xx once it serves
	https   bool
	started bool // ports are fixed once it served: a restart must reuse them
	proc    *testpeer.Process
	// configure picks ports and writes the config (again, when a port was taken meanwhile).
	configure func()
}

type serverOptions struct {
	auth bool           // InfluxDB: auth-enabled (an admin "admin"/"secret" is created)
	tls  *tlstest.Files // InfluxDB: serve https with tls.ServerCert
	// maxBody is InfluxDB's max-body-size in bytes (0: its default, 25 MB).
	maxBody int
}

// freeAddr returns a loopback address with a free port below Linux's ephemeral range
// (32768-60999): ports from there are also handed to outgoing connections, and a port that was
// free a moment ago could be some client's by the time the server binds it.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return l.Addr().String()
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// startServer starts a database of kind on loopback.
func startServer(t testing.TB, kind string, o serverOptions) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{t: t, kind: kind, https: o.tls != nil}
	scheme := "http"
	if s.https {
		scheme = "https"
	}
	switch kind {
	case influx167, influx183:
		s.bin = "/usr/bin/influxd"
		if kind == influx183 {
			s.bin = filepath.Join(testpeer.PeersDir(t), "bin", "influxd-1.8.3")
		}
		if _, err := os.Stat(s.bin); err != nil {
			testpeer.Missing(t, kind, "scripts/peers.sh installs it", err)
		}
		conf := filepath.Join(dir, "influxdb.conf")
		s.args, s.ready = []string{"run", "-config", conf}, "/ping"
		s.configure = func() {
			httpAddr := freeAddr(t)
			s.URL = scheme + "://" + httpAddr
			var b strings.Builder
			fmt.Fprintf(&b, "reporting-enabled = false\nreporting-disabled = true\nbind-address = %q\n", freeAddr(t))
			fmt.Fprintf(&b, "[meta]\n  dir = %q\n", filepath.Join(dir, "meta"))
			fmt.Fprintf(&b, "[data]\n  dir = %q\n  wal-dir = %q\n  query-log-enabled = false\n", filepath.Join(dir, "data"), filepath.Join(dir, "wal"))
			b.WriteString("[monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n")
			fmt.Fprintf(&b, "[http]\n  bind-address = %q\n  log-enabled = false\n  auth-enabled = %v\n", httpAddr, o.auth)
			if o.maxBody > 0 {
				fmt.Fprintf(&b, "  max-body-size = %d\n", o.maxBody)
			}
			if o.tls != nil {
				fmt.Fprintf(&b, "  https-enabled = true\n  https-certificate = %q\n  https-private-key = %q\n", o.tls.ServerCert, o.tls.ServerKey)
			}
			if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	case victoria:
		s.bin = testpeer.LookPath(t, "victoria-metrics", "apt-get install victoria-metrics")
		s.ready = "/health"
		s.configure = func() {
			httpAddr := freeAddr(t)
			s.URL = scheme + "://" + httpAddr
			s.args = []string{"-httpListenAddr=" + httpAddr, "-storageDataPath=" + filepath.Join(dir, "vm"),
				"-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=WARN"}
		}
	default:
		t.Fatalf("unknown server %q", kind)
	}
	s.configure()
	s.Start()
	if o.auth {
		s.query("", "CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES", "", "")
	}
	return s
}

// Start (re)starts the server with the same config and folders. A port taken meanwhile (by
// another test's server or client) is replaced before the first start and waited for after.
func (s *server) Start() {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		err := s.start()
		if err == nil {
			s.started = true
			return
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 20 {
			s.t.Fatal(err)
		}
		if s.started {
			time.Sleep(250 * time.Millisecond)
		} else {
			s.configure()
		}
	}
}

func (s *server) start() error {
	args := append([]string{"-c", `echo READY; exec "$0" "$@"`, s.bin}, s.args...)
	s.proc = testpeer.Start(s.t, testpeer.Options{}, "/bin/sh", args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client().Get(s.URL + s.ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		select {
		case <-s.proc.Done():
			return fmt.Errorf("%s exited:\n%s", s.kind, s.proc.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer %s after 30s: %v\n%s", s.kind, s.ready, err, s.proc.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server with SIGTERM; Kill with SIGKILL (a crash).
func (s *server) Stop() { s.proc.Stop() }
func (s *server) Kill() { s.proc.Kill() }

func (s *server) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own server
	}}
}

// query runs an InfluxQL statement (as user/password if given) and returns the decoded answer.
func (s *server) query(db, q, user, pass string) influxAnswer {
	s.t.Helper()
	v := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		v.Set("db", db)
	}
	if user == "" && strings.Contains(q, "CREATE USER admin") {
		// the first admin is created without credentials
	} else if user == "" && s.kind != victoria {
		user, pass = "admin", "secret" // ignored by a server without auth
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/query", strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		s.t.Fatalf("query %q: %v", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("query %q: %s: %s", q, resp.Status, body)
	}
	var a influxAnswer
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		s.t.Fatalf("query %q: %v: %s", q, err, body)
	}
	for _, r := range a.Results {
		if r.Error != "" {
			s.t.Fatalf("query %q: %s", q, r.Error)
		}
	}
	return a
}

type influxAnswer struct {
	Results []struct {
		Error  string `json:"error"`
		Series []struct {
			Name    string            `json:"name"`
			Tags    map[string]string `json:"tags"`
			Columns []string          `json:"columns"`
			Values  [][]any           `json:"values"`
		} `json:"series"`
	} `json:"results"`
}

// points reads every point of measurement back from InfluxDB, keyed by series and time:
// "name,k=v,k=v time" → "field=value,field=value" with fields sorted (see pointKey).
func (s *server) points(db, measurement string) map[string]string {
	s.t.Helper()
	a := s.query(db, fmt.Sprintf("SELECT * FROM %s GROUP BY *", quoteIdent(measurement)), "", "")
	out := map[string]string{}
	for _, r := range a.Results {
		for _, ser := range r.Series {
			for _, row := range ser.Values {
				var tm int64
				fields := map[string]string{}
				for i, c := range ser.Columns {
					if c == "time" {
						n, _ := row[i].(json.Number).Int64()
						tm = n
						continue
					}
					if row[i] == nil {
						continue
					}
					fields[c] = fmt.Sprint(row[i])
				}
				out[pointKey(ser.Name, ser.Tags, tm)] = fieldString(fields)
			}
		}
	}
	return out
}

// vmSeries reads every sample of series named like match from VictoriaMetrics, keyed like
// points but one entry per sample: "name_field,k=v time_ms" → value.
func (s *server) vmSamples(match string) map[string]string {
	s.t.Helper()
	c := s.client()
	out := map[string]string{}
	if resp, err := c.Get(s.URL + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	resp, err := c.PostForm(s.URL+"/api/v1/export", url.Values{"match[]": {`{__name__=~"` + match + `"}`}})
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	for {
		var row struct {
			Metric     map[string]string `json:"metric"`
			Values     []json.Number     `json:"values"`
			Timestamps []int64           `json:"timestamps"`
		}
		if err := dec.Decode(&row); err == io.EOF {
			break
		} else if err != nil {
			s.t.Fatal(err)
		}
		name := row.Metric["__name__"]
		delete(row.Metric, "__name__")
		for i, v := range row.Values {
			out[pointKey(name, row.Metric, row.Timestamps[i])] = v.String()
		}
	}
	return out
}

// waitVM polls VictoriaMetrics until want samples of match are readable (it makes data readable
// a moment after a flush).
func (s *server) waitVM(match string, want int) map[string]string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.vmSamples(match)
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pointKey(name string, tags map[string]string, t int64) string {
	keys := make([]string, 0, len(tags))
	for k, v := range tags {
		if v != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		b.WriteString("," + k + "=" + tags[k])
	}
	b.WriteString(" " + strconv.FormatInt(t, 10))
	return b.String()
}

func fieldString(fields map[string]string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + fields[k])
	}
	return b.String()
}

// writeRaw writes line protocol to db with /write (as the admin on a server with auth).
func (s *server) writeRaw(db, lines string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/write?db="+url.QueryEscape(db), strings.NewReader(lines))
	req.SetBasicAuth("admin", "secret")
	resp, err := s.client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("write %q: %s: %s", lines, resp.Status, b)
	}
}

// count returns SELECT count(field) FROM measurement (0 when there is nothing).
func (s *server) count(db, field, measurement string) int64 {
	s.t.Helper()
	a := s.query(db, fmt.Sprintf("SELECT count(%s) FROM %s", quoteIdent(field), quoteIdent(measurement)), "", "")
	for _, r := range a.Results {
		for _, ser := range r.Series {
			if len(ser.Values) > 0 && len(ser.Values[0]) > 1 {
				n, _ := ser.Values[0][1].(json.Number).Int64()
				return n
			}
		}
	}
	return 0
}
