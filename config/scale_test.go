package config_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
	_ "github.com/tagpipe/tagpipe/inputs/modbus"
	_ "github.com/tagpipe/tagpipe/outputs/file"
)

// plantConfig is the configuration `loadtest -devices n -write-config FILE` writes (cmd/loadtest
// agentConfig with its defaults): [agent], one file output and one [[inputs.modbus]] table with
// a profile of 20 fields and n devices, each a table of three keys.
func plantConfig(n int) string { return plantWith(n, "", "", nil) }

// plantWith is plantConfig with head written at the top of the modbus table, dev(i) after
// device i's keys and tail after the devices.
func plantWith(n int, head, tail string, dev func(i int) string) string {
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
` + head + `
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
		if dev != nil {
			b.WriteString(dev(i))
		}
	}
	b.WriteString(tail)
	return b.String()
}

// BenchmarkLoad100k loads the 100,000-device configuration of the load test (11 MB).
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

// sameLoad loads text whole and with arrays of tables read in pieces of size elements, and
// reports every difference: the error, the warnings, each plugin (as decoded and initialised)
// and its settings. It returns whether a table was read in pieces.
func sameLoad(t *testing.T, name, text string, lookup func(string) (string, bool), size int) bool {
	t.Helper()
	whole, wholeErr := config.LoadText("p.conf", text, lookup)
	before := config.PiecesRead()
	defer func(old int) { *config.PieceSize = old }(*config.PieceSize)
	*config.PieceSize = size
	pieces, piecesErr := config.LoadText("p.conf", text, lookup)
	used := config.PiecesRead() > before
	if fmt.Sprint(wholeErr) != fmt.Sprint(piecesErr) {
		t.Errorf("%s (pieces of %d): whole: %v\nin pieces: %v", name, size, wholeErr, piecesErr)
		return used
	}
	if wholeErr != nil {
		return used
	}
	if !slices.Equal(whole.Warnings, pieces.Warnings) {
		t.Errorf("%s (pieces of %d): warnings whole: %q\nin pieces: %q", name, size, whole.Warnings, pieces.Warnings)
	}
	if !samePlugins(whole, pieces) {
		t.Errorf("%s (pieces of %d): the plugins differ", name, size)
	}
	return used
}

// samePlugins reports whether two loads built equal plugins with equal settings.
func samePlugins(a, b *config.Config) bool {
	if len(a.Inputs) != len(b.Inputs) || len(a.Processors) != len(b.Processors) || len(a.Outputs) != len(b.Outputs) {
		return false
	}
	for i := range a.Inputs {
		if !reflect.DeepEqual(a.Inputs[i].Plugin, b.Inputs[i].Plugin) || !reflect.DeepEqual(a.Inputs[i].Config, b.Inputs[i].Config) {
			return false
		}
	}
	for i := range a.Processors {
		if !reflect.DeepEqual(a.Processors[i].Plugin, b.Processors[i].Plugin) || !reflect.DeepEqual(a.Processors[i].Config, b.Processors[i].Config) {
			return false
		}
	}
	for i := range a.Outputs {
		x, y := a.Outputs[i], b.Outputs[i]
		if !reflect.DeepEqual(x.Plugin, y.Plugin) || !reflect.DeepEqual(x.Config, y.Config) || x.Settings != y.Settings || x.Identity != y.Identity {
			return false
		}
	}
	return reflect.DeepEqual(a.Agent, b.Agent) && reflect.DeepEqual(a.GlobalTags, b.GlobalTags)
}

