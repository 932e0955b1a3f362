// Package opcuasim is a simulated OPC UA server on gopcua's own server package (v0.9.1), in
// process, on loopback, with values that change: `tagpipe demo` reads it, and tests and
// benchmarks use it where a server written by others is not needed (or as a second peer beside
// node-opcua).
//
// Variables, in namespace "urn:tagpipe:opcuasim" (index 1), in folder ns=1;s=Sim:
//
//	ns=1;s=Sine         Double   sin(2π·t/10s), updated every period
//	ns=1;s=Counter      UInt32   1, 2, 3, ...: +1 every period
//	ns=1;s=Temperature  Double   21.5 + 3·sin(2π·t/60s)
//	ns=1;s=Running      Boolean  true, false every 5 s
//	ns=1;s=Status       String   "ok"
//	ns=1;i=1001         Int16    -7
//	ns=1;s=Tag.N        Double   N + tick for N in 0..Tags-1 (tick: the Counter's value),
//	                             updated every period: load for benchmarks
//
// Like every gopcua v0.9.1 server it checks no password (any user name and password pass),
// accepts any client certificate, ignores sampling intervals, queue sizes and deadbands, and
// gives every value the time it was read as its source timestamp.
package opcuasim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// NamespaceURI is the namespace of the simulated variables.
const NamespaceURI = "urn:tagpipe:opcuasim"

// Options configure a simulated server.
type Options struct {
	// Host is a loopback address (default 127.0.0.1).
	Host string
	// Port to listen on; 0 picks a free one.
	Port int
	// Period between value changes (default 100ms).
	Period time.Duration
	// Tags is the number of extra Double variables ns=1;s=Tag.N that change every period.
	Tags int
	// Secure also offers Basic256Sha256 with Sign and SignAndEncrypt, and user names.
	Secure bool
}

// Server is a running simulated server.
type Server struct {
	srv      *server.Server
	endpoint string
	cert     []byte

	tick   atomic.Uint32
	sine   atomic.Uint64 // float64 bits
	temp   atomic.Uint64
	run    atomic.Bool
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start starts a server and its value updates.
func Start(opts Options) (*Server, error) {
	if opts.Port != 0 {
		return start(opts)
	}
	// The free port is picked before the server listens on it (see start): another process
	// may take it in between. Pick again then.
	for attempt := 1; ; attempt++ {
		s, err := start(opts)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			return s, err
		}
	}
}

// startLog serialises quietStart: the standard logger's output is one global.
var startLog sync.Mutex

// quietStart runs f with the standard log package silenced. gopcua's server reports its start
// (each nodeset it imports, the address it listens on) through the standard log package, which
// the agent routes into its own log: `tagpipe demo` would print a dozen lines of it. Errors it
// logs after the start still show.
func quietStart[T any](f func() (T, error)) (T, error) {
	startLog.Lock()
	defer startLog.Unlock()
	w := log.Writer()
	log.SetOutput(io.Discard)
	defer log.SetOutput(w)
	return f()
}

func start(opts Options) (*Server, error) {
	return quietStart(func() (*Server, error) { return start1(opts) })
}

