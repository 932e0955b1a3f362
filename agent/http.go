package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// HTTP endpoint ([agent] http_listen), for service managers, load balancers and Prometheus:
//
//	GET /healthz   200 "ok: …" while every output writes and every input gathers;
//	               503 with one line per problem otherwise (which plugin, its last error, since when)
//	GET /metrics   the agent's own metrics (models.StatsSnapshot) in Prometheus text format 0.0.4
//
// The server is started once and asks for the running agent on every request, so it lives
// across SIGHUP reloads.

// DefaultMinWindow is the shortest time Health waits before it calls a plugin that has gone
// quiet (an output holding metrics it does not write, an input that does not finish a gather)
// failing. The window is three intervals of the plugin, but never less than this, so that a slow
// write or gather is not reported as a failure.
const DefaultMinWindow = 30 * time.Second

// Problem is one reason the agent is not healthy.
type Problem struct {
	Plugin string // `outputs.file`, `inputs.modbus "boiler-3"`
	Reason string // the last error, or what has not happened
	// Since is when the plugin last worked (a good write or gather), or when the agent started
	// if it has not worked since (Never). Zero when it is not known (inputs do not record their
	// last good gather once an error followed it).
	Since time.Time
	Never bool
	At    time.Time // when the last error happened (zero when there was no error)
}

// String is the problem as /healthz prints it:
//
//	outputs.file: write /dev/full: no space left on device; no success since the agent started at 2026-11-25T12:00:00Z; last error at 2026-11-25T12:00:07Z
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Plugin + ": " + p.Reason)
	switch {
	case p.Since.IsZero():
	case p.Never:
		b.WriteString("; no success since the agent started at " + p.Since.UTC().Format(time.RFC3339))
	default:
		b.WriteString("; no success since " + p.Since.UTC().Format(time.RFC3339))
	}
	if !p.At.IsZero() {
		b.WriteString("; last error at " + p.At.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Health returns what keeps the agent from being healthy at now; none means healthy. A plugin
// whose quiet time is judged uses a window of three of its intervals, at least minWindow.
//
// An output is failing while it cannot connect, while its last write failed, or when it holds
// metrics and has written nothing for the window (a write that hangs). A polled input is failing
// while its last gather failed or when no gather finished for the window (a gather that hangs).
// A service input (it gathers on its own schedule) is failing when its start failed, or for the
// window after it reported an error. Health is safe for concurrent use with Run.
func (a *Agent) Health(now time.Time, minWindow time.Duration) []Problem {
	var ps []Problem
	window := func(d time.Duration) time.Duration { return max(3*d, minWindow) }
	lastGood := func(t time.Time) (time.Time, bool) {
		if t.After(a.created) {
			return t, false
		}
		return a.created, true
	}
	for _, o := range a.outputs {
		id := "outputs." + o.Config.ID()
		since, never := lastGood(o.LastWrite())
		if f := o.connectErr.Load(); f != nil {
			ps = append(ps, Problem{Plugin: id, Reason: "connect: " + f.err.Error(), Since: since, Never: never, At: f.at})
			continue
		}
		if err, at := o.LastError(); err != nil {
			ps = append(ps, Problem{Plugin: id, Reason: err.Error(), Since: since, Never: never, At: at})
			continue
		}
		// BufferSize, not Buffer.Len: the buffer may be detached by a reload at any moment.
		if n := o.BufferSize.Get(); n > 0 && now.Sub(since) > window(o.Settings.FlushInterval) {
			ps = append(ps, Problem{Plugin: id, Since: since, Never: never,
				Reason: fmt.Sprintf("%d metrics buffered, nothing written for %s", n, now.Sub(since).Round(time.Second))})
		}
	}
	for _, ri := range a.inputs {
		id := "inputs." + ri.Config.ID()
		interval := ri.Config.Interval
		if interval <= 0 {
			interval = time.Duration(a.cfg.Agent.Interval)
		}
		err, at := ri.LastError()
		if _, service := ri.Input.(models.ServiceInput); service {
			a.mu.Lock()
			f, failed := a.startFailed[ri]
			a.mu.Unlock()
			switch {
			case failed:
				ps = append(ps, Problem{Plugin: id, Reason: "start: " + f.err.Error(), Since: a.created, Never: true, At: f.at})
			case err != nil && now.Sub(at) < window(interval):
				ps = append(ps, Problem{Plugin: id, Reason: err.Error(), At: at})
			}
			continue
		}
		if err != nil {
			ps = append(ps, Problem{Plugin: id, Reason: err.Error(), At: at})
			continue
		}
		if since, never := lastGood(at); now.Sub(since) > window(interval) {
			ps = append(ps, Problem{Plugin: id, Since: since, Never: never,
				Reason: "no gather finished for " + now.Sub(since).Round(time.Second).String()})
		}
	}
	return ps
}

// ValidateListen checks an http_listen address ("127.0.0.1:9273", "[::1]:9273", ":9273").
func ValidateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http_listen %q: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("http_listen %q: port must be a number 0..65535", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("http_listen %q: host must be an IP address or localhost", addr)
	}
	return nil
}

// Server serves /healthz and /metrics. Start it with ListenHTTP; Close stops it.
type Server struct {
	srv     *http.Server
	ln      net.Listener
	current func() *Agent
	log     *slog.Logger
	done    chan struct{}

	// MinWindow is passed to Agent.Health (DefaultMinWindow unless changed before serving).
	MinWindow time.Duration
}

// ListenHTTP listens on addr and serves in the background. current returns the running agent
// (nil while none runs); it is called for every request, so one server outlives reloads.
func ListenHTTP(addr string, current func() *Agent) (*Server, error) {
	if err := ValidateListen(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http_listen: %w", err)
	}
	s := &Server{
		ln:        ln,
		current:   current,
		log:       slog.Default().With("plugin", "http"),
		done:      make(chan struct{}),
		MinWindow: DefaultMinWindow,
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "error", err)
		}
	}()
	s.log.Info("serving /healthz and /metrics", "address", ln.Addr().String())
	return s, nil
}

