package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
)

// The demo's OPC UA part: a simulated server (gopcua's server package, in process, loopback)
// read by one input in read mode and one in subscribe mode.
func init() {
	demoParts = append(demoParts, demoPart{name: "opcua", start: startOPCUADemo})
}

const opcuaDemoTables = `[[inputs.opcua]]
  name = "sim-read"
  endpoint = "%[1]s"
  mode = "read"
  [[inputs.opcua.group]]
    measurement = "opcua"
    namespace_uri = "%[2]s"
    [[inputs.opcua.group.node]]
      name = "temperature"
      id = "s=Temperature"
    [[inputs.opcua.group.node]]
      name = "running"
      id = "s=Running"
    [[inputs.opcua.group.node]]
      name = "status"
      id = "s=Status"

[[inputs.opcua]]
  name = "sim-subscribe"
  endpoint = "%[1]s"
  mode = "subscribe"
  publishing_interval = "500ms"
  [[inputs.opcua.group]]
    measurement = "opcua"
    namespace_uri = "%[2]s"
    sampling_interval = "100ms"
    [[inputs.opcua.group.node]]
      name = "sine"
      id = "s=Sine"
    [[inputs.opcua.group.node]]
      name = "counter"
      id = "s=Counter"
`

func startOPCUADemo(context.Context) (string, func(), error) {
	s, err := opcuasim.Start(opcuasim.Options{Period: 100 * time.Millisecond})
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf(opcuaDemoTables, s.Endpoint(), opcuasim.NamespaceURI), func() { s.Close(time.Second) }, nil
}
