package main

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
)

// tagpipe demo --mqtt publishes the simulated devices' metrics to a real mosquitto: the birth
// and, at the clean stop, the will's payload; with --sparkplug, NBIRTH and a DBIRTH per
// simulated device (decoded by Eclipse Tahu's decoder).
func TestDemoMQTT(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	for _, sparkplug := range []bool{false, true} {
		topic := "tagpipe/demo/#"
		if sparkplug {
			topic = "spBv1.0/demo/#"
		}
		sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{topic}, QoS: 1})
		args := []string{"demo", "--duration", "2m", "--mqtt", b.Addr}
		if sparkplug {
			args = append(args, "--sparkplug")
		}
		cmd := exec.Command(binary, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Runs until data of the slowest part (the Modbus RTU converter's boiler-5) came, then
		// stops cleanly.
		sub.WaitFor("the demo's data", time.Minute, func(ms []mqtttest.Message) bool {
			n := 0
			for _, m := range ms {
				if strings.Contains(m.Topic, "/C/") || strings.HasSuffix(m.Topic, "DDATA/tagpipe-demo/boiler-5") {
					n++
				}
			}
			return n >= 2
		})
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		msgs := sub.Messages()
		if !sparkplug {
			first, last := msgs[0], msgs[len(msgs)-1]
			if first.Topic != "tagpipe/demo/status" || string(first.Payload) != "online" ||
				last.Topic != "tagpipe/demo/status" || string(last.Payload) != "offline" {
				t.Fatalf("birth %s %q, last %s %q", first.Topic, first.Payload, last.Topic, last.Payload)
			}
			found := false
			for _, m := range msgs {
				found = found || (strings.HasPrefix(m.Topic, "tagpipe/demo/A/") && len(parseLines(t, m.Payload)) > 0)
			}
			if !found {
				t.Fatal("no metrics of the meters of line A")
			}
			continue
		}
		sp := mqtttest.DecodeSparkplug(t, msgs)
		kinds := map[string]bool{}
		for _, m := range sp {
			kinds[m.Kind()+":"+m.Device()] = true
		}
		for _, want := range []string{"NBIRTH:", "DBIRTH:meter-1", "DDATA:meter-1", "DBIRTH:boiler-5", "NDEATH:"} {
			if !kinds[want] {
				t.Errorf("no %s among %v", want, kinds)
			}
		}
	}
}
