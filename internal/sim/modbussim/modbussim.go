// Package modbussim is a Modbus server of our own, for `tagpipe demo`, tests and benchmarks. It
// serves on loopback only, speaks Modbus TCP, RTU over TCP or ASCII over TCP, answers any number
// of unit ids behind one port (a gateway), and computes its values from the clock when they are
// read: a simulated device costs nothing until it is polled, so one process can stand in for
// thousands (Listen once, then AddListener per device).
//
// It shares no code with inputs/modbus on purpose (its CRC is computed bit by bit, the client's
// from a table): a peer that reuses the client's code would agree with the client's bugs.
//
// # Data of every unit U at time t (seconds)
//
//	holding 0-1   float32 ABCD  voltage   230 + 3·sin(2πt/60 + U)
//	        2-3   float32 ABCD  current   10 + 2·sin(2πt/17 + U)
//	        4-5   float32 ABCD  power kW  voltage·current/1000
//	        6-7   uint32  ABCD  energy Wh t·(100+U) mod 2³²
//	        8     uint16        frequency 5000 + 5·sin(2πt/30) (FIXED, 2 decimals: 50.00 Hz)
//	        9     int16         temperature 215 + 30·sin(2πt/300 + U) (FIXED, 1 decimal: 21.5 °C)
//	        10-17 STRING AB     "SIM-" and U in four digits, NUL padded
//	        18    uint16        status: bit 0 running (always), bit 1 alarm (on 10 s of every 60)
//	        other address a holds a
//	input   0     uint16        t mod 65536
//	        other address a holds 1000 + a
//	coil    a     on when (⌊t/10⌋ + a + U) is even
//	discrete a    on when a is a multiple of 3
//
// Writes (functions 5, 6, 15, 16) override a value until the server is closed. A read past
// Size gives exception 2, more than 125 registers or 2000 bits exception 3, an unknown function
// exception 1.
package modbussim

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Profile is the [[inputs.modbus.profile]] table named "meter" that reads this layout (as
// `tagpipe demo` does), to paste into a config after the [[inputs.modbus]] line.
const Profile = `
  [[inputs.modbus.profile]]
    name = "meter"
    measurement = "power"
    [[inputs.modbus.profile.field]]
      name = "voltage"
      address = 0
      data_type = "FLOAT32"
    [[inputs.modbus.profile.field]]
      name = "current"
      address = 2
      data_type = "FLOAT32"
    [[inputs.modbus.profile.field]]
      name = "power_kw"
      address = 4
      data_type = "FLOAT32"
    [[inputs.modbus.profile.field]]
      name = "energy_wh"
      address = 6
      data_type = "UINT32"
    [[inputs.modbus.profile.field]]
      name = "frequency"
      address = 8
      data_type = "UFIXED"
      decimals = 2
    [[inputs.modbus.profile.field]]
      name = "temperature"
      address = 9
      data_type = "FIXED"
      decimals = 1
    [[inputs.modbus.profile.field]]
      name = "serial_number"
      address = 10
      data_type = "STRING"
      length = 8
    [[inputs.modbus.profile.field]]
      name = "running"
      address = 18
      data_type = "BIT"
      bit = 0
    [[inputs.modbus.profile.field]]
      name = "alarm"
      address = 18
      data_type = "BIT"
      bit = 1
    [[inputs.modbus.profile.field]]
      name = "breaker_closed"
      register = "coil"
      address = 0
    [[inputs.modbus.profile.field]]
      name = "uptime"
      register = "input"
      address = 0
      data_type = "UINT16"
`

// Framing is how frames are delimited on the connection.
type Framing int

// Framings.
const (
	TCP   Framing = iota // Modbus TCP (MBAP header)
	RTU                  // RTU over TCP: unit, PDU, CRC-16
	ASCII                // ASCII over TCP: ':' hex LRC CR LF
)

// Fault makes a unit misbehave, for tests of the client's error handling.
type Fault struct {
	Exception   byte          // answer every request with this exception code
	NoAnswer    bool          // drop requests silently
	Delay       time.Duration // answer this late (the connection waits, as a real device does)
	DelayFirst  int           // only the first DelayFirst answers are late (0: all)
	WrongTID    bool          // TCP: answer with transaction id + 1
	WrongUnit   bool          // answer as unit id + 1
	BadChecksum bool          // RTU, ASCII: a wrong CRC or LRC
	Short       bool          // byte count 2 more than the data (TCP length stays consistent)
	DropEvery   int           // drop every DropEvery-th request of the unit (a flaky link); 0: none
	MaxRead     int           // drop reads of more registers or bits (a device that cannot serve large reads); 0: none
	Split       time.Duration // write each answer in two parts (its first 8 bytes, then the rest) this far apart
	CloseMid    bool          // write the first half of the answer, then close the connection
}

// Config configures a server.
type Config struct {
	Framing Framing
	// Units are the unit ids served; requests to others get no answer. Empty: every unit.
	Units []byte
	// Size is the number of addresses of each table (default 1000).
	Size int
	// Faults by unit id.
	Faults map[byte]Fault
	// Now is the clock of the values (default time.Now).
	Now func() time.Time
	// OnRequest, if set, is called with every request's unit and PDU (valid during the call)
	// as it is received, from the connection's goroutine.
	OnRequest func(unit byte, pdu []byte)
	// ServedAt, when not 0, is a holding register address: ServedAt to ServedAt+3 hold the time
	// of the answer (from Now) in Unix nanoseconds, uint64 ABCD. With a Now that never gives
	// the same time twice, each reading served has an identity of its own (the soak test
	// accounts for every reading this way).
	ServedAt uint16
	// Record keeps, for every device (a listener: an address), its client connections (open
	// now, the most open at once, each moment a second one opened) and the time of every
	// request to each unit behind it, for Record. Tests of agents that share devices count
	// with it: a device must never have two clients, and each unit is polled every interval.
	Record bool
}

// DeviceRecord is what a device (a listener) saw, from Server.Record.
//
// A connection's end is seen when its goroutine reads it, which on a loaded machine may come
// some milliseconds after the client closed it: a connection accepted while another is open
// counts in Doubles only when the other is still open DoubleGrace later. Interleaved counts
// the requests that came on a connection after a newer one had sent its first: two clients
// polling at once, however quickly either closes.
type DeviceRecord struct {
	Addr     string
	Open     int         // connections open now
	MaxOpen  int         // the most open at once (without the grace)
	Accepted int         // connections accepted
	Doubles  []time.Time // each moment a connection opened while another was open (see above)
	// Interleaved is the number of requests on a connection older than one that had sent a
	// request already.
	Interleaved int
	// Requests are the times of the requests to each unit (all of them, answered or not).
	Requests map[byte][]time.Time
}

// DoubleGrace is how long a connection may take to be seen closed after another opened.
const DoubleGrace = 100 * time.Millisecond

// deviceRecord is a DeviceRecord being kept.
type deviceRecord struct {
	mu     sync.Mutex
	r      DeviceRecord
	seq    int          // connections accepted so far
	open   map[int]bool // the sequence numbers of those open
	newest int          // the newest connection that sent a request
}

// opened records a new connection and returns its sequence number.
func (d *deviceRecord) opened(now time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	n := d.seq
	if d.open == nil {
		d.open = map[int]bool{}
	}
	d.open[n] = true
	d.r.Open++
	d.r.Accepted++
	d.r.MaxOpen = max(d.r.MaxOpen, d.r.Open)
	if d.r.Open > 1 {
		time.AfterFunc(DoubleGrace, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			for o := range d.open {
				if o < n && d.open[n] {
					d.r.Doubles = append(d.r.Doubles, now)
					return
				}
			}
		})
	}
	return n
}