// TestLargeTableInPieces: a table whose array of tables is read in pieces loads as the whole
// table does: the same plugins and warnings when it is good, the same errors (each with its
// line, in the same order) when it is not. Pieces of 1 and 3 elements stand for pieces of
// 1,000 in files of 30 devices.
func TestLargeTableInPieces(t *testing.T) {
	every := func(k int, s string) func(int) string {
		return func(i int) string {
			if i%k == 0 {
				return fmt.Sprintf(s, i)
			}
			return ""
		}
	}
	at := func(k int, s string) func(int) string {
		return func(i int) string {
			if i == k {
				return s
			}
			return ""
		}
	}
	profile := func(name string, address int) string {
		return fmt.Sprintf("  [[inputs.modbus.profile]]\n    name = %q\n    [[inputs.modbus.profile.field]]\n      name = \"g\"\n      register = \"holding\"\n      address = %d\n      data_type = \"UINT16\"\n", name, address)
	}
	var testdev strings.Builder
	testdev.WriteString("[[inputs.testdev]]\n  endpoint = \"x\"\n")
	for i := range 30 {
		fmt.Fprintf(&testdev, "  [[inputs.testdev.device]]\n    name = \"d%d\"\n    slave_id = %d\n", i, i%5)
	}
	good := map[string]string{
		"plain":                   plantConfig(30),
		"sub-tables":              plantWith(30, "", "", every(4, "    [inputs.modbus.device.tags]\n      room = \"r%d\"\n")),
		"a header in a string":    plantWith(30, "", "", at(5, "    [inputs.modbus.device.tags]\n      note = \"\"\"\n  [[inputs.modbus.device]]\n    name = \"fake\"\n\"\"\"\n")),
		"an array on lines":       plantWith(30, "", "", at(7, "    backup_controllers = [\n      \"tcp://127.0.0.2:1\",\n      \"tcp://127.0.0.3:1\",\n    ]\n")),
		"profiles between":        plantWith(30, "", profile("p3", 40001), every(10, profile("p%d", 1))),
		"an alias rewritten":      plantWith(30, "  fieldinclude = [\"f*\"]\n  alias = \"plant\"\n", "", nil),
		"comments and blanks":     plantWith(30, "", "# the end\n", every(3, "\n    # device %d\n\n")),
		"crlf and bom":            "\ufeff" + strings.ReplaceAll(plantWith(30, "", "", every(4, "    [inputs.modbus.device.tags]\n      room = \"r%d\"\n")), "\n", "\r\n"),
		"a value from the env":    plantWith(30, "", "", at(3, "    [inputs.modbus.device.tags]\n      site = \"${SITE}\"\n      other = '${SITE}'\n")),
		"another plugin's array":  testdev.String(),
		"an element's table last": plantWith(30, "", profile("p2", 1)+"  [inputs.modbus.device.tags]\n    late = \"yes\"\n", nil),
		"a 1-based address":       plantWith(30, "", profile("p2", 40001), at(4, "    slave_id = 0\n")),
	}
	bad := map[string]string{
		"unknown keys": plantWith(30, "", "", func(i int) string {
			return map[int]string{12: "    slave = 2\n", 25: "    slave = 2\n    foo = 1\n"}[i]
		}),
		"an unknown key on top":  plantWith(30, "  slave_id = 1\n", "", at(20, "    slave = 2\n")),
		"a bad value":            plantWith(30, "", "", at(20, "    slave_id = 300\n")),
		"a bad type":             plantWith(30, "", "", at(9, "    slave_id = \"x\"\n")),
		"two syntax errors":      plantWith(30, "", "  [[inputs.modbus.profile]]\n    name = \"p2\" x\n", at(15, "    slave_id = = 3\n")),
		"a syntax error on top":  plantWith(30, "  transport = \n", "", at(15, "    slave_id = = 3\n")),
		"a name twice":           plantWith(30, "", "", at(22, "  [[inputs.modbus.device]]\n    name = \"d00003\"\n    controller = \"tcp://127.0.0.1:1\"\n    profile = \"meter\"\n")),
		"a plain table after":    plantWith(30, "", "  [inputs.modbus.device]\n    name = \"z\"\n", nil),
		"the key on top":         plantWith(30, "  device = []\n", "", nil),
		"an unknown profile":     plantWith(30, "", "", at(29, "    profile = \"nope\"\n")),
		"a bad value in testdev": strings.Replace(testdev.String(), "slave_id = 3\n", "slave_id = 300\n", 1),
	}
	lookup := env(map[string]string{"SITE": "a\"b\n[[outputs.file]]\n'"})
	for _, size := range []int{1, 3} {
		for name, text := range good {
			if !sameLoad(t, name, text, lookup, size) && name != "an element's table last" {
				t.Errorf("%s (pieces of %d): not read in pieces", name, size)
			}
			if _, err := config.LoadText("p.conf", text, lookup); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		for name, text := range bad {
			sameLoad(t, name, text, lookup, size)
		}
	}
	// The cases kept as folders, each read whole and in pieces of one element.
	for _, dir := range []string{"testcases", "../inputs/modbus/testcases"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*", "tagpipe.conf"))
		if len(files) == 0 {
			t.Fatalf("no cases in %s", dir)
		}
		for _, f := range files {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sameLoad(t, f, string(text), nil, 1)
		}
	}
	// The comparison sees a difference of one device.
	a, errA := config.LoadText("p.conf", plantConfig(30), nil)
	b, errB := config.LoadText("p.conf", strings.Replace(plantConfig(30), "127.1.0.17:5020", "127.1.0.17:5021", 1), nil)
	if errA != nil || errB != nil || samePlugins(a, b) {
		t.Errorf("a device's other port: %v, %v; the plugins compare equal", errA, errB)
	}
}

// allocated returns the bytes and the allocations of loading text.
func allocated(t *testing.T, text string) (bytes, count uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := config.LoadText("plant.conf", text, nil); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, after.Mallocs - before.Mallocs
}

// TestLoadScalesLinearly: a plant of 100,000 devices costs ten times what one of 10,000 costs,
// in bytes allocated and in allocations, each measured against the other in this test (a tenth
// more is allowed: the file's other tables and the maps' growth steps).
func TestLoadScalesLinearly(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 110,000 devices")
	}
	smallBytes, smallCount := allocated(t, plantConfig(10000))
	largeBytes, largeCount := allocated(t, plantConfig(100000))
	t.Logf("per device: %d and %d bytes, %d and %d allocations at 10,000 and 100,000 devices",
		smallBytes/10000, largeBytes/100000, smallCount/10000, largeCount/100000)
	if r := float64(largeBytes) / float64(smallBytes); r > 11 {
		t.Errorf("10 times the devices allocated %.1f times the bytes (%d, %d)", r, smallBytes, largeBytes)
	}
	if r := float64(largeCount) / float64(smallCount); r > 11 {
		t.Errorf("10 times the devices made %.1f times the allocations (%d, %d)", r, smallCount, largeCount)
	}
}

