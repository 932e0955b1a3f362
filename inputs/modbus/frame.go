package modbus

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// framing is how ADUs are delimited on a stream.
type framing uint8

const (
	frameMBAP  framing = iota + 1 // Modbus TCP: 7-byte MBAP header with transaction id and length
	frameRTU                      // unit, PDU, CRC-16; length from the function code
	frameASCII                    // ':' hex(unit PDU LRC) CR LF
)

func (f framing) String() string {
	switch f {
	case frameMBAP:
		return "tcp"
	case frameRTU:
		return "rtu"
	case frameASCII:
		return "ascii"
	}
	return "?"
}

// Sizes of ADUs (MODBUS over serial line v1.02, 2.5.1; Messaging on TCP/IP v1.0b, 3.1.3).
const (
	mbapHeader    = 7   // transaction id, protocol id, length, unit id
	maxPDU        = 253 // function code and data
	maxRTUFrame   = 256 // unit, PDU, CRC
	maxASCIIFrame = 513 // ':', 2 hex chars for each of unit, PDU and LRC, CR LF
	readBufSize   = 1024
)

// Frame errors. They are counted by kind; errStreamLost means the bytes that follow cannot be
// framed any more and the connection is re-established.
var (
	errStreamLost  = errors.New("stream lost framing")
	errWrongUnit   = errors.New("wrong unit id")
	errShortFrame  = errors.New("short frame")
	errBadChecksum = errors.New("checksum mismatch")
	errWrongFunc   = errors.New("wrong function code")
)

// frameError is a frame that was dropped, with what was wrong with it.
type frameError struct {
	kind   error // one of the errors above
	detail string
}

func (e *frameError) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *frameError) Unwrap() error { return e.kind }

func frameErr(kind error, format string, args ...any) error {
	return &frameError{kind: kind, detail: fmt.Sprintf(format, args...)}
}

// splitMBAP returns the length of the MBAP frame at the start of b, 0 when more bytes are
// needed, or errStreamLost when b cannot start an MBAP frame (protocol id not 0, a length that no
// Modbus PDU has).
func splitMBAP(b []byte) (int, error) {
	if len(b) < mbapHeader {
		return 0, nil
	}
	if pid := binary.BigEndian.Uint16(b[2:]); pid != 0 {
		return 0, frameErr(errStreamLost, "MBAP protocol id %d, want 0", pid)
	}
	n := int(binary.BigEndian.Uint16(b[4:])) // unit id + PDU
	if n < 2 || n > 1+maxPDU {
		return 0, frameErr(errStreamLost, "MBAP length %d, want 2..%d", n, 1+maxPDU)
	}
	if len(b) < 6+n {
		return 0, nil
	}
	return 6 + n, nil
}

// splitRTU returns the length of the RTU answer at the start of b, 0 when more bytes are
// needed, or errStreamLost when its function code gives no length. RTU has no length field:
// the length follows from the function code (reads: a byte count; exceptions: 5 bytes; the
// echo of a write: 8 bytes).
func splitRTU(b []byte) (int, error) {
	if len(b) < 3 {
		return 0, nil
	}
	n := 0
	switch fc := b[1]; {
	case fc >= 1 && fc <= 4:
		n = 5 + int(b[2])
	case fc&0x80 != 0:
		n = 5
	case fc == 5 || fc == 6 || fc == 15 || fc == 16:
		n = 8
	default:
		return 0, frameErr(errStreamLost, "RTU function code %d", fc)
	}
	if len(b) < n {
		return 0, nil
	}
	return n, nil
}

// splitASCII returns the length of the ASCII frame (through CR LF) at the start of b, 0 when
// more bytes are needed, or errStreamLost when b does not start with ':' or no CR LF comes
// within the longest frame.
func splitASCII(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if b[0] != ':' {
		return 0, frameErr(errStreamLost, "ASCII frame starts with %q, want ':'", b[0])
	}
	for i := 1; i+1 < len(b) && i+1 < maxASCIIFrame; i++ {
		if b[i] == '\r' && b[i+1] == '\n' {
			return i + 2, nil
		}
	}
	if len(b) >= maxASCIIFrame {
		return 0, frameErr(errStreamLost, "ASCII frame longer than %d bytes", maxASCIIFrame)
	}
	return 0, nil
}

// crcTable is the table of the Modbus CRC-16 (polynomial 0xA001 reflected, start 0xFFFF).
// goburrow/modbus has one, unexported and tied to its allocating packager; this one is checked
// against goburrow's in tests.
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 returns the Modbus CRC of b; on the wire it goes low byte first.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc = crc>>8 ^ crcTable[byte(crc)^c]
	}
	return crc
}

