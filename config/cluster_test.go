package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
)

func noEnv(string) (string, bool) { return "", false }

// TestClusterTable: every key of [cluster] is read, the defaults fill the rest, tag_metrics adds
// the agent tag, and a config without the table has no cluster.
func TestClusterTable(t *testing.T) {
	cfg, err := config.LoadText("a.conf", `
[agent]
  hostname = "edge-7"
[cluster]
  brokers = ["127.0.0.1:9092", "[::1]:9093"]
  group = "plant-north"
  shards = 32
  session_timeout = "6s"
  on_coordinator_loss = "stop"
  tag_metrics = true
  sasl_mechanism = "SCRAM-SHA-512"
  sasl_username = "agent"
  sasl_password = "pw"
`, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c == nil {
		t.Fatal("no cluster")
	}
	if len(c.Brokers) != 2 || c.Group != "plant-north" || c.Shards != 32 || c.SessionTimeout.D() != 6*time.Second ||
		c.OnCoordinatorLoss != "stop" || c.Member != "edge-7" || c.SASLMechanism != "SCRAM-SHA-512" || c.SASLPassword.Reveal() != "pw" || c.TLS() {
		t.Errorf("got %+v", *c)
	}
	if cfg.GlobalTags["agent"] != "edge-7" {
		t.Errorf("agent tag %q", cfg.GlobalTags["agent"])
	}
	if s := fmt.Sprintf("%v %+v", c, *c); strings.Contains(s, "pw\"") || strings.Contains(s, " pw") {
		t.Errorf("the password shows: %s", s)
	}

	cfg, err = config.LoadText("b.conf", "[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"m1\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d := config.DefaultCluster(); cfg.Cluster.Shards != d.Shards || cfg.Cluster.SessionTimeout != d.SessionTimeout ||
		cfg.Cluster.OnCoordinatorLoss != "keep" || cfg.Cluster.Member != "m1" || d.Shards != 64 || d.SessionTimeout.D() != 10*time.Second {
		t.Errorf("defaults: %+v", *cfg.Cluster)
	}
	if _, set := cfg.GlobalTags["agent"]; set {
		t.Error("agent tag without tag_metrics")
	}

	cfg, err = config.LoadText("c.conf", "[agent]\n  interval = \"1s\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != nil {
		t.Error("a cluster without [cluster]")
	}
}

// TestClusterMemberDefault: without member (and [agent] hostname), $HOSTNAME names the agent.
func TestClusterMemberDefault(t *testing.T) {
	t.Setenv("HOSTNAME", "from-env")
	cfg, err := config.LoadText("a.conf", "[agent]\n  omit_hostname = true\n[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Member != "from-env" {
		t.Errorf("member %q", cfg.Cluster.Member)
	}
}

// TestClusterTLS: the TLS keys are read as outputs.kafka reads them, and a missing file fails
// at load, at its line.
func TestClusterTLS(t *testing.T) {
	f := tlstest.New(t)
	cfg, err := config.LoadText("a.conf", fmt.Sprintf("[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"m\"\n  tls_ca = %q\n  tls_server_name = \"kafka\"\n", f.CA), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Cluster.TLS() || cfg.Cluster.CA != f.CA || cfg.Cluster.ServerName != "kafka" {
		t.Errorf("tls: %+v", cfg.Cluster.Client)
	}
	missing := filepath.Join(t.TempDir(), "none.pem")
	_, err = config.LoadText("a.conf", fmt.Sprintf("[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"m\"\n  tls_ca = %q\n", missing), noEnv)
	if err == nil || !strings.Contains(err.Error(), "a.conf:5: cluster: tls_ca:") {
		t.Errorf("missing CA: %v", err)
	}
}

// TestClusterErrorsNameTheirPlace: each bad key is reported as FILE:LINE: cluster: KEY: why.
func TestClusterErrorsNameTheirPlace(t *testing.T) {
	base := "[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"m\"\n"
	for _, c := range []struct {
		line, want string
	}{
		{`shards = 0`, "a.conf:5: cluster: shards: 0: must be 1..4096"},
		{`shards = 5000`, "a.conf:5: cluster: shards: 5000: must be 1..4096"},
		{`session_timeout = "500ms"`, "a.conf:5: cluster: session_timeout: 500ms: must be 1s..30m"},
		{`session_timeout = "soon"`, "a.conf:5: cluster: session_timeout:"},
		{`on_coordinator_loss = "pause"`, `a.conf:5: cluster: on_coordinator_loss: "pause": must be "keep"`},
		{`sasl_mechanism = "GSSAPI"`, `a.conf:5: cluster: sasl_mechanism: "GSSAPI": must be`},
		{`sasl_mechanism = "PLAIN"`, "a.conf:5: cluster: sasl_mechanism: give the user name in sasl_username too"},
		{`sasl_username = "u"`, "a.conf:5: cluster: sasl_username: give sasl_mechanism too"},
		{`tls_cert = "/x.pem"`, "a.conf:5: cluster: tls_cert: give its key in tls_key too"},
		{`shard = 3`, "a.conf:5: cluster: shard: unknown key"},
	} {
		_, err := config.LoadText("a.conf", base+"  "+c.line+"\n", noEnv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.line, err, c.want)
		}
	}
	for _, c := range []struct {
		text, want string
	}{
		{"[cluster]\n  group = \"g\"\n", "a.conf:1: cluster: brokers: give at least one broker"},
		{"[cluster]\n  brokers = [\"kafka\"]\n  group = \"g\"\n", `a.conf:2: cluster: brokers: "kafka": give host:port`},
		{"[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n", "a.conf:1: cluster: group: give the group's name"},
		{"[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"plant north\"\n", `a.conf:3: cluster: group: "plant north": 1 to 200 of`},
		{"[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"a\\tb\"\n", `a.conf:4: cluster: member: "a\tb": at most 200 printable`},
	} {
		_, err := config.LoadText("a.conf", c.text, noEnv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.text, err, c.want)
		}
	}
}

// TestClusterAcrossFiles: a second file's [cluster] changes only the keys it names (as [agent]).
func TestClusterAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.conf")
	b := filepath.Join(dir, "b.conf")
	os.WriteFile(a, []byte("[cluster]\n  brokers = [\"127.0.0.1:9092\"]\n  group = \"g\"\n  member = \"m\"\n  tls_enable = true\n  shards = 16\n"), 0o644)
	os.WriteFile(b, []byte("[cluster]\n  session_timeout = \"20s\"\n  tls_server_name = \"k\"\n"), 0o644)
	cfg, err := config.Load(config.Options{Files: []string{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c.Shards != 16 || c.SessionTimeout.D() != 20*time.Second || c.Group != "g" || !c.TLSEnable || c.ServerName != "k" {
		t.Errorf("merged: %+v", *c)
	}
}
