package importer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs/modbus"
	_ "github.com/tagpipe/tagpipe/inputs/opcua"
	_ "github.com/tagpipe/tagpipe/outputs/file"
	_ "github.com/tagpipe/tagpipe/outputs/influxdb"
	_ "github.com/tagpipe/tagpipe/outputs/kafka"
)

// loads fails the test unless the written configuration loads as --check loads it.
func loads(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.LoadText("written.conf", text, func(k string) (string, bool) { return "7", true })
	if err != nil {
		t.Fatalf("the written configuration does not load: %v\n%s", err, text)
	}
	return cfg
}

// hasIssues fails the test unless every line of want is a line of the report.
func hasIssues(t *testing.T, rep *Report, want ...string) {
	t.Helper()
	got := rep.String()
	for _, w := range want {
		if !strings.Contains(got, w+"\n") {
			t.Errorf("no report line %q in:\n%s", w, got)
		}
	}
}

// TestTelegrafReport: every key that does not map one to one is reported with its place and
// written into the configuration as a comment; the configuration loads.
func TestTelegrafReport(t *testing.T) {
	f := "testdata/telegraf/report.conf"
	res, err := Telegraf([]string{f})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		f + `:4: agent: collection_offset: not mapped: tagpipe spreads each input's polls over the interval itself`,
		f + `:7: inputs.cpu: not mapped: tagpipe has no inputs.cpu plugin; the table is left out`,
		f + `:10: processors.rename: not mapped: tagpipe has no processors.rename plugin; the table is left out`,
		f + `:18: inputs.modbus "scaled": holding_registers[0].scale: approximate: Telegraf truncates INT16·0.5 toward zero to keep an integer; tagpipe rounds it to the nearest`,
		f + `:20: inputs.modbus "scaled": holding_registers[2].byte_order: error: "XY" is not a byte order Telegraf knows; the field is left out`,
		f + `:21: inputs.modbus "scaled": holding_registers[3].address: error: want a list of consecutive addresses, e.g. [0] or [4, 5]; the field is left out`,
		f + `:22: inputs.modbus "scaled": holding_registers[4].address: error: holding 0 UINT16 "overlap" reads registers of holding 0 INT16 "truncated" (` + f + `:18); tagpipe reads each register of a device into one field: left out`,
		f + `:23: inputs.modbus "scaled": holding_registers[5].name: error: "truncated" is also the field at ` + f + `:18, in the same metric; left out`,
		f + `:24: inputs.modbus "scaled": holding_registers[6].unit: not mapped: tagpipe has no such setting; left out`,
		f + `:27: inputs.modbus "scaled": workarounds.string_register_location: not mapped: "lower": tagpipe reads both bytes of every register of a STRING; the STRING fields are left out`,
		f + `:31: inputs.modbus "windows": controller: error: "COM1": a Windows serial port; tagpipe runs on Linux: write file:///dev/ttyS0 or the like; the block is left out`,
		f + `:54: outputs.kafka: routing_key: approximate: "random": tagpipe sends a metric without routing tags with no key, which spreads such metrics over the partitions`,
		f + `:57: outputs.kafka: idempotent_writes: not mapped: tagpipe keeps a batch until the brokers acknowledge it; a retry may write it twice`,
		f + `:69: outputs.influxdb: database_tag: not mapped: tagpipe writes every metric to database`,
		f + `:74: outputs.file: data_format: not mapped: "csv": tagpipe writes influx (line protocol) or json; left out (influx)`,
	}
	hasIssues(t, res.Report, want...)
	for _, w := range want {
		if !strings.Contains(res.Config, "#   "+w+"\n") {
			t.Errorf("the configuration does not carry %q", w)
		}
	}
	cfg := loads(t, res.Config)
	// The serial line's settings, the gateway's Kafka codec and acks, mapped.
	for _, s := range []string{"baud_rate = 9600", `parity = "N"`, "rts_high_during_send = true", `transmission_mode = "rtu"`,
		`compression = "snappy"`, `routing_tags = ["device"]`, `required_acks = "all"`} {
		if !strings.Contains(res.Config, s) {
			t.Errorf("no %s in:\n%s", s, res.Config)
		}
	}
	if len(cfg.Inputs) != 2 || len(cfg.Outputs) != 4 {
		t.Errorf("%d inputs, %d outputs; want 2 (scaled, rs485) and 4", len(cfg.Inputs), len(cfg.Outputs))
	}
}

