// Command opcuasim runs the simulated OPC UA server of package opcuasim as a process of its
// own, so that a benchmark measures the client alone (CPU and allocations of one process) and a
// test can kill the server as a crash would:
//
//	go run ./cmd/opcuasim -port 0 -tags 10000
//
// It prints "READY opc.tcp://HOST:PORT" when it serves and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/opcuasim"
)

func main() {
	var o opcuasim.Options
	flag.StringVar(&o.Host, "host", "127.0.0.1", "loopback address to listen on")
	flag.IntVar(&o.Port, "port", 0, "TCP port (0: a free one)")
	flag.DurationVar(&o.Period, "period", 100*time.Millisecond, "time between value changes")
	flag.IntVar(&o.Tags, "tags", 0, "number of extra changing variables ns=1;s=Tag.N")
	flag.BoolVar(&o.Secure, "secure", false, "also offer Basic256Sha256 Sign and SignAndEncrypt, and user names")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := opcuasim.Start(o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("READY", s.Endpoint())
	<-ctx.Done()
	s.Close(time.Second)
}