func start1(opts Options) (*Server, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.Host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("opcuasim: %s is not a loopback address", opts.Host)
	}
	if opts.Period <= 0 {
		opts.Period = 100 * time.Millisecond
	}
	if opts.Port == 0 {
		// gopcua's server listens on its first endpoint's host:port and advertises exactly
		// that URL, so the port is picked before it starts.
		l, err := net.Listen("tcp", net.JoinHostPort(opts.Host, "0"))
		if err != nil {
			return nil, err
		}
		opts.Port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	key, cert, err := selfSigned(opts.Host)
	if err != nil {
		return nil, err
	}
	sopts := []server.Option{
		server.EndPoint(opts.Host, opts.Port),
		server.PrivateKey(key),
		server.Certificate(cert),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.ServerName("tagpipe opcuasim"),
	}
	if opts.Secure {
		sopts = append(sopts,
			server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSign),
			server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt),
			server.EnableAuthMode(ua.UserTokenTypeUserName),
		)
	}
	s := &Server{
		srv:      server.New(sopts...),
		endpoint: "opc.tcp://" + net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)),
		cert:     cert,
		done:     make(chan struct{}),
	}
	s.run.Store(true)
	s.tick.Store(1)

	root, err := s.srv.Namespace(0)
	if err != nil {
		return nil, err
	}
	ns := server.NewNodeNameSpace(s.srv, NamespaceURI)
	root.Objects().AddRef(ns.Objects(), id.HasComponent, true)
	folder := ns.AddNode(server.NewFolderNode(ua.NewStringNodeID(ns.ID(), "Sim"), "Sim"))
	ns.Objects().AddRef(folder, id.Organizes, true)

	float := func(bits *atomic.Uint64) func() *ua.DataValue {
		return func() *ua.DataValue { return server.DataValueFromValue(math.Float64frombits(bits.Load())) }
	}
	constant := func(v any) func() *ua.DataValue {
		return func() *ua.DataValue { return server.DataValueFromValue(v) }
	}
	add := func(nid *ua.NodeID, name string, f func() *ua.DataValue) *server.Node {
		n := ns.AddNode(server.NewVariableNode(nid, name, f))
		folder.AddRef(n, id.HasComponent, true)
		return n
	}
	str := func(name string) *ua.NodeID { return ua.NewStringNodeID(ns.ID(), name) }
	changing := []*ua.NodeID{
		add(str("Sine"), "Sine", float(&s.sine)).ID(),
		add(str("Counter"), "Counter", func() *ua.DataValue { return server.DataValueFromValue(s.tick.Load()) }).ID(),
		add(str("Temperature"), "Temperature", float(&s.temp)).ID(),
	}
	running := add(str("Running"), "Running", func() *ua.DataValue { return server.DataValueFromValue(s.run.Load()) }).ID()
	add(str("Status"), "Status", constant("ok"))
	add(ua.NewNumericNodeID(ns.ID(), 1001), "Int16Const", constant(int16(-7)))
	for i := range opts.Tags {
		base := float64(i)
		changing = append(changing, add(str("Tag."+strconv.Itoa(i)), "Tag."+strconv.Itoa(i), func() *ua.DataValue {
			return server.DataValueFromValue(base + float64(s.tick.Load()))
		}).ID())
	}

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.srv.Start(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("opcuasim: %w", err)
	}
	start := time.Now()
	s.update(start)
	go func() {
		defer close(s.done)
		t := time.NewTicker(opts.Period)
		defer t.Stop()
		lastRun := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				s.tick.Add(1)
				s.update(start)
				for _, n := range changing {
					ns.ChangeNotification(n)
				}
				if now.Sub(lastRun) >= 5*time.Second {
					lastRun = now
					s.run.Store(!s.run.Load())
					ns.ChangeNotification(running)
				}
			}
		}
	}()
	return s, nil
}

func (s *Server) update(start time.Time) {
	t := time.Since(start).Seconds()
	s.sine.Store(math.Float64bits(math.Sin(2 * math.Pi * t / 10)))
	s.temp.Store(math.Float64bits(21.5 + 3*math.Sin(2*math.Pi*t/60)))
}

// Endpoint returns the URL the server listens on and advertises.
func (s *Server) Endpoint() string { return s.endpoint }

// Certificate returns the server's certificate (DER), for clients that pin it.
func (s *Server) Certificate() []byte { return s.cert }

// Counter returns the current value of ns=1;s=Counter (and the tick of the Tag.N values).
func (s *Server) Counter() uint32 { return s.tick.Load() }

// Close stops the server. gopcua's Close waits up to 10 s for connected clients to go; Close
// waits at most wait for it and leaves the rest to finish in the background.
func (s *Server) Close(wait time.Duration) error {
	var err error
	s.once.Do(func() {
		s.cancel()
		<-s.done
		closed := make(chan error, 1)
		go func() { closed <- s.srv.Close() }()
		select {
		case err = <-closed:
		case <-time.After(wait):
			err = errors.New("opcuasim: clients still connected; closing in the background")
		}
	})
	return err
}

// selfSigned makes an RSA key and a certificate for host with an application URI, as OPC UA
// clients expect.
func selfSigned(host string) (*rsa.PrivateKey, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	uri, _ := url.Parse("urn:tagpipe:opcuasim")
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tagpipe opcuasim"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.ParseIP(host)},
		DNSNames:              []string{"localhost"},
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	return key, der, err
}
