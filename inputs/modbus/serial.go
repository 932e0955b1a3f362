package modbus

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/goburrow/serial"
)

// serialSlice is how long one read of a serial line waits; a deadline is kept to this
// precision. goburrow/serial fixes the read timeout when the port is opened, while a device's
// adaptive timeout changes per request.
const serialSlice = 20 * time.Millisecond

// serialConn gives a serial port (goburrow/serial) the deadline of a net.Conn.
type serialConn struct {
	port     io.ReadWriteCloser
	deadline atomic.Int64 // unix nanoseconds; 0: none
}

func openSerial(cfg *serial.Config) (conn, error) {
	c := *cfg
	c.Timeout = serialSlice
	p, err := serial.Open(&c)
	if err != nil {
		return nil, err
	}
	return &serialConn{port: p}, nil
}

func (s *serialConn) SetDeadline(t time.Time) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	s.deadline.Store(n)
	return nil
}

// SetReadDeadline is SetDeadline: a write to a serial port does not wait.
func (s *serialConn) SetReadDeadline(t time.Time) error { return s.SetDeadline(t) }

// Read waits for bytes until the deadline, one slice at a time.
func (s *serialConn) Read(b []byte) (int, error) {
	for {
		if dl := s.deadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
			return 0, os.ErrDeadlineExceeded
		}
		n, err := s.port.Read(b)
		switch {
		case n > 0:
			return n, nil
		case errors.Is(err, serial.ErrTimeout):
			continue
		case err == nil: // readable, yet nothing: the other end is gone
			return 0, io.EOF
		}
		return 0, err
	}
}

func (s *serialConn) Write(b []byte) (int, error) { return s.port.Write(b) }
func (s *serialConn) Close() error                { return s.port.Close() }

// frameGap is the silence that ends an RTU frame: 3.5 characters, and 1.75 ms above 19200 baud
// (MODBUS over serial line v1.02, 2.5.1.1).
func frameGap(baud, dataBits int, parity string, stopBits int) time.Duration {
	if baud > 19200 {
		return 1750 * time.Microsecond
	}
	bits := 1 + dataBits + stopBits
	if parity != "N" {
		bits++
	}
	return time.Duration(float64(bits) * 3.5 / float64(baud) * float64(time.Second))
}
