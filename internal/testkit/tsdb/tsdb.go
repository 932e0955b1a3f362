// Package tsdb starts the time-series databases tests write to: InfluxDB 1.6.7 (Debian),
// InfluxDB 1.8.3 (built by scripts/peers.d/30-influxdb.sh) and VictoriaMetrics (Debian), each on
// free loopback ports with its own folders, and reads their data back.
package tsdb

// Each database is started on free loopback ports with its own folders and
// config file, stopped by its PID when the test ends (internal/testkit/testpeer). InfluxDB and
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

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
)

const (
	Influx167 = "influxdb-1.6.7" // Debian's influxd: v1 /write only
	Influx183 = "influxdb-1.8.3" // built by scripts/peers.d/30-influxdb.sh: /api/v2/write too
	Victoria  = "victoria-metrics"
)

// Server is a database started for one test.
type Server struct {
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

type Options struct {
	Auth bool           // InfluxDB: auth-enabled (an admin "admin"/"secret" is created)
	TLS  *tlstest.Files // InfluxDB: serve https with tls.ServerCert
	// maxBody is InfluxDB's max-body-size in bytes (0: its default, 25 MB).
	MaxBody int
}

// FreeAddr returns a loopback address with a free port below Linux's ephemeral range
// (32768-60999): ports from there are also handed to outgoing connections, and a port that was
// free a moment ago could be some client's by the time the server binds it.
func FreeAddr(t testing.TB) string {
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

// Start starts a database of kind (Influx167, Influx183, Victoria) on loopback; it is stopped
// when the test ends.
func Start(t testing.TB, kind string, o Options) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{t: t, kind: kind, https: o.TLS != nil}
	scheme := "http"
	if s.https {
		scheme = "https"
	}
	switch kind {
	case Influx167, Influx183:
		s.bin = "/usr/bin/influxd"
		if kind == Influx183 {
			s.bin = filepath.Join(testpeer.PeersDir(t), "bin", "influxd-1.8.3")
		}
		if _, err := os.Stat(s.bin); err != nil {
			testpeer.Missing(t, kind, "scripts/peers.sh installs it", err)
		}
		conf := filepath.Join(dir, "influxdb.conf")
		s.args, s.ready = []string{"run", "-config", conf}, "/ping"
		s.configure = func() {
			httpAddr := FreeAddr(t)
			s.URL = scheme + "://" + httpAddr
			var b strings.Builder
			fmt.Fprintf(&b, "reporting-enabled = false\nreporting-disabled = true\nbind-address = %q\n", FreeAddr(t))
			fmt.Fprintf(&b, "[meta]\n  dir = %q\n", filepath.Join(dir, "meta"))
			fmt.Fprintf(&b, "[data]\n  dir = %q\n  wal-dir = %q\n  query-log-enabled = false\n", filepath.Join(dir, "data"), filepath.Join(dir, "wal"))
			b.WriteString("[monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n")
			fmt.Fprintf(&b, "[http]\n  bind-address = %q\n  log-enabled = false\n  auth-enabled = %v\n", httpAddr, o.Auth)
			if o.MaxBody > 0 {
				fmt.Fprintf(&b, "  max-body-size = %d\n", o.MaxBody)
			}
			if o.TLS != nil {
				fmt.Fprintf(&b, "  https-enabled = true\n  https-certificate = %q\n  https-private-key = %q\n", o.TLS.ServerCert, o.TLS.ServerKey)
			}
			if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	case Victoria:
		s.bin = testpeer.LookPath(t, "victoria-metrics", "apt-get install victoria-metrics")
		s.ready = "/health"
		s.configure = func() {
			httpAddr := FreeAddr(t)
			s.URL = scheme + "://" + httpAddr
			s.args = []string{"-httpListenAddr=" + httpAddr, "-storageDataPath=" + filepath.Join(dir, "vm"),
				"-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=WARN"}
		}
	default:
		t.Fatalf("unknown server %q", kind)
	}
	s.configure()
	s.Start()
	if o.Auth {
		s.Query("", "CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES", "", "")
	}
	return s
}

// Start (re)starts the server with the same config and folders. A port taken meanwhile (by
// another test's server or client) is replaced before the first start and waited for after.
func (s *Server) Start() {
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

func (s *Server) start() error {
	args := append([]string{"-c", `echo READY; exec "$0" "$@"`, s.bin}, s.args...)
	s.proc = testpeer.Start(s.t, testpeer.Options{}, "/bin/sh", args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.Client().Get(s.URL + s.ready)
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
func (s *Server) Stop() { s.proc.Stop() }
func (s *Server) Kill() { s.proc.Kill() }

func (s *Server) Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own server
	}}
}

// Query runs an InfluxQL statement (as user/password if given) and returns the decoded answer.
func (s *Server) Query(db, q, user, pass string) Answer {
	s.t.Helper()
	v := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		v.Set("db", db)
	}
	if user == "" && strings.Contains(q, "CREATE USER admin") {
		// the first admin is created without credentials
	} else if user == "" && s.kind != Victoria {
		user, pass = "admin", "secret" // ignored by a server without auth
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/query", strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		s.t.Fatalf("query %q: %v", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("query %q: %s: %s", q, resp.Status, body)
	}
	var a Answer
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

type Answer struct {
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

// Points reads every point of measurement back from InfluxDB, keyed by series and time:
// "name,k=v,k=v time" → "field=value,field=value" with fields sorted (see PointKey).
func (s *Server) Points(db, measurement string) map[string]string {
	s.t.Helper()
	a := s.Query(db, fmt.Sprintf("SELECT * FROM %s GROUP BY *", QuoteIdent(measurement)), "", "")
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
				out[PointKey(ser.Name, ser.Tags, tm)] = FieldString(fields)
			}
		}
	}
	return out
}

// VMSamples reads every sample of series named like match from VictoriaMetrics, keyed like
// points but one entry per sample: "name_field,k=v time_ms" → value.
func (s *Server) VMSamples(match string) map[string]string {
	s.t.Helper()
	c := s.Client()
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
			out[PointKey(name, row.Metric, row.Timestamps[i])] = v.String()
		}
	}
	return out
}

// WaitVM polls VictoriaMetrics until want samples of match are readable (it makes data readable
// a moment after a flush).
func (s *Server) WaitVM(match string, want int) map[string]string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.VMSamples(match)
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func PointKey(name string, tags map[string]string, t int64) string {
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

func FieldString(fields map[string]string) string {
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

// WriteRaw writes line protocol to db with /write (as the admin on a server with auth).
func (s *Server) WriteRaw(db, lines string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/write?db="+url.QueryEscape(db), strings.NewReader(lines))
	req.SetBasicAuth("admin", "secret")
	resp, err := s.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("write %q: %s: %s", lines, resp.Status, b)
	}
}

// Count returns SELECT count(field) FROM measurement (0 when there is nothing).
func (s *Server) Count(db, field, measurement string) int64 {
	s.t.Helper()
	a := s.Query(db, fmt.Sprintf("SELECT count(%s) FROM %s", QuoteIdent(field), QuoteIdent(measurement)), "", "")
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

// QuoteIdent quotes an InfluxQL identifier.
func QuoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// PID is the server's process id (for CPU measurements).
func (s *Server) PID() int { return s.proc.Cmd.Process.Pid }
