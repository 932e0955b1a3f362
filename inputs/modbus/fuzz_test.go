package modbus

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// The fuzz targets' seeds are real answers of pymodbus, captured into testdata/fuzz by
//
//	go test -run TestCaptureSeeds -update-seeds ./inputs/modbus
//
// so that plain `go test` runs every target on them.
var updateSeeds = flag.Bool("update-seeds", false, "capture fuzz seeds from pymodbus into testdata/fuzz")

// streamConn is a connection that reads a fixed byte stream.
type streamConn struct{ r io.Reader }

func (c *streamConn) Read(b []byte) (int, error)      { return c.r.Read(b) }
func (c *streamConn) Write(b []byte) (int, error)     { return len(b), nil }
func (c *streamConn) Close() error                    { return nil }
func (c *streamConn) SetDeadline(time.Time) error     { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error { return nil }

// fuzzRequests are the requests of the capture, in order: their answers make the stream.
var fuzzRequests = []request{
	{kind: kindHolding, addr: 0, count: 10},
	{kind: kindCoil, addr: 0, count: 10},
	{kind: kindInput, addr: 1, count: 2},
	{kind: kindDiscrete, addr: 0, count: 8},
	{kind: kindHolding, addr: 299, count: 2}, // exception 2 (the typed table has 300)
}

// FuzzAnswer feeds a byte stream to the link's answer reading, as if a device sent it in
// answer to fuzzRequests. Invariants: no panic; an answer without error has exactly the data
// bytes the request asked for; the read position never leaves the buffer.
func FuzzAnswer(f *testing.F) {
	// fr: 0 MBAP, 1 RTU, 2 ASCII
	f.Add(byte(0), []byte{0, 1, 0, 0, 0, 7, 1, 3, 4, 0x12, 0x34, 0xff, 0xff})
	f.Add(byte(1), []byte{1, 0x83, 2, 0xc0, 0xf1})
	f.Add(byte(2), []byte(":010302123496\r\n"))
	f.Fuzz(func(t *testing.T, fr byte, stream []byte) {
		l := &link{
			controller: newController("tcp", "", framing(1+fr%3)),
			st:         statsOf(&models.Stats{}),
			c:          &streamConn{bytes.NewReader(stream)},
			buf:        new(buffers),
		}
		d := &device{deviceSpec: &deviceSpec{name: "fuzz", unit: 1}}
		for i := range 3 * len(fuzzRequests) {
			r := &fuzzRequests[i%len(fuzzRequests)]
			l.tid = uint16(i + 1)
			data, err := l.answer(d, r)
			if l.r < 0 || l.r > l.w || l.w > len(l.buf.read) {
				t.Fatalf("buffer positions %d..%d", l.r, l.w)
			}
			if err == nil && len(data) != r.dataBytes() {
				t.Fatalf("%d data bytes for a request of %d", len(data), r.dataBytes())
			}
			if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrNoProgress) || errors.Is(err, errStreamLost)) {
				return
			}
		}
	})
}

// FuzzDecode decodes register bytes as every type and byte order. Invariants: no panic; a
// numeric value equals the value of the bytes rearranged to ABCD by a second, independent
// rearrangement (registers as a list, as the peer script does it); a STRING holds no NUL and
// ends in no space.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x40, 0x49, 0x0f, 0xd0}, byte(typeFloat32), byte(0), byte(0), 0.0)
	f.Add([]byte("Hello, Modbus!\x00\x00"), byte(typeString), byte(1), byte(0), 1.0)
	f.Fuzz(func(t *testing.T, data []byte, typ, order, extra byte, scale float64) {
		dt := dataType(1 + typ%byte(typeString))
		fs := fieldSpec{name: "f", kind: kindHolding, typ: dt, scale: 1, divisor: 1, regs: uint16(dt.registers())}
		orders := []byteOrder{{}, {byteSwap: true}, {wordSwap: true}, {byteSwap: true, wordSwap: true}}
		fs.order = orders[order%4]
		switch dt {
		case typeString:
			fs.regs = uint16(1 + int(extra)%maxRegisters)
			fs.order.wordSwap = false
		case typeFixed, typeUfixed:
			fs.regs = []uint16{1, 2, 4}[extra%3]
			fs.divisor = math.Pow10(int(extra % 19))
		case typeBit:
			fs.bit = extra % 16
		}
		if fs.regs == 1 {
			fs.order.wordSwap = false
		}
		if scale != 0 && !math.IsNaN(scale) && !math.IsInf(scale, 0) && extra&0x80 != 0 {
			fs.scale, fs.scaled = scale, true
		}
		fs.out = outType(extra % 4)
		if dt == typeString {
			fs.out, fs.scaled = outNative, false
		}
		b := make([]byte, 2*fs.regs)
		copy(b, data)
		scratch := make([]byte, len(b))
		v := fs.decodeRegisters(b, "", scratch)
		if v.Key != "f" {
			t.Fatalf("field %+v", v)
		}
		if dt == typeString {
			s := v.StringV()
			if strings.ContainsRune(s, 0) || strings.HasSuffix(s, " ") || len(s) > len(b) {
				t.Fatalf("string %q from % x", s, b)
			}
			return
		}
		n := 2 * int(fs.regs)
		if got, want := decodeRaw(b, n, fs.order), decodeRaw(rearrange(b, fs.order), n, byteOrder{}); got != want {
			t.Fatalf("% x as %+v: %x, rearranged %x", b, fs.order, got, want)
		}
	})
}

