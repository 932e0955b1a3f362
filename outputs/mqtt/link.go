package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// session is what a mode does with a connection: its will, what it publishes when the
// connection comes up, its own work while it lasts, and its goodbye.
type session interface {
	// bind gets the output's stats, before anything else.
	bind(s *models.Stats)
	// will returns the last will of the next connection (topic "" for none).
	will() (topic string, payload []byte, qos byte, retain bool)
	// up runs once the broker accepted the connection; an error ends the connection.
	up(c paho.Client) error
	// wake signals that work is waiting for the connection's goroutine (nil: never).
	wake() <-chan struct{}
	// tick is how often work runs anyway (0: never).
	tick() time.Duration
	// work runs on the connection's goroutine after wake or tick; errWalk ends the connection
	// and moves to the next server, any other error ends it too.
	work(c paho.Client) error
	// down runs when the connection ended, before the next one is made.
	down()
	// goodbye runs before a graceful disconnect.
	goodbye(c paho.Client)
}

// errWalk asks for the connection to end and the next server to be tried (Sparkplug: the
// primary host went offline on this one).
var errWalk = errors.New("moving to the next server")

// link owns the connection to the brokers. One goroutine (run) makes a paho client for each
// connection, with the will of that moment (a Sparkplug NDEATH carries the connection's bdSeq,
// so paho's own reconnect, which reuses the first will, cannot be used), and replaces it when
// it is lost, with backoff. Writers take the current client with current.
type link struct {
	servers      []string
	clientID     string
	clean        bool
	keepAlive    time.Duration
	timeout      time.Duration
	reconnectMax time.Duration
	username     string
	password     config.Secret
	tls          *tls.Config

	log   *slog.Logger
	sess  session
	stats *models.Stats
	st    linkStats

	mu     sync.Mutex
	c      paho.Client   // nil while not connected
	lost   chan struct{} // closed when c's connection ends
	why    error         // why there is no connection
	cancel context.CancelFunc
	done   chan struct{}
	logged string // the state last logged: one line per change
	first  int    // the server tried first
}

type linkStats struct {
	connects, connectErrors, connectionsLost, messages, ackTimeouts *models.Stat
}

// errNeverConnected is the state before the first attempt ended.
var errNeverConnected = errors.New("connecting")

// start starts the connection's goroutine and waits (at most timeout) for the first attempt.
func (l *link) start(ctx context.Context, log *slog.Logger, sess session) error {
	l.mu.Lock()
	if l.done != nil {
		l.mu.Unlock()
		return nil
	}
	l.log, l.sess, l.why = log, sess, errNeverConnected
	l.stats = models.RegisterStats("internal_mqtt", map[string]string{"output": "mqtt", "client_id": l.clientID})
	l.st = linkStats{
		connects: l.stats.Get("connects"), connectErrors: l.stats.Get("connect_errors"),
		connectionsLost: l.stats.Get("connections_lost"), messages: l.stats.Get("messages"),
		ackTimeouts: l.stats.Get("ack_timeouts"),
	}
	sess.bind(l.stats)
	runCtx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	l.mu.Unlock()
	first := make(chan struct{})
	go l.run(runCtx, first)
	select {
	case <-first:
	case <-ctx.Done():
	}
	return nil
}

// stop says goodbye, disconnects and waits for the connection's goroutine.
func (l *link) stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	l.stats.Unregister()
}

// current returns the connected client and the channel closed when its connection ends, or
// why there is none.
func (l *link) current() (paho.Client, <-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		if l.why == nil {
			return nil, nil, errors.New("not connected")
		}
		return nil, nil, fmt.Errorf("not connected: %w", l.why)
	}
	return l.c, l.lost, nil
}

// note logs a change of the connection's state, once.
func (l *link) note(key string, level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	same := key == l.logged
	l.logged = key
	l.mu.Unlock()
	if !same {
		l.log.Log(context.Background(), level, msg, args...)
	}
}