func (d *deviceRecord) closed(n int) {
	d.mu.Lock()
	delete(d.open, n)
	d.r.Open--
	d.mu.Unlock()
}

func (d *deviceRecord) request(conn int, unit byte, now time.Time) {
	d.mu.Lock()
	if d.r.Requests == nil {
		d.r.Requests = map[byte][]time.Time{}
	}
	d.r.Requests[unit] = append(d.r.Requests[unit], now)
	if conn < d.newest {
		d.r.Interleaved++
	}
	d.newest = max(d.newest, conn)
	d.mu.Unlock()
}

// Record returns a copy of what each device saw (Config.Record), by address; nil without
// Record.
func (s *Server) Record() map[string]DeviceRecord {
	if !s.cfg.Record {
		return nil
	}
	out := map[string]DeviceRecord{}
	s.records.Range(func(k, v any) bool {
		d := v.(*deviceRecord)
		d.mu.Lock()
		r := d.r
		r.Doubles = slices.Clone(d.r.Doubles)
		r.Requests = make(map[byte][]time.Time, len(d.r.Requests))
		for u, ts := range d.r.Requests {
			r.Requests[u] = slices.Clone(ts)
		}
		d.mu.Unlock()
		out[k.(string)] = r
		return true
	})
	return out
}

// recordOf returns the record of the device at addr (Config.Record), nil without Record.
func (s *Server) recordOf(addr string) *deviceRecord {
	if !s.cfg.Record {
		return nil
	}
	v, _ := s.records.LoadOrStore(addr, &deviceRecord{r: DeviceRecord{Addr: addr}})
	return v.(*deviceRecord)
}

