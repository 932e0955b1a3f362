package devicepage_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
)

// TestPageTLS: with http_tls_cert and http_tls_key the endpoint speaks HTTPS only (TLS 1.2 or
// later); a certificate that cannot be read stops the start with the keys named.
func TestPageTLS(t *testing.T) {
	files := tlstest.New(t)
	p := newPlant(t, 500*time.Millisecond, "")
	p.device("meter-1", p.listen(p.server(modbussim.Config{})), 1, "")
	addr := p.run(agent.HTTPOptions{TLSCert: files.ServerCert, TLSKey: files.ServerKey})

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: files.ClientConfig(t)}}
	for _, path := range []string{"/healthz", "/", "/api/devices"} {
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Errorf("%s: %d over %v", path, resp.StatusCode, resp.TLS)
		}
	}
	resp, err := http.Get("http://" + addr + "/")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP served the page: %s", b)
		}
	}
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: files.ClientConfig(t).RootCAs, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get("https://" + addr + "/healthz"); err == nil {
		t.Error("TLS 1.1 was accepted")
	}

	_, err = agent.Listen(agent.HTTPOptions{Listen: "127.0.0.1:0", TLSCert: files.ServerCert, TLSKey: files.ServerCert}, nil)
	if err == nil || !strings.Contains(err.Error(), "http_tls_cert, http_tls_key") {
		t.Errorf("a key file that holds a certificate: %v", err)
	}
}
