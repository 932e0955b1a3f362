// Package tlstest makes a throwaway certificate authority with a server and a client certificate
// for tests of TLS clients against real peers on loopback.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ServerName is a DNS name in the server certificate besides 127.0.0.1 and ::1, for tests of
// tls_server_name.
const ServerName = "peer.tagpipe.test"

// Files are PEM files in a test's temporary folder.
type Files struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	// OtherCA is a second authority: trusting only it must fail. It signed OtherClientCert, a
	// client certificate a server trusting CA must refuse.
	OtherCA, OtherClientCert, OtherClientKey string

	caPool *x509.CertPool
}

// New writes a CA, a server certificate for 127.0.0.1, ::1 and ServerName, and a client
// certificate (CN "tagpipe"), all signed by the CA.
func New(t testing.TB) *Files {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert := newCA(t, "tagpipe test CA")
	otherKey, otherCert := newCA(t, "unrelated CA")
	f := &Files{
		CA: filepath.Join(dir, "ca.pem"), OtherCA: filepath.Join(dir, "other-ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
		OtherClientCert: filepath.Join(dir, "other-client.pem"), OtherClientKey: filepath.Join(dir, "other-client-key.pem"),
		caPool: x509.NewCertPool(),
	}
	f.caPool.AddCert(caCert)
	writePEM(t, f.CA, "CERTIFICATE", caCert.Raw)
	writePEM(t, f.OtherCA, "CERTIFICATE", otherCert.Raw)
	leafOf(t, caCert, caKey, "127.0.0.1", x509.ExtKeyUsageServerAuth, f.ServerCert, f.ServerKey,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{ServerName})
	leafOf(t, caCert, caKey, "tagpipe", x509.ExtKeyUsageClientAuth, f.ClientCert, f.ClientKey, nil, nil)
	leafOf(t, otherCert, otherKey, "intruder", x509.ExtKeyUsageClientAuth, f.OtherClientCert, f.OtherClientKey, nil, nil)
	return f
}

// leafOf writes a certificate signed by ca and its key.
func leafOf(t testing.TB, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage,
	certPath, keyPath string, ips []net.IP, dns []string) {
	t.Helper()
	key, tmpl := newKey(t, cn)
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{usage}
	tmpl.IPAddresses, tmpl.DNSNames = ips, dns
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyPath, "PRIVATE KEY", kder)
}

// ServerConfig returns a server TLS config with the server certificate; with clientCerts the
// server demands a client certificate signed by the CA.
func (f *Files) ServerConfig(t testing.TB, clientCerts bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCerts {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = f.caPool
	}
	return cfg
}

// ClientConfig returns a client TLS config that trusts the CA and presents the client
// certificate (for test readers such as franz-go's kgo).
func (f *Files) ClientConfig(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: f.caPool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func newCA(t testing.TB, cn string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, tmpl := newKey(t, cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// newKey returns a P-256 key and a certificate template for cn, valid from an hour ago for a day.
func newKey(t testing.TB, cn string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return key, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
