package opcua

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// Session states, as the health metric reports them.
const (
	stateDisconnected int32 = iota
	stateConnecting
	stateConnected
)

var stateNames = [...]string{"disconnected", "connecting", "connected"}

// A session that lived this long before it was lost starts the reconnect backoff over; one
// lost sooner keeps backing off, so that a server that accepts and drops sessions at once is
// not hammered.
const stableSession = 10 * time.Second

// session owns the connection to one server. Everything but the atomics is touched only by the
// goroutine running run (or by gatherOnce, which runs on a session of its own): that goroutine
// is the one owner of connecting and reconnecting, so a server coming back after a restart sees
// one CreateSession per input, never a storm.
//
//	      ┌──────────── run (one goroutine) ────────────┐
//	retry timer → connect: endpoints, trust, session, namespaces, limits, browse, subscribe
//	publish responses (from the publisher goroutine) → metrics; its errors → resubscribe or
//	drop the session → retry timer (backoff, breaker)
//	tick → poll (read mode) or re-subscribe when that failed (subscribe mode), opcua_health
//	      └──────────────────────────────────────────────┘
type session struct {
	o   *OPCUA
	acc models.Accumulator
	log *slog.Logger
	sub bool // subscribe mode

	health  resilience.Health
	breaker *resilience.Breaker
	backoff *resilience.Backoff

	state      atomic.Int32
	reconnects atomic.Uint64

	client      *opcua.Client
	connectedAt time.Time
	everUp      bool
	cert        *clientCert
	lastConnErr string
	warnedSkip  bool

	limits    limits
	readChunk int
	monChunk  int

	configured []*nodeState          // one per o.nodes, kept across sessions
	browsed    map[string]*nodeState // found by browsing, kept across sessions
	items      []*nodeState          // resolved in this session; the index is the client handle
	reads      []*ua.ReadValueID     // read requests of items, built once per session
	monitored  int                   // items the subscription holds
	failed     int                   // nodes of this session that could not be resolved or browsed
	monFailed  int                   // items the server refused to monitor
	subn       *subscription         // nil unless subscribed
	healthTags []models.Tag

	status status // for DeviceStates (/healthz, the device page), read by other goroutines
}

// limits are the server's operation limits (0: none advertised).
type limits struct {
	maxNodesPerRead, maxMonitoredItemsPerCall, maxNodesPerBrowse uint32
}

func newSession(o *OPCUA, acc models.Accumulator, subscribe bool) *session {
	s := &session{
		o:       o,
		acc:     acc,
		log:     o.Log,
		sub:     subscribe,
		backoff: resilience.NewBackoff(o.ReconnectMin.D(), o.ReconnectMax.D()),
		browsed: map[string]*nodeState{},
		healthTags: models.SortTags([]models.Tag{
			{Key: "source", Value: o.Name}, {Key: "endpoint", Value: o.Endpoint},
		}),
	}
	s.breaker = resilience.NewBreaker(resilience.BreakerConfig{
		Failures: 5,
		CoolDown: o.ReconnectMax.D(),
		OnChange: func(from, to string) {
			s.health.BreakerChanged(time.Now(), 0, to)
			if from == "closed" {
				s.log.Warn("reconnect breaker open: attempts slow down to one per reconnect_max", "reconnect_max", o.ReconnectMax.D())
				return
			}
			s.log.Debug("reconnect breaker "+to, "was", from)
		},
	})
	for _, spec := range o.nodes {
		s.configured = append(s.configured, o.newNodeState(spec))
	}
	return s
}

