package kafka

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	kgoplain "github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

// TestTLSClientCertificates: brokers that demand a client certificate signed by the test CA take
// the output's writes; without the certificate, or trusting another CA, Connect fails.
func TestTLSClientCertificates(t *testing.T) {
	f := tlstest.New(t)
	c := newCluster(t, kfake.TLS(f.ServerConfig(t, true)))
	k, _ := newKafka(t, c, func(k *Kafka) {
		k.CA, k.Cert, k.Key, k.Compression = f.CA, f.ClientCert, f.ClientKey, "lz4"
	})
	ms := plcMetrics("tls", 200, time.Now())
	if err := k.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	consume(t, c.ListenAddrs(), []string{topic}, len(ms), false, kgo.DialTLSConfig(f.ClientConfig(t))).check(t, ms, false, "")

	named, _ := newKafka(t, c, func(k *Kafka) {
		k.CA, k.Cert, k.Key, k.ServerName = f.CA, f.ClientCert, f.ClientKey, tlstest.ServerName
	})
	if err := named.Write(context.Background(), ms[:1]); err != nil {
		t.Fatalf("tls_server_name: %v", err)
	}

	for what, mod := range map[string]func(*Kafka){
		"no client certificate": func(k *Kafka) { k.CA = f.CA },
		"untrusted CA":          func(k *Kafka) { k.CA, k.Cert, k.Key = f.OtherCA, f.ClientCert, f.ClientKey },
		"no TLS":                func(k *Kafka) {},
	} {
		k := outputs.Registry["kafka"]().(*Kafka)
		k.Brokers, k.Timeout = c.ListenAddrs(), config.Duration(2*time.Second)
		mod(k)
		if err := k.Init(); err != nil {
			t.Fatal(err)
		}
		if err := k.Connect(context.Background()); err == nil {
			t.Errorf("%s: Connect succeeded", what)
		} else {
			t.Logf("%s: %v", what, err)
		}
		k.Close()
	}
}

// TestSASL writes with SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 to brokers that require it;
// a wrong password fails Connect (and a write keeps the batch).
func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "tagpipe", "s3cret"),
				kfake.Superuser("PLAIN", "reader", "r"))
			k, logs := newKafka(t, c, func(k *Kafka) {
				k.SASLMechanism, k.SASLUsername, k.SASLPassword, k.Compression = mech, "tagpipe", "s3cret", "zstd"
			})
			ms := plcMetrics("sasl", 100, time.Now())
			if err := k.Write(context.Background(), ms); err != nil {
				t.Fatal(err)
			}
			consume(t, c.ListenAddrs(), []string{topic}, len(ms), false,
				kgo.SASL(kgoplain.Auth{User: "reader", Pass: "r"}.AsMechanism())).check(t, ms, false, "")

			bad := outputs.Registry["kafka"]().(*Kafka)
			bad.Log = k.Log
			bad.Brokers, bad.Timeout = c.ListenAddrs(), config.Duration(2*time.Second)
			bad.SASLMechanism, bad.SASLUsername, bad.SASLPassword = mech, "tagpipe", "wrong-pw"
			if err := bad.Init(); err != nil {
				t.Fatal(err)
			}
			err := bad.Connect(context.Background())
			if err == nil {
				t.Fatal("Connect with a wrong password succeeded")
			}
			t.Logf("wrong password: %v", err)
			err = bad.Write(context.Background(), ms[:5])
			if _, partial := models.AsPartialWrite(err); err == nil || partial {
				t.Errorf("write with a wrong password: %v, want the batch kept", err)
			}
			bad.Close()
			if logs.Count("wrong-pw")+logs.Count("s3cret") != 0 {
				t.Error("a password is in the log")
			}
		})
	}
}

func load(t *testing.T, text string) (*config.Config, error) {
	t.Helper()
	return config.LoadText("test.conf", text, func(string) (string, bool) { return "", false })
}

func TestSampleConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	sample := outputs.Registry["kafka"]().SampleConfig()
	if !strings.Contains(string(readme), sample) {
		t.Error("README.md does not hold the sample config")
	}
	f := tlstest.New(t)
	// Every documented key set: "# key = value" lines uncommented.
	all := regexp.MustCompile(`(?m)^(\s*)# ([a-z_]+ = )`).ReplaceAllString(sample, "$1$2")
	all = strings.NewReplacer("/etc/tagpipe/ca.pem", f.CA, "/etc/tagpipe/cert.pem", f.ClientCert,
		"/etc/tagpipe/key.pem", f.ClientKey, `sasl_mechanism = ""`, `sasl_mechanism = "PLAIN"`,
		`sasl_username = ""`, `sasl_username = "u"`).Replace(all)
	for what, text := range map[string]string{"as shipped": sample, "every key set": all} {
		cfg, err := load(t, text)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, text)
		}
		k := cfg.Outputs[0].Plugin.(*Kafka)
		if what == "every key set" && (k.TopicSuffix.Method != "measurement" || k.SASLMechanism != "PLAIN" || k.CA != f.CA) {
			t.Errorf("%s: not every key was set: %+v", what, k)
		}
	}
}

func TestInitErrors(t *testing.T) {
	f := tlstest.New(t)
	for _, tc := range []struct{ line, want string }{
		{`brokers = []`, "brokers: give at least one broker"},
		{`brokers = ["kafka"]`, `brokers: "kafka": give host:port`},
		{`topic = "a b"`, `topic: "a b" is not a valid topic name`},
		{`exclude_topic_tag = true`, "exclude_topic_tag: needs topic_tag"},
		{`compression = "brotli"`, `compression: "brotli": must be`},
		{`required_acks = 2`, `required_acks: 2: must be "all" (or -1), 1 or 0`},
		{`required_acks = "some"`, `required_acks: some: must be`},
		{`max_message_bytes = "2MiB"`, "max_message_bytes: 2097152: must be 64..1048576"},
		{`batch_size = 0`, "batch_size: 0: must be 1..1000000"},
		{`max_retry = -1`, "max_retry: -1: must be 0..100"},
		{`timeout = "0s"`, "timeout: must be more than 0"},
		{`data_format = "xml"`, `data_format: data_format = "xml"`},
		{`sasl_mechanism = "GSSAPI"`, `sasl_mechanism: "GSSAPI": must be`},
		{`sasl_mechanism = "PLAIN"`, "sasl_mechanism: give the user name in sasl_username too"},
		{`sasl_username = "u"`, "sasl_username: give sasl_mechanism too"},
		{fmt.Sprintf(`tls_key = %q`, f.ClientKey), "tls_key: give its certificate in tls_cert too"},
		{`tls_ca = "/nonexistent/ca.pem"`, "tls_ca: open /nonexistent/ca.pem"},
	} {
		_, err := load(t, "[[outputs.kafka]]\n  "+tc.line+"\n")
		want := "test.conf:2: outputs.kafka: " + tc.want
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", tc.line, err, want)
		}
	}
}

// TestSecretsStayHidden: the SASL password shows nowhere when the plugin is printed.
func TestSecretsStayHidden(t *testing.T) {
	cfg, err := load(t, "[[outputs.kafka]]\n  sasl_mechanism = \"SCRAM-SHA-512\"\n  sasl_username = \"u\"\n  sasl_password = \"pa55word\"\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v"} {
		if s := fmt.Sprintf(format, cfg.Outputs[0].Plugin); strings.Contains(s, "pa55word") {
			t.Errorf("%s shows the password: %s", format, s)
		}
	}
}
