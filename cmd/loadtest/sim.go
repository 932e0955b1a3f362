package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

// kind is what a simulated device does.
type kind uint8

const (
	healthy    kind = iota
	dead            // nothing listens: connections are refused
	blackholed      // accepts connections, never answers
	slow            // answers after -slow-delay
)

func (k kind) String() string {
	return [...]string{"healthy", "dead", "blackholed", "slow"}[k]
}

// kinds spreads the failing devices evenly over the devices (and so over the interval): of
// every 1/frac devices one is dead, another blackholed, another slow.
func kinds(n int, deadFrac, blackFrac, slowFrac float64) []kind {
	out := make([]kind, n)
	mark := func(frac float64, k kind, shift float64) {
		if frac <= 0 {
			return
		}
		count := int(float64(n)*frac + 0.5)
		for j := range count {
			i := int((float64(j) + shift) * float64(n) / float64(count))
			for i < n && out[i] != healthy { // never two kinds on one device
				i++
			}
			if i < n {
				out[i] = k
			}
		}
	}
	mark(deadFrac, dead, 0.25)
	mark(blackFrac, blackholed, 0.5)
	mark(slowFrac, slow, 0.75)
	return out
}

// deviceAddr is device i's loopback address: 127.0.1.1 upward, skipping .0 and .255 in the
// last octet.
func deviceAddr(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for range i {
		v++
		for byte(v) == 0 || byte(v) == 255 {
			v++
		}
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// deviceAddrs returns the addresses of n devices (computed incrementally).
func deviceAddrs(base netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	a := base
	for i := range n {
		if i > 0 {
			a = deviceAddr(a, 1)
		}
		if !a.IsLoopback() {
			fatalf("device %d would be at %s, outside 127.0.0.0/8: fewer devices or a lower -base", i, a)
		}
		out[i] = a
	}
	return out
}

// runSim is a simulator process: one modbussim listener per device it serves (devices
// o.simFrom..o.simTo-1) that is not dead, the blackholed ones on a server that never answers,
// the slow ones on one that answers late. It prints READY when every listener is up and serves
// until its standard input closes. With -record it keeps each device's connections and
// answers "report" on its standard input (cluster mode: did a device ever have two clients).
func runSim(o *options) {
	ks := kinds(o.devices, o.dead, o.blackholed, o.slow)
	addrs := deviceAddrs(o.base, o.devices)
	served := 0
	servers := map[kind]*modbussim.Server{
		healthy:    modbussim.New(modbussim.Config{Record: o.record}),
		blackholed: modbussim.New(modbussim.Config{Record: o.record, Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}}}),
		slow:       modbussim.New(modbussim.Config{Record: o.record, Faults: map[byte]modbussim.Fault{1: {Delay: o.slowDelay}}}),
	}
	start := time.Now()
	for i, k := range ks {
		if k == dead || i < o.simFrom || i >= o.simTo {
			continue
		}
		served++
		addr := netip.AddrPortFrom(addrs[i], uint16(o.port)).String()
		if _, err := servers[k].AddListener(addr); err != nil {
			fatalf("simulator: device %d: %v", i, err)
		}
	}
	fmt.Printf("READY %d listeners in %s\n", served, time.Since(start).Round(time.Millisecond))
	in := bufio.NewReader(os.Stdin)
	for { // until the parent closes it; "report" asks for the connections recorded (-record)
		line, err := in.ReadString('\n')
		if err != nil {
			break
		}
		if strings.TrimSpace(line) == "report" {
			fmt.Println(simReport([]*modbussim.Server{servers[healthy], servers[blackholed], servers[slow]}))
		}
	}
	for _, s := range servers {
		s.Close()
	}
}
