package influxdb

import (
	"crypto/tls"
	"net/url"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
)

// HTTPOptions are the transport keys outputs.influxdb and outputs.influxdb_v2 share.
type HTTPOptions struct {
	// URLs are tried in order; a URL that fails is skipped until its backoff (or Retry-After)
	// passes, and the next one is written to. They should be one cluster (or a relay): a batch
	// goes to one of them.
	URLs    []string        `toml:"urls"`
	Timeout config.Duration `toml:"timeout"`
	// ContentEncoding is "gzip" or "identity".
	ContentEncoding string            `toml:"content_encoding"`
	HTTPHeaders     map[string]string `toml:"http_headers"`
	// Precision of the timestamps written: 0 (ns), 1us, 1ms or 1s.
	Precision config.Duration `toml:"precision"`
	// UintSupport writes unsigned fields as such (123u); without it they are written as
	// integers, clamped at 2^63-1 (InfluxDB 1.x has no unsigned type).
	UintSupport bool `toml:"influx_uint_support"`
	tlsconfig.Client

	tls *tls.Config // from the TLS keys, by check
	w   *writer     // a pointer: printing a plugin shows no header with credentials
}

// precisions maps the precision key's values to the v1 and v2 query parameters.
var precisions = map[time.Duration][2]string{
	0: {"ns", "ns"}, time.Nanosecond: {"ns", "ns"}, time.Microsecond: {"u", "us"},
	time.Millisecond: {"ms", "ms"}, time.Second: {"s", "s"},
}

// check validates the options, reads the TLS files and makes the writer.
func (h *HTTPOptions) check() error {
	if h.w == nil {
		h.w = &writer{}
	}
	cfg, err := h.checkKeys()
	h.tls = cfg
	return err
}

// checkKeys validates the options and returns the TLS config (nil without https URLs).
func (h *HTTPOptions) checkKeys() (*tls.Config, error) {
	if len(h.URLs) == 0 {
		return nil, config.KeyErrorf("urls", "give at least one URL, e.g. \"http://127.0.0.1:8086\"")
	}
	https := false
	for _, raw := range h.URLs {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, config.KeyErrorf("urls", "%q: %v", raw, err)
		}
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			return nil, config.KeyErrorf("urls", "%q: the scheme must be http or https", raw)
		case u.Host == "":
			return nil, config.KeyErrorf("urls", "%q: no host", raw)
		case u.RawQuery != "" || u.Fragment != "":
			return nil, config.KeyErrorf("urls", "%q: no query or fragment; the output adds the query", raw)
		}
		https = https || u.Scheme == "https"
	}
	if h.Timeout <= 0 {
		return nil, config.KeyErrorf("timeout", "must be more than 0")
	}
	switch h.ContentEncoding {
	case "", "identity", "gzip":
	default:
		return nil, config.KeyErrorf("content_encoding", "%q: must be \"gzip\" or \"identity\"", h.ContentEncoding)
	}
	if _, ok := precisions[h.Precision.D()]; !ok {
		return nil, config.KeyErrorf("precision", "%s: must be \"1ns\", \"1us\", \"1ms\" or \"1s\"", h.Precision)
	}
	if !https && !h.Client.Set() {
		return nil, nil
	}
	cfg, err := h.Client.Config()
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// transport returns the writer's options for these HTTP options.
func (h *HTTPOptions) transport(name, path, auth string) transportOptions {
	return transportOptions{
		name: name, urls: h.URLs, path: path, timeout: h.Timeout.D(),
		gzip: h.ContentEncoding == "gzip", headers: h.HTTPHeaders, auth: auth, tls: h.tls,
		precision: h.Precision.D(), uints: h.UintSupport,
	}
}
