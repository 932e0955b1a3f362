package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The client certificate: made when neither file exists, reused after, given files loaded
// (PKCS#1 or PKCS#8), and clear errors for half a pair or a key of another certificate.
func TestClientCertificate(t *testing.T) {
	dir := t.TempDir()
	o := &OPCUA{StateDirectory: filepath.Join(dir, "state"), ApplicationURI: "urn:test:client"}
	c1, made, err := o.loadClientCert()
	if err != nil || !made {
		t.Fatalf("first start: made %v, %v", made, err)
	}
	cert, err := x509.ParseCertificate(c1.der)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:test:client" || cert.NotAfter.Before(time.Now().AddDate(4, 0, 0)) {
		t.Fatalf("made certificate: URIs %v, until %v", cert.URIs, cert.NotAfter)
	}
	c2, made, err := o.loadClientCert()
	if err != nil || made || string(c2.der) != string(c1.der) || !c2.key.Equal(c1.key) {
		t.Fatalf("second start: made %v, same %v, %v", made, string(c2.der) == string(c1.der), err)
	}

	// files of the operator's, the key in PKCS#8
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mine"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, filepath.Join(dir, "mine.pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, "mine.key"), "PRIVATE KEY", p8)
	o = &OPCUA{Certificate: filepath.Join(dir, "mine.pem"), PrivateKey: filepath.Join(dir, "mine.key")}
	c3, made, err := o.loadClientCert()
	if err != nil || made || string(c3.der) != string(der) {
		t.Fatalf("given files: made %v, %v", made, err)
	}
	// a key of another certificate
	o.PrivateKey = filepath.Join(dir, "state", "key.pem")
	if _, _, err := o.loadClientCert(); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("mismatched key: %v", err)
	}
	// half a pair is never completed by a new key: that would replace an identity
	o.PrivateKey = filepath.Join(dir, "missing.key")
	if _, _, err := o.loadClientCert(); err == nil || !strings.Contains(err.Error(), "does not") {
		t.Fatalf("certificate without key: %v", err)
	}
}

// The server certificate against a pin (sha256 or the sha1 thumbprint) and a trust folder
// holding the certificate itself or the CA that signed it.
func TestVerifyServer(t *testing.T) {
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plant CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "plc1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	srvDER, _ := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	other, _ := x509.CreateCertificate(rand.Reader, srvTmpl, srvTmpl, &srvKey.PublicKey, srvKey) // self-signed look-alike

	s1 := sha1.Sum(srvDER)
	for _, c := range []struct {
		name string
		o    *OPCUA
		der  []byte
		ok   bool
	}{
		{"sha256 pin", &OPCUA{ServerFingerprint: certFingerprint(srvDER)}, srvDER, true},
		{"sha1 thumbprint with colons", &OPCUA{ServerFingerprint: "SHA1:" + colons(hex.EncodeToString(s1[:]))}, srvDER, true},
		{"pin of another", &OPCUA{ServerFingerprint: certFingerprint(other)}, srvDER, false},
		{"skip", &OPCUA{InsecureSkipVerify: true}, other, true},
	} {
		c.o.SecurityPolicy, c.o.AuthMethod = "Basic256Sha256", "Anonymous"
		if err := c.o.verifyServer(c.der); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	dir := t.TempDir()
	o := &OPCUA{SecurityPolicy: "Basic256Sha256", AuthMethod: "Anonymous", TrustedCertificates: dir}
	err := o.verifyServer(srvDER)
	if err == nil || !strings.Contains(err.Error(), certFingerprint(srvDER)) || !strings.Contains(err.Error(), "CN=plc1") {
		t.Fatalf("empty folder: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a certificate"), 0o644)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	if err := o.verifyServer(srvDER); err != nil {
		t.Fatalf("signed by a trusted CA: %v", err)
	}
	if err := o.verifyServer(other); err == nil {
		t.Fatal("a self-signed look-alike passed")
	}
	os.WriteFile(filepath.Join(dir, "plc1.der"), other, 0o644) // trusted as it is
	if err := o.verifyServer(other); err != nil {
		t.Fatalf("a certificate in the folder: %v", err)
	}
	o.TrustedCertificates = filepath.Join(dir, "missing")
	if err := o.verifyServer(srvDER); err == nil || !strings.Contains(err.Error(), "trusted_certificates") {
		t.Fatalf("missing folder: %v", err)
	}
}

func colons(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
