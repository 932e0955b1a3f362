package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
	_ "github.com/tagpipe/tagpipe/inputs/modbus"
	_ "github.com/tagpipe/tagpipe/outputs/file"
)

// plantConfig is the configuration `loadtest -devices n -write-config FILE` writes (cmd/loadtest
// agentConfig with its defaults): [agent], one file output and one [[inputs.modbus]] table with
// a profile of 20 fields and n devices, each a table of three keys.
func plantConfig(n int) string {
	var b strings.Builder
	b.WriteString(`[agent]
  interval = "1s"
  flush_interval = "1s"
  precision = "0s"
  omit_hostname = true

[[outputs.file]]
  files = ["stdout"]
  data_format = "influx"

[[inputs.modbus]]

  [[inputs.modbus.profile]]
    name = "meter"
    measurement = "loadtest"
`)
	addr := 0
	for i := range 20 {
		typ, regs := "FLOAT32", 2
		if i%2 == 1 {
			typ, regs = "UINT16", 1
		}
		fmt.Fprintf(&b, "    [[inputs.modbus.profile.field]]\n      name = \"f%02d\"\n      register = \"holding\"\n      address = %d\n      data_type = %q\n", i, addr, typ)
		addr += regs
	}
	for i := range n {
		fmt.Fprintf(&b, "  [[inputs.modbus.device]]\n    name = \"d%05d\"\n    controller = \"tcp://127.%d.%d.%d:5020\"\n    profile = \"meter\"\n",
			i, 1+i>>16&0xff, i>>8&0xff, i&0xff)
	}
	return b.String()
}

func BenchmarkLoad100k(b *testing.B) {
	text := plantConfig(100000)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := config.LoadText("plant.conf", text, nil); err != nil {
			b.Fatal(err)
		}
	}
}
