// Command kfakepeer runs franz-go's kfake as a process on 127.0.0.1, so that the benchmarks can
// tell the output's CPU from the broker's, and so that tests can stop and start the broker (a
// Kafka outage) by its PID. It prints "READY host:port,..." once it listens and stops on
// SIGTERM or SIGINT (saving its state when -data-dir is given).
//
// Restarting it with the same -ports and -data-dir is what a Kafka broker's restart looks like
// to its clients: the same address, the topics and offsets kept. A consumer group's members
// are kept only if they are still within their session timeout when it comes back (kfake
// saves each member's last heartbeat); after a longer outage the group is empty and its
// members join it again.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	brokers := flag.Int("brokers", 1, "number of brokers")
	topic := flag.String("topic", "metrics", "topic to create (\"\": none)")
	partitions := flag.Int("partitions", 3, "partitions of the topic")
	ports := flag.String("ports", "", "ports of the brokers, comma-separated (default: free ports)")
	dataDir := flag.String("data-dir", "", "keep the cluster's state in this folder across restarts")
	minSession := flag.Duration("min-session-timeout", 6*time.Second, "the shortest consumer group session timeout allowed (Kafka's default: 6s)")
	flag.Parse()
	opts := []kfake.Opt{kfake.NumBrokers(*brokers), kfake.GroupMinSessionTimeout(*minSession)}
	if *topic != "" {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), *topic))
	}
	if *ports != "" {
		var ps []int
		for _, p := range strings.Split(*ports, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil {
				log.Fatalf("-ports %q: %v", *ports, err)
			}
			ps = append(ps, n)
		}
		opts = append(opts, kfake.Ports(ps...))
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("READY", strings.Join(c.ListenAddrs(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}
