package mqtt

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
)

// Every metric arrives exactly once at QoS 1 and 2, in each layout and format, on the topic
// its template gives, read back by python3-paho-mqtt from mosquitto.
func TestPlainEveryMetricOnce(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	const n = 3000
	for _, tc := range []struct {
		layout, format string
		qos            int
	}{
		{"non-batch", "influx", 1}, {"non-batch", "json", 2},
		{"batch", "influx", 1}, {"batch", "json", 1}, {"batch", "influx", 2},
		{"field", "", 1},
	} {
		name := fmt.Sprintf("%s/%s/qos%d", tc.layout, tc.format, tc.qos)
		t.Run(name, func(t *testing.T) {
			prefix := "plant/" + strings.ReplaceAll(name, "/", "-")
			sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{prefix + "/#"}, QoS: 2})
			o, _ := newMQTT(t, b, func(o *MQTT) {
				o.Topic = prefix + `/{{.Tag "line"}}/{{.Name}}`
				o.Layout, o.QoS = tc.layout, tc.qos
				if tc.format != "" {
					o.DataFormat = tc.format
				}
				o.MaxMessageBytes = 16 << 10 // several messages per topic in the batch layout
			})
			ro := outputtest.RunningOutput(t, o, "mqtt", 500)
			ro.AddBatch(lineMetrics(n, time.Now()))
			flushAll(t, ro)
			if tc.layout == "field" {
				checkFields(t, sub, prefix, n)
				return
			}
			sub.WaitFor("every metric", 30*time.Second, func(ms []mqtttest.Message) bool {
				return len(countSeq(t, ms, prefix, tc.format == "json")) >= n
			})
			time.Sleep(200 * time.Millisecond) // a duplicate would come now
			msgs := sub.Messages()
			exactlyOnce(t, countSeq(t, msgs, prefix, tc.format == "json"), n)
			for _, m := range msgs {
				for _, i := range seqOf(t, m, tc.format == "json") {
					if want := prefix + "/L" + strconv.FormatInt(i%4, 10) + "/press"; m.Topic != want {
						t.Fatalf("metric %d on %q, want %q", i, m.Topic, want)
					}
				}
				if m.QoS != tc.qos {
					t.Fatalf("QoS %d, want %d", m.QoS, tc.qos)
				}
			}
			perMetric := len(msgs) == n
			if (tc.layout == "batch") == perMetric {
				t.Fatalf("%d messages for %d metrics in layout %s", len(msgs), n, tc.layout)
			}
		})
	}
}

// checkFields: a message per field, to topic/field, with the value as text.
func checkFields(t *testing.T, sub *mqtttest.Subscriber, prefix string, n int) {
	t.Helper()
	sub.WaitFor("every field", 30*time.Second, func(ms []mqtttest.Message) bool { return len(ms) >= 4*n })
	time.Sleep(200 * time.Millisecond)
	msgs := sub.Messages()
	if len(msgs) != 4*n {
		t.Fatalf("%d messages, want %d", len(msgs), 4*n)
	}
	byTopic := map[string][]string{}
	for _, m := range msgs {
		byTopic[m.Topic] = append(byTopic[m.Topic], string(m.Payload))
	}
	// Per topic the values keep their order: check n and recipe of line L1.
	ns := byTopic[prefix+"/L1/press/n"]
	recipes := byTopic[prefix+"/L1/press/recipe"]
	if len(ns) != n/4 || len(recipes) != n/4 {
		t.Fatalf("line L1: %d values of n, %d of recipe; want %d; topics %d", len(ns), len(recipes), n/4, len(byTopic))
	}
	for k, s := range ns {
		i := 4*k + 1
		if s != strconv.Itoa(i) || recipes[k] != "R-"+strconv.Itoa(i%11) {
			t.Fatalf("value %d of L1: n=%s recipe=%s, want %d and R-%d", k, s, recipes[k], i, i%11)
		}
	}
	if got := byTopic[prefix+"/L0/press/running"][0]; got != "false" {
		t.Fatalf("running of metric 0 = %q", got)
	}
	if got := byTopic[prefix+"/L2/press/force_kn"][0]; got != strconv.FormatFloat(2.0/7, 'g', -1, 64) {
		t.Fatalf("force_kn of metric 2 = %q", got)
	}
}

// Tag values and names with + and # (they become _, counted) and / (stays a level).
func TestPlainTopicEscaping(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"esc/#"}})
	o, _ := newMQTT(t, b, func(o *MQTT) { o.Topic = `esc/{{.Tag "line"}}/{{.Name}}` })
	ro := outputtest.RunningOutput(t, o, "mqtt", 10)
	now := time.Now()
	ro.AddBatch([]*models.Metric{
		models.New("a+b", []models.Tag{{Key: "line", Value: "x#y"}}, []models.Field{models.Int("n", 0)}, now),
		models.New("c", []models.Tag{{Key: "line", Value: "p/q"}}, []models.Field{models.Int("n", 1)}, now),
		models.New("d", nil, []models.Field{models.Int("n", 2)}, now),
	})
	flushAll(t, ro)
	msgs := sub.WaitFor("3 messages", 10*time.Second, func(ms []mqtttest.Message) bool { return len(ms) >= 3 })
	want := map[string]bool{"esc/x_y/a_b": true, "esc/p/q/c": true, "esc//d": true}
	for _, m := range msgs {
		if !want[m.Topic] {
			t.Errorf("topic %q, want one of %v", m.Topic, want)
		}
	}
	if got := o.w.(*plain).escaped.Get(); got != 2 {
		t.Errorf("topic_escaped = %d, want 2", got)
	}
}
