package mqtttest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

// SPMessage is a message as Eclipse Tahu's decoder (sparkplug-payload 1.0.3) reads it; 64-bit
// numbers are decimal strings.
type SPMessage struct {
	Topic   string `json:"topic"`
	State   string `json:"state"` // STATE messages: the JSON text
	Error   string `json:"error"` // the decoder refused the payload
	Payload struct {
		Timestamp string     `json:"timestamp"`
		Seq       *string    `json:"seq"`
		Metrics   []SPMetric `json:"metrics"`
	} `json:"payload"`
}

// SPMetric is one metric of a payload.
type SPMetric struct {
	Name         string                `json:"name"`
	Alias        string                `json:"alias"`
	Timestamp    string                `json:"timestamp"`
	Type         string                `json:"type"`
	Value        json.RawMessage       `json:"value"`
	IsHistorical bool                  `json:"isHistorical"`
	Properties   map[string]SPProperty `json:"properties"`
}

// SPProperty is one property of a metric.
type SPProperty struct {
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// Kind is the message type in the topic: NBIRTH, DDATA, ...
func (m *SPMessage) Kind() string {
	parts := strings.Split(m.Topic, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// Device is the device id in the topic ("" for node messages).
func (m *SPMessage) Device() string {
	parts := strings.Split(m.Topic, "/")
	if len(parts) < 5 {
		return ""
	}
	return parts[4]
}

func decoderDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(testpeer.Root(t), "outputs", "mqtt", "testdata", "sparkplug")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "sparkplug-payload")); err != nil {
		testpeer.Missing(t, "sparkplug-payload 1.0.3 (Eclipse Tahu)", "cd outputs/mqtt/testdata/sparkplug && npm ci", err)
	}
	testpeer.LookPath(t, "node", "apt-get install nodejs")
	return dir
}

// DecodeSparkplug decodes messages with Eclipse Tahu's decoder, in order.
func DecodeSparkplug(t testing.TB, msgs []Message) []SPMessage {
	t.Helper()
	dir := decoderDir(t)
	var in bytes.Buffer
	for _, m := range msgs {
		in.WriteString(hex.EncodeToString([]byte(m.Topic)) + " " + hex.EncodeToString(m.Payload) + "\n")
	}
	cmd := exec.Command("node", "decode.js")
	cmd.Dir = dir
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("decode.js: %v\n%s", err, stderr.String())
	}
	var res []SPMessage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m SPMessage
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decode.js printed something that is not JSON: %v", err)
		}
		if m.Error != "" {
			t.Fatalf("Tahu's decoder refused the payload of %s: %s", m.Topic, m.Error)
		}
		res = append(res, m)
	}
	if len(res) != len(msgs) {
		t.Fatalf("decode.js decoded %d of %d messages", len(res), len(msgs))
	}
	return res
}

// RebirthRequest returns the NCMD payload {"Node Control/Rebirth": true} as Eclipse Tahu's
// encoder writes it.
func RebirthRequest(t testing.TB) []byte {
	t.Helper()
	cmd := exec.Command("node", "decode.js", "--encode-rebirth")
	cmd.Dir = decoderDir(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("decode.js --encode-rebirth: %v", err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
