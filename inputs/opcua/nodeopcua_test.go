package opcua

// Tests against node-opcua 2.182.2 (testdata/node-opcua): a server written by others. Every
// value checked here is one opcua_server.js was told to hold.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// logBuf captures an input's log lines.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines that contain every one of parts.
func (l *logBuf) lines(parts ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func captureLog(o *OPCUA) *logBuf {
	lb := &logBuf{}
	o.Log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})).With("source", o.Name, "endpoint", o.Endpoint)
	return lb
}

func gather(t testing.TB, o *OPCUA) (*testAcc, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acc := newAcc()
	err := o.Gather(ctx, acc)
	return acc, err
}

// fingerprint returns "sha256:..." of the first certificate in a PEM file.
func fingerprint(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	sum := sha256.Sum256(blk.Bytes)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// byField returns the metrics of measurement name by their (first) field key.
func byField(ms []*models.Metric, name string) map[string]*models.Metric {
	out := map[string]*models.Metric{}
	for _, m := range ms {
		if m.Name == name && len(m.Fields) > 0 {
			out[m.Fields[0].Key] = m
		}
	}
	return out
}

// Every security policy with Sign and SignAndEncrypt, and None; anonymous and user name; the
// server's certificate pinned by fingerprint; the client certificate made once in the state
// directory and reused by every later connection.
func TestNodeOPCUASecurity(t *testing.T) {
	p := startNodeOPCUA(t)
	fp := fingerprint(t, p.certFile())
	state := t.TempDir()
	var clientFP string
	type combo struct{ policy, mode string }
	combos := []combo{{"None", "None"}}
	for _, pol := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
		for _, mode := range []string{"Sign", "SignAndEncrypt"} {
			combos = append(combos, combo{pol, mode})
		}
	}
	for _, c := range combos {
		for _, user := range []string{"", "user1"} {
			name := c.policy + "/" + c.mode + "/anonymous"
			auth := `auth_method = "Anonymous"`
			if user != "" {
				name = c.policy + "/" + c.mode + "/" + user
				auth = `auth_method = "UserName"
  username = "user1"
  password = "password1"`
			}
			t.Run(name, func(t *testing.T) {
				o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "sec"
  endpoint = %q
  security_policy = %q
  security_mode = %q
  %s
  server_fingerprint = %q
  state_directory = %q
  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      id = "s=Status"
    [[inputs.opcua.group.node]]
      name = "int16"
      id = "i=1001"
    [[inputs.opcua.group.node]]
      id = "s=Sine"
`, p.endpoint, c.policy, c.mode, auth, fp, state))
				logs := captureLog(o)
				acc, err := gather(t, o)
				if err != nil {
					t.Fatalf("%v\n%s", err, logs)
				}
				got := byField(acc.all(), "opcua")
				if v := field(t, got["Status"], "Status"); v != "ok" {
					t.Fatalf("Status = %v, want ok", v)
				}
				if v := field(t, got["int16"], "int16"); v != int64(-7) {
					t.Fatalf("int16 = %v, want -7", v)
				}
				if v := field(t, got["Sine"], "Sine").(float64); v < -1 || v > 1 {
					t.Fatalf("Sine = %v, want within -1..1", v)
				}
				if tag(got["Status"], "source") != "sec" {
					t.Fatalf("tags %v", got["Status"].Tags)
				}
				line := logs.lines("msg=connected")
				if len(line) != 1 || !strings.Contains(line[0], "policy="+c.policy) || !strings.Contains(line[0], "mode="+c.mode) {
					t.Fatalf("connected line %q, want policy %s mode %s", line, c.policy, c.mode)
				}
				if c.policy == "None" {
					return
				}
				// The certificate was made once and is reused: the same one every time.
				got1 := fingerprint(t, filepath.Join(state, "cert.pem"))
				if clientFP == "" {
					clientFP = got1
				} else if got1 != clientFP {
					t.Fatalf("client certificate changed: %s, was %s", got1, clientFP)
				}
				if st, _ := os.Stat(filepath.Join(state, "key.pem")); st == nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("key.pem must exist with mode 0600: %v", st)
				}
			})
		}
	}
	if clientFP == "" {
		t.Fatal("no secured connection made a client certificate")
	}
	// node-opcua keeps the client certificates it trusted: ours is among them.
	b, _ := os.ReadFile(filepath.Join(state, "cert.pem"))
	found := false
	filepath.Walk(filepath.Join(p.pki, "trusted"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if fp2, e := certFileFingerprint(path); e == nil && fp2 == certFingerprintPEM(b) {
				found = true
			}
		}
		return nil
	})
	if !found {
		t.Fatal("the server did not see the client certificate from the state directory")
	}
}

// certFileFingerprint reads a PEM or DER certificate file and returns its fingerprint.
func certFileFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	certs, err := parseCerts(b)
	if err != nil || len(certs) == 0 {
		return "", fmt.Errorf("no certificate")
	}
	return certFingerprint(certs[0].Raw), nil
}

func certFingerprintPEM(b []byte) string {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	return certFingerprint(blk.Bytes)
}

// Subscriptions over each secured policy (SignAndEncrypt, user name): values arrive as the
// server changes them.
func TestNodeOPCUASubscribeSecure(t *testing.T) {
	p := startNodeOPCUA(t)
	fp := fingerprint(t, p.certFile())
	state := t.TempDir()
	for _, pol := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
		t.Run(pol, func(t *testing.T) {
			o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "sub"
  endpoint = %q
  mode = "subscribe"
  publishing_interval = "100ms"
  security_policy = %q
  security_mode = "SignAndEncrypt"
  auth_method = "UserName"
  username = "user1"
  password = "password1"
  server_fingerprint = %q
  state_directory = %q
  [[inputs.opcua.group]]
    namespace = 1
    sampling_interval = "50ms"
    [[inputs.opcua.group.node]]
      name = "fast"
      id = "s=FastCounter"
`, p.endpoint, pol, fp, state))
			acc := start(t, o)
			waitFor(t, 10*time.Second, "10 changes of FastCounter", func() bool { return len(acc.values("opcua", "fast")) >= 10 })
			vals := acc.values("opcua", "fast")
			for i := 1; i < len(vals); i++ {
				a, b := field(t, vals[i-1], "fast").(uint64), field(t, vals[i], "fast").(uint64)
				if b != a+1 {
					t.Fatalf("FastCounter went %d → %d: a change is missing or repeated\n%s", a, b, fmtMetrics(vals))
				}
			}
		})
	}
}

