package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
)

// handshake dials a TLS server that demands a client certificate, with the client config c, and
// returns the client's error or else the server's: with TLS 1.3 the client's handshake ends
// before the server has checked the client's certificate, so the server's own handshake says
// whether it accepted it.
func handshake(t *testing.T, f *tlstest.Files, c *tls.Config) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", f.ServerConfig(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	server := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			server <- err
			return
		}
		defer conn.Close()
		server <- conn.(*tls.Conn).Handshake()
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), c)
	if err != nil {
		return err
	}
	defer conn.Close()
	select {
	case err := <-server:
		return err
	case <-time.After(time.Minute):
		t.Fatal("the server's handshake did not end")
		return nil
	}
}

func TestClientCertificateHandshake(t *testing.T) {
	f := tlstest.New(t)
	good := tlsconfig.Client{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}
	cfg, err := good.Config()
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, f, cfg); err != nil {
		t.Fatalf("CA + client certificate: %v", err)
	}

	noCert := tlsconfig.Client{CA: f.CA}
	cfg, _ = noCert.Config()
	if err := handshake(t, f, cfg); err == nil {
		t.Fatal("server demanding a client certificate accepted a client without one")
	}

	wrongCA := tlsconfig.Client{CA: f.OtherCA, Cert: f.ClientCert, Key: f.ClientKey}
	cfg, _ = wrongCA.Config()
	if err := handshake(t, f, cfg); err == nil {
		t.Fatal("client trusted a server certificate from an authority it was not given")
	}

	byName := tlsconfig.Client{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey, ServerName: tlstest.ServerName}
	cfg, _ = byName.Config()
	if err := handshake(t, f, cfg); err != nil {
		t.Fatalf("tls_server_name %s: %v", tlstest.ServerName, err)
	}
	badName := tlsconfig.Client{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey, ServerName: "other.test"}
	cfg, _ = badName.Config()
	if err := handshake(t, f, cfg); err == nil {
		t.Fatal("tls_server_name other.test matched a certificate without that name")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	f := tlstest.New(t)
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		c   tlsconfig.Client
		key string
	}{
		{tlsconfig.Client{CA: "/nonexistent/ca.pem"}, "tls_ca"},
		{tlsconfig.Client{CA: notPEM}, "tls_ca"},
		{tlsconfig.Client{Cert: f.ClientCert}, "tls_cert"},
		{tlsconfig.Client{Key: f.ClientKey}, "tls_key"},
		{tlsconfig.Client{Cert: f.ClientCert, Key: f.ServerKey}, "tls_cert"}, // key of another cert
	} {
		_, err := tc.c.Config()
		var e *tlsconfig.Error
		if !errors.As(err, &e) || e.Key != tc.key {
			t.Errorf("%+v: error %v, want one naming %s", tc.c, err, tc.key)
		}
	}
	if (&tlsconfig.Client{}).Set() || !(&tlsconfig.Client{ServerName: "x"}).Set() {
		t.Error("Set is wrong")
	}
}
