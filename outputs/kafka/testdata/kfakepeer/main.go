// Command kfakepeer runs franz-go's kfake as a process on 127.0.0.1, so that the benchmarks can
// tell the output's CPU from the broker's. It prints "READY host:port,..." once it listens and
// stops on SIGTERM.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	brokers := flag.Int("brokers", 1, "number of brokers")
	topic := flag.String("topic", "metrics", "topic to create")
	partitions := flag.Int("partitions", 3, "partitions of the topic")
	flag.Parse()
	c, err := kfake.NewCluster(kfake.NumBrokers(*brokers), kfake.SeedTopics(int32(*partitions), *topic))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("READY", strings.Join(c.ListenAddrs(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}