// run connects, keeps the session and reconnects until ctx is done, then closes the session.
func (s *session) run(ctx context.Context) {
	defer s.closeClient()
	tick := time.NewTicker(s.o.tick())
	defer tick.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			if wait, ok := s.attempt(ctx); !ok {
				retry.Reset(wait)
			}
		case f := <-s.o.do: // nil (blocks) unless a test set it
			f(s)
		case r := <-s.published(): // nil (blocks) unless subscribed
			if err := s.handlePublish(ctx, r); err != nil {
				s.dropSession(err.Error())
				retry.Reset(s.backoff.Next())
			} else {
				s.answered(time.Now())
			}
		case now := <-tick.C:
			var err error
			switch {
			case s.client == nil:
			case !s.sub:
				err = s.poll(ctx)
				if ctx.Err() == nil {
					s.health.Polled(err != nil)
				}
				if err != nil && ctx.Err() == nil {
					// The session may have timed out on the server since the last poll (an
					// interval longer than the session timeout): connect again at once and
					// poll this tick, rather than lose it.
					s.dropSession(err.Error())
					wait, ok := s.attempt(ctx)
					if !ok {
						retry.Reset(wait)
						break
					}
					err = s.poll(ctx)
				}
			case s.subn == nil: // an earlier attempt failed
				err = s.subscribe(ctx)
			}
			if err != nil && ctx.Err() == nil {
				s.dropSession(err.Error())
				retry.Reset(s.backoff.Next())
			} else if s.client != nil && !s.sub {
				s.answered(time.Now())
			}
			if s.o.Health {
				s.emitHealth(now)
			}
		}
	}
}

// attempt tries to connect once (through the breaker). It returns false with the wait until
// the next attempt when it failed.
func (s *session) attempt(ctx context.Context) (time.Duration, bool) {
	s.state.Store(stateConnecting)
	if s.everUp || s.lastConnErr != "" {
		s.health.Retry() // every attempt after the first counts as a retry of connecting
	}
	t0 := time.Now()
	err := s.breaker.Do(func() error {
		s.health.Request()
		err := s.connect(ctx)
		if err == nil {
			s.health.Answered(time.Since(t0))
		}
		return err
	})
	if err == nil {
		s.state.Store(stateConnected)
		s.connectedAt = time.Now()
		s.answered(s.connectedAt)
		s.o.stats.connects.Incr()
		if s.everUp {
			s.reconnects.Add(1)
		}
		s.everUp = true
		s.lastConnErr = ""
		return 0, true
	}
	s.state.Store(stateDisconnected)
	if ctx.Err() != nil {
		return time.Hour, false
	}
	wait := s.backoff.Next()
	if until := s.breaker.OpenUntil(); !until.IsZero() {
		wait = max(wait, time.Until(until))
	}
	if errors.Is(err, resilience.ErrOpen) {
		return wait, false
	}
	s.health.Failed(errorKind(err))
	s.reportConnectError(s.connectFailed(err), wait)
	return wait, false
}

// connectFailed counts a failed connect by its cause and returns the error with what to do
// about a refused identity or certificate.
func (s *session) connectFailed(err error) error {
	s.o.stats.connectErrors.Incr()
	var untrusted *errUntrusted
	switch {
	case errors.As(err, &untrusted):
		s.o.stats.certificateErrors.Incr()
	case isAuthError(err):
		s.o.stats.authErrors.Incr()
		return fmt.Errorf("the server refused the identity (auth_method %q, username %q): %w", s.o.AuthMethod, s.o.Username, err)
	case isCertError(err):
		s.o.stats.certificateErrors.Incr()
		return fmt.Errorf("the server refused the client certificate (trust %s on the server): %w", s.certPath(), err)
	}
	return err
}

// reportConnectError logs a failed attempt: the first of its kind as an error, repeats at
// debug level, so that a server away for an hour writes one line.
func (s *session) reportConnectError(err error, wait time.Duration) {
	s.lost(err, time.Now())
	msg := err.Error()
	if msg == s.lastConnErr {
		s.log.Debug("connect failed again", "error", msg, "retry_in", wait.Round(time.Millisecond))
		return
	}
	s.lastConnErr = msg
	s.log.Error("cannot connect; retrying with backoff", "error", msg, "retry_in", wait.Round(time.Millisecond))
}

func (s *session) certPath() string {
	if s.cert != nil {
		return s.cert.path + " (" + certFingerprint(s.cert.der) + ")"
	}
	return "the client certificate"
}

