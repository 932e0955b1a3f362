package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
)

// TLS with a client certificate signed by the test CA: the metrics arrive; a client without a
// certificate, or trusting another CA, never connects and keeps its metrics.
func TestTLSClientCertificate(t *testing.T) {
	f := tlstest.New(t)
	b := mqtttest.StartBroker(t, mqtttest.Options{TLS: f, ClientCerts: true})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"tls/#"}, TLS: f})
	o, _ := newMQTT(t, b, func(o *MQTT) {
		o.Servers = []string{"mqtts://" + b.Addr}
		o.Topic = "tls/{{.Name}}"
		o.CA, o.Cert, o.Key = f.CA, f.ClientCert, f.ClientKey
	})
	ro := outputtest.RunningOutput(t, o, "mqtt", 100)
	ro.AddBatch(lineMetrics(100, time.Now()))
	flushAll(t, ro)
	msgs := sub.WaitFor("100 metrics over TLS", 10*time.Second, func(ms []mqtttest.Message) bool { return len(ms) >= 100 })
	exactlyOnce(t, countSeq(t, msgs, "tls/", false), 100)

	for name, mod := range map[string]func(*MQTT){
		"no client certificate": func(o *MQTT) { o.CA = f.CA },
		"another CA":            func(o *MQTT) { o.CA, o.Cert, o.Key = f.OtherCA, f.ClientCert, f.ClientKey },
		"server name":           func(o *MQTT) { o.CA, o.Cert, o.Key, o.ServerName = f.CA, f.ClientCert, f.ClientKey, "wrong.example" },
	} {
		t.Run(name, func(t *testing.T) {
			o, _ := newMQTT(t, b, func(o *MQTT) {
				o.Servers = []string{"ssl://" + b.Addr}
				o.ClientID = "tagpipe-bad-" + strings.ReplaceAll(name, " ", "-")
				mod(o)
			})
			ro := outputtest.RunningOutput(t, o, "mqtt", 10)
			ro.AddBatch(lineMetrics(10, time.Now()))
			if err := ro.Flush(context.Background(), true); err == nil || ro.Buffer.Len() != 10 {
				t.Fatalf("flush without a TLS connection: %v, %d buffered", err, ro.Buffer.Len())
			}
		})
	}
	// With tls_server_name the certificate's other name verifies.
	o2, _ := newMQTT(t, b, func(o *MQTT) {
		o.Servers = []string{"ssl://" + b.Addr}
		o.ClientID = "tagpipe-servername"
		o.Topic = "tls/named/{{.Name}}"
		o.CA, o.Cert, o.Key, o.ServerName = f.CA, f.ClientCert, f.ClientKey, tlstest.ServerName
	})
	ro2 := outputtest.RunningOutput(t, o2, "mqtt", 10)
	ro2.AddBatch(lineMetrics(10, time.Now()))
	flushAll(t, ro2)
}

// A password file: the right user writes; a wrong password is refused by the broker, logged
// once (not once per attempt), counted, and the metrics stay buffered until the password is
// right.
func TestPasswordAndRefusal(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{Users: map[string]string{"plant": "s3cret", "reader": "r"}})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"pw/#"}, Username: "reader", Password: "r"})

	bad, lb := newMQTT(t, b, func(o *MQTT) {
		o.Topic = "pw/{{.Name}}"
		o.Username, o.Password = "plant", "wrong"
	})
	ro := outputtest.RunningOutput(t, bad, "mqtt", 50)
	ro.AddBatch(lineMetrics(50, time.Now()))
	for range 3 {
		if err := ro.Flush(context.Background(), true); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("flush with a wrong password: %v", err)
		}
	}
	st := bad.w.(*plain).link.st
	deadline := time.Now().Add(10 * time.Second)
	for st.connectErrors.Get() < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := st.connectErrors.Get(); n < 4 {
		t.Fatalf("connect_errors = %d after 10 s of retries", n)
	}
	if n := lb.Count("cannot connect to the MQTT brokers", "the broker refused the connection"); n != 1 {
		t.Fatalf("%d log lines for %d refusals, want 1:\n%s", n, st.connectErrors.Get(), lb.String())
	}
	if strings.Contains(lb.String(), "wrong") {
		t.Fatal("the password is in the log")
	}
	if ro.Buffer.Len() != 50 {
		t.Fatalf("%d metrics buffered, want 50", ro.Buffer.Len())
	}

	good, _ := newMQTT(t, b, func(o *MQTT) {
		o.Topic = "pw/{{.Name}}"
		o.ClientID = "tagpipe-good"
		o.Username, o.Password = "plant", config.Secret("s3cret")
	})
	ro2 := outputtest.RunningOutput(t, good, "mqtt", 50)
	ro2.AddBatch(lineMetrics(50, time.Now()))
	flushAll(t, ro2)
	msgs := sub.WaitFor("50 metrics", 10*time.Second, func(ms []mqtttest.Message) bool { return len(ms) >= 50 })
	exactlyOnce(t, countSeq(t, msgs, "pw/", false), 50)
}

// FuzzTemplate: whatever a template and a tag value are, a template that parses expands to a
// topic with no wildcard, no NUL and valid UTF-8.
func FuzzTemplate(f *testing.F) {
	f.Add(`plant/{{.Tag "line"}}/{{.Name}}`, "L1", "cpu")
	f.Add(`{{.Name}}{{.Name}}`, "a+b", "#")
	f.Add(`x/{{ .Tag "k" }}`, "\x00\xff", "n")
	f.Add(`{{if .Name}}x{{end}}`, "", "")
	f.Fuzz(func(t *testing.T, src, tag, name string) {
		tp, err := parseTemplate(src, false)
		if err != nil {
			return
		}
		m := &models.Metric{Name: name, Tags: []models.Tag{{Key: "k", Value: tag}, {Key: "line", Value: tag}}}
		got, _ := tp.appendTo(nil, m, "", escapeTopic)
		if strings.ContainsAny(string(got), "+#\x00") || !utf8.Valid(got) {
			t.Fatalf("%q with %q, %q: topic %q", src, tag, name, got)
		}
	})
}