// lrc returns the Modbus ASCII longitudinal redundancy check of b (two's complement of the sum).
func lrc(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

// unpackRTU checks the CRC of an RTU frame and returns unit and PDU.
func unpackRTU(frame []byte) (unit byte, pdu []byte, err error) {
	n := len(frame)
	if n < 4 {
		return 0, nil, frameErr(errShortFrame, "RTU frame of %d bytes", n)
	}
	if got, want := uint16(frame[n-2])|uint16(frame[n-1])<<8, crc16(frame[:n-2]); got != want {
		return 0, nil, frameErr(errBadChecksum, "CRC %04x, computed %04x", got, want)
	}
	return frame[0], frame[1 : n-2], nil
}

// unpackASCII decodes an ASCII frame (':' … CR LF) into dst, checks the LRC and returns unit
// and PDU (a part of dst). dst must hold (len(frame)-3)/2 bytes.
func unpackASCII(frame, dst []byte) (unit byte, pdu []byte, err error) {
	hexPart := frame[1 : len(frame)-2]
	if len(hexPart)%2 != 0 || len(hexPart) < 6 {
		return 0, nil, frameErr(errShortFrame, "ASCII frame of %d hex characters", len(hexPart))
	}
	n, err := hex.Decode(dst, hexPart)
	if err != nil {
		return 0, nil, frameErr(errBadChecksum, "ASCII frame is not hex: %v", err)
	}
	raw := dst[:n]
	if got, want := raw[n-1], lrc(raw[:n-1]); got != want {
		return 0, nil, frameErr(errBadChecksum, "LRC %02x, computed %02x", got, want)
	}
	return raw[0], raw[1 : n-1], nil
}

// readData checks the PDU of an answer to a read request with function fc expecting n data
// bytes, and returns the data. An exception answer gives an *ExceptionError (without the
// device and request, which the caller adds).
func readData(pdu []byte, fc byte, n int) ([]byte, error) {
	if len(pdu) == 0 {
		return nil, frameErr(errShortFrame, "empty PDU")
	}
	switch pdu[0] {
	case fc:
	case fc | 0x80:
		if len(pdu) < 2 {
			return nil, frameErr(errShortFrame, "exception without a code")
		}
		return nil, &ExceptionError{Code: pdu[1]}
	default:
		return nil, frameErr(errWrongFunc, "function %d, want %d", pdu[0], fc)
	}
	if len(pdu) < 2 || int(pdu[1]) != n || len(pdu)-2 != n {
		got := 0
		if len(pdu) >= 2 {
			got = int(pdu[1])
		}
		return nil, frameErr(errShortFrame, "byte count %d and %d data bytes, want %d", got, max(len(pdu)-2, 0), n)
	}
	return pdu[2:], nil
}

// ExceptionError is an exception answer: the device understood the request and refused it.
type ExceptionError struct {
	Device   string
	Unit     byte
	Function byte
	Address  uint16
	Count    uint16
	Code     byte
}

// Exception codes (MODBUS Application Protocol v1.1b3, 7).
const (
	ExcIllegalFunction    = 1
	ExcIllegalAddress     = 2
	ExcIllegalValue       = 3
	ExcServerFailure      = 4
	ExcAcknowledge        = 5
	ExcServerBusy         = 6
	ExcMemoryParity       = 8
	ExcGatewayPath        = 10
	ExcGatewayNoResponse  = 11
	exceptionNamesMaxCode = 11
)

var exceptionNames = [exceptionNamesMaxCode + 1]string{
	ExcIllegalFunction:   "illegal function",
	ExcIllegalAddress:    "illegal data address",
	ExcIllegalValue:      "illegal data value",
	ExcServerFailure:     "server device failure",
	ExcAcknowledge:       "acknowledge",
	ExcServerBusy:        "server device busy",
	ExcMemoryParity:      "memory parity error",
	ExcGatewayPath:       "gateway path unavailable",
	ExcGatewayNoResponse: "gateway target device failed to respond",
}

// ExceptionName returns the name of an exception code.
func ExceptionName(code byte) string {
	if int(code) < len(exceptionNames) && exceptionNames[code] != "" {
		return exceptionNames[code]
	}
	return "exception code " + strconv.Itoa(int(code))
}

func (e *ExceptionError) Error() string {
	hint := ""
	if zero, ok := oneBased(regKind(e.Function), int(e.Address)); ok && e.Code == ExcIllegalAddress {
		hint = "; addresses are 0-based; " + oneBasedHint(regKind(e.Function), int(e.Address), zero)
	}
	return fmt.Sprintf("device %q (unit %d): read %s %d..%d (function %d): exception %d (%s)%s",
		e.Device, e.Unit, regKind(e.Function), e.Address, int(e.Address)+int(e.Count)-1, e.Function, e.Code, ExceptionName(e.Code), hint)
}