// connect establishes a session and gets it ready: endpoint, trust, certificate, session,
// namespaces, operation limits, node ids, browsing and, in subscribe mode, the subscription.
func (s *session) connect(ctx context.Context) error {
	o := s.o
	cctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout.D()+o.RequestTimeout.D())
	defer cancel()
	eps, err := opcua.GetEndpoints(cctx, o.Endpoint, opcua.DialTimeout(o.ConnectTimeout.D()), opcua.RequestTimeout(o.RequestTimeout.D()))
	if err != nil {
		return fmt.Errorf("get endpoints: %w", err)
	}
	ep, err := o.selectEndpoint(eps)
	if err != nil {
		return err
	}
	if err := o.verifyServer(ep.ServerCertificate); err != nil {
		return err
	}
	if o.InsecureSkipVerify && !s.warnedSkip {
		s.warnedSkip = true
		s.log.Warn("insecure_skip_verify = true: the server's certificate is not checked", "server_certificate", certFingerprint(ep.ServerCertificate))
	}
	if (ep.SecurityPolicyURI != ua.SecurityPolicyURINone || o.AuthMethod == "Certificate") && s.cert == nil {
		c, made, err := o.loadClientCert()
		if err != nil {
			return err
		}
		if made {
			s.log.Info("made a client certificate; trust it on the server", "certificate", c.path, "fingerprint", certFingerprint(c.der))
		}
		s.cert = c
	}
	opts := s.clientOptions(ep)
	scfg := s.sessionConfig(ep)
	var c *opcua.Client
	for _, u := range dialURLs(o.Endpoint, ep.EndpointURL) {
		if c, err = opcua.NewClient(u, opts...); err != nil {
			return err
		}
		if err = openSession(cctx, c, scfg); err == nil || !isNetError(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("session (%s/%s, %s): %w", shortPolicy(ep.SecurityPolicyURI), shortMode(ep.SecurityMode), o.AuthMethod, err)
	}
	s.client = c
	// browsing and subscribing may take many requests, each with its own deadline
	if err := s.prepare(ctx); err != nil {
		s.closeClient()
		return err
	}
	s.log.Info("connected", "policy", shortPolicy(ep.SecurityPolicyURI), "mode", shortMode(ep.SecurityMode),
		"auth", o.AuthMethod, "nodes", len(s.items), "failed", s.failed+s.monFailed)
	return nil
}

// openSession opens the secure channel and the session, and reads the namespace array. It
// does what Client.Connect does minus Connect's monitor goroutines: in gopcua v0.9.1 those take
// any service fault (BadTooManyOperations, BadServiceUnsupported) for a broken connection and
// stop publishing, and they reconnect with a fixed interval. Here run owns reconnecting and the
// publisher goroutine owns publishing.
func openSession(ctx context.Context, c *opcua.Client, cfg *uasc.SessionConfig) error {
	if err := c.Dial(ctx); err != nil {
		return err
	}
	sess, err := c.CreateSession(ctx, cfg)
	if err == nil && sess == nil {
		// gopcua returns no session and no error when the signature does not verify
		err = errors.New("the server's session signature does not verify (did its certificate change?)")
	}
	if err == nil {
		err = c.ActivateSession(ctx, sess)
	}
	if err == nil {
		err = c.UpdateNamespaces(ctx)
	}
	if err != nil {
		c.Close(context.Background())
	}
	return err
}

// dialURLs returns the URLs to try: the one the server advertises for the endpoint first (a
// server may refuse a session for another host name), then the configured one when the
// advertised host cannot be reached from here (a server behind NAT advertising its own name).
func dialURLs(configured, advertised string) []string {
	a, errA := url.Parse(advertised)
	c, errC := url.Parse(configured)
	if advertised == "" || errA != nil || errC != nil || a.Host == c.Host || a.Scheme != "opc.tcp" {
		return []string{configured}
	}
	return []string{advertised, configured}
}

