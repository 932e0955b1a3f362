package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// HTTP endpoint ([agent] http_listen), for service managers, load balancers and Prometheus:
//
//	GET /healthz   200 "ok: …" while every output writes and every input gathers;
//	               200 "degraded: …" listing failing devices while no input has more failing
//	               than health_failing_share allows;
//	               503 with one line per problem otherwise (which plugin, its last error, since
//	               when, and the first 20 failing devices of an input)
//	GET /metrics   the agent's own metrics (models.StatsSnapshot) in Prometheus text format 0.0.4
//
// The server is started once and asks for the running agent on every request, so it lives
// across SIGHUP reloads.

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
	failing := 0
	for _, p := range ps {
		if !p.Degraded {
			failing++
		}
	}
	var b bytes.Buffer
	code := http.StatusOK
	switch {
	case len(ps) == 0:
		fmt.Fprintf(&b, "ok: %d inputs gathering, %d outputs writing\n", len(a.inputs), len(a.outputs))
	case failing == 0:
		fmt.Fprintf(&b, "degraded: %d inputs gathering with some devices failing, %d outputs writing\n", len(a.inputs), len(a.outputs))
	default:
		code = http.StatusServiceUnavailable
		fmt.Fprintf(&b, "unhealthy: %d failing (of %d inputs, %d outputs)\n", failing, len(a.inputs), len(a.outputs))
	}
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	if line := a.clusterLine(); line != "" {
		b.WriteString(line + "\n")
	}
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(AppendPrometheus(nil, models.StatsSnapshot(time.Now())))
}