// A wrong password: one clear log line naming the endpoint, a counter, health says the session
// is down, the input keeps trying with backoff — and another input on the same server works.
// Also: many refused attempts do not use up the server's sessions.
func TestNodeOPCUAWrongPassword(t *testing.T) {
	p := startNodeOPCUA(t)
	fp := fingerprint(t, p.certFile())
	table := func(name, pass string) string {
		return statusTable(name, p.endpoint, `interval = "200ms"`, `reconnect_min = "50ms"`, `reconnect_max = "100ms"`,
			`auth_method = "UserName"`, `username = "user1"`, fmt.Sprintf("password = %q", pass), fmt.Sprintf("server_fingerprint = %q", fp))
	}
	bad := load(t, table("bad", "wrong"))
	logs := captureLog(bad)
	badAcc := start(t, bad)
	waitFor(t, 10*time.Second, "15 refused attempts", func() bool { return bad.stats.authErrors.Get() >= 15 })
	if n := len(logs.lines("level=ERROR", "cannot connect", "BadUserAccessDenied", "endpoint="+p.endpoint, `username \"user1\"`)); n != 1 {
		t.Fatalf("want one error line naming the endpoint and the refusal, got %d:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "wrong") {
		t.Fatalf("the password is in the log:\n%s", logs)
	}
	h := badAcc.lastHealth()
	if h == nil || field(t, h, "connected") != false || field(t, h, "session") == "connected" {
		t.Fatalf("health while refused: %v", h)
	}
	if len(badAcc.values("opcua", "Status")) != 0 {
		t.Fatal("values from a refused session")
	}

	good := load(t, table("good", "password1"))
	goodAcc := start(t, good)
	waitFor(t, 10*time.Second, "a value from the good input", func() bool { return len(goodAcc.values("opcua", "Status")) > 0 })
	if v := field(t, goodAcc.values("opcua", "Status")[0], "Status"); v != "ok" {
		t.Fatalf("Status = %v", v)
	}

	// Gather (--test) says it plainly too.
	once := load(t, table("once", "wrong"))
	_, err := gather(t, once)
	if err == nil || !strings.Contains(err.Error(), "BadUserAccessDenied") || !strings.Contains(err.Error(), p.endpoint) {
		t.Fatalf("Gather with a wrong password: %v", err)
	}
}

// An endpoint the server does not offer: the error lists what it offers.
func TestNodeOPCUANoMatchingEndpoint(t *testing.T) {
	p := startNodeOPCUA(t)
	o := load(t, statusTable("nomatch", p.endpoint, `security_policy = "Basic256"`, `security_mode = "Sign"`, "insecure_skip_verify = true"))
	_, err := gather(t, o)
	if err == nil {
		t.Fatal("connected to an endpoint the server does not offer")
	}
	for _, want := range []string{`security_policy = "Basic256"`, "the server offers", "None/None (", "Basic256Sha256/Sign (", "Aes256_Sha256_RsaPss/SignAndEncrypt (", "UserName", "Anonymous"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
}

// "auto" picks the strongest endpoint the server offers.
func TestNodeOPCUAAuto(t *testing.T) {
	p := startNodeOPCUA(t)
	o := load(t, statusTable("auto", p.endpoint, `security_policy = "auto"`, `security_mode = "auto"`,
		fmt.Sprintf("server_fingerprint = %q", fingerprint(t, p.certFile())), fmt.Sprintf("state_directory = %q", t.TempDir())))
	logs := captureLog(o)
	acc, err := gather(t, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(acc.values("opcua", "Status")) != 1 {
		t.Fatalf("metrics:\n%s", fmtMetrics(acc.all()))
	}
	if len(logs.lines("msg=connected", "mode=SignAndEncrypt")) != 1 {
		t.Fatalf("auto did not pick SignAndEncrypt:\n%s", logs)
	}
}

// The server's certificate is checked: a pin that does not match and an empty trust folder
// refuse it (with the fingerprint to pin in the message and a counter); the certificate put in
// the folder is trusted at the next attempt, without a restart.
func TestNodeOPCUAServerTrust(t *testing.T) {
	p := startNodeOPCUA(t)
	table := func(trust string) string {
		return statusTable("trust", p.endpoint, `mode = "subscribe"`, `interval = "200ms"`, `reconnect_min = "50ms"`,
			`reconnect_max = "200ms"`, `security_policy = "Basic256Sha256"`, `security_mode = "Sign"`, trust,
			fmt.Sprintf("state_directory = %q", t.TempDir()))
	}
	want := fingerprint(t, p.certFile())

	pinned := load(t, table(`server_fingerprint = "sha256:`+strings.Repeat("ab", 32)+`"`))
	_, err := gather(t, pinned)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("a wrong pin: %v", err)
	}
	if pinned.stats.certificateErrors.Get() != 1 {
		t.Fatalf("certificate_errors = %d", pinned.stats.certificateErrors.Get())
	}

	dir := t.TempDir()
	o := load(t, table(fmt.Sprintf("trusted_certificates = %q", dir)))
	logs := captureLog(o)
	acc := start(t, o)
	waitFor(t, 10*time.Second, "a refused server certificate", func() bool { return o.stats.certificateErrors.Get() >= 2 })
	if n := len(logs.lines("level=ERROR", "not trusted", want, "endpoint="+p.endpoint)); n != 1 {
		t.Fatalf("want one error line with the fingerprint to trust, got %d:\n%s", n, logs)
	}
	if len(acc.values("opcua", "Status")) != 0 {
		t.Fatal("values from an untrusted server")
	}
	b, err := os.ReadFile(p.certFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a value once the certificate is trusted", func() bool { return len(acc.values("opcua", "Status")) > 0 })

	// insecure_skip_verify: connects to any certificate, and says so once
	skip := load(t, table("insecure_skip_verify = true"))
	skipLogs := captureLog(skip)
	skipAcc := start(t, skip)
	waitFor(t, 10*time.Second, "a value without verification", func() bool { return len(skipAcc.values("opcua", "Status")) > 0 })
	if n := len(skipLogs.lines("level=WARN", "insecure_skip_verify = true", want)); n != 1 {
		t.Fatalf("%d warnings about the unchecked certificate, want 1:\n%s", n, skipLogs)
	}
}

// A server that refuses the client's certificate: a clear line saying so, naming the
// certificate to trust, and a counter.
func TestNodeOPCUAClientCertRejected(t *testing.T) {
	p := startNodeOPCUA(t, "--reject-unknown-certs")
	o := load(t, statusTable("rejected", p.endpoint, `security_policy = "Basic256Sha256"`, `security_mode = "SignAndEncrypt"`,
		fmt.Sprintf("server_fingerprint = %q", fingerprint(t, p.certFile())), fmt.Sprintf("state_directory = %q", t.TempDir())))
	o.ConnectTimeout = 2e9
	acc := newAcc()
	s := newSession(o, acc, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if wait, ok := s.attempt(ctx); ok || wait <= 0 {
		t.Fatalf("a rejected certificate connected (%v)", wait)
	}
	if o.stats.certificateErrors.Get() != 1 && o.stats.connectErrors.Get() != 1 {
		t.Fatalf("certificate_errors %d connect_errors %d", o.stats.certificateErrors.Get(), o.stats.connectErrors.Get())
	}
	t.Logf("as reported: %s", s.lastConnErr)
	if o.stats.certificateErrors.Get() != 1 || !strings.Contains(s.lastConnErr, "refused the client certificate") ||
		!strings.Contains(s.lastConnErr, "cert.pem") {
		t.Fatalf("the report does not say the server refused our certificate: %q", s.lastConnErr)
	}
}

// auth_method = "Certificate": the client certificate is the identity.
func TestNodeOPCUACertificateIdentity(t *testing.T) {
	p := startNodeOPCUA(t, "--no-anonymous")
	for _, mode := range []string{"Sign", "SignAndEncrypt"} {
		t.Run(mode, func(t *testing.T) {
			o := load(t, statusTable("x509", p.endpoint, `security_policy = "Aes128_Sha256_RsaOaep"`,
				fmt.Sprintf("security_mode = %q", mode), `auth_method = "Certificate"`,
				fmt.Sprintf("server_fingerprint = %q", fingerprint(t, p.certFile())), fmt.Sprintf("state_directory = %q", t.TempDir())))
			acc, err := gather(t, o)
			if err != nil {
				t.Fatal(err)
			}
			if v := field(t, acc.values("opcua", "Status")[0], "Status"); v != "ok" {
				t.Fatalf("Status = %v", v)
			}
		})
	}
	// and anonymous is refused there, as the server says
	o := load(t, statusTable("anon", p.endpoint))
	if _, err := gather(t, o); err == nil {
		t.Fatal("anonymous accepted by a server started with --no-anonymous")
	}
}

// Every node id form, a group's namespace by index and by URI, and bare identifiers.
func TestNodeOPCUANodeIDForms(t *testing.T) {
	p := startNodeOPCUA(t, "--extra-namespaces", "1")
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "ids"
  endpoint = %q
  [[inputs.opcua.group]]
    [[inputs.opcua.group.node]]
      name = "string"
      id = "ns=1;s=Status"
    [[inputs.opcua.group.node]]
      name = "numeric"
      id = "ns=1;i=1001"
    [[inputs.opcua.group.node]]
      name = "guid"
      id = "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
    [[inputs.opcua.group.node]]
      name = "opaque"
      id = "ns=1;b=dGFncGlwZQ=="
    [[inputs.opcua.group.node]]
      name = "nsu_numeric"
      id = "nsu=urn:tagpipe:peer;i=2001"
    [[inputs.opcua.group.node]]
      name = "ns0"
      id = "i=2259"
  [[inputs.opcua.group]]
    measurement = "by_index"
    namespace = 1
    identifier_type = "i"
    [[inputs.opcua.group.node]]
      name = "bare_numeric"
      id = "1001"
    [[inputs.opcua.group.node]]
      id = "s=Status"
  [[inputs.opcua.group]]
    measurement = "by_uri"
    namespace_uri = "urn:tagpipe:peer"
    [[inputs.opcua.group.node]]
      id = "FastCounter"
    [[inputs.opcua.group.node]]
      name = "int32"
      id = "i=2001"
`, p.endpoint))
	acc, err := gather(t, o)
	if err != nil {
		t.Fatal(err)
	}
	ms := acc.all()
	for _, c := range []struct {
		measurement, field string
		want               any
	}{
		{"opcua", "string", "ok"},
		{"opcua", "numeric", int64(-7)},
		{"opcua", "guid", 1.5},
		{"opcua", "opaque", int64(1234567890123)},
		{"opcua", "nsu_numeric", int64(2001)},
		{"opcua", "ns0", int64(0)}, // ServerState Running
		{"by_index", "bare_numeric", int64(-7)},
		{"by_index", "Status", "ok"},
		{"by_uri", "int32", int64(2001)},
	} {
		m := byField(ms, c.measurement)[c.field]
		if m == nil {
			t.Fatalf("no %s.%s in:\n%s", c.measurement, c.field, fmtMetrics(ms))
		}
		if got := field(t, m, c.field); got != c.want {
			t.Errorf("%s.%s = %v (%T), want %v (%T)", c.measurement, c.field, got, got, c.want, c.want)
		}
	}
	if m := byField(ms, "by_uri")["FastCounter"]; m == nil {
		t.Fatalf("FastCounter by namespace URI missing:\n%s", fmtMetrics(ms))
	}
}

// Every built-in scalar type and arrays, as the server holds them; quality tags; status codes
// as fields and tags; bad and uncertain values kept or dropped; the three timestamp sources.
func TestNodeOPCUAValues(t *testing.T) {
	peerStarted := time.Now()
	p := startNodeOPCUA(t)
	types := []string{"Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double",
		"String", "DateTime", "Guid", "ByteString", "XmlElement", "NodeId", "StatusCode", "QualifiedName", "LocalizedText"}
	var nodes strings.Builder
	for _, ty := range types {
		fmt.Fprintf(&nodes, "    [[inputs.opcua.group.node]]\n      name = %q\n      id = \"s=Types.%s\"\n      data_type = %q\n", ty, ty, ty)
	}
	for _, a := range []string{"Double", "Int32", "String", "Boolean"} {
		fmt.Fprintf(&nodes, "    [[inputs.opcua.group.node]]\n      name = \"arr_%s\"\n      id = \"s=Arrays.%s\"\n", a, a)
	}
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "types"
  endpoint = %q
  timestamp = "gather"
  [[inputs.opcua.group]]
    measurement = "types"
    namespace = 1
%s`, p.endpoint, nodes.String()))
	before := time.Now()
	acc, err := gather(t, o)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	ms := acc.all()
	got := map[string]any{}
	for _, m := range ms {
		if m.Time.Before(before) || m.Time.After(after) {
			t.Fatalf("timestamp = \"gather\": %v is not within the gather", m.Time)
		}
		if len(m.Tags) != 1 || tag(m, "source") != "types" {
			t.Fatalf("tags of a Good value: %v", m.Tags)
		}
		for _, f := range m.Fields {
			got[f.Key] = f.Value()
		}
	}
	want := map[string]any{
		"Boolean": true, "SByte": int64(-8), "Byte": uint64(200), "Int16": int64(-1600), "UInt16": uint64(60000),
		"Int32": int64(-320000), "UInt32": uint64(4000000000), "Int64": int64(-5000000000), "UInt64": uint64(12345678901234567890),
		"Float": 3.25, "Double": -2.5e10, "String": "héllo, wörld=1", "DateTime": "2024-01-02T03:04:05.678Z",
		"Guid": "72962B91-FA75-4AE6-8D28-B404DC7DAF63", "ByteString": "dGFncGlwZQ==", "XmlElement": "<a>1</a>",
		"NodeId": "ns=1;s=Sine", "StatusCode": uint64(0x40920000), "QualifiedName": "1:Q", "LocalizedText": "Hello",
		"arr_Double[0]": 1.5, "arr_Double[1]": -2.5, "arr_Double[2]": 3.25,
		"arr_Int32[0]": int64(1), "arr_Int32[1]": int64(2), "arr_Int32[2]": int64(3), "arr_Int32[3]": int64(4),
		"arr_String[0]": "a", "arr_String[1]": "b c", "arr_Boolean[0]": true, "arr_Boolean[1]": false,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v (%T), want %v (%T)", k, got[k], got[k], w, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d fields, want %d:\n%s", len(got), len(want), fmtMetrics(ms))
	}
	if o.stats.typeErrors.Get() != 0 || o.stats.values.Get() != int64(len(types)+4) {
		t.Fatalf("type_errors %d values %d", o.stats.typeErrors.Get(), o.stats.values.Get())
	}

	quality := func(extra string) (*testAcc, *OPCUA) {
		o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "q"
  endpoint = %q
  %s
  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      name = "broken"
      id = "s=Broken"
    [[inputs.opcua.group.node]]
      name = "uncertain"
      id = "s=Uncertain"
    [[inputs.opcua.group.node]]
      name = "status"
      id = "s=Status"
`, p.endpoint, extra))
		acc, err := gather(t, o)
		if err != nil {
			t.Fatal(err)
		}
		return acc, o
	}
	// defaults: bad dropped (and counted), uncertain kept and tagged, Good untagged
	acc, q := quality("")
	ms = acc.all()
	if len(ms) != 2 || q.stats.droppedQuality.Get() != 1 {
		t.Fatalf("defaults: %d metrics, dropped %d:\n%s", len(ms), q.stats.droppedQuality.Get(), fmtMetrics(ms))
	}
	u := byField(ms, "opcua")["uncertain"]
	if field(t, u, "uncertain") != 7.5 || tag(u, "quality") != "Uncertain" {
		t.Fatalf("uncertain: %s", fmtMetrics([]*models.Metric{u}))
	}
	if _, ok := byField(ms, "opcua")["status"].Tag("quality"); ok {
		t.Fatal("a Good value is tagged quality with quality_tag = \"not_good\"")
	}
	// bad kept with the status code as a field; uncertain dropped; quality always tagged
	acc, _ = quality("bad_quality = \"keep\"\n  uncertain_quality = \"drop\"\n  status_code = \"field\"\n  quality_tag = \"always\"")
	ms = acc.all()
	b := byField(ms, "opcua")["broken_status"]
	if len(ms) != 2 || b == nil || field(t, b, "broken_status") != uint64(0x808C0000) || tag(b, "quality") != "Bad" {
		t.Fatalf("bad kept:\n%s", fmtMetrics(ms))
	}
	if s := byField(ms, "opcua")["status"]; tag(s, "quality") != "Good" || field(t, s, "status_status") != uint64(0) {
		t.Fatalf("Good with quality_tag = \"always\":\n%s", fmtMetrics(ms))
	}
	// status as a tag, no quality tag
	acc, _ = quality("status_code = \"tag\"\n  quality_tag = \"never\"")
	ms = acc.all()
	u = byField(ms, "opcua")["uncertain"]
	if u == nil || tag(u, "status") != "UncertainLastUsableValue" || tag(u, "quality") != "" {
		t.Fatalf("status tag:\n%s", fmtMetrics(ms))
	}
	if tag(byField(ms, "opcua")["status"], "status") != "Good" {
		t.Fatalf("status tag of a Good value:\n%s", fmtMetrics(ms))
	}

	// timestamp = "source": the server's source timestamp of a constant set at its start
	ts := load(t, statusTable("ts", p.endpoint))
	start := time.Now()
	acc, err = gather(t, ts)
	if err != nil {
		t.Fatal(err)
	}
	if m := acc.all()[0]; !m.Time.Before(start) || m.Time.Before(peerStarted) {
		t.Fatalf("timestamp = \"source\" gave %v, want the server's, set when it started (between %v and %v)", m.Time, peerStarted, start)
	}
	// timestamp = "server": the time the server answered the read
	start = time.Now()
	acc, err = gather(t, load(t, statusTable("ts", p.endpoint, `timestamp = "server"`)))
	if err != nil {
		t.Fatal(err)
	}
	if m := acc.all()[0]; m.Time.Before(start.Add(-time.Second)) || m.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("timestamp = \"server\" gave %v, want about %v", m.Time, start)
	}
}

// Bad input: an unknown node, a namespace the server lacks, a type the config did not expect
// and a value no field can hold (ExtensionObject): one log line each naming endpoint and node,
// counters, and the other nodes are read.
func TestNodeOPCUABadNodes(t *testing.T) {
	p := startNodeOPCUA(t)
	table := fmt.Sprintf(`[[inputs.opcua]]
  name = "bad"
  endpoint = %q
  mode = "%%s"
  interval = "200ms"
  publishing_interval = "100ms"
  [[inputs.opcua.group]]
    namespace = 1
    [[inputs.opcua.group.node]]
      name = "unknown"
      id = "s=Nope"
    [[inputs.opcua.group.node]]
      name = "no_namespace"
      id = "nsu=urn:not:there;s=X"
    [[inputs.opcua.group.node]]
      name = "sine_as_int"
      id = "s=Sine"
      data_type = "Int32"
    [[inputs.opcua.group.node]]
      name = "server_status"
      id = "ns=0;i=2256"
    [[inputs.opcua.group.node]]
      name = "status"
      id = "s=Status"
`, p.endpoint)
	for _, mode := range []string{"read", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			o := load(t, fmt.Sprintf(table, mode))
			logs := captureLog(o)
			acc := start(t, o)
			waitFor(t, 10*time.Second, "the good node's value", func() bool { return len(acc.values("opcua", "status")) > 0 })
			waitFor(t, 10*time.Second, "type errors", func() bool { return o.stats.typeErrors.Get() >= 2 })
			for _, c := range []struct{ node, want string }{
				{"ns=1;s=Nope", "BadNodeIDUnknown"},
				{"nsu=urn:not:there;s=X", "not in the server's namespace array"},
				{"ns=1;s=Sine", "the config expects Int32"},
				{"i=2256", "ExtensionObject"},
			} {
				if n := len(logs.lines("node skipped", `node="`+c.node+`"`, c.want, "endpoint="+p.endpoint)); n != 1 {
					t.Errorf("want 1 line for %s (%s), got %d", c.node, c.want, n)
				}
			}
			if o.stats.nodeErrors.Get() < 2 {
				t.Errorf("node_errors = %d", o.stats.nodeErrors.Get())
			}
			if t.Failed() {
				t.Log(logs)
			}
			for _, m := range acc.all() {
				if m.Name == "opcua" && m.Fields[0].Key != "status" {
					t.Fatalf("a bad node made a metric: %s", fmtMetrics([]*models.Metric{m}))
				}
			}
			if mode == "read" {
				// read again and again: still one line each, while the counter goes on
				n := o.stats.nodeErrors.Get()
				waitFor(t, 5*time.Second, "more polls", func() bool { return o.stats.nodeErrors.Get() >= n+2 })
				if c := len(logs.lines("node skipped", `node="ns=1;s=Nope"`)); c != 1 {
					t.Fatalf("the unknown node was logged %d times", c)
				}
			}
			waitFor(t, 5*time.Second, "health", func() bool { return acc.lastHealth() != nil })
			if h := acc.lastHealth(); field(t, h, "connected") != true {
				t.Fatalf("health: %v", h)
			}
		})
	}
}

// Browse adds the variables below a folder, to the depth asked.
func TestNodeOPCUABrowse(t *testing.T) {
	p := startNodeOPCUA(t)
	for _, c := range []struct {
		depth int
		want  map[string]float64
	}{
		{1, map[string]float64{"Value": 1}},
		{2, map[string]float64{"Value": 1, "Level2.Value": 2}},
		{3, map[string]float64{"Value": 1, "Level2.Value": 2, "Level2.Level3.Value": 3}},
	} {
		t.Run(fmt.Sprint(c.depth), func(t *testing.T) {
			o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "browse"
  endpoint = %q
  [[inputs.opcua.group]]
    measurement = "deep"
    namespace = 1
    browse = "s=Deep"
    browse_depth = %d
    tags = { folder = "deep" }
`, p.endpoint, c.depth))
			acc, err := gather(t, o)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, m := range acc.all() {
				if tag(m, "folder") != "deep" || m.Name != "deep" {
					t.Fatalf("group settings not applied: %s", fmtMetrics([]*models.Metric{m}))
				}
				got[m.Fields[0].Key] = m.Fields[0].FloatV()
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("depth %d: %v, want %v", c.depth, got, c.want)
			}
		})
	}
	// A folder of variables of many types, arrays included.
	o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "browse"
  endpoint = %q
  [[inputs.opcua.group]]
    namespace = 1
    browse = "s=Arrays"