// Addr is the address the server listens on (with the port chosen for ":0").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: requests under way get up to five seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// Handler returns the handler of /healthz and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /metrics", s.metrics)
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	a := s.current()
	if a == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "unhealthy: the agent is not running (starting, or reloading)")
		return
	}
	ps := a.Health(time.Now(), s.MinWindow)
	if len(ps) == 0 {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "ok: %d inputs gathering, %d outputs writing\n", len(a.inputs), len(a.outputs))
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "unhealthy: %d failing (of %d inputs, %d outputs)\n", len(ps), len(a.inputs), len(a.outputs))
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write(b.Bytes())
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(AppendPrometheus(nil, models.StatsSnapshot(time.Now())))
}

// AppendPrometheus appends ms in the Prometheus text exposition format (0.0.4) to dst: one
// family per measurement and field, named MEASUREMENT_FIELD (internal_output_metrics_written),
// the tags as labels, untyped (a stat does not say whether it is a counter or a gauge), no
// timestamps. Two metrics with the same name and tags (two outputs of one plugin without an
// alias) would be one series twice, which Prometheus refuses: the second gets a label
// index="2", the third index="3" and so on.
//
// Written by hand: the format is a few lines of text, and the client library would bring its
// protobuf model into the binary for it.
func AppendPrometheus(dst []byte, ms []*models.Metric) []byte {
	type sample struct {
		labels []byte
		value  models.Field
	}
	type field struct{ measurement, key string }
	families := map[string][]sample{}
	famNames := map[field]string{} // a name is made once per family, not once per sample
	seen := map[string]int{}
	for _, m := range ms {
		var labels []byte
		for i, t := range m.Tags {
			if i > 0 {
				labels = append(labels, ',')
			}
			labels = appendLabel(labels, t.Key, t.Value)
		}
		key := m.Name + "\x00" + string(labels)
		seen[key]++
		if n := seen[key]; n > 1 {
			if len(labels) > 0 {
				labels = append(labels, ',')
			}
			labels = appendLabel(labels, "index", strconv.Itoa(n))
		}
		for _, f := range m.Fields {
			if f.Type() == models.TypeString {
				continue // a sample is a number
			}
			name, ok := famNames[field{m.Name, f.Key}]
			if !ok {
				name = promName(m.Name + "_" + f.Key)
				famNames[field{m.Name, f.Key}] = name
			}
			families[name] = append(families[name], sample{labels, f})
		}
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		dst = append(dst, "# TYPE "...)
		dst = append(dst, n...)
		dst = append(dst, " untyped\n"...)
		for _, s := range families[n] {
			dst = append(dst, n...)
			if len(s.labels) > 0 {
				dst = append(dst, '{')
				dst = append(dst, s.labels...)
				dst = append(dst, '}')
			}
			dst = append(dst, ' ')
			dst = appendValue(dst, s.value)
			dst = append(dst, '\n')
		}
	}
	return dst
}

func appendValue(dst []byte, f models.Field) []byte {
	switch f.Type() {
	case models.TypeInt:
		return strconv.AppendInt(dst, f.IntV(), 10)
	case models.TypeUint:
		return strconv.AppendUint(dst, f.UintV(), 10)
	case models.TypeBool:
		if f.BoolV() {
			return append(dst, '1')
		}
		return append(dst, '0')
	}
	return strconv.AppendFloat(dst, f.FloatV(), 'g', -1, 64) // NaN, +Inf and -Inf as the format spells them
}

// appendLabel appends name="value", the name made valid and the value escaped as the format
// says: backslash, double quote and line feed.
func appendLabel(dst []byte, name, value string) []byte {
	name = promName(name)
	if strings.HasPrefix(name, "__") { // reserved for Prometheus itself
		name = "tag" + name
	}
	dst = append(dst, name...)
	dst = append(dst, '=', '"')
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '"':
			dst = append(dst, '\\', '"')
		case '\n':
			dst = append(dst, '\\', 'n')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// promName replaces what may not appear in a metric or label name ([a-zA-Z_][a-zA-Z0-9_]*) by
// an underscore.
func promName(s string) string {
	ok := s != ""
	for i := 0; ok && i < len(s); i++ {
		ok = isNameByte(s[i], i)
	}
	if ok {
		return s
	}
	b := []byte(s)
	if len(b) == 0 {
		return "_"
	}
	for i, c := range b {
		if !isNameByte(c, i) {
			b[i] = '_'
		}
	}
	return string(b)
}

func isNameByte(c byte, i int) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9'
}
