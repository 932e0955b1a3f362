package modbus

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/tagpipe/tagpipe/config"
)

// tlsConfig builds the client side of Modbus/TCP Security: TLS 1.2 or later, the device's CA,
// a client certificate for mutual authentication, an optional server name to check. Files are
// read here, in Init, so that an unreadable one fails at start with its key.
func (m *Modbus) tlsConfig() (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         m.TLSServerName,
		InsecureSkipVerify: m.InsecureSkipVerify,
	}
	if m.TLSCA != "" {
		pem, err := os.ReadFile(m.TLSCA)
		if err != nil {
			return nil, config.KeyErrorf("tls_ca", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, config.KeyErrorf("tls_ca", "%s holds no PEM certificate", m.TLSCA)
		}
		conf.RootCAs = pool
	}
	switch {
	case m.TLSCert != "" && m.TLSKey != "":
		certPEM, err := os.ReadFile(m.TLSCert)
		if err != nil {
			return nil, config.KeyErrorf("tls_cert", "%v", err)
		}
		keyPEM, err := os.ReadFile(m.TLSKey)
		if err != nil {
			return nil, config.KeyErrorf("tls_key", "%v", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, config.KeyErrorf("tls_key", "%s with %s: %v", m.TLSKey, m.TLSCert, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case m.TLSCert != "":
		return nil, config.KeyErrorf("tls_cert", "needs tls_key: the client certificate's private key")
	case m.TLSKey != "":
		return nil, config.KeyErrorf("tls_key", "needs tls_cert: the client certificate")
	}
	return conf, nil
}