// rearrange puts the bytes of a value in ABCD order, treating them as a list of registers.
func rearrange(b []byte, o byteOrder) []byte {
	var words [][]byte
	for i := 0; i+1 < len(b); i += 2 {
		w := []byte{b[i], b[i+1]}
		if o.byteSwap {
			w[0], w[1] = w[1], w[0]
		}
		words = append(words, w)
	}
	if o.wordSwap {
		for i, j := 0, len(words)-1; i < j; i, j = i+1, j-1 {
			words[i], words[j] = words[j], words[i]
		}
	}
	return bytes.Join(words, nil)
}

// TestCaptureSeeds records pymodbus' answers to fuzzRequests over each framing, and the
// registers of each typed layout entry, as fuzz seeds.
func TestCaptureSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("captures seeds only with -update-seeds")
	}
	for _, c := range []struct {
		transport string
		fr        framing
	}{{"tcp", frameMBAP}, {"rtu-over-tcp", frameRTU}, {"ascii-over-tcp", frameASCII}} {
		p := startPymodbus(t, "--typed", "--transport", c.transport)
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		d := &device{deviceSpec: &deviceSpec{name: "seed", unit: 1}, reqs: fuzzRequests}
		l := &link{controller: controller{framing: c.fr}}
		rt := &route{link: l}
		rt.encode(d)
		var stream []byte
		for i := range fuzzRequests {
			req := rt.frames
			var frame []byte
			if c.fr == frameMBAP {
				frame = bytes.Clone(l.mbapRequest(uint16(i+1), 1, &fuzzRequests[i]))
			} else {
				frame = req[i]
			}
			conn.Write(frame)
			stream = append(stream, readQuiet(conn)...)
		}
		conn.Close()
		writeSeed(t, "FuzzAnswer", c.transport, fmt.Sprintf("byte(%q)", rune(c.fr-1)), fmt.Sprintf("[]byte(%q)", stream))
		if c.fr != frameMBAP {
			continue
		}
		// registers of the typed layout, read over Modbus TCP
		conn, err = net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		layout := typedLayout(t)
		last := layout[len(layout)-1]
		end := last.Address + last.Length
		var regs []byte
		for addr := 100; addr < end; addr += maxRegisters {
			r := request{kind: kindHolding, addr: uint16(addr), count: uint16(min(maxRegisters, end-addr))}
			conn.Write(l.mbapRequest(7, 1, &r))
			a := readQuiet(conn)
			if len(a) != 9+r.dataBytes() {
				t.Fatalf("answer of %d bytes to %d registers", len(a), r.count)
			}
			regs = append(regs, a[9:]...)
		}
		conn.Close()
		for _, e := range layout {
			typ := typeNames[e.DataType]
			o, _ := parseByteOrder(e.ByteOrder, false)
			order := map[byteOrder]byte{{}: 0, {byteSwap: true}: 1, {wordSwap: true}: 2, {byteSwap: true, wordSwap: true}: 3}[o]
			extra := byte(0)
			switch {
			case e.Bit != nil:
				extra = byte(*e.Bit)
			case typ == typeString:
				extra = byte(e.Length - 1)
			}
			off := 2 * (e.Address - 100)
			writeSeed(t, "FuzzDecode", e.Name, fmt.Sprintf("[]byte(%q)", regs[off:off+2*e.Length]),
				fmt.Sprintf("byte(%q)", rune(typ-1)), fmt.Sprintf("byte(%q)", rune(order)), fmt.Sprintf("byte(%q)", rune(extra)), "float64(1)")
		}
	}
}

// readQuiet reads what arrives until the connection is quiet for 200 ms.
func readQuiet(c net.Conn) []byte {
	var out []byte
	buf := make([]byte, 1024)
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out
		}
	}
}

func writeSeed(t *testing.T, controller, name string, values ...string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", controller)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	text := "go test fuzz v1\n" + strings.Join(values, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "pymodbus-"+name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSeedStreams: the captured pymodbus streams parse as they should: four answers with data,
// then exception 2, over each framing.
func TestSeedStreams(t *testing.T) {
	for _, name := range []string{"tcp", "rtu-over-tcp", "ascii-over-tcp"} {
		text, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzAnswer", "pymodbus-"+name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(text)), "\n")
		fr, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "byte("), ")"))
		if err != nil {
			t.Fatal(err)
		}
		stream, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")"))
		if err != nil {
			t.Fatal(err)
		}
		l := &link{controller: newController("tcp", "", framing(1+fr[0])), st: statsOf(&models.Stats{}),
			c: &streamConn{strings.NewReader(stream)}, buf: new(buffers)}
		d := &device{deviceSpec: &deviceSpec{name: "seed", unit: 1}}
		for i := range fuzzRequests {
			l.tid = uint16(i + 1)
			data, err := l.answer(d, &fuzzRequests[i])
			var exc *ExceptionError
			switch {
			case i == len(fuzzRequests)-1:
				if !errors.As(err, &exc) || exc.Code != ExcIllegalAddress {
					t.Errorf("%s: answer %d: want exception 2, got %v", name, i, err)
				}
			case err != nil:
				t.Errorf("%s: answer %d: %v", name, i, err)
			case i == 0 && !bytes.Equal(data[:4], []byte{0x12, 0x34, 0xff, 0xff}):
				t.Errorf("%s: holding 0..1 = % x", name, data[:4])
			}
		}
	}
}
