// Command record records the modbus_health metrics of a Modbus device whose link degrades and
// then drops out, for TestRecordedDegradation (../degradation.lp). Run from the repository root:
//
//	go run ./processors/predict/testdata/record -server /path/to/modbus_server.py \
//	    -out processors/predict/testdata/degradation.lp
//
// The device is Debian's pymodbus server (python3-pymodbus; modbus_server.py from the project's
// peer recipes), on loopback. Between it and the client sits a proxy of ours that degrades the
// link on a schedule: answers are held back by a delay that is flat, then climbs (quadratically)
// with jitter growing with it; then the proxy goes silent (requests time out), and then it closes
// every connection and stops listening (connections are refused). The client polls 10 holding
// registers every 250 ms with goburrow/modbus, with internal/resilience's adaptive timeout, and
// writes one modbus_health metric per poll with internal/resilience's health fields, as the
// Modbus input does. The round trips are real: measured on a real Modbus exchange through the
// proxy, server and network stack.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/goburrow/modbus"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
)

// The schedule, from the first poll.
const (
	flat     = 30 * time.Second // 5 ms ± 1 ms added
	climb    = 25 * time.Second // then 5 → 405 ms, quadratically, ± half of it
	silent   = 4 * time.Second  // then no answers at all
	refused  = 6 * time.Second  // then nothing listens
	interval = 250 * time.Millisecond
)

func main() {
	server := flag.String("server", "inputs/modbus/testdata/modbus_server.py", "pymodbus peer script (run from the repository root)")
	out := flag.String("out", "degradation.lp", "line protocol file to write")
	flag.Parse()
	log.SetFlags(0)

	srv, addr := startServer(*server)
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()

	start := time.Now()
	p := newProxy(addr, start)
	handler := modbus.NewTCPClientHandler(p.addr)
	handler.SlaveId = 1
	client := modbus.NewClient(handler)
	timeout := resilience.NewTimeout(resilience.TimeoutConfig{})
	var health resilience.Health

	var buf []byte
	ser := serializer.NewInflux(time.Millisecond)
	tags := []models.Tag{{Key: "controller", Value: "tcp://127.0.0.1"}, {Key: "device", Value: "plc-7"}, {Key: "slave_id", Value: "1"}}
	fields := make([]models.Field, 0, 16)
	end := start.Add(flat + climb + silent + refused)
	for next := start; next.Before(end); next = next.Add(interval) {
		if late := time.Since(next); late > 0 { // a poll that timed out: skip the ticks it missed
			next = next.Add(late.Truncate(interval))
		}
		time.Sleep(time.Until(next))
		handler.Timeout = timeout.Current()
		health.Request()
		t := time.Now()
		_, err := client.ReadHoldingRegisters(0, 10)
		rtt := time.Since(t)
		if err != nil {
			health.Failed(resilience.Classify(err))
			handler.Close()
		} else {
			health.Answered(rtt)
			timeout.Observe(rtt)
		}
		fields = health.AppendFields(fields[:0], timeout, nil)
		m := models.New("modbus_health", tags, fields, time.Now())
		if buf, err = ser.Append(buf, m); err != nil {
			log.Fatal(err)
		}
	}
	p.close()
	header := fmt.Sprintf("# modbus_health of a device whose link degrades: recorded by testdata/record on %s\n"+
		"# schedule from the first poll: %v flat (+5 ms), %v climbing (5 -> 405 ms, jitter +-50%%), %v silent, %v refused; a poll every %v\n",
		start.UTC().Format(time.RFC3339), flat, climb, silent, refused, interval)
	if err := os.WriteFile(*out, append([]byte(header), buf...), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: %d polls", *out, health.Requests())
}

// startServer starts the pymodbus peer on a free loopback port and returns its address.
func startServer(script string) (*exec.Cmd, string) {
	cmd := exec.Command("/usr/bin/python3", script, "--port", "0")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", script, err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
			go io.Copy(io.Discard, stdout)
			return cmd, net.JoinHostPort(f[1], f[2])
		}
	}
	log.Fatal("the Modbus peer ended before READY")
	return nil, ""
}

// proxy forwards Modbus TCP between the client and the server, delaying each answer by the
// schedule's delay at that moment.
type proxy struct {
	addr  string
	ln    net.Listener
	start time.Time
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(server string, start time.Time) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln, start: start}
	go p.accept(server)
	go func() { // the device drops off the network: nothing listens any more
		time.Sleep(time.Until(start.Add(flat + climb + silent)))
		p.close()
	}()
	return p
}

func (p *proxy) accept(server string) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", server)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c) }()
		go p.answers(s, c)
	}
}

// answers copies the server's answers to the client, each after the delay of the moment it came.
func (p *proxy) answers(s, c net.Conn) {
	buf := make([]byte, 260)
	for {
		n, err := s.Read(buf)
		if err != nil {
			c.Close()
			return
		}
		d, ok := p.delay(time.Since(p.start))
		if !ok {
			continue // silent: the answer is lost
		}
		time.Sleep(d)
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *proxy) delay(since time.Duration) (time.Duration, bool) {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	switch {
	case since < flat:
		return ms(5 + (rand.Float64()*2 - 1)), true
	case since < flat+climb:
		x := float64(since-flat) / float64(climb)
		base := 5 + 400*x*x
		return ms(base * (1 + (rand.Float64() - 0.5))), true // ± 50 %
	}
	return 0, false
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
