// Package tlsconfig turns the TLS keys of a plugin's TOML table (tls_ca, tls_cert, tls_key,
// tls_server_name, insecure_skip_verify) into a *tls.Config for a client. The outputs that speak
// TLS (influxdb, influxdb_v2, kafka) embed Client in their config struct, so the keys are spelled
// and checked the same way everywhere.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/tagpipe/tagpipe/internal/confval"
)

// Client holds a client's TLS options. Embed it in a plugin's config struct.
type Client struct {
	// CA is a PEM file of the certificate authorities to trust instead of the system's.
	CA string `toml:"tls_ca"`
	// Cert and Key are the PEM files of the client certificate and its key (mutual TLS).
	Cert string `toml:"tls_cert"`
	Key  string `toml:"tls_key"`
	// ServerName is the name to verify the server's certificate against (and send as SNI), when
	// it differs from the host the client dials.
	ServerName string `toml:"tls_server_name"`
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
}

// Error is a TLS option that cannot be used; Key names it (e.g. "tls_cert"). Its ConfigKey
// method lets the config loader report its FILE:LINE.
type Error = confval.KeyError

// Set reports whether any TLS option is given.
func (c *Client) Set() bool {
	return c.CA != "" || c.Cert != "" || c.Key != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// Config returns a TLS 1.2+ client config with the files read and checked. It returns an *Error
// naming the option at fault. The files are read now: a missing file fails at start, not at the
// first connection.
func (c *Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // the operator asked for it
	}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, &Error{Key: "tls_ca", Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &Error{Key: "tls_ca", Err: fmt.Errorf("%s: no PEM certificate in it", c.CA)}
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.Cert != "" && c.Key != "":
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, &Error{Key: "tls_cert", Err: err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.Cert != "":
		return nil, &Error{Key: "tls_cert", Err: errors.New("give its key in tls_key too")}
	case c.Key != "":
		return nil, &Error{Key: "tls_key", Err: errors.New("give its certificate in tls_cert too")}
	}
	return cfg, nil
}
