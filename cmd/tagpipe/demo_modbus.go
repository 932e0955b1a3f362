package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
)

func init() {
	demoParts = append(demoParts, demoPart{name: "modbus", start: startModbusDemo})
}

// startModbusDemo serves simulated meters on loopback: three on ports of their own (Modbus TCP),
// two behind a gateway (units 11 and 12 on one port) and one behind an RTU-over-TCP converter;
// and, so that the device page shows what goes wrong in a plant, one that answers slowly and one
// whose port refuses connections (its breaker opens after five polls).
func startModbusDemo(ctx context.Context) (string, func(), error) {
	tcp := modbussim.New(modbussim.Config{})
	rtu := modbussim.New(modbussim.Config{Framing: modbussim.RTU, Units: []byte{5}})
	slow := modbussim.New(modbussim.Config{Faults: map[byte]modbussim.Fault{7: {Delay: 120 * time.Millisecond}}})
	stop := func() { tcp.Close(); rtu.Close(); slow.Close() }
	var b strings.Builder
	b.WriteString("[[inputs.modbus]]\n  timeout = \"500ms\"\n" + modbussim.Profile)
	device := func(name, controller string, unit int, extra string) {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = %q\n    controller = %q\n    slave_id = %d\n    profile = \"meter\"\n%s",
			name, controller, unit, extra)
	}
	for i := 1; i <= 3; i++ {
		addr, err := tcp.AddListener("127.0.0.1:0")
		if err != nil {
			stop()
			return "", nil, err
		}
		device(fmt.Sprintf("meter-%d", i), "tcp://"+addr, i, "    tags = { line = \"A\" }\n")
	}
	gw, err := tcp.AddListener("127.0.0.1:0")
	if err != nil {
		stop()
		return "", nil, err
	}
	device("feeder-11", "tcp://"+gw, 11, "    tags = { line = \"B\", gateway = \"gw-1\" }\n")
	device("feeder-12", "tcp://"+gw, 12, "    tags = { line = \"B\", gateway = \"gw-1\" }\n")
	conv, err := rtu.AddListener("127.0.0.1:0")
	if err != nil {
		stop()
		return "", nil, err
	}
	device("boiler-5", "tcp://"+conv, 5, "    transmission_mode = \"rtuovertcp\"\n    tags = { line = \"C\" }\n")
	slowAddr, err := slow.AddListener("127.0.0.1:0")
	if err != nil {
		stop()
		return "", nil, err
	}
	device("pump-7", "tcp://"+slowAddr, 7, "    tags = { line = \"C\", note = \"slow\" }\n")
	dead, err := refusingAddr()
	if err != nil {
		stop()
		return "", nil, err
	}
	device("chiller-9", "tcp://"+dead, 9, "    tags = { line = \"D\", note = \"switched off\" }\n")
	return b.String(), stop, nil
}

// refusingAddr returns a loopback address where nothing listens: a port that was free a moment
// ago. A device there is refused, as one that is switched off.
func refusingAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