// TestLoadPeakMemory: loading the 100,000-device file takes at most 3,000 bytes of peak
// resident memory a device over loading a 1-device file, each in a process of its own (this
// test binary run again): 300 MB for the plant, the goal of issue 18. The TOML library's tree
// of the whole table, held besides the devices decoded from it, took 4,300.
func TestLoadPeakMemory(t *testing.T) {
	if file := os.Getenv("TAGPIPE_PEAK_CONFIG"); file != "" {
		if _, err := config.Load(config.Options{Files: []string{file}}); err != nil {
			t.Fatal(err)
		}
		// The peak of this process since its start (exec): a child's rusage counts the
		// parent's memory that it shared before the exec.
		status, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				fmt.Println("peak", strings.Fields(line)[1])
			}
		}
		return
	}
	switch {
	case testing.Short():
		t.Skip("loads 100,000 devices")
	case runtime.GOOS != "linux":
		t.Skip("reads the peak resident memory of a process from Linux's /proc")
	}
	bin := os.Args[0]
	if raceEnabled {
		// The race detector's memory is not the loader's: the children are this package's
		// tests built without it (the README's test command runs everything with -race).
		bin = filepath.Join(t.TempDir(), "config.test")
		build := exec.Command("go", "test", "-c", "-o", bin, ".")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the tests without the race detector: %v\n%s", err, out)
		}
	}
	peak := func(n int) int64 {
		file := filepath.Join(t.TempDir(), "plant.conf")
		if err := os.WriteFile(file, []byte(plantConfig(n)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^TestLoadPeakMemory$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "TAGPIPE_PEAK_CONFIG="+file, "GOGC=100", "GOMEMLIMIT=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%d devices: %v\n%s", n, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if kb, ok := strings.CutPrefix(line, "peak "); ok {
				n, err := strconv.ParseInt(kb, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n << 10
			}
		}
		t.Fatalf("%d devices: no peak in\n%s", n, out)
		return 0
	}
	base, plant := peak(1), peak(100000)
	perDevice := (plant - base) / 100000
	t.Logf("peak resident memory: %d MiB for 1 device, %d MiB for 100,000: %d bytes a device", base>>20, plant>>20, perDevice)
	if perDevice > 3000 {
		t.Errorf("%d bytes of peak memory a device", perDevice)
	}
}

// FuzzPieces: any text loads in pieces of one element as it loads whole (sameLoad).
func FuzzPieces(f *testing.F) {
	f.Add(plantWith(3, "", "", nil), "")
	f.Add(plantWith(3, "", "  [inputs.modbus.device.tags]\n    a = \"${V}\"\n", func(i int) string {
		return "    [inputs.modbus.device.tags]\n      x = '''\n[[inputs.modbus.device]]\n'''\n"
	}), "v")
	f.Add("[[inputs.testdev]]\n  endpoint = \"x\"\n  [[inputs.testdev.device]]\n    name = \"a\"\n  [[inputs.testdev.device]]\n    slave_id = ${V}\n", "3")
	f.Fuzz(func(t *testing.T, text, value string) {
		sameLoad(t, "fuzz", text, func(string) (string, bool) { return value, true }, 1)
	})
}

// TestLoadKeepsNoText: the configuration's text is garbage once it is loaded. A string kept by
// a plugin or its logger that is a part of the text (a table's name, as the scanner finds it)
// would keep all of it, and so would a string decoded from a table's text that runs on into the
// comments below it: here 4 MiB of comments, above the first table and below the last.
func TestLoadKeepsNoText(t *testing.T) {
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	const pad = 4 << 20
	base := heap()
	cfg := func() *config.Config {
		comments := strings.Repeat("# a comment of 64 bytes, over and over, to make the text large.\n", pad/128)
		text := comments + plantConfig(10) + comments // the last: below the modbus table
		cfg, err := config.LoadText("big.conf", text, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}()
	held := heap() - base
	runtime.KeepAlive(cfg)
	t.Logf("%d KiB held after loading %d KiB", held>>10, pad>>10)
	if held > pad/4 {
		t.Errorf("%d KiB held after loading a text of %d KiB: the text is kept", held>>10, pad>>10)
	}
}