// Server serves simulated devices. Its methods are safe for concurrent use.
type Server struct {
	cfg   Config
	units [256]bool
	all   bool

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup

	requests atomic.Uint64
	accepted atomic.Uint64
	faultN   sync.Map // unit → *atomic.Int64, answers given under a DelayFirst fault
	dropN    sync.Map // unit → *atomic.Int64, requests seen under a DropEvery fault

	written   atomic.Bool
	overrides sync.Map // key{table, unit, addr} → uint16
	records   sync.Map // listener address → *deviceRecord (Config.Record)
}

type key struct {
	table byte
	unit  byte
	addr  uint16
}

// New returns a server that serves nothing until Listen or Serve.
func New(cfg Config) *Server {
	if cfg.Size <= 0 {
		cfg.Size = 1000
	}
	if cfg.Size > 65536 {
		cfg.Size = 65536
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, conns: map[net.Conn]struct{}{}, all: len(cfg.Units) == 0}
	for _, u := range cfg.Units {
		s.units[u] = true
	}
	return s
}

// Listen starts a server on addr, a loopback address ("127.0.0.1:0" for a free port).
func Listen(addr string, cfg Config) (*Server, error) {
	s := New(cfg)
	if _, err := s.AddListener(addr); err != nil {
		return nil, err
	}
	return s, nil
}

// AddListener serves on one more loopback address (a simulated device of its own) and returns
// the address it listens on.
func (s *Server) AddListener(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("modbussim: %s is not a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return "", net.ErrClosed
	}
	s.listeners = append(s.listeners, l)
	s.wg.Add(1)
	s.mu.Unlock()
	s.recordOf(l.Addr().String()) // listed in Record even when nobody connects
	go s.accept(l)
	return l.Addr().String(), nil
}

// Addr returns the address of the first listener.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].Addr().String()
}

// Requests returns how many requests were received.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Connections returns how many connections were accepted.
func (s *Server) Connections() uint64 { return s.accepted.Load() }

// Close stops listening, closes every connection and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) accept(l net.Listener) {
	defer s.wg.Done()
	wait := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
			// out of file descriptors, say: wait and try again, as net/http does
			time.Sleep(wait)
			wait = min(2*wait, time.Second)
			continue
		}
		if err != nil {
			return
		}
		wait = 5 * time.Millisecond
		s.accepted.Add(1)
		if !s.track(c) {
			c.Close()
			return
		}
		rec, n := s.recordOf(l.Addr().String()), 0
		if rec != nil {
			n = rec.opened(time.Now()) // here, so that the numbers follow the order of accepts
		}
		go func() {
			defer s.wg.Done()
			if rec != nil {
				defer rec.closed(n)
			}
			s.serve(c, rec, n)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary() && !errors.Is(err, net.ErrClosed)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// session is one connection's state: buffers reused for every request.
type session struct {
	s     *Server
	c     net.Conn
	rec   *deviceRecord // Config.Record
	conn  int           // its sequence number in rec
	in    [1024]byte    // requests: at most 513 bytes (ASCII)
	r, w  int
	frame [260]byte // decoded ASCII request: unit, PDU
	out   [264]byte // answer: room for the MBAP header, PDU ≤ 253, CRC
}

func (s *Server) serve(c net.Conn, rec *deviceRecord, conn int) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	ss := &session{s: s, c: c, rec: rec, conn: conn}
	for {
		n, err := ss.split()
		switch {
		case err != nil:
			return // garbage: drop the connection, as devices do
		case n > 0:
			if err := ss.handle(ss.in[ss.r : ss.r+n]); err != nil {
				return
			}
			ss.r += n
			if ss.r == ss.w {
				ss.r, ss.w = 0, 0
			}
			continue
		}
		if ss.w == len(ss.in) {
			ss.w = copy(ss.in[:], ss.in[ss.r:ss.w])
			ss.r = 0
		}
		k, err := c.Read(ss.in[ss.w:])
		ss.w += k
		if err != nil && k == 0 {
			return
		}
	}
}

