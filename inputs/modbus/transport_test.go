package modbus

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

// Each transport reads the whole typed layout from pymodbus and needs the same five requests.
func testTransport(t *testing.T, mode, scheme string, peerArgs []string, extra string) {
	t.Helper()
	layout := typedLayout(t)
	p := startPymodbus(t, append([]string{"--typed"}, peerArgs...)...)
	m := load(t, typedConfig(scheme+p.addr, mode, extra, layout))
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, ms, layout)
	if got := m.st.requests.Get(); got != 5 {
		t.Errorf("requests: got %d, want 5", got)
	}
}

func TestTransportRTUOverTCP(t *testing.T) {
	testTransport(t, "rtuovertcp", "tcp://", []string{"--transport", "rtu-over-tcp"}, "")
}

// pymodbus 3.0's TCP server runs its ASCII framer on a socket as well.
func TestTransportASCIIOverTCP(t *testing.T) {
	testTransport(t, "asciiovertcp", "tcp://", []string{"--transport", "ascii-over-tcp"}, "")
}

// TestTransportTLS: Modbus/TCP Security against pymodbus requiring client certificates.
func TestTransportTLS(t *testing.T) {
	pk := tlstest.New(t)
	tlsKeys := func(ca, cert, key, name string) string {
		s := fmt.Sprintf("  tls_ca = %q\n", ca)
		if cert != "" {
			s += fmt.Sprintf("  tls_cert = %q\n  tls_key = %q\n", cert, key)
		}
		if name != "" {
			s += fmt.Sprintf("  tls_server_name = %q\n", name)
		}
		return s
	}
	peerArgs := []string{"--transport", "tls", "--cert", pk.ServerCert, "--key", pk.ServerKey, "--client-ca", pk.CA}
	t.Run("mutual authentication", func(t *testing.T) {
		testTransport(t, "auto", "tls://", peerArgs, tlsKeys(pk.CA, pk.ClientCert, pk.ClientKey, ""))
	})
	t.Run("server name", func(t *testing.T) {
		testTransport(t, "auto", "tls://", peerArgs, tlsKeys(pk.CA, pk.ClientCert, pk.ClientKey, tlstest.ServerName))
	})

	p := startPymodbus(t, peerArgs...)
	layout := typedLayout(t)
	for _, c := range []struct {
		name, extra, want string
	}{
		{"no client certificate", tlsKeys(pk.CA, "", "", ""), "does it accept the client certificate?"},
		{"client certificate of another CA", tlsKeys(pk.CA, pk.OtherClientCert, pk.OtherClientKey, ""), "does it accept the client certificate?"},
		{"wrong server name", tlsKeys(pk.CA, pk.ClientCert, pk.ClientKey, "other.plant.test"), "certificate is valid for " + tlstest.ServerName + ", not other.plant.test"},
		{"server of an unknown CA", tlsKeys(pk.OtherCA, pk.ClientCert, pk.ClientKey, ""), "certificate signed by unknown authority"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := load(t, typedConfig("tls://"+p.addr, "auto", c.extra+"  retries = 0\n", layout))
			ms, err := gather(t, m)
			if err == nil || len(ms) != 0 {
				t.Fatalf("want an error and no metrics, got %v and %d metrics", err, len(ms))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// TestTLSMinimumVersion: a server that offers only TLS 1.1 is refused (Modbus/TCP Security
// requires 1.2). The server is Go's, limited to TLS 1.1; pymodbus cannot be limited that way.
func TestTLSMinimumVersion(t *testing.T) {
	pk := tlstest.New(t)
	cert, err := tls.LoadX509KeyPair(pk.ServerCert, pk.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  tls_ca = %q
  retries = 0
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "x"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "old-tls"
    controller = "tls://%s"
    profile = "p"
`, pk.CA, l.Addr()))
	_, err = gather(t, m)
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("want a protocol version error, got %v", err)
	}
}

// socatPair starts socat with a pty pair standing in for a serial cable and returns both ends.
func socatPair(t *testing.T) (server, client string) {
	t.Helper()
	bin := testpeer.LookPath(t, "socat", "apt-get install socat")
	dir := t.TempDir()
	server, client = filepath.Join(dir, "ttyServer"), filepath.Join(dir, "ttyClient")
	cmd := exec.Command(bin, "pty,raw,echo=0,link="+server, "pty,raw,echo=0,link="+client)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, e1 := os.Stat(server)
		_, e2 := os.Stat(client)
		if e1 == nil && e2 == nil {
			return server, client
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no pty pair: %v %v", e1, e2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTransportSerialRTU(t *testing.T) {
	server, client := socatPair(t)
	layout := typedLayout(t)
	startPymodbus(t, "--typed", "--transport", "serial", "--device", server)
	m := load(t, typedConfig("file://"+client, "auto", "  parity = \"N\"\n", layout))
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, ms, layout)
	if got := m.st.requests.Get(); got != 5 {
		t.Errorf("requests: got %d, want 5", got)
	}
}

func TestTransportSerialASCII(t *testing.T) {
	server, client := socatPair(t)
	layout := typedLayout(t)
	startPymodbus(t, "--typed", "--transport", "serial", "--framer", "ascii", "--device", server)
	m := load(t, typedConfig("file://"+client, "ascii", "  parity = \"N\"\n  data_bits = 8\n", layout))
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, ms, layout)
}

// TestIPv6Loopback: a controller on ::1.
func TestIPv6Loopback(t *testing.T) {
	p := startPymodbus(t, "--host", "::1")
	if !strings.HasPrefix(p.addr, "[::1]:") {
		t.Fatalf("peer on %s", p.addr)
	}
	m := load(t, simpleConfig("tcp://"+p.addr, "tcp", "", 1))
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	checkSimple(t, ms, "unit-1")
}

// TestRS485OnPty: a pty has no RS-485 mode; the failure names the device and what was asked.
func TestRS485OnPty(t *testing.T) {
	_, client := socatPair(t)
	m := load(t, simpleConfig("file://"+client, "auto", "  retries = 0\n  [inputs.modbus.rs485]\n    rts_high_during_send = true\n", 1))
	_, err := gather(t, m)
	if err == nil || !strings.Contains(err.Error(), `device "unit-1" (file://`+client) || !strings.Contains(err.Error(), "RS485") {
		t.Fatalf("want an RS-485 error naming the device, got %v", err)
	}
	t.Log(err)
}
