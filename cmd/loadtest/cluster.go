package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

// Cluster mode of the load test (-agents N): N agents in one [cluster] group share the
// devices, kfake is the broker in a process of its own, and the simulators record each
// device's connections, so that the report says whether a device ever had two clients.

// runBroker is the broker process: kfake on a free loopback port until SIGTERM.
func runBroker() {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		fatalf("broker: %v", err)
	}
	defer c.Close()
	fmt.Println("READY", strings.Join(c.ListenAddrs(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}

// startBroker starts the broker process and returns its address.
func startBroker() (*child, string, error) {
	return startChild(exec.Command(self(), "-role", "kafka"), "broker", false)
}

// clusterConfig is the [cluster] table of the agents (the member name comes from $HOSTNAME).
func clusterConfig(broker string) string {
	return fmt.Sprintf(`[cluster]
  brokers = [%q]
  group = "loadtest"
  shards = 64

`, broker)
}

// simReport answers "report" on the simulator's standard input with the number of devices
// that ever had two clients at once and the most clients one had.
func simReport(servers []*modbussim.Server) string {
	doubles, most := 0, 0
	for _, s := range servers {
		for _, r := range s.Record() {
			if len(r.Doubles) > 0 || r.Interleaved > 0 {
				doubles++
			}
			most = max(most, r.MaxOpen)
		}
	}
	return fmt.Sprintf("REPORT doubles=%d most=%d", doubles, most)
}

// simDoubles asks every simulator process for its report and adds up the devices that had
// two clients at once.
func simDoubles(sims []*child) int {
	total := 0
	for _, s := range sims {
		if _, err := fmt.Fprintln(s.stdin, "report"); err != nil {
			continue
		}
		line, _ := s.out.ReadString('\n')
		var n, most int
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "REPORT doubles=%d most=%d", &n, &most); err == nil {
			total += n
		}
	}
	return total
}