var errGarbage = errors.New("modbussim: not a request")

// split returns the length of the request frame at the start of the input, 0 if more is needed.
func (ss *session) split() (int, error) {
	b := ss.in[ss.r:ss.w]
	switch ss.s.cfg.Framing {
	case TCP:
		if len(b) < 7 {
			return 0, nil
		}
		n := int(binary.BigEndian.Uint16(b[4:]))
		if binary.BigEndian.Uint16(b[2:]) != 0 || n < 2 || n > 254 {
			return 0, errGarbage
		}
		if len(b) < 6+n {
			return 0, nil
		}
		return 6 + n, nil
	case RTU:
		if len(b) < 2 {
			return 0, nil
		}
		n := 8 // unit fc addr count crc
		switch b[1] {
		case 15, 16:
			if len(b) < 7 {
				return 0, nil
			}
			n = 9 + int(b[6])
		case 1, 2, 3, 4, 5, 6:
		default:
			return 0, errGarbage
		}
		if len(b) < n {
			return 0, nil
		}
		return n, nil
	default:
		if len(b) == 0 {
			return 0, nil
		}
		if b[0] != ':' {
			return 0, errGarbage
		}
		for i := 1; i+1 < len(b); i++ {
			if b[i] == '\r' && b[i+1] == '\n' {
				return i + 2, nil
			}
		}
		if len(b) > 513 {
			return 0, errGarbage
		}
		return 0, nil
	}
}

