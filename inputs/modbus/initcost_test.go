package modbus

import (
	"fmt"
	"runtime"
	"testing"
)

// TestInitCostPerDevice: Init compiles a device that sets no option of its own (a plant's
// usual device: name, controller, profile) in at most 1,000 bytes of allocations, its spec, tags
// and controller included. Such devices of one profile share one merge of the options, and a
// device's resolved options are copied to the heap only when no device had the same before:
// 2,300 bytes a device before, a merge alone about 1,000 (100 MB for a plant of 100,000).
func TestInitCostPerDevice(t *testing.T) {
	const n = 2000
	text := "[[inputs.modbus]]\n" + benchProfile(20)
	m := load(t, text+"  [[inputs.modbus.device]]\n    name = \"x\"\n    controller = \"tcp://127.0.0.1:5020\"\n    profile = \"bench\"\n")
	m.inv = inventory{}
	m.Devices = make([]Device, n)
	for i := range m.Devices {
		m.Devices[i] = Device{Name: fmt.Sprintf("d%04d", i), Controller: fmt.Sprintf("tcp://127.0.%d.%d:5020", i>>8, i&0xff), Profile: "bench"}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := m.Init(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	perDevice := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes, %d allocations a device", perDevice, (after.Mallocs-before.Mallocs)/n)
	if m.inv.len() != n {
		t.Fatalf("%d devices compiled", m.inv.len())
	}
	if perDevice > 1000 {
		t.Errorf("Init allocated %d bytes a device", perDevice)
	}
}