`, p.endpoint))
	acc, err := gather(t, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := byField(acc.all(), "opcua"); len(got) != 4 || field(t, got["Double[0]"], "Double[0]") != 1.5 {
		t.Fatalf("browse Arrays:\n%s", fmtMetrics(acc.all()))
	}
}

// The server's operation limits split the requests; limits the server enforces but does not
// advertise are found by BadTooManyOperations, and the request is split and sent again.
func TestNodeOPCUAOperationLimits(t *testing.T) {
	for _, hide := range []bool{false, true} {
		args := []string{"--bulk", "250", "--max-nodes-per-read", "100", "--max-monitored-items-per-call", "60"}
		if hide {
			args = append(args, "--hide-limits")
		}
		p := startNodeOPCUA(t, args...)
		for _, mode := range []string{"read", "subscribe"} {
			t.Run(fmt.Sprintf("hidden=%v/%s", hide, mode), func(t *testing.T) {
				o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "bulk"
  endpoint = %q
  mode = %q
  interval = "300ms"
  [[inputs.opcua.group]]
    namespace = 1
    browse = "s=Bulk"
`, p.endpoint, mode))
				acc := start(t, o)
				waitFor(t, 15*time.Second, "250 values", func() bool { return o.stats.values.Get() >= 250 })
				got := map[string]float64{}
				for _, m := range acc.all() {
					if m.Name == "opcua" {
						got[m.Fields[0].Key] = m.Fields[0].FloatV()
					}
				}
				if len(got) != 250 {
					t.Fatalf("%d distinct nodes, want 250", len(got))
				}
				for i := range 250 {
					if v := got[fmt.Sprintf("B%d", i)]; v != float64(i)+0.5 {
						t.Fatalf("B%d = %v, want %v", i, v, float64(i)+0.5)
					}
				}
				splits := o.stats.operationSplits.Get()
				if hide && splits == 0 {
					t.Fatal("hidden limits: no request was split")
				}
				if !hide && splits != 0 {
					t.Fatalf("advertised limits: %d splits, want 0 (requests sized to fit)", splits)
				}
				if mode == "subscribe" {
					waitFor(t, 5*time.Second, "health", func() bool { return acc.lastHealth() != nil })
					if n := field(t, acc.lastHealth(), "monitored_items"); n != int64(250) {
						t.Fatalf("monitored_items = %v", n)
					}
				}
			})
		}
	}
}