// handle answers one request frame.
func (ss *session) handle(frame []byte) error {
	s := ss.s
	var tid uint16
	var unit byte
	var pdu []byte
	switch s.cfg.Framing {
	case TCP:
		tid, unit, pdu = binary.BigEndian.Uint16(frame), frame[6], frame[7:]
	case RTU:
		n := len(frame)
		if crcBitwise(frame[:n-2]) != uint16(frame[n-2])|uint16(frame[n-1])<<8 {
			return nil // a real device ignores a frame with a bad CRC
		}
		unit, pdu = frame[0], frame[1:n-2]
	default:
		hx := frame[1 : len(frame)-2]
		if len(hx)%2 != 0 || len(hx)/2 > len(ss.frame) {
			return nil
		}
		n, err := hex.Decode(ss.frame[:], hx)
		if err != nil || n < 3 || lrcOf(ss.frame[:n-1]) != ss.frame[n-1] {
			return nil
		}
		unit, pdu = ss.frame[0], ss.frame[1:n-1]
	}
	s.requests.Add(1)
	if ss.rec != nil {
		ss.rec.request(ss.conn, unit, time.Now())
	}
	if s.cfg.OnRequest != nil {
		s.cfg.OnRequest(unit, pdu)
	}
	if !s.all && !s.units[unit] || len(pdu) == 0 {
		return nil
	}
	f := s.cfg.Faults[unit]
	if f.NoAnswer {
		return nil
	}
	if f.DropEvery > 0 {
		v, _ := s.dropN.LoadOrStore(unit, new(atomic.Int64))
		if v.(*atomic.Int64).Add(1)%int64(f.DropEvery) == 0 {
			return nil
		}
	}
	if f.MaxRead > 0 && pdu[0] >= 1 && pdu[0] <= 4 && len(pdu) == 5 && int(binary.BigEndian.Uint16(pdu[3:])) > f.MaxRead {
		return nil
	}
	// Build the PDU of the answer behind room for the longest header.
	const head = 7
	out := ss.out[:head]
	if f.Exception != 0 {
		out = append(out, pdu[0]|0x80, f.Exception)
	} else {
		out = s.answer(out, unit, pdu)
	}
	if f.Short && len(out) > head+2 && out[head] < 0x80 && out[head] <= 4 {
		out[head+1] += 2
	}
	if f.Delay > 0 && s.takeDelay(unit, f.DelayFirst) {
		time.Sleep(f.Delay)
	}
	if f.WrongTID {
		tid++
	}
	if f.WrongUnit {
		unit++
	}
	var wire []byte
	switch s.cfg.Framing {
	case TCP:
		body := out[head:]
		wire = out[:0]
		wire = binary.BigEndian.AppendUint16(wire, tid)
		wire = binary.BigEndian.AppendUint16(wire, 0)
		wire = binary.BigEndian.AppendUint16(wire, uint16(len(body)+1))
		wire = append(wire, unit)
		wire = wire[:head+len(body)] // the PDU is already in place
	case RTU:
		out[head-1] = unit
		wire = out[head-1:]
		crc := crcBitwise(wire)
		if f.BadChecksum {
			crc ^= 0x0101
		}
		wire = append(wire, byte(crc), byte(crc>>8))
	default:
		out[head-1] = unit
		raw := out[head-1:]
		l := lrcOf(raw)
		if f.BadChecksum {
			l++
		}
		var asc [520]byte // ':', 2·(unit, PDU, LRC), CR LF
		a := append(asc[:0], ':')
		a = hex.AppendEncode(a, raw)
		a = hex.AppendEncode(a, []byte{l})
		for i := 1; i < len(a); i++ {
			if a[i] >= 'a' && a[i] <= 'f' {
				a[i] -= 'a' - 'A'
			}
		}
		wire = append(a, '\r', '\n')
	}
	if f.CloseMid {
		ss.c.Write(wire[:len(wire)/2])
		ss.c.Close()
		return errors.New("closed in the middle of an answer (CloseMid)")
	}
	if f.Split > 0 && len(wire) > 8 {
		if _, err := ss.c.Write(wire[:8]); err != nil {
			return err
		}
		time.Sleep(f.Split)
		wire = wire[8:]
	}
	_, err := ss.c.Write(wire)
	return err
}

func (s *Server) takeDelay(unit byte, first int) bool {
	if first <= 0 {
		return true
	}
	v, _ := s.faultN.LoadOrStore(unit, new(atomic.Int64))
	return v.(*atomic.Int64).Add(1) <= int64(first)
}

// answer appends the answer PDU to a request PDU.
func (s *Server) answer(out []byte, unit byte, pdu []byte) []byte {
	fc := pdu[0]
	exc := func(code byte) []byte { return append(out, fc|0x80, code) }
	switch fc {
	case 1, 2, 3, 4:
		if len(pdu) != 5 {
			return exc(3)
		}
		addr, n := int(binary.BigEndian.Uint16(pdu[1:])), int(binary.BigEndian.Uint16(pdu[3:]))
		limit := 125
		if fc <= 2 {
			limit = 2000
		}
		if n < 1 || n > limit {
			return exc(3)
		}
		if addr+n > s.cfg.Size {
			return exc(2)
		}
		t := s.cfg.Now()
		if fc <= 2 {
			nb := (n + 7) / 8
			out = append(out, fc, byte(nb))
			start := len(out)
			for range nb {
				out = append(out, 0)
			}
			for i := range n {
				if s.bit(fc, unit, uint16(addr+i), t) {
					out[start+i/8] |= 1 << (i % 8)
				}
			}
			return out
		}
		out = append(out, fc, byte(2*n))
		for i := range n {
			out = binary.BigEndian.AppendUint16(out, s.register(fc, unit, uint16(addr+i), t))
		}
		return out
	case 5, 6:
		if len(pdu) != 5 {
			return exc(3)
		}
		addr, v := binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])
		if int(addr) >= s.cfg.Size {
			return exc(2)
		}
		if fc == 5 {
			v = min(v, 1)
		}
		s.overrides.Store(key{fc - 4, unit, addr}, v) // table 1 = coil, 2 = holding
		s.written.Store(true)
		return append(out, pdu...)
	case 15, 16:
		if len(pdu) < 6 || len(pdu) != 6+int(pdu[5]) {
			return exc(3)
		}
		addr, n := int(binary.BigEndian.Uint16(pdu[1:])), int(binary.BigEndian.Uint16(pdu[3:]))
		if addr+n > s.cfg.Size {
			return exc(2)
		}
		for i := range n {
			if fc == 15 {
				if i/8 >= int(pdu[5]) {
					return exc(3)
				}
				s.overrides.Store(key{1, unit, uint16(addr + i)}, uint16(pdu[6+i/8]>>(i%8)&1))
			} else {
				if 2*i+1 >= int(pdu[5]) {
					return exc(3)
				}
				s.overrides.Store(key{3, unit, uint16(addr + i)}, binary.BigEndian.Uint16(pdu[6+2*i:]))
			}
		}
		s.written.Store(true)
		return append(out, pdu[:5]...)
	}
	return exc(1)
}