func (s *session) clientOptions(ep *ua.EndpointDescription) []opcua.Option {
	o := s.o
	opts := []opcua.Option{
		opcua.AutoReconnect(false), // run owns reconnecting
		opcua.DialTimeout(o.ConnectTimeout.D()),
		// the client-wide timeout is the publisher's: a Publish request waits up to a keep-alive
		// for the server's answer; every other request has a deadline of request_timeout
		opcua.RequestTimeout(o.RequestTimeout.D() + keepAlive + o.PublishingInterval.D()),
		opcua.SecurityFromEndpoint(ep, o.tokenType()),
	}
	if s.cert != nil {
		opts = append(opts, opcua.PrivateKey(s.cert.key), opcua.Certificate(s.cert.der))
		if o.AuthMethod == "Certificate" {
			opts = append(opts, opcua.AuthPrivateKey(s.cert.key))
		}
	}
	return opts
}

// sessionConfig is the session's description of the client and its identity token, with the
// token policy the endpoint offers for the configured auth_method.
func (s *session) sessionConfig(ep *ua.EndpointDescription) *uasc.SessionConfig {
	o := s.o
	appURI := o.applicationURI()
	if s.cert != nil {
		if c, err := x509.ParseCertificate(s.cert.der); err == nil && len(c.URIs) > 0 {
			appURI = c.URIs[0].String() // the server checks that they match
		}
	}
	cfg := &uasc.SessionConfig{
		SessionName:    "tagpipe " + o.Name,
		SessionTimeout: o.SessionTimeout.D(),
		ClientDescription: &ua.ApplicationDescription{
			ApplicationURI:  appURI,
			ProductURI:      "urn:tagpipe",
			ApplicationName: ua.NewLocalizedText("tagpipe"),
			ApplicationType: ua.ApplicationTypeClient,
		},
		LocaleIDs:          []string{"en-us"},
		UserTokenSignature: &ua.SignatureData{},
		AuthPolicyURI:      ep.SecurityPolicyURI,
	}
	var policyID string
	for _, t := range ep.UserIdentityTokens {
		if t.TokenType == o.tokenType() {
			policyID = t.PolicyID
			if t.SecurityPolicyURI != "" {
				cfg.AuthPolicyURI = t.SecurityPolicyURI
			}
			break
		}
	}
	switch o.AuthMethod {
	case "UserName":
		cfg.UserIdentityToken = &ua.UserNameIdentityToken{PolicyID: policyID, UserName: o.Username}
		cfg.AuthPassword = o.Password.Reveal()
	case "Certificate":
		cfg.UserIdentityToken = &ua.X509IdentityToken{PolicyID: policyID, CertificateData: s.cert.der}
	default:
		cfg.UserIdentityToken = &ua.AnonymousIdentityToken{PolicyID: policyID}
	}
	return cfg
}

// prepare resolves the nodes for the new session: namespace URIs against the namespace array
// read now (a restarted server may number them differently), browsed folders, the server's
// operation limits; in subscribe mode it creates the subscription.
func (s *session) prepare(ctx context.Context) error {
	c := s.client
	namespaces := c.Namespaces()
	s.limits = s.readLimits(ctx)
	s.readChunk = chunk(s.o.MaxNodesPerRead, s.limits.maxNodesPerRead)
	s.monChunk = chunk(s.o.MaxMonitoredItemsPerCall, s.limits.maxMonitoredItemsPerCall)
	s.items, s.reads, s.failed = s.items[:0], s.reads[:0], 0
	for _, st := range s.configured {
		id, err := st.spec.ref.resolve(namespaces)
		if err != nil {
			st.id = nil
			s.nodeProblem(st, err)
			continue
		}
		st.id = id
		s.items = append(s.items, st)
	}
	for _, b := range s.o.browses {
		if err := s.browse(ctx, b, namespaces); err != nil {
			if isConnError(err) {
				return fmt.Errorf("browse %s: %w", b.ref.String(), err)
			}
			s.failed++
			s.o.stats.nodeErrors.Incr()
			s.log.Warn("browse failed; its nodes are skipped", "node", b.ref.String(), "error", err)
		}
	}
	for _, st := range s.items {
		s.reads = append(s.reads, &ua.ReadValueID{NodeID: st.id, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}})
	}
	if s.sub {
		return s.subscribe(ctx)
	}
	return nil
}

func chunk(configured int, server uint32) int {
	if server > 0 && int64(server) < int64(configured) {
		return int(server)
	}
	return configured
}

