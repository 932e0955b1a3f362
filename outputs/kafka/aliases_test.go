package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTelegrafSpellings loads a table written with Telegraf's key names through the config
// loader, writes to kfake with it and reads the records back: compression_codec = 2 must give
// snappy batches, routing_tag the message key; the loader names the tagpipe keys.
func TestTelegrafSpellings(t *testing.T) {
	c := newCluster(t)
	text := fmt.Sprintf(`[[outputs.kafka]]
  brokers = [%q]
  topic = %q
  compression_codec = 2
  routing_tag = "device"
  enable_tls = false
`, c.ListenAddrs()[0], topic)
	cfg, err := load(t, text)
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Outputs[0].Plugin.(*Kafka)
	if k.Compression != "snappy" || strings.Join(k.RoutingTags, ",") != "device" || k.TLSEnable {
		t.Fatalf("decoded compression %q, routing tags %v, tls %v", k.Compression, k.RoutingTags, k.TLSEnable)
	}
	notices := strings.Join(cfg.Warnings, "\n")
	for _, want := range []string{
		`test.conf:4: outputs.kafka: compression_codec is Telegraf's name; tagpipe's is compression (read as compression = "snappy")`,
		`test.conf:5: outputs.kafka: routing_tag is Telegraf's name; tagpipe's is routing_tags (read as routing_tags = ["device"])`,
		`test.conf:6: outputs.kafka: enable_tls is Telegraf's name; tagpipe's is tls_enable`,
	} {
		if !strings.Contains(notices, want) {
			t.Errorf("no notice %q in:\n%s", want, notices)
		}
	}
	if err := k.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ms := plcMetrics("plc", 50, time.Now().Truncate(time.Second))
	if err := k.Write(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	got := consume(t, c.ListenAddrs(), []string{topic}, len(ms), false)
	got.check(t, ms, false, "")
	for _, r := range got.records {
		if r.Attrs.CompressionType() != 2 || !strings.HasPrefix(string(r.Key), "plc") {
			t.Fatalf("record codec %d key %q, want snappy (2) and the device tag", r.Attrs.CompressionType(), r.Key)
		}
	}

	_, err = load(t, "[[outputs.kafka]]\n  brokers = [\"127.0.0.1:9\"]\n  compression_codec = 9\n")
	if err == nil || !strings.Contains(err.Error(), "test.conf:3: outputs.kafka: compression_codec: 9: Telegraf's codes are 0 (none)") {
		t.Fatalf("a bad codec number: %v", err)
	}
}
