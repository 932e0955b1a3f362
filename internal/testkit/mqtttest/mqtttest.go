// Package mqtttest starts the real MQTT peers that outputs.mqtt's tests (and tagpipe demo's)
// talk to: Debian's mosquitto as the broker, on a free loopback port with its own config, and a
// subscriber on Debian's python3-paho-mqtt; and it decodes Sparkplug B payloads with Eclipse
// Tahu's JavaScript decoder. None of these is tagpipe's code.
package mqtttest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
)

const install = "apt-get install mosquitto mosquitto-clients python3-paho-mqtt"

// Options shape a broker.
type Options struct {
	// TLS serves TLS only, with the test CA's server certificate; ClientCerts demands a client
	// certificate signed by that CA.
	TLS         *tlstest.Files
	ClientCerts bool
	// Users turns anonymous access off and allows these users (name → password).
	Users map[string]string
	// Persist keeps sessions and queued messages across a restart (SIGTERM saves them).
	Persist bool
}

// Broker is a mosquitto started for one test.
type Broker struct {
	Addr string // 127.0.0.1:port
	Port int

	t    testing.TB
	conf string
	proc *testpeer.Process
}

// StartBroker starts mosquitto on a free loopback port; it is stopped when the test ends.
func StartBroker(t testing.TB, o Options) *Broker {
	t.Helper()
	testpeer.LookPath(t, "mosquitto", install)
	dir := t.TempDir()
	b := &Broker{t: t, conf: filepath.Join(dir, "mosquitto.conf")}
	b.Addr = tsdb.FreeAddr(t)
	_, port, _ := strings.Cut(b.Addr, ":")
	b.Port, _ = strconv.Atoi(port)
	var c strings.Builder
	// "user root": mosquitto started as root would otherwise become user mosquitto and lose
	// access to the test's folder (the setting is ignored when not run as root).
	fmt.Fprintf(&c, "user root\nper_listener_settings false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	fmt.Fprintf(&c, "max_queued_messages 1000000\nmax_inflight_messages 0\n")
	if o.Persist {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 0\n", dir)
	} else {
		c.WriteString("persistence false\n")
	}
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", b.Port)
	if o.TLS != nil {
		fmt.Fprintf(&c, "cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n", o.TLS.CA, o.TLS.ServerCert, o.TLS.ServerKey)
		if o.ClientCerts {
			c.WriteString("require_certificate true\n")
		}
	}
	if len(o.Users) > 0 {
		pw := filepath.Join(dir, "passwords")
		for user, pass := range o.Users {
			args := []string{"-b", pw, user, pass}
			if _, err := os.Stat(pw); err != nil {
				args = append([]string{"-c"}, args...)
			}
			if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
				testpeer.Missing(t, "mosquitto_passwd", install, fmt.Errorf("%v: %s", err, out))
			}
		}
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if err := os.WriteFile(b.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Start()
	return b
}

// Start (re)starts the broker on its port, with its config, and waits until it accepts
// connections.
func (b *Broker) Start() {
	b.t.Helper()
	for attempt := 1; ; attempt++ {
		b.proc = testpeer.Start(b.t, testpeer.Options{}, "/bin/sh", "-c", `echo READY; exec mosquitto -c "$0"`, b.conf)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err := dialOnce(b.Addr); err == nil {
				c()
				return
			}
			select {
			case <-b.proc.Done():
			default:
				if time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
					continue
				}
			}
			break
		}
		log := b.proc.Log()
		if !strings.Contains(log, "Address already in use") || attempt == 40 {
			b.t.Fatalf("mosquitto did not start:\n%s", log)
		}
		b.proc.Stop()
		time.Sleep(250 * time.Millisecond) // the port is still taken (TIME_WAIT, another test)
	}
}

// Stop ends the broker with SIGTERM (it saves its sessions with Persist); Kill with SIGKILL.
func (b *Broker) Stop() { b.proc.Stop() }
func (b *Broker) Kill() { b.proc.Kill() }

// PID is the broker's process id (for its CPU time).
func (b *Broker) PID() int { return b.proc.Cmd.Process.Pid }

// Log is what the broker logged.
func (b *Broker) Log() string { return b.proc.Log() }

