package modbussim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"
)

// The simulator is checked with goburrow/modbus, a client written by others. goburrow has no RTU
// or ASCII over TCP transport: streamTransport frames them on a TCP connection (as the peers'
// goburrow_check.go does).
type streamTransport struct {
	conn    net.Conn
	framing Framing
}

func (t *streamTransport) Send(req []byte) ([]byte, error) {
	t.conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := t.conn.Write(req); err != nil {
		return nil, err
	}
	switch t.framing {
	case RTU:
		buf := make([]byte, 3, 256)
		if _, err := io.ReadFull(t.conn, buf); err != nil {
			return nil, err
		}
		n := 8
		switch fc := buf[1]; {
		case fc&0x80 != 0:
			n = 5
		case fc >= 1 && fc <= 4:
			n = 5 + int(buf[2])
		}
		buf = buf[:n]
		_, err := io.ReadFull(t.conn, buf[3:])
		return buf, err
	default: // ASCII: up to CR LF
		var out []byte
		b := make([]byte, 1)
		for !bytes.HasSuffix(out, []byte("\r\n")) {
			if _, err := t.conn.Read(b); err != nil {
				return nil, err
			}
			out = append(out, b[0])
		}
		return out, nil
	}
}

func client(t *testing.T, s *Server, unit byte) modbus.Client {
	t.Helper()
	switch s.cfg.Framing {
	case TCP:
		h := modbus.NewTCPClientHandler(s.Addr())
		h.SlaveId, h.Timeout = unit, 2*time.Second
		t.Cleanup(func() { h.Close() })
		return modbus.NewClient(h)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if s.cfg.Framing == RTU {
		p := modbus.NewRTUClientHandler("")
		p.SlaveId = unit
		return modbus.NewClient2(p, &streamTransport{c, RTU})
	}
	p := modbus.NewASCIIClientHandler("")
	p.SlaveId = unit
	return modbus.NewClient2(p, &streamTransport{c, ASCII})
}

var fixed = time.Unix(1_800_000_000, 250_000_000) // 2027-01-15T08:00:00.25Z

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return fixed }
	}
	s, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestValues reads the documented layout with goburrow over every framing.
func TestValues(t *testing.T) {
	for _, fr := range []Framing{TCP, RTU, ASCII} {
		t.Run(fmt.Sprint(fr), func(t *testing.T) {
			s := start(t, Config{Framing: fr, Units: []byte{1, 7}})
			c := client(t, s, 7)
			hr, err := c.ReadHoldingRegisters(0, 20)
			if err != nil {
				t.Fatal(err)
			}
			sec := float64(fixed.UnixNano()) / 1e9
			voltage := 230 + 3*math.Sin(2*math.Pi*sec/60+7)
			current := 10 + 2*math.Sin(2*math.Pi*sec/17+7)
			f32 := func(off int) float32 { return math.Float32frombits(binary.BigEndian.Uint32(hr[off:])) }
			if got := f32(0); got != float32(voltage) {
				t.Errorf("voltage %v, want %v", got, float32(voltage))
			}
			if got := f32(4); got != float32(current) {
				t.Errorf("current %v, want %v", got, float32(current))
			}
			if got := f32(8); got != float32(voltage*current/1000) {
				t.Errorf("power %v", got)
			}
			if got, want := binary.BigEndian.Uint32(hr[12:]), uint32(uint64(fixed.Unix())*107); got != want {
				t.Errorf("energy %d", got)
			}
			if got := binary.BigEndian.Uint16(hr[16:]); got != uint16(5000+math.Round(5*math.Sin(2*math.Pi*sec/30))) {
				t.Errorf("frequency %d", got)
			}
			if got := string(bytes.TrimRight(hr[20:36], "\x00")); got != "SIM-0007" {
				t.Errorf("name %q", got)
			}
			if got := binary.BigEndian.Uint16(hr[36:]); got != 3 { // second 0 of a minute: running, alarm
				t.Errorf("status %d, want 3", got)
			}
			ir, err := c.ReadInputRegisters(0, 3)
			if err != nil {
				t.Fatal(err)
			}
			counter := uint16(fixed.Unix())
			if !bytes.Equal(ir, []byte{byte(counter >> 8), byte(counter), 0x03, 0xe9, 0x03, 0xea}) {
				t.Errorf("input % x", ir)
			}
			co, err := c.ReadCoils(0, 10)
			if err != nil {
				t.Fatal(err)
			}
			// on when ⌊t/10⌋ + a + U is even: ⌊t/10⌋ = 180000000, U = 7 → odd addresses
			if !bytes.Equal(co, []byte{0xAA, 0x02}) {
				t.Errorf("coils % x", co)
			}
			di, err := c.ReadDiscreteInputs(0, 8)
			if err != nil || !bytes.Equal(di, []byte{0x49}) {
				t.Errorf("discrete % x %v", di, err)
			}
			if _, err := c.WriteMultipleRegisters(30, 2, []byte{0xAB, 0xCD, 0x00, 0x01}); err != nil {
				t.Fatal(err)
			}
			if hr, err := c.ReadHoldingRegisters(30, 2); err != nil || !bytes.Equal(hr, []byte{0xAB, 0xCD, 0, 1}) {
				t.Errorf("written % x %v", hr, err)
			}
			_, err = c.ReadHoldingRegisters(999, 2)
			var me *modbus.ModbusError
			if !errors.As(err, &me) || me.ExceptionCode != 2 {
				t.Errorf("past the table: %v", err)
			}
		})
	}
}