func (s *Server) override(table, unit byte, addr uint16) (uint16, bool) {
	if !s.written.Load() {
		return 0, false
	}
	v, ok := s.overrides.Load(key{table, unit, addr})
	if !ok {
		return 0, false
	}
	return v.(uint16), true
}

// bit returns coil (fc 1) or discrete input (fc 2) addr of unit at t.
func (s *Server) bit(fc, unit byte, addr uint16, t time.Time) bool {
	if fc == 2 {
		return addr%3 == 0
	}
	if v, ok := s.override(1, unit, addr); ok {
		return v != 0
	}
	return (t.Unix()/10+int64(addr)+int64(unit))%2 == 0
}

// register returns holding (fc 3) or input (fc 4) register addr of unit at t.
func (s *Server) register(fc, unit byte, addr uint16, t time.Time) uint16 {
	sec := float64(t.UnixNano()) / 1e9
	if fc == 4 {
		if addr == 0 {
			return uint16(t.Unix())
		}
		return 1000 + addr
	}
	if v, ok := s.override(3, unit, addr); ok {
		return v
	}
	if s.cfg.ServedAt != 0 && addr >= s.cfg.ServedAt && addr < s.cfg.ServedAt+4 {
		return uint16(uint64(t.UnixNano()) >> (16 * (3 - (addr - s.cfg.ServedAt))))
	}
	u := float64(unit)
	voltage := 230 + 3*math.Sin(2*math.Pi*sec/60+u)
	current := 10 + 2*math.Sin(2*math.Pi*sec/17+u)
	f32 := func(v float64, hi bool) uint16 {
		b := math.Float32bits(float32(v))
		if hi {
			return uint16(b >> 16)
		}
		return uint16(b)
	}
	switch addr {
	case 0, 1:
		return f32(voltage, addr == 0)
	case 2, 3:
		return f32(current, addr == 2)
	case 4, 5:
		return f32(voltage*current/1000, addr == 4)
	case 6, 7:
		e := uint32(uint64(sec) * uint64(100+unit))
		if addr == 6 {
			return uint16(e >> 16)
		}
		return uint16(e)
	case 8:
		return uint16(5000 + math.Round(5*math.Sin(2*math.Pi*sec/30)))
	case 9:
		return uint16(int16(215 + math.Round(30*math.Sin(2*math.Pi*sec/300+u))))
	case 10, 11, 12, 13, 14, 15, 16, 17:
		name := [16]byte{'S', 'I', 'M', '-', '0', '0' + unit/100%10, '0' + unit/10%10, '0' + unit%10}
		i := 2 * (addr - 10)
		return uint16(name[i])<<8 | uint16(name[i+1])
	case 18:
		st := uint16(1)
		if int64(sec)%60 < 10 {
			st |= 2
		}
		return st
	}
	return addr
}

// crcBitwise is the Modbus CRC-16, bit by bit.
func crcBitwise(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			lsb := crc & 1
			crc >>= 1
			if lsb != 0 {
				crc ^= 0xA001
			}
		}
	}
	return crc
}

func lrcOf(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}
