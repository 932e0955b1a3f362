package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/web"
)

// HTTP endpoint ([agent] http_listen), for operators, service managers, load balancers and
// Prometheus:
//
//	GET /healthz   200 "ok: …" while every output writes and every input gathers;
//	               200 "degraded: …" listing failing devices while no input has more failing
//	               than health_failing_share allows;
//	               503 with one line per problem otherwise (which plugin, its last error, since
//	               when, and the first 20 failing devices of an input)
//	GET /metrics   the agent's own metrics (models.StatsSnapshot) in Prometheus text format 0.0.4
//	GET /          the device page, and its JSON API under /api/ (package web)
//
// Everything but /healthz asks for basic auth when http_username is set; TLS when
// http_tls_cert is. The server is started once and asks for the running agent on every
// request, so it lives across SIGHUP reloads.

// HTTPOptions configure the HTTP endpoint: http_listen and the keys that go with it.
type HTTPOptions struct {
	Listen       string
	TLSCert      string // PEM files; both or neither
	TLSKey       string
	Username     string // basic auth for everything but /healthz; "": none
	PasswordHash string // bcrypt
	Version      string // what the device page says the agent is
}

// HTTPOptionsOf returns the HTTP options of an [agent] table.
func HTTPOptionsOf(a *config.Agent, version string) HTTPOptions {
	return HTTPOptions{Listen: a.HTTPListen, TLSCert: a.HTTPTLSCert, TLSKey: a.HTTPTLSKey,
		Username: a.HTTPUsername, PasswordHash: a.HTTPPasswordHash, Version: version}
}

// Server serves /healthz, /metrics and the device page. Start it with Listen; Close stops it.
type Server struct {
	srv     *http.Server
	ln      net.Listener
	opts    HTTPOptions
	current func() *Agent
	log     *slog.Logger
	done    chan struct{}
	started time.Time
	stats   *models.Stats // internal_http: auth_failures
	page    http.Handler

	// MinWindow is passed to Agent.Health (DefaultMinWindow unless changed before serving).
	MinWindow time.Duration
}

// ListenHTTP listens on addr and serves in the background. current returns the running agent
// (nil while none runs); it is called for every request, so one server outlives reloads.
func ListenHTTP(addr string, current func() *Agent) (*Server, error) {
	return Listen(HTTPOptions{Listen: addr}, current)
}

// Listen serves as o says, in the background. current returns the running agent (nil while
// none runs); it is called for every request, so one server outlives reloads.
func Listen(o HTTPOptions, current func() *Agent) (*Server, error) {
	if _, err := config.CheckListen(o.Listen); err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("http_tls_cert, http_tls_key: %w", err)
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	if o.Username != "" {
		if err := web.CheckHash(o.PasswordHash); err != nil {
			return nil, fmt.Errorf("http_password_hash: not a bcrypt hash: %w", err)
		}
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("http_listen: %w", err)
	}
	s := &Server{
		ln:        ln,
		opts:      o,
		current:   current,
		log:       slog.Default().With("plugin", "http"),
		done:      make(chan struct{}),
		started:   time.Now(),
		stats:     models.RegisterStats("internal_http", nil),
		MinWindow: DefaultMinWindow,
	}
	s.page = web.Handler(pageSource{s})
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsConf,
	}
	go func() {
		defer close(s.done)
		var err error
		if tlsConf != nil {
			err = s.srv.ServeTLS(ln, "", "")
		} else {
			err = s.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "error", err)
		}
	}()
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	s.log.Info("serving the device page, /healthz and /metrics", "url", scheme+"://"+ln.Addr().String()+"/",
		"basic_auth", o.Username != "")
	return s, nil
}

// Options returns the options the server was started with.
func (s *Server) Options() HTTPOptions { return s.opts }

// Addr is the address the server listens on (with the port chosen for ":0").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: requests under way get up to five seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	s.stats.Unregister()
	return err
}

// Handler returns the handler of every path: /healthz open to all, the rest behind basic auth
// when it is configured, all with the security headers of web.Headers.
func (s *Server) Handler() http.Handler {
	guarded := http.NewServeMux()
	guarded.HandleFunc("GET /metrics", s.metrics)
	guarded.Handle("/", s.page)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("/", web.Guard(guarded, web.Access{Username: s.opts.Username, PasswordHash: s.opts.PasswordHash,
		Failures: s.stats.Get("auth_failures")}))
	return web.Headers(mux)
}

// pageSource is what the device page reads of the running agent.
type pageSource struct{ s *Server }

func (p pageSource) Devices(fn func(string, models.DeviceReporter)) {
	a := p.s.current()
	if a == nil {
		return
	}
	for _, ri := range a.inputs {
		if dr, ok := ri.Input.(models.DeviceReporter); ok {
			fn("inputs."+ri.Config.ID(), dr)
		}
	}
}

func (p pageSource) Outputs() []web.Output {
	a := p.s.current()
	if a == nil {
		return nil
	}
	out := make([]web.Output, 0, len(a.outputs))
	for _, o := range a.outputs {
		w := web.Output{Name: "outputs." + o.Config.ID(), Buffered: o.BufferSize.Get(), BufferLimit: o.BufferLimit.Get(),
			DiskBytes: -1, LastWrite: o.LastWrite(), Written: o.MetricsWritten.Get(), Dropped: o.MetricsDropped.Get(),
			Errors: o.Errors.Get()}
		if o.disk != nil {
			w.DiskBytes = o.disk.Bytes()
		}
		if err, at := o.LastError(); err != nil {
			w.LastError, w.ErrorAt = err.Error(), at
		} else if f := o.connectErr.Load(); f != nil {
			w.LastError, w.ErrorAt = "connect: "+f.err.Error(), f.at
		}
		out = append(out, w)
	}
	return out
}

func (p pageSource) Agent() web.Agent {
	info := web.Agent{Version: p.s.opts.Version, Started: p.s.started, Interval: 10 * time.Second}
	if info.Version == "" {
		info.Version = "unknown"
	}
	if a := p.s.current(); a != nil {
		info.Running, info.Since, info.Interval = true, a.created, time.Duration(a.cfg.Agent.Interval)
	}
	return info
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