// readLimits reads the server's operation limits; a server that does not expose one has none.
func (s *session) readLimits(ctx context.Context) limits {
	ids := []uint32{
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
		id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
	}
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
	for _, n := range ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewNumericNodeID(0, n), AttributeID: ua.AttributeIDValue})
	}
	var l limits
	res, err := s.client.Read(ctx, req)
	if err != nil || len(res.Results) != len(ids) {
		return l
	}
	get := func(i int) uint32 {
		dv := res.Results[i]
		if dv.Status != ua.StatusOK || dv.Value == nil {
			return 0
		}
		if v, ok := dv.Value.Value().(uint32); ok {
			return v
		}
		return 0
	}
	return limits{maxNodesPerRead: get(0), maxMonitoredItemsPerCall: get(1), maxNodesPerBrowse: get(2)}
}

// dropSession closes a session that stopped working; run reconnects.
func (s *session) dropSession(reason string) {
	s.lost(errors.New("session lost: "+reason), time.Now())
	s.o.stats.disconnects.Incr()
	s.log.Warn("session lost; reconnecting", "reason", reason, "after", time.Since(s.connectedAt).Round(time.Millisecond))
	if time.Since(s.connectedAt) >= stableSession {
		s.backoff.Reset()
	}
	s.closeClient()
}

// closeClient closes the session on the server (when it is still there) and the connection.
func (s *session) closeClient() {
	s.state.Store(stateDisconnected)
	if s.client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, s.o.RequestTimeout.D()))
	defer cancel()
	s.stopPublisher(false)
	s.client.Close(ctx)
	s.client, s.monitored = nil, 0
}

// poll reads every item in batches of the server's MaxNodesPerRead (read mode, and Gather).
// With source or server timestamps a value whose sample did not change since the last poll
// (a constant: same timestamp, same status) is the same point again and is not repeated; with
// gather timestamps every poll is a point of its own. It returns an error only when the
// session is broken.
func (s *session) poll(ctx context.Context) error {
	a := newSlab(len(s.items))
	for i := 0; i < len(s.items); {
		n := min(s.readChunk, len(s.items)-i)
		res, err := s.read(ctx, s.reads[i:i+n])
		if errors.Is(err, ua.StatusBadTooManyOperations) && n > 1 {
			s.split(&s.readChunk, n, "read")
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopping
			}
			s.health.Failed(errorKind(err))
			if isConnError(err) {
				return fmt.Errorf("read: %w", err)
			}
			s.log.Warn("read failed", "nodes", n, "first", s.items[i].spec.ref.String(), "error", err)
			i += n
			continue
		}
		now := time.Now()
		for k, dv := range res.Results {
			if k < n {
				s.deliver(a, s.items[i+k], dv, now, s.o.Timestamp != "gather")
			}
		}
		i += n
	}
	return nil
}

func (s *session) split(size *int, n int, what string) {
	*size = max(1, n/2)
	s.o.stats.operationSplits.Incr()
	s.log.Info("the server answered BadTooManyOperations; splitting "+what+" requests", "from", n, "to", *size)
}

func (s *session) read(ctx context.Context, nodes []*ua.ReadValueID) (*ua.ReadResponse, error) {
	rctx, cancel := context.WithTimeout(ctx, s.o.RequestTimeout.D())
	defer cancel()
	t0 := time.Now()
	s.health.Request()
	res, err := s.client.Read(rctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: nodes})
	if err == nil {
		s.health.Answered(time.Since(t0))
		if len(res.Results) != len(nodes) {
			return nil, fmt.Errorf("%d results for %d nodes", len(res.Results), len(nodes))
		}
	}
	return res, err
}

// deliver turns one value into a metric and hands it to the agent, counting and logging what
// was not emitted.
func (s *session) deliver(a *slab, st *nodeState, dv *ua.DataValue, now time.Time, dedupe bool) {
	m, oc, err := s.o.makeMetric(a, st, dv, now, dedupe)
	switch oc {
	case emitted:
		st.problem = ""
		s.o.stats.values.Incr()
		s.acc.AddMetric(m)
	case droppedQuality:
		s.o.stats.droppedQuality.Incr()
	case droppedDuplicate:
		s.o.stats.droppedDuplicates.Incr()
	case nodeError:
		s.nodeProblem(st, err)
	case typeError:
		s.o.stats.typeErrors.Incr()
		s.logProblem(st, err)
	}
}

