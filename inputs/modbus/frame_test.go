package modbus

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/goburrow/modbus"
)

// TestChecksumsAgainstGoburrow: our CRC and LRC give what goburrow's packagers put into frames,
// and our ASCII decoding reads goburrow's frames.
func TestChecksumsAgainstGoburrow(t *testing.T) {
	rtu, ascii := modbus.NewRTUClientHandler(""), modbus.NewASCIIClientHandler("")
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		data := make([]byte, r.IntN(200))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		unit, fc := byte(r.IntN(248)), byte(1+r.IntN(4))
		rtu.SlaveId, ascii.SlaveId = unit, unit
		pdu := &modbus.ProtocolDataUnit{FunctionCode: fc, Data: data}
		frame, err := rtu.Encode(pdu)
		if err != nil {
			t.Fatal(err)
		}
		n := len(frame)
		if got := crc16(frame[:n-2]); byte(got) != frame[n-2] || byte(got>>8) != frame[n-1] {
			t.Fatalf("crc16 %04x, goburrow % x", got, frame[n-2:])
		}
		u, p, err := unpackRTU(frame)
		if err != nil || u != unit || p[0] != fc || !bytes.Equal(p[1:], data) {
			t.Fatalf("unpackRTU: %v %d % x", err, u, p)
		}
		aframe, err := ascii.Encode(pdu)
		if err != nil {
			t.Fatal(err)
		}
		var dst [maxASCIIFrame / 2]byte
		u, p, err = unpackASCII(aframe, dst[:])
		if err != nil || u != unit || p[0] != fc || !bytes.Equal(p[1:], data) {
			t.Fatalf("unpackASCII %q: %v", aframe, err)
		}
		want, err := ascii.Decode(aframe)
		if err != nil || want.FunctionCode != p[0] || !bytes.Equal(want.Data, p[1:]) {
			t.Fatalf("goburrow decodes %q as %v %v", aframe, want, err)
		}
		if n, err := splitASCII(append(aframe, ':')); n != len(aframe) || err != nil {
			t.Fatalf("splitASCII: %d %v", n, err)
		}
	}
}

func TestSplit(t *testing.T) {
	f := func(name string, split func([]byte) (int, error), b []byte, want int, lost bool) {
		t.Helper()
		n, err := split(b)
		if n != want || errors.Is(err, errStreamLost) != lost {
			t.Errorf("%s: got %d, %v; want %d (lost %v)", name, n, err, want, lost)
		}
	}
	mbap := []byte{0, 7, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34}
	f("mbap whole", splitMBAP, mbap, 11, false)
	f("mbap and more", splitMBAP, append(mbap, 0, 8), 11, false)
	f("mbap header only", splitMBAP, mbap[:7], 0, false)
	f("mbap partial header", splitMBAP, mbap[:3], 0, false)
	f("mbap protocol id", splitMBAP, []byte{0, 7, 0, 1, 0, 5, 1, 3, 2, 0x12, 0x34}, 0, true)
	f("mbap length 1", splitMBAP, []byte{0, 7, 0, 0, 0, 1, 1}, 0, true)
	f("mbap length 255", splitMBAP, []byte{0, 7, 0, 0, 0, 255, 1}, 0, true)
	f("rtu read", splitRTU, []byte{1, 3, 2, 0x12, 0x34, 0xb5, 0x33}, 7, false)
	f("rtu read partial", splitRTU, []byte{1, 3, 2, 0x12}, 0, false)
	f("rtu exception", splitRTU, []byte{1, 0x83, 2, 0xc0, 0xf1, 9}, 5, false)
	f("rtu write echo", splitRTU, []byte{1, 6, 0, 1, 0, 3, 0x98, 0x0b}, 8, false)
	f("rtu unknown function", splitRTU, []byte{1, 0x2b, 0, 0}, 0, true)
	f("ascii", splitASCII, []byte(":010302123496\r\n"), 15, false)
	f("ascii partial", splitASCII, []byte(":0103021234"), 0, false)
	f("ascii no colon", splitASCII, []byte("010302123496\r\n"), 0, true)
	f("ascii too long", splitASCII, append([]byte{':'}, bytes.Repeat([]byte{'0'}, maxASCIIFrame)...), 0, true)
}

func TestReadData(t *testing.T) {
	data, err := readData([]byte{3, 4, 1, 2, 3, 4}, 3, 4)
	if err != nil || !bytes.Equal(data, []byte{1, 2, 3, 4}) {
		t.Errorf("good answer: % x %v", data, err)
	}
	var exc *ExceptionError
	if _, err := readData([]byte{0x83, 2}, 3, 4); !errors.As(err, &exc) || exc.Code != 2 {
		t.Errorf("exception: %v", err)
	}
	for _, c := range []struct {
		pdu  []byte
		kind error
	}{
		{[]byte{}, errShortFrame},
		{[]byte{0x83}, errShortFrame},
		{[]byte{4, 4, 1, 2, 3, 4}, errWrongFunc},
		{[]byte{3, 4, 1, 2}, errShortFrame},
		{[]byte{3, 2, 1, 2, 3, 4}, errShortFrame},
		{[]byte{3}, errShortFrame},
	} {
		if _, err := readData(c.pdu, 3, 4); !errors.Is(err, c.kind) {
			t.Errorf("% x: %v, want %v", c.pdu, err, c.kind)
		}
	}
	if got := ExceptionName(12); got != "exception code 12" {
		t.Error(got)
	}
}