// Message is one message a subscriber received.
type Message struct {
	Topic   string
	QoS     int
	Retain  bool
	Payload []byte
}

// SubOptions shape a subscriber.
type SubOptions struct {
	Topics     []string // default "#"
	QoS        int
	ClientID   string
	Persistent bool // keep the session: messages published while it reconnects wait for it
	TLS        *tlstest.Files
	Username   string
	Password   string
}

// Subscriber is a python3-paho-mqtt client collecting what it receives.
type Subscriber struct {
	t    testing.TB
	out  string
	proc *testpeer.Process

	mu   sync.Mutex
	read int64
	msgs []Message
}

// Subscribe starts a subscriber on b and waits until its subscriptions are acknowledged.
func Subscribe(t testing.TB, b *Broker, o SubOptions) *Subscriber {
	t.Helper()
	if _, err := os.Stat(testpeer.Python); err != nil {
		testpeer.Missing(t, "python3-paho-mqtt", install, err)
	}
	if err := exec.Command(testpeer.Python, "-c", "import paho.mqtt.client").Run(); err != nil {
		testpeer.Missing(t, "python3-paho-mqtt", install, err)
	}
	s := &Subscriber{t: t, out: filepath.Join(t.TempDir(), "messages")}
	if len(o.Topics) == 0 {
		o.Topics = []string{"#"}
	}
	args := []string{filepath.Join(testpeer.Root(t), "outputs", "mqtt", "testdata", "mqttc.py"),
		"--port", strconv.Itoa(b.Port), "--qos", strconv.Itoa(o.QoS), "--out", s.out}
	for _, tp := range o.Topics {
		args = append(args, "--topic", tp)
	}
	if o.ClientID != "" {
		args = append(args, "--client-id", o.ClientID)
	}
	if o.Persistent {
		args = append(args, "--persistent")
	}
	if o.TLS != nil {
		args = append(args, "--cafile", o.TLS.CA, "--cert", o.TLS.ClientCert, "--key", o.TLS.ClientKey)
	}
	if o.Username != "" {
		args = append(args, "--username", o.Username, "--password", o.Password)
	}
	s.proc = testpeer.Start(t, testpeer.Options{Timeout: 15 * time.Second}, testpeer.Python, args...)
	return s
}

// Messages returns every message received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.out)
	if err != nil {
		return append([]Message(nil), s.msgs...)
	}
	defer f.Close()
	if _, err := f.Seek(s.read, 0); err != nil {
		s.t.Fatal(err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil { // an incomplete last line is read next time
			break
		}
		s.read += int64(len(line))
		fields := strings.Fields(string(line))
		if len(fields) < 4 || fields[0] != "MSG" {
			s.t.Fatalf("subscriber wrote %q", line)
		}
		topic, err1 := hex.DecodeString(fields[1])
		var payload []byte
		var err2 error
		if len(fields) > 4 {
			payload, err2 = hex.DecodeString(fields[4])
		}
		if err1 != nil || err2 != nil {
			s.t.Fatalf("subscriber wrote %q", line)
		}
		qos, _ := strconv.Atoi(fields[2])
		s.msgs = append(s.msgs, Message{Topic: string(topic), QoS: qos, Retain: fields[3] == "1", Payload: payload})
	}
	return append([]Message(nil), s.msgs...)
}

// WaitFor polls Messages until done says so, or fails the test after timeout saying what.
func (s *Subscriber) WaitFor(what string, timeout time.Duration, done func([]Message) bool) []Message {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms := s.Messages()
		if done(ms) {
			return ms
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not after %s (%d messages received)", what, timeout, len(ms))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the subscriber.
func (s *Subscriber) Stop() { s.proc.Stop() }

// Publish publishes payload with Debian's mosquitto_pub.
func Publish(t testing.TB, b *Broker, topic string, qos int, retain bool, payload []byte) {
	t.Helper()
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-t", topic, "-q", strconv.Itoa(qos), "-s"}
	if retain {
		args = append(args, "-r")
	}
	cmd := exec.Command("mosquitto_pub", args...)
	cmd.Stdin = bytes.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath("mosquitto_pub"); lerr != nil {
			testpeer.Missing(t, "mosquitto_pub", install, lerr)
		}
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}

func dialOnce(addr string) (func(), error) {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return func() { c.Close() }, nil
}