// Deadbands: the server reports only changes beyond the deadband, absolute or a percentage of
// the node's EURange. A server that cannot apply a filter to a node (a percent deadband on a
// variable without EURange) refuses the item: it is monitored without the filter, and said so.
//
// Judged by the changes themselves, not by how many come in a while (a busy server samples less
// often): with a deadband every change is beyond it; without one, or with a refused one, changes
// as small as the server's updates (Sine moves at most 0.063 in its 100 ms) come too.
func TestNodeOPCUADeadband(t *testing.T) {
	p := startNodeOPCUA(t)
	// run subscribes to node with deadband until n changes came (a minute at most).
	run := func(node, deadband string, n int) ([]float64, *logBuf) {
		o := load(t, fmt.Sprintf(`[[inputs.opcua]]
  name = "db"
  endpoint = %q
  mode = "subscribe"
  publishing_interval = "100ms"
  [[inputs.opcua.group]]
    namespace = 1
    sampling_interval = "50ms"
    %s
    [[inputs.opcua.group.node]]
      name = "sine"
      id = %q
`, p.endpoint, deadband, node))
		logs := captureLog(o)
		acc := start(t, o)
		waitFor(t, time.Minute, fmt.Sprintf("%d changes of %s (%s)", n, node, deadband), func() bool { return len(acc.values("opcua", "sine")) >= n })
		o.Stop()
		var vs []float64
		for _, m := range acc.values("opcua", "sine") {
			vs = append(vs, m.Fields[0].FloatV())
		}
		return vs, logs
	}
	beyond := func(what string, vs []float64, d float64) {
		t.Helper()
		for i := 1; i < len(vs); i++ {
			if math.Abs(vs[i]-vs[i-1]) <= d {
				t.Fatalf("%s: changes %v → %v are within the deadband %v", what, vs[i-1], vs[i], d)
			}
		}
	}
	within := func(what string, vs []float64, d float64) {
		t.Helper()
		for i := 1; i < len(vs); i++ {
			if math.Abs(vs[i]-vs[i-1]) <= d {
				return
			}
		}
		t.Fatalf("%s: no change within %v among %v: filtered as if by a deadband", what, d, vs)
	}
	all, _ := run("s=Sine", "", 10)
	within("without a deadband", all, 0.3)
	abs, _ := run("s=Sine", `deadband = { type = "absolute", value = 0.3 }`, 3)
	beyond("absolute 0.3", abs, 0.3)
	// 10% of the EURange -1..1 is 0.2
	pct, _ := run("s=AnalogSine", `deadband = { type = "percent", value = 10.0 }`, 3)
	beyond("10% of EURange -1..1", pct, 0.2)
	refused, logs := run("s=Sine", `deadband = { type = "percent", value = 30.0 }`, 10)
	if len(logs.lines("refuses the deadband", `node="ns=1;s=Sine"`)) != 1 {
		t.Fatalf("a refused percent deadband is not said so\n%s", logs)
	}
	within("a refused deadband (30% would be 0.6)", refused, 0.6)
}
