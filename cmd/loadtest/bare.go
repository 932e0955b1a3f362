package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runBare is the floor the agent is compared with (-bare): a poller with nothing but the
// standard library, run in the agent's place with the same devices, schedule and requests:
// one goroutine and connection per device, a reused buffer, no metrics, no output. At SIGTERM
// it prints its polls and lateness in the window as one line ("bare ...") for the parent.
func runBare(o *options) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	iv := int64(o.interval)
	var inWindow atomic.Int64
	var mu sync.Mutex
	var late []int64
	var wg sync.WaitGroup
	start := time.Now()
	for i, a := range deviceAddrs(o.base, o.devices) {
		addr := netip.AddrPortFrom(a, uint16(o.port)).String()
		phase := int64(schedulePhase(o, i))
		wg.Go(func() {
			var mine []int64
			defer func() {
				mu.Lock()
				late = append(late, mine...)
				mu.Unlock()
			}()
			var c net.Conn
			var req [12]byte
			var buf [9 + 2*125]byte
			t := time.NewTimer(time.Hour)
			x := start.UnixNano() - phase
			next := (x+iv-1)/iv*iv + phase
			for tid := uint16(1); ; tid++ {
				t.Reset(time.Until(time.Unix(0, next)))
				select {
				case <-ctx.Done():
					if c != nil {
						c.Close()
					}
					return
				case <-t.C:
				}
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
						next += iv
						continue
					}
				}
				ok := true
				for r := range o.requests {
					binary.BigEndian.PutUint16(req[0:], tid)
					binary.BigEndian.PutUint16(req[4:], 6)
					req[6], req[7] = 1, byte(3+r) // holding, then input registers
					regs := (o.fields/o.requests/2)*3 + o.fields/o.requests%2
					binary.BigEndian.PutUint16(req[10:], uint16(regs))
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					if _, err := c.Write(req[:]); err != nil {
						ok = false
						break
					}
					if _, err := io.ReadFull(c, buf[:9+2*regs]); err != nil {
						ok = false
						break
					}
				}
				if !ok {
					c.Close()
					c = nil
				} else if now := time.Now().UnixNano(); now-phase >= o.profileAt.UnixNano() && now-phase < o.profileAt.Add(o.profileFor).UnixNano() {
					inWindow.Add(1)
					mine = append(mine, now-next)
				}
				next += iv
				if now := time.Now().UnixNano(); next <= now { // overran: keep the phase
					next += (now-next)/iv*iv + iv
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(late)
	fmt.Printf("bare polls=%d p50=%d p99=%d max=%d\n", inWindow.Load(), pct(late, 0.5), pct(late, 0.99), pct(late, 1))
}