// nodeProblem counts and logs a node that cannot be read or monitored.
func (s *session) nodeProblem(st *nodeState, err error) {
	s.o.stats.nodeErrors.Incr()
	s.logProblem(st, err)
}

// logProblem logs a node's problem once, until the node works again or the problem changes.
func (s *session) logProblem(st *nodeState, err error) {
	msg := err.Error()
	if st.problem == msg {
		return
	}
	st.problem = msg
	s.log.Warn("node skipped", "node", st.spec.ref.String(), "field", st.spec.field, "measurement", st.spec.measurement, "error", msg)
}

// gatherOnce connects, reads every node once and closes (Gather: --test, --once).
func (s *session) gatherOnce(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return fmt.Errorf("%s: %w", s.o.Endpoint, s.connectFailed(err))
	}
	defer s.closeClient()
	return s.poll(ctx)
}

// emitHealth reports opcua_health: the shared health counters (requests, errors by kind,
// breaker) and the session's state.
func (s *session) emitHealth(now time.Time) {
	f := make([]models.Field, 0, 20+models.FieldRoom()) // with the room processors reserved
	f = s.health.AppendFields(f, nil, s.breaker)
	st := s.state.Load()
	nodes, failed := len(s.items), s.failed+s.monFailed
	if st != stateConnected {
		nodes, failed = 0, 0 // what the last session resolved says nothing now
	}
	f = append(f,
		models.String("session", stateNames[st]),
		models.Bool("connected", st == stateConnected),
		models.Uint("reconnects", s.reconnects.Load()),
		models.Int("nodes", int64(nodes)),
		models.Int("nodes_failed", int64(failed)),
	)
	if s.sub {
		f = append(f, models.Int("monitored_items", int64(s.monitored)))
	}
	s.acc.AddMetric(&models.Metric{Name: "opcua_health", Tags: s.healthTags, Fields: f, Time: now})
}

func errorKind(err error) resilience.ErrorKind {
	var sc ua.StatusCode
	switch {
	case errors.Is(err, ua.StatusBadTimeout), errors.Is(err, ua.StatusBadRequestTimeout):
		return resilience.KindTimeout
	case errors.As(err, &sc):
		return resilience.KindException
	}
	return resilience.Classify(err)
}

// isConnError says whether err means the session or its connection no longer works.
func isConnError(err error) bool {
	if err == nil {
		return false
	}
	if isNetError(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, c := range []ua.StatusCode{
		ua.StatusBadServerNotConnected, ua.StatusBadSessionIDInvalid, ua.StatusBadSessionClosed,
		ua.StatusBadSessionNotActivated, ua.StatusBadSecureChannelIDInvalid, ua.StatusBadSecureChannelClosed,
		ua.StatusBadConnectionClosed, ua.StatusBadNotConnected, ua.StatusBadTimeout, ua.StatusBadRequestTimeout,
		ua.StatusBadCommunicationError, ua.StatusBadServerHalted, ua.StatusBadShutdown, ua.StatusBadNoCommunication,
		ua.StatusBadSecureChannelTokenUnknown, ua.StatusBadTCPInternalError,
	} {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &oe) || errors.As(err, &ne)
}

func isAuthError(err error) bool {
	for _, c := range []ua.StatusCode{
		ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected,
		ua.StatusBadUserSignatureInvalid,
	} {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

func isCertError(err error) bool {
	for _, c := range []ua.StatusCode{
		ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateUntrusted, ua.StatusBadCertificateInvalid,
		ua.StatusBadCertificateTimeInvalid, ua.StatusBadCertificateURIInvalid, ua.StatusBadCertificateUseNotAllowed,
		ua.StatusBadCertificateRevoked, ua.StatusBadCertificateIssuerRevocationUnknown, ua.StatusBadCertificateRevocationUnknown,
		ua.StatusBadSecurityPolicyRejected,
	} {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}