// TestFaults: a faulty unit answers as configured.
func TestFaults(t *testing.T) {
	s := start(t, Config{Faults: map[byte]Fault{2: {Exception: 6}, 3: {NoAnswer: true}, 4: {WrongTID: true}}})
	var me *modbus.ModbusError
	if _, err := client(t, s, 2).ReadHoldingRegisters(0, 1); !errors.As(err, &me) || me.ExceptionCode != 6 {
		t.Errorf("busy unit: %v", err)
	}
	h := modbus.NewTCPClientHandler(s.Addr())
	h.SlaveId, h.Timeout = 3, 200*time.Millisecond
	defer h.Close()
	if _, err := modbus.NewClient(h).ReadHoldingRegisters(0, 1); err == nil {
		t.Error("a unit that does not answer answered")
	}
	if _, err := client(t, s, 4).ReadHoldingRegisters(0, 1); err == nil {
		t.Error("goburrow took an answer with a wrong transaction id")
	}
}

// TestManyListeners: one server stands in for many devices, each on its own port.
func TestManyListeners(t *testing.T) {
	s := start(t, Config{})
	for range 50 {
		addr, err := s.AddListener("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		h := modbus.NewTCPClientHandler(addr)
		h.SlaveId, h.Timeout = 1, 2*time.Second
		if _, err := modbus.NewClient(h).ReadHoldingRegisters(0, 2); err != nil {
			t.Fatal(err)
		}
		h.Close()
	}
	if got := s.Requests(); got != 50 {
		t.Errorf("requests %d", got)
	}
	if _, err := s.AddListener("10.0.0.1:0"); err == nil {
		t.Error("a non-loopback address was accepted")
	}
}

func (f Framing) String() string { return [...]string{"tcp", "rtu", "ascii"}[f] }

// TestFlakyAndLargeReads: DropEvery drops every n-th request of the unit, MaxRead the reads
// larger than it; OnRequest sees every request and Connections counts the connections.
func TestFlakyAndLargeReads(t *testing.T) {
	var mu sync.Mutex
	var seen []byte
	s := start(t, Config{Faults: map[byte]Fault{1: {DropEvery: 3}, 2: {MaxRead: 10}},
		OnRequest: func(unit byte, pdu []byte) { mu.Lock(); seen = append(seen, unit); mu.Unlock() }})
	dial := func(unit byte) (modbus.Client, func()) {
		h := modbus.NewTCPClientHandler(s.Addr())
		h.SlaveId, h.Timeout = unit, 200*time.Millisecond
		return modbus.NewClient(h), func() { h.Close() }
	}
	c1, close1 := dial(1)
	var failed []int
	for i := 1; i <= 6; i++ {
		if _, err := c1.ReadHoldingRegisters(0, 2); err != nil {
			failed = append(failed, i)
			close1() // goburrow cannot take a late answer: a new connection
			c1, close1 = dial(1)
		}
	}
	close1()
	if fmt.Sprint(failed) != "[3 6]" {
		t.Errorf("requests that got no answer: %v, want [3 6]", failed)
	}
	c2, close2 := dial(2)
	defer close2()
	if _, err := c2.ReadHoldingRegisters(0, 10); err != nil {
		t.Errorf("a read of 10 registers: %v", err)
	}
	if _, err := c2.ReadHoldingRegisters(0, 11); err == nil {
		t.Error("a read of 11 registers got an answer")
	}
	mu.Lock()
	if len(seen) != 8 || seen[0] != 1 || seen[7] != 2 {
		t.Errorf("OnRequest saw units %v", seen)
	}
	mu.Unlock()
	// goburrow connects on the first request: unit 1 before its 1st and 4th request, unit 2
	if got := s.Connections(); got != 3 {
		t.Errorf("connections %d, want 3", got)
	}
}

// TestRecord: with Record, each device (listener) counts its connections (open, most at once,
// the moments a second one opened) and the requests to each unit; a listener nobody dialled is
// listed with none.
func TestRecord(t *testing.T) {
	s := start(t, Config{Record: true})
	idle, err := s.AddListener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dial := func(unit byte) (*modbus.TCPClientHandler, modbus.Client) {
		h := modbus.NewTCPClientHandler(s.Addr())
		h.SlaveId, h.Timeout = unit, 2*time.Second
		if err := h.Connect(); err != nil {
			t.Fatal(err)
		}
		return h, modbus.NewClient(h)
	}
	h1, c1 := dial(1)
	for range 3 {
		if _, err := c1.ReadHoldingRegisters(0, 2); err != nil {
			t.Fatal(err)
		}
	}
	h2, c2 := dial(2) // a second client while the first is connected, for longer than the grace
	if _, err := c2.ReadHoldingRegisters(0, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(DoubleGrace + 50*time.Millisecond)
	if _, err := c1.ReadHoldingRegisters(0, 2); err != nil { // the older polls after the newer: interleaved
		t.Fatal(err)
	}
	h1.Close()
	h2.Close()
	deadline := time.Now().Add(5 * time.Second)
	var r DeviceRecord
	for {
		r = s.Record()[s.Addr()]
		if r.Open == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.Open != 0 || r.MaxOpen != 2 || r.Accepted != 2 || len(r.Doubles) != 1 || r.Interleaved != 1 || len(r.Requests[1]) != 4 || len(r.Requests[2]) != 1 {
		t.Errorf("record %+v", r)
	}
	// A client that reconnects (closes, then dials) is no second client, however late the
	// server sees the first connection end.
	h3, c3 := dial(1)
	if _, err := c3.ReadHoldingRegisters(0, 2); err != nil {
		t.Fatal(err)
	}
	h3.Close()
	h4, c4 := dial(1)
	if _, err := c4.ReadHoldingRegisters(0, 2); err != nil {
		t.Fatal(err)
	}
	h4.Close()
	time.Sleep(DoubleGrace + 50*time.Millisecond)
	if r := s.Record()[s.Addr()]; len(r.Doubles) != 1 || r.Interleaved != 1 {
		t.Errorf("after reconnects: %d doubles, %d interleaved; want 1 and 1", len(r.Doubles), r.Interleaved)
	}
	if ir, ok := s.Record()[idle]; !ok || ir.Accepted != 0 || len(ir.Requests) != 0 {
		t.Errorf("idle listener: %+v %v", ir, ok)
	}
	if New(Config{}).Record() != nil {
		t.Error("Record without Config.Record")
	}
}