func (l *link) run(ctx context.Context, first chan struct{}) {
	defer close(l.done)
	var once sync.Once
	firstDone := func() { once.Do(func() { close(first) }) }
	defer firstDone()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.session(ctx, firstDone)
		firstDone()
		if ctx.Err() != nil {
			return
		}
		wait := backoff
		if errors.Is(err, errWalk) {
			l.mu.Lock()
			l.first = (l.first + 1) % len(l.servers)
			l.mu.Unlock()
			wait = 0
		}
		if err == nil { // the connection was up: start over
			backoff, wait = 100*time.Millisecond, 0
		} else {
			backoff = min(backoff*2, l.reconnectMax)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session makes one connection and serves it until it ends. It returns nil when a connection
// was up and then lost, else why none was made.
func (l *link) session(ctx context.Context, firstDone func()) error {
	c, lost, broker, err := l.dial(ctx)
	if err != nil {
		l.mu.Lock()
		l.why = err
		l.mu.Unlock()
		if ctx.Err() == nil {
			l.st.connectErrors.Incr()
			l.note("fail "+err.Error(), slog.LevelError, "cannot connect to the MQTT brokers; metrics stay buffered",
				"servers", l.servers, "error", err)
		}
		return err
	}
	if err := l.sess.up(c); err != nil {
		c.Disconnect(0)
		l.mu.Lock()
		l.why = err
		l.mu.Unlock()
		l.st.connectErrors.Incr()
		l.note("fail "+err.Error(), slog.LevelError, "connection to the MQTT broker failed at the start; metrics stay buffered",
			"broker", broker, "error", err)
		l.sess.down()
		return err
	}
	l.st.connects.Incr()
	l.note("up "+broker, slog.LevelInfo, "connected to the MQTT broker", "broker", broker)
	l.mu.Lock()
	l.c, l.lost, l.why = c, lost, nil
	l.mu.Unlock()
	firstDone()
	var tick <-chan time.Time
	if d := l.sess.tick(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	var end error
	for end == nil {
		select {
		case <-ctx.Done():
			l.drop(nil)
			l.sess.goodbye(c)
			c.Disconnect(uint(l.timeout / time.Millisecond))
			l.sess.down()
			return nil
		case <-lost:
			end = errors.New("connection lost")
		case <-l.sess.wake():
			end = l.sess.work(c)
		case <-tick:
			end = l.sess.work(c)
		}
	}
	select {
	case <-lost:
		l.mu.Lock()
		why := l.why
		l.mu.Unlock()
		l.st.connectionsLost.Incr()
		l.note("lost", slog.LevelWarn, "connection to the MQTT broker lost; metrics stay buffered until it is back",
			"broker", broker, "error", why)
		l.drop(why)
	default:
		l.drop(end)
		c.Disconnect(uint(l.timeout / time.Millisecond))
		l.note("left "+end.Error(), slog.LevelWarn, "left the MQTT broker", "broker", broker, "reason", end)
	}
	l.sess.down()
	if errors.Is(end, errWalk) {
		return end
	}
	return nil
}

// drop forgets the current client.
func (l *link) drop(why error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c, l.lost = nil, nil
	if why == nil {
		why = errors.New("disconnected")
	}
	l.why = why
}

// dial makes a paho client with the session's will and connects it to the first server that
// accepts (paho tries them in order).
func (l *link) dial(ctx context.Context) (paho.Client, chan struct{}, string, error) {
	opts := paho.NewClientOptions()
	l.mu.Lock()
	for i := range l.servers {
		opts.AddBroker(l.servers[(l.first+i)%len(l.servers)])
	}
	l.mu.Unlock()
	opts.SetClientID(l.clientID)
	opts.SetCleanSession(l.clean)
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetKeepAlive(l.keepAlive)
	opts.SetPingTimeout(l.timeout)
	opts.SetConnectTimeout(l.timeout)
	opts.SetWriteTimeout(l.timeout)
	opts.SetProtocolVersion(4) // 3.1.1, with no fallback to 3.1
	if l.username != "" {
		opts.SetUsername(l.username)
		opts.SetPassword(l.password.Reveal())
	}
	if l.tls != nil {
		opts.SetTLSConfig(l.tls)
	}
	if topic, payload, qos, retain := l.sess.will(); topic != "" {
		opts.SetBinaryWill(topic, payload, qos, retain)
	}
	var mu sync.Mutex
	var broker string
	opts.SetConnectionAttemptHandler(func(u *url.URL, t *tls.Config) *tls.Config {
		mu.Lock()
		broker = u.Host
		mu.Unlock()
		return t
	})
	lost := make(chan struct{})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		l.mu.Lock()
		l.why = err
		l.mu.Unlock()
		close(lost)
	})
	c := paho.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); c.Disconnect(0) }()
		return nil, nil, "", ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	if err := tok.Error(); err != nil {
		return nil, nil, broker, describeConnectError(err)
	}
	return c, lost, broker, nil
}

// describeConnectError says what a refusal means.
func describeConnectError(err error) error {
	for _, refusal := range []error{packets.ErrorRefusedBadUsernameOrPassword, packets.ErrorRefusedNotAuthorised,
		packets.ErrorRefusedIDRejected, packets.ErrorRefusedBadProtocolVersion, packets.ErrorRefusedServerUnavailable} {
		if errors.Is(err, refusal) {
			return fmt.Errorf("the broker refused the connection: %w", err)
		}
	}
	return err
}

// awaitAll waits until every token is done, the connection ends, ctx is done or timeout
// passed; done[i] says which tokens completed without error. It returns how many did and why
// the others did not.
func awaitAll(ctx context.Context, toks []paho.Token, lost <-chan struct{}, timeout time.Duration, done []bool) (int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	n := 0
	var stop, first error
	for i, tok := range toks {
		if stop == nil {
			select {
			case <-tok.Done():
			case <-lost:
				stop = errors.New("connection lost before the broker acknowledged")
			case <-ctx.Done():
				stop = ctx.Err()
			case <-timer.C:
				stop = fmt.Errorf("no acknowledgement from the broker within %s", timeout)
			}
		}
		if !isDone(tok) { // after stop: only collect what completed
			continue
		}
		if err := tok.Error(); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		done[i] = true
		n++
	}
	if n < len(toks) && stop != nil {
		return n, stop
	}
	return n, first
}

func isDone(t paho.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}
