// Package cluster holds no code: its test runs three tagpipe binaries of one [cluster] group
// over 600 simulated Modbus devices (gateways and backup controllers among them), with
// franz-go's kfake in its own process as the Kafka broker, and checks by what the simulator
// served that every device is polled by exactly one agent every interval through a start, a
// graceful stop, a SIGKILL, a return and a 30 s broker outage.
package cluster
