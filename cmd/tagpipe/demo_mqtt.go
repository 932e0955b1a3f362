package main

import "fmt"

// demoMQTT is the optional MQTT target of `tagpipe demo --mqtt ADDR`: the demo's metrics to a
// broker as well, as line protocol batches on tagpipe/demo/<line>/<measurement>, or with
// --sparkplug as a Sparkplug B edge node (group "demo", node "tagpipe-demo", a device per
// simulated meter).
func demoMQTT(addr string, sparkplug bool) string {
	if addr == "" {
		return ""
	}
	if sparkplug {
		return fmt.Sprintf(`
[[outputs.mqtt]]
  servers = [%q]
  client_id = "tagpipe-demo"
  sparkplug = true
  group_id = "demo"
  edge_node_id = "tagpipe-demo"
`, addr)
	}
	return fmt.Sprintf(`
[[outputs.mqtt]]
  servers = [%q]
  client_id = "tagpipe-demo"
  topic = 'tagpipe/demo/{{.Tag "line"}}/{{.Name}}'
  layout = "batch"
  will_topic = "tagpipe/demo/status"
  will_payload = "offline"
  will_retain = true
  birth_topic = "tagpipe/demo/status"
  birth_payload = "online"
  birth_retain = true
`, addr)
}