// TestTelegrafMalformed: input that is not Telegraf TOML is an error with its place, never a
// panic.
func TestTelegrafMalformed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, text, want string }{
		{"unterminated.conf", "[[inputs.modbus]]\n  name = \"meter\n  slave_id = 1\n", "unterminated.conf:2: "},
		{"badtable.conf", "[agent]\n  interval = \"1s\"\n[[inputs.modbus]\n", "badtable.conf:4: "},
		{"unquoted.conf", "[[inputs.modbus]]\n  controller = ${CONTROLLER}\n", "unquoted.conf:2: "},
	} {
		_, err := Telegraf([]string{write(c.name, c.text)})
		if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(dir, c.want)) {
			t.Errorf("%s: %v, want an error starting %s", c.name, err, c.want)
		}
	}
	if _, err := Telegraf([]string{filepath.Join(dir, "missing.conf")}); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("a missing file: %v", err)
	}
	empty := filepath.Join(dir, "telegraf.d")
	os.Mkdir(empty, 0o755)
	if _, err := Telegraf([]string{empty}); err == nil || !strings.Contains(err.Error(), "no *.conf file") {
		t.Errorf("an empty telegraf.d: %v", err)
	}
	// A telegraf.d folder: its files in name order, each place with its own file.
	d := filepath.Join(dir, "conf.d")
	os.Mkdir(d, 0o755)
	os.WriteFile(filepath.Join(d, "20-out.conf"), []byte("[[outputs.file]]\n  files = [\"stdout\"]\n  flush_interval = \"3s\"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "10-mem.conf"), []byte("[[inputs.mem]]\n"), 0o644)
	res, err := Telegraf([]string{d})
	if err != nil {
		t.Fatal(err)
	}
	hasIssues(t, res.Report, filepath.Join(d, "10-mem.conf")+":1: inputs.mem: not mapped: tagpipe has no inputs.mem plugin; the table is left out")
	if !strings.Contains(res.Config, "From [[outputs.file]] at "+filepath.Join(d, "20-out.conf")+":1.") {
		t.Errorf("the output's place is not written:\n%s", res.Config)
	}
}

// TestTelegrafProfilesShared: blocks with the same register map share one profile, blocks with
// another map get their own, and devices keep Telegraf's name and slave_id tags.
func TestTelegrafProfilesShared(t *testing.T) {
	text := `
[[inputs.modbus]]
  name = "m1"
  slave_id = 1
  controller = "tcp://127.0.0.1:502"
  holding_registers = [{ name = "v", byte_order = "ABCD", data_type = "FLOAT32-IEEE", scale = 1.0, address = [0, 1] }]
[[inputs.modbus]]
  name = "m2"
  slave_id = 2
  controller = "tcp://127.0.0.1:502"
  holding_registers = [{ name = "v", byte_order = "ABCD", data_type = "FLOAT32-IEEE", scale = 1.0, address = [0, 1] }]
[[inputs.modbus]]
  name = "pump"
  slave_id = 3
  controller = "tcp://127.0.0.1:502"
  holding_registers = [{ name = "v", byte_order = "CDAB", data_type = "FLOAT32-IEEE", scale = 1.0, address = [0, 1] }]
`
	p := filepath.Join(t.TempDir(), "telegraf.conf")
	os.WriteFile(p, []byte(text), 0o644)
	res, err := Telegraf([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	cfg := loads(t, res.Config)
	var doc struct {
		Inputs struct {
			Modbus []struct {
				Profiles []modbus.Profile `toml:"profile"`
				Devices  []modbus.Device  `toml:"device"`
			} `toml:"modbus"`
		} `toml:"inputs"`
	}
	if _, err := toml.Decode(res.Config, &doc); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Inputs) != 1 || len(doc.Inputs.Modbus[0].Profiles) != 2 || len(doc.Inputs.Modbus[0].Devices) != 3 {
		t.Fatalf("want one table with 2 profiles and 3 devices:\n%s", res.Config)
	}
	for i, want := range []struct{ name, profile string }{{"m1", "m1"}, {"m2", "m1"}, {"pump", "pump"}} {
		d := doc.Inputs.Modbus[0].Devices[i]
		if d.Name != want.name || d.Profile != want.profile || d.Tags["name"] != want.name || d.Tags["slave_id"] != string(rune('1'+i)) {
			t.Errorf("device %d: %+v, want %s of profile %s", i, d, want.name, want.profile)
		}
	}
}

// TestTelegrafOPCUA: nodes, groups, tags, monitoring parameters and security map; Telegraf's
// id tag is kept on every node.
func TestTelegrafOPCUA(t *testing.T) {
	f := "testdata/telegraf/opcua.conf"
	res, err := Telegraf([]string{f})
	if err != nil {
		t.Fatal(err)
	}
	cfg := loads(t, res.Config)
	if len(cfg.Inputs) != 2 {
		t.Fatalf("%d inputs, want 2:\n%s", len(cfg.Inputs), res.Config)
	}
	for _, s := range []string{`mode = "read"`, `mode = "subscribe"`, `id = "ns=1;s=Setpoint"`, `id = "ns=1;i=1001"`,
		`deadband = { type = "absolute", value = 0.5 }`, `publishing_interval = "250ms"`, `timestamp = "gather"`,
		`insecure_skip_verify = true`, `queue_size = 5`} {
		if !strings.Contains(res.Config, s) {
			t.Errorf("no %s in:\n%s", s, res.Config)
		}
	}
	hasIssues(t, res.Report, f+`:18: inputs.opcua_listener "listener": security_policy: approximate: Telegraf does not check the server's certificate: written as insecure_skip_verify = true; set trusted_certificates or server_fingerprint instead`)
}

func readProfiles(t *testing.T, text string) []modbus.Profile {
	t.Helper()
	out, err := profilesOf(text)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoundTrip: a profile exported as CSV and imported again is the same profile, for
// tagpipe's own list, a Kepware export and a Neuron template.
func TestRoundTrip(t *testing.T) {
	for _, list := range []string{"plain.csv", "kepware.csv", "neuron.csv"} {
		t.Run(list, func(t *testing.T) {
			first, err := TagLists([]string{filepath.Join("testdata/taglists", list)}, TagListOptions{Profile: "meter", Controller: "tcp://127.0.0.1:502", SlaveID: -1})
			if err != nil {
				t.Fatal(err)
			}
			loads(t, first.Config)
			conf := filepath.Join(t.TempDir(), "tagpipe.conf")
			os.WriteFile(conf, []byte(first.Config), 0o644)
			csvText, err := ExportCSV(conf, "meter")
			if err != nil {
				t.Fatal(err)
			}
			exported := filepath.Join(t.TempDir(), "meter.csv")
			os.WriteFile(exported, []byte(csvText), 0o644)
			second, err := TagLists([]string{exported}, TagListOptions{Profile: "meter", Controller: "tcp://127.0.0.1:502", SlaveID: -1})
			if err != nil {
				t.Fatal(err)
			}
			a, b := readProfiles(t, first.Config), readProfiles(t, second.Config)
			if len(a) != 1 || len(b) != 1 || len(a[0].Fields) == 0 || !reflect.DeepEqual(a[0].Fields, b[0].Fields) {
				t.Fatalf("the profile changed on the way:\nfirst:\n%s\nCSV:\n%s\nsecond:\n%s", first.Config, csvText, second.Config)
			}
			if second.Report.Count(Bad) != 0 || second.Report.Count(Unmapped) != 0 {
				t.Errorf("the exported list does not import cleanly:\n%s", second.Report)
			}
		})
	}
	if _, err := ExportCSV("testdata/taglists/missing.conf", "meter"); err == nil {
		t.Error("export of a missing file")
	}
}

// TestTagListErrors: wrong rows are reported by FILE:ROW:COLUMN and left out; the good rows are
// imported; a list without a needed column is an error naming the header.
func TestTagListErrors(t *testing.T) {
	f := "testdata/taglists/kepware_bad.csv"
	res, err := TagLists([]string{f}, TagListOptions{Profile: "bad", Controller: "tcp://127.0.0.1:502", SlaveID: -1})
	if err != nil {
		t.Fatal(err)
	}
	hasIssues(t, res.Report,
		f+`:3:2: Address: error: "500001": the first digit is the table: 0 coils, 1 discrete inputs, 3 input registers, 4 holding registers; the row is left out`,
		f+`:4:2: Address: error: "4x": the item after the table digit is 1..65536 (the first register is 1); the row is left out`,
		f+`:5:2: Address: error: "400002.16": the bit of a register is .0 to .15; the row is left out`,
		f+`:6:2: Address: error: Short takes no bit or string suffix; the row is left out`,
		f+`:7:2: Address: error: "000001.1": a coil or discrete input has no suffix; the row is left out`,
		f+`:8:2: Address: error: 65535: the field runs past 65535; the row is left out`,
		f+`:9:1: Tag Name: error: "ok" is also the name of row 2; the row is left out`,
		f+`:10:3: Data Type: error: "BCD": tagpipe reads Boolean, Short, Word, Long, DWord, LLong, QWord, Float, Double and String; the row is left out`,
		f+`:11:7: Scaling: error: "Square Root": tagpipe scales linearly only; the row is left out`,
		f+`:12:13: Clamp Low: approximate: tagpipe does not clamp a scaled value to the scaled range`,
		f+`:13:2: Address: error: holding 0 INT16 "overlap" reads registers of holding 0 UINT16 "ok" (`+f+`:2); the row is left out`,
		f+`: scan_rate: approximate: the tags have 2 scan rates: tagpipe polls a device's profile at one interval, the shortest (500 ms)`,
	)
	profiles := readProfiles(t, res.Config)
	if len(profiles) != 1 || len(profiles[0].Fields) != 2 { // ok and clamp
		t.Fatalf("want the 2 good rows:\n%s", res.Config)
	}
	loads(t, res.Config)

	_, err = TagLists([]string{"testdata/taglists/kepware_nocolumn.csv"}, TagListOptions{SlaveID: -1})
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/taglists/kepware_nocolumn.csv:1: a header this importer does not know: Tag Name, Data Type, Scan Rate") {
		t.Errorf("a list without Address: %v", err)
	}

	// Devices: a duplicate name, a bad controller, a unit out of range, an unknown profile.
	d := "testdata/taglists/devices.csv"
	res, err = TagLists([]string{"testdata/taglists/plain.csv", d}, TagListOptions{SlaveID: -1})
	if err != nil {
		t.Fatal(err)
	}
	hasIssues(t, res.Report,
		d+`:4:1: name: error: "meter-1" is a device already; the row is left out`,
		d+`:5:2: controller: error: "udp://127.0.0.1:502": want tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE; the device is left out`,
		d+`:6:3: slave_id: error: "300": want 0..247; the device is left out`,
		d+`:7:4: profile: error: "nosuch": no such profile (have: plain); the device is left out`,
		d+`:1: note: columns line become tags of each device`,
	)
	loads(t, res.Config)
}

// TestNeuronAddresses checks every address form of Neuron's template against the field it
// gives, and the wrong forms.
func TestNeuronAddresses(t *testing.T) {
	for _, c := range []struct {
		addr, typ    string
		register     string
		address, bit int
		order        string
		strBytes     int
		strOrder     byte
		err          string
	}{
		{"1!400001", "INT16", "holding", 0, -1, "", -1, 0, ""},
		{"2!300004#B", "UINT16", "input", 3, -1, "BA", -1, 0, ""},
		{"1!400010#BB", "FLOAT32", "holding", 9, -1, "CDAB", -1, 0, ""},
		{"1!400010#LB", "INT32", "holding", 9, -1, "BADC", -1, 0, ""},
		{"1!400010#BL", "UINT32", "holding", 9, -1, "DCBA", -1, 0, ""},
		{"1!400010#B", "FLOAT64", "holding", 9, -1, "DCBA", -1, 0, ""},
		{"1!400001.15", "BIT", "holding", 0, 15, "", -1, 0, ""},
		{"1!000005", "BIT", "coil", 4, -1, "", -1, 0, ""},
		{"1!100001", "BIT", "discrete", 0, -1, "", -1, 0, ""},
		{"1!400001.10L", "STRING", "holding", 0, -1, "", 10, 'L', ""},
		{"1!400001.10", "STRING", "holding", 0, -1, "", 10, 'H', ""},
		{"400001", "INT16", "", 0, 0, "", 0, 0, `"400001": want SLAVE!ADDRESS, e.g. 1!400001`},
		{"1!500001", "INT16", "", 0, 0, "", 0, 0, "the address is 000001..065536"},
		{"1!400000", "INT16", "", 0, 0, "", 0, 0, "the address is 000001..065536"},
		{"1!400001#XX", "INT32", "", 0, 0, "", 0, 0, "#XX is not a byte order of INT32"},
		{"1!400001.3", "INT16", "", 0, 0, "", 0, 0, "only BIT and STRING take a .suffix"},
		{"1!400001.16", "BIT", "", 0, 0, "", 0, 0, "the bit is .0 to .15"},
	} {
		_, reg, addr, bit, order, n, o, err := neuronAddress(c.addr, c.typ)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %s: %v, want %q", c.addr, c.typ, err, c.err)
			}
			continue
		}
		if err != nil || reg != c.register || addr != c.address || bit != c.bit || order != c.order || n != c.strBytes || o != c.strOrder {
			t.Errorf("%s %s: %s %d bit %d order %q string %d%c %v", c.addr, c.typ, reg, addr, bit, order, n, o, err)
		}
	}
}

// FuzzTagList feeds any bytes to the tag list reader as CSV: it must not panic, and whatever
// it imports must load as a configuration.
func FuzzTagList(f *testing.F) {
	for _, name := range []string{"kepware.csv", "kepware_bad.csv", "neuron.csv", "plain.csv", "devices.csv"} {
		data, err := os.ReadFile(filepath.Join("testdata/taglists", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("name,address\n\"x,1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep := &Report{}
		rows, err := parseCSV("list.csv", data)
		if err != nil {
			return
		}
		s, err := newSheet("list.csv", rows, rep)
		if err != nil {
			return
		}
		res, err := fromSheets([]*sheet{s}, TagListOptions{Profile: "p", Controller: "tcp://127.0.0.1:502", SlaveID: -1}, rep)
		if err != nil || res.Partial != "" {
			return
		}
		if _, err := config.LoadText("fuzz.conf", res.Config, func(string) (string, bool) { return "", false }); err != nil {
			t.Fatalf("an imported tag list does not load: %v\n%q\n%s", err, data, res.Config)
		}
	})
}
