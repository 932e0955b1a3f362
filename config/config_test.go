package config_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/internal/testkit/configcase"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
	"github.com/tagpipe/tagpipe/processors"
)

// testDev is an input with nested tables, a required key, a secret and typed values, standing in
// for a device plugin.
type testDev struct {
	Endpoint string          `toml:"endpoint"`
	Password config.Secret   `toml:"password"`
	Timeout  config.Duration `toml:"timeout"`
	MaxSize  config.Size     `toml:"max_size"`
	Devices  []struct {
		Name    string `toml:"name"`
		SlaveID int    `toml:"slave_id"`
	} `toml:"device"`
	Log *slog.Logger `toml:"-"`
}

func (*testDev) SampleConfig() string                             { return "" }
func (*testDev) Gather(context.Context, models.Accumulator) error { return nil }
func (d *testDev) Init() error {
	if d.Endpoint == "" {
		return config.KeyErrorf("endpoint", "required")
	}
	for i, dev := range d.Devices {
		if dev.SlaveID < 0 || dev.SlaveID > 247 {
			return config.KeyErrorf(fmt.Sprintf("device[%d].slave_id", i), "%d is out of range (0..247)", dev.SlaveID)
		}
	}
	return nil
}

// ConfigWarnings implements config.Warner: a device at slave_id 0 (the broadcast id) is worth a
// warning.
func (d *testDev) ConfigWarnings() []error {
	var out []error
	for i, dev := range d.Devices {
		if dev.SlaveID == 0 {
			out = append(out, config.KeyErrorf(fmt.Sprintf("device[%d].slave_id", i), "0 is the broadcast id"))
		}
	}
	return out
}

// UnknownKeysHint implements config.KeyHinter: "host" and "port" are another program's keys.
func (*testDev) UnknownKeysHint(keys []string) string {
	for _, k := range keys {
		if k == "host" || k == "port" {
			return "this looks like another program's table"
		}
	}
	return ""
}

type testProc struct {
	Tag string `toml:"tag"`
}

func (*testProc) SampleConfig() string                        { return "" }
func (*testProc) Apply(in ...*models.Metric) []*models.Metric { return in }

type testOut struct {
	URL string `toml:"url"`
}

func (*testOut) SampleConfig() string                          { return "" }
func (*testOut) Connect(context.Context) error                 { return nil }
func (*testOut) Write(context.Context, []*models.Metric) error { return nil }
func (*testOut) Close() error                                  { return nil }

// Init checks the URL as outputs do, echoing it in the error.
func (o *testOut) Init() error {
	if _, err := url.Parse(o.URL); err != nil {
		return config.KeyErrorf("url", "%q: %v", o.URL, err)
	}
	return nil
}

func init() {
	inputs.Add("testdev", func() models.Input { return &testDev{Timeout: config.Duration(time.Second)} })
	processors.Add("testproc", func() models.Processor { return &testProc{} })
	outputs.Add("testout", func() models.Output { return &testOut{} })
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestLoadGood(t *testing.T) {
	text := `
[global_tags]
  site = "plant-1"

[agent]
  interval = "2s"
  flush_interval = 5          # seconds
  metric_batch_size = 100
  metric_buffer_limit = 1000
  hostname = "edge-7"

[[inputs.testdev]]
  alias = "boiler"
  interval = "500ms"
  name_prefix = "p_"
  tags = { line = "A" }
  namepass = ["power*"]
  endpoint = "${ENDPOINT}"
  password = "${PASS}"
  timeout = "1m30s"
  max_size = "64MiB"
  [[inputs.testdev.device]]
    name = "m1"
    slave_id = ${SLAVE:-3}

[[processors.testproc]]
  order = 2
  tag = "second"

[[processors.testproc]]
  order = 1
  tag = "first"

[[outputs.testout]]
  url = "http://127.0.0.1:8086"
  metric_batch_size = 50
  flush_interval = "250ms"
`
	cfg, err := config.LoadText("t.conf", text, env(map[string]string{"ENDPOINT": "tcp://127.0.0.1:502", "PASS": `se"cr\et`}))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Agent
	if a.Interval.D() != 2*time.Second || a.FlushInterval.D() != 5*time.Second || a.MetricBatchSize != 100 || !a.RoundInterval {
		t.Fatalf("agent %+v", a)
	}
	if cfg.GlobalTags["site"] != "plant-1" || cfg.GlobalTags["host"] != "edge-7" {
		t.Fatalf("global tags %v", cfg.GlobalTags)
	}
	in := cfg.Inputs[0]
	dev := in.Plugin.(*testDev)
	if dev.Endpoint != "tcp://127.0.0.1:502" || dev.Password.Reveal() != `se"cr\et` || dev.Timeout.D() != 90*time.Second ||
		dev.MaxSize != 64<<20 || dev.Devices[0].SlaveID != 3 || dev.Log == nil {
		t.Fatalf("plugin %+v", dev)
	}
	c := in.Config
	if c.Alias != "boiler" || c.Interval != 500*time.Millisecond || c.NamePrefix != "p_" || c.Tags["line"] != "A" ||
		!c.Filter.IsActive() || c.Source != "t.conf:12" {
		t.Fatalf("input config %+v", c)
	}
	if cfg.Processors[0].Plugin.(*testProc).Tag != "first" || cfg.Processors[1].Plugin.(*testProc).Tag != "second" {
		t.Fatal("processors must run by order")
	}
	o := cfg.Outputs[0]
	if o.Settings.BatchSize != 50 || o.Settings.BufferLimit != 1000 || o.Settings.FlushInterval != 250*time.Millisecond {
		t.Fatalf("output settings %+v", o.Settings)
	}
	if !strings.HasPrefix(o.Identity, "outputs.testout/") {
		t.Fatalf("identity %q", o.Identity)
	}
}

func TestLoadErrorsNameTheirPlace(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"syntax", "[agent]\ninterval = \"1s\n", `t.conf:2: `},
		{"unknown key in agent", "[agent]\n  interval = \"1s\"\n  intervall = \"2s\"\n", `t.conf:3: intervall: unknown key`},
		{"unknown section", "[agnet]\n  x = 1\n", `t.conf:1: [agnet]: unknown section`},
		{"key outside a table", "interval = \"1s\"\n[agent]\n", `t.conf:1: interval: a key outside any table`},
		{"unknown plugin", "[agent]\n\n[[inputs.modbuss]]\n  x = 1\n", `t.conf:3: [[inputs.modbuss]]: unknown plugin "modbuss"`},
		{"unknown key", "[[inputs.testdev]]\n  endpoint = \"x\"\n  endpont = \"y\"\n", `t.conf:3: inputs.testdev: endpont: unknown key`},
		{"unknown nested key", "[[inputs.testdev]]\n  endpoint = \"x\"\n  [[inputs.testdev.device]]\n    name = \"a\"\n  [[inputs.testdev.device]]\n    slave = 2\n", `t.conf:6: inputs.testdev: device.slave: unknown key`},
		{"wrong type", "[[inputs.testdev]]\n  alias = \"b3\"\n  endpoint = 5\n", `t.conf:3: inputs.testdev "b3": endpoint: incompatible types`},
		{"bad duration", "[[inputs.testdev]]\n  endpoint = \"x\"\n\n  timeout = \"soon\"\n", `t.conf:4: inputs.testdev: timeout: "soon" is not a duration`},
		{"bad size", "[[inputs.testdev]]\n  endpoint = \"x\"\n  max_size = \"lots\"\n", `t.conf:3: inputs.testdev: max_size: "lots" is not a size`},
		{"missing required key", "[agent]\n[[inputs.testdev]]\n  alias = \"boiler-3\"\n", `t.conf:2: inputs.testdev "boiler-3": endpoint: required`},
		{"init error on a nested key", "[[inputs.testdev]]\n  endpoint = \"x\"\n  [[inputs.testdev.device]]\n    slave_id = 1\n  [[inputs.testdev.device]]\n    name = \"m2\"\n    slave_id = 300\n", `t.conf:7: inputs.testdev: device[1].slave_id: 300 is out of range (0..247)`},
		{"bad filter", "[[outputs.testout]]\n  namepass = [\"[x\"]\n", `t.conf:1: outputs.testout: namepass: bad pattern "[x"`},
		{"generic key of another kind", "[[outputs.testout]]\n  order = 1\n", `t.conf:2: outputs.testout: order: unknown key`},
		{"plugin not as array", "[inputs.testdev]\n  endpoint = \"x\"\n", `t.conf:1: [inputs.testdev]: plugins are declared as [[inputs.NAME]]`},
		{"agent check", "[agent]\n  metric_batch_size = 10\n  metric_buffer_limit = 5\n", `t.conf:3: agent: metric_buffer_limit: must be at least metric_batch_size`},
		{"a password, not its hash", "[agent]\n  http_username = \"op\"\n  http_password_hash = \"hunter2\"\n", `t.conf:3: agent: http_password_hash: must be a bcrypt hash of the password`},
		{"a hash without a user", "[agent]\n  http_password_hash = \"$2a$10$0123456789012345678901uQ7mGOUg3X.Z0dCuVJK3vW1hXOfk1Ha\"\n", `t.conf:2: agent: http_username: must be set with http_password_hash`},
		{"a certificate without its key", "[agent]\n  http_tls_cert = \"a.crt\"\n", `t.conf:2: agent: http_tls_key: must be set with http_tls_cert`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.LoadText("t.conf", c.text, env(nil))
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("got  %q\nwant %q...", err, c.want)
			}
		})
	}
}

// TestHTTPAccess: a bcrypt hash (with its $ signs, which are not ${VAR}) loads as it is.
func TestHTTPAccess(t *testing.T) {
	hash := "$2a$10$0123456789012345678901uQ7mGOUg3X.Z0dCuVJK3vW1hXOfk1Ha"
	cfg, err := config.LoadText("t.conf", "[agent]\n  http_username = \"op\"\n  http_password_hash = \""+hash+"\"\n", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.HTTPUsername != "op" || cfg.Agent.HTTPPasswordHash != hash {
		t.Errorf("agent %+v", cfg.Agent)
	}
}

// The TOML library keeps one line per key name: the second of two [[inputs.testdev]] tables
// must still be blamed at its own line.
func TestErrorsInSecondInstance(t *testing.T) {
	text := `[[inputs.testdev]]
  endpoint = "a"
  timeout = "1s"

[[inputs.testdev]]
  alias = "two"
  endpoint = "b"
  timeout = "never"

[[inputs.testdev]]
  endpoint = "c"
  timeout = "3s"
`
	_, err := config.LoadText("t.conf", text, env(nil))
	if err == nil || !strings.HasPrefix(err.Error(), `t.conf:8: inputs.testdev "two": timeout:`) {
		t.Fatalf("got %v", err)
	}
}

func TestAllErrorsAreReported(t *testing.T) {
	text := "[[inputs.testdev]]\n  endpont = \"x\"\n[[outputs.nope]]\n"
	_, err := config.LoadText("t.conf", text, env(nil))
	if err == nil || !strings.Contains(err.Error(), "t.conf:2:") || !strings.Contains(err.Error(), "t.conf:3:") {
		t.Fatalf("want both mistakes reported, got %v", err)
	}
}

func TestSecretsStayHidden(t *testing.T) {
	text := "[[inputs.testdev]]\n  endpoint = \"x\"\n  password = \"${PASS}\"\n  [[inputs.testdev.device]]\n    slave_id = 999\n"
	_, err := config.LoadText("t.conf", text, env(map[string]string{"PASS": "hunter2"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v", err)
	}
	s := config.Secret("hunter2")
	dev := testDev{Password: s}
	j, _ := json.Marshal(dev)
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "password", s, "dev", dev)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", dev, dev, dev, s), string(j), logged.String()} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret shows in %q", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Fatal("Reveal must give the value")
	}
}

func TestEnvSubstitution(t *testing.T) {
	text := `# a comment with ${NOT_SUBSTITUTED} stays
[[inputs.testdev]]
  endpoint = "${HOST}:${PORT:-502}"
  alias = "$${LITERAL}"
`
	cfg, err := config.LoadText("t.conf", text, env(map[string]string{"HOST": "tcp://127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Inputs[0].Plugin.(*testDev).Endpoint; got != "tcp://127.0.0.1:502" {
		t.Fatalf("endpoint %q", got)
	}
	if cfg.Inputs[0].Config.Alias != "${LITERAL}" {
		t.Fatalf("alias %q", cfg.Inputs[0].Config.Alias)
	}
	if len(cfg.Warnings) != 0 {
		t.Fatalf("warnings %v", cfg.Warnings)
	}
	cfg, err = config.LoadText("t.conf", "[[inputs.testdev]]\n  endpoint = \"x${UNSET}\"\n", env(nil))
	if err != nil || len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "UNSET") {
		t.Fatalf("an unset variable is worth a warning: %v %v", cfg, err)
	}
}

func TestConfigDirectoryMerges(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "tagpipe.conf")
	d := filepath.Join(dir, "tagpipe.d")
	os.Mkdir(d, 0o755)
	os.WriteFile(main, []byte("[agent]\n  interval = \"5s\"\n  hostname = \"h\"\n[[outputs.testout]]\n"), 0o644)
	os.WriteFile(filepath.Join(d, "b.conf"), []byte("[agent]\n  interval = \"7s\"\n[[inputs.testdev]]\n  endpoint = \"b\"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "a.conf"), []byte("[[inputs.testdev]]\n  endpoint = \"a\"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "ignored.txt"), []byte("not toml"), 0o644)
	cfg, err := config.Load(config.Options{Files: []string{main}, Dirs: []string{d}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.Interval.D() != 7*time.Second || cfg.Agent.Hostname != "h" {
		t.Fatalf("a later [agent] changes only what it names: %+v", cfg.Agent)
	}
	if len(cfg.Inputs) != 2 || cfg.Inputs[0].Plugin.(*testDev).Endpoint != "a" || len(cfg.Outputs) != 1 {
		t.Fatalf("inputs %d outputs %d", len(cfg.Inputs), len(cfg.Outputs))
	}
	os.WriteFile(filepath.Join(d, "c.conf"), []byte("[[inputs.testdev]]\n  bad = 1\n"), 0o644)
	_, err = config.Load(config.Options{Files: []string{main}, Dirs: []string{d}})
	if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(d, "c.conf")+":2:") {
		t.Fatalf("an error in a directory file names that file: %v", err)
	}
}

func TestDurationAndSize(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "10MB": 10e6, "1.5GiB": 3 << 29, "4096": 4096, "512 KiB": 512 << 10, "2k": 2048} {
		got, err := config.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1MB", "MB", "1XB"} {
		if _, err := config.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) must fail", bad)
		}
	}
	var d config.Duration
	for in, want := range map[any]time.Duration{"1m30s": 90 * time.Second, int64(3): 3 * time.Second, 0.25: 250 * time.Millisecond, "0": 0} {
		if err := d.UnmarshalTOML(in); err != nil || d.D() != want {
			t.Errorf("Duration(%v) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, bad := range []any{"-1s", "1 minute", int64(-2), true} {
		if err := d.UnmarshalTOML(bad); err == nil {
			t.Errorf("Duration(%v) must fail", bad)
		}
	}
}

// The label of a plugin table comes from the file parsed once; the second table of the same
// plugin gets its own alias.
func TestLabelOfSecondTable(t *testing.T) {
	_, err := config.LoadText("x.conf", "[[inputs.testdev]]\n  alias = \"one\"\n  endpoint = \"x\"\n[[inputs.testdev]]\n  alias = \"two\"\n  endpoint = 5\n", nil)
	if err == nil || !strings.Contains(err.Error(), `x.conf:6: inputs.testdev "two": endpoint`) {
		t.Fatalf("got %v", err)
	}
}

// TestPluginWarningsAndHints: a plugin's warnings (config.Warner) land in Config.Warnings with
// FILE:LINE of the key they name; a plugin's hint on unknown keys (config.KeyHinter) comes once,
// at the table's line, before the unknown keys, and only when the plugin recognises them.
func TestPluginWarningsAndHints(t *testing.T) {
	cfg, err := config.LoadText("w.conf", `[[inputs.testdev]]
  endpoint = "x"
  [[inputs.testdev.device]]
    name = "a"
    slave_id = 3
  [[inputs.testdev.device]]
    name = "b"
    slave_id = 0
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "w.conf:8: inputs.testdev: device[1].slave_id: 0 is the broadcast id"; len(cfg.Warnings) != 1 || cfg.Warnings[0] != want {
		t.Errorf("warnings %q, want [%q]", cfg.Warnings, want)
	}

	_, err = config.LoadText("h.conf", "[[inputs.testdev]]\n  endpoint = \"x\"\n  host = \"10.0.0.1\"\n  port = 502\n", nil)
	want := "h.conf:1: inputs.testdev: this looks like another program's table\n" +
		"h.conf:3: inputs.testdev: host: unknown key\n" +
		"h.conf:4: inputs.testdev: port: unknown key"
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
	_, err = config.LoadText("h.conf", "[[inputs.testdev]]\n  endpoint = \"x\"\n  hots = 1\n", nil)
	if err == nil || err.Error() != "h.conf:3: inputs.testdev: hots: unknown key" {
		t.Errorf("an unknown key the plugin does not recognise: %v", err)
	}
}

// hostileValue is issue 18's: a quote, a line break and a table header. Substituted, it must
// stay a value.
const hostileValue = "x'\n[[outputs.testout]]\n  url = 'http://evil'\n#\"\"\"'''\\"

// TestEnvCannotInjectTOML: a value substituted into any kind of string stays that string's
// value byte for byte and adds no table; every line keeps its number.
func TestEnvCannotInjectTOML(t *testing.T) {
	for _, c := range []struct{ name, written, want string }{
		{"literal", `'${TP_PW}'`, hostileValue},
		{"literal with text around", `'a\b-${TP_PW}-"c"'`, `a\b-` + hostileValue + `-"c"`},
		{"basic", `"${TP_PW}"`, hostileValue},
		{"basic with an escaped backslash", `"\\${TP_PW}"`, `\` + hostileValue},
		{"multi-line basic", `"""${TP_PW}"""`, hostileValue},
		{"multi-line literal", "'''\nl1\\ ${TP_PW}\n'''", "l1\\ " + hostileValue + "\n"},
		{"multi-line literal untouched", `'''$${TP_PW}'''`, "${TP_PW}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := "[[inputs.testdev]]\n  endpoint = \"x\"\n  password = " + c.written + "\n  endpont = 1\n" +
				"[[outputs.testout]]\n  url = \"http://127.0.0.1:1\"\n"
			_, err := config.LoadText("t.conf", text, env(map[string]string{"TP_PW": hostileValue}))
			wantLine := 4 + strings.Count(c.written, "\n")
			if want := fmt.Sprintf("t.conf:%d: inputs.testdev: endpont: unknown key", wantLine); err == nil || err.Error() != want {
				t.Fatalf("got %v\nwant %s (the line after the value keeps its number)", err, want)
			}
			cfg, err := config.LoadText("t.conf", strings.Replace(text, "  endpont = 1\n", "", 1), env(map[string]string{"TP_PW": hostileValue}))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Outputs) != 1 {
				t.Fatalf("%d outputs: the value added a table", len(cfg.Outputs))
			}
			if got := cfg.Inputs[0].Plugin.(*testDev).Password.Reveal(); got != c.want {
				t.Fatalf("password %q\nwant     %q", got, c.want)
			}
		})
	}
}

// TestEnvInBarePositions: a bare ${VAR} takes one value on one line, or is an error at its line.
func TestEnvInBarePositions(t *testing.T) {
	text := "[[inputs.testdev]]\n  endpoint = \"x\"\n  [[inputs.testdev.device]]\n    slave_id = ${ID}\n"
	cfg, err := config.LoadText("t.conf", text, env(map[string]string{"ID": "7"}))
	if err != nil || cfg.Inputs[0].Plugin.(*testDev).Devices[0].SlaveID != 7 {
		t.Fatalf("a number: %v", err)
	}
	for _, bad := range []string{"7\n[[outputs.testout]]", "7 # swallow", "7, 8", "", "[1", "7 ]"} {
		_, err := config.LoadText("t.conf", text, env(map[string]string{"ID": bad}))
		want := "t.conf:4: ${ID}: its value (" + strconv.Itoa(len(bad)) + " bytes) is not one TOML value on one line"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ID=%q: got %v\nwant %s…", bad, err, want)
		}
	}
	// An array and an inline table are one value each.
	text = "[[inputs.testdev]]\n  endpoint = \"x\"\n  namepass = ${NP}\n  tags = ${TAGS}\n"
	cfg, err = config.LoadText("t.conf", text, env(map[string]string{"NP": `["a*", "b"]`, "TAGS": `{ line = "A" }`}))
	if err != nil || cfg.Inputs[0].Config.Tags["line"] != "A" {
		t.Fatalf("array and inline table: %v", err)
	}
}

// TestConfigCases runs the folders of testcases/: limits and checks of [agent] and the
// generic keys of plugin tables, each error at its line.
func TestConfigCases(t *testing.T) { configcase.Run(t, "testcases") }

// TestLineEndsAndByteOrderMark: a file written on Windows (CRLF line ends, a UTF-8 byte order
// mark) loads as the same file with LF line ends, and errors keep their lines.
func TestLineEndsAndByteOrderMark(t *testing.T) {
	text := "[agent]\n  interval = \"5s\"\n[[inputs.testdev]]\n  endpoint = \"\"\"\nx\"\"\"\n  tags = { a = \"1\" }\n" +
		"  [[inputs.testdev.device]]\n    name = 'm'\n    slave_id = 4\n[[outputs.testout]]\n  url = \"http://127.0.0.1:1\"\n"
	for name, file := range map[string]string{
		"CRLF": strings.ReplaceAll(text, "\n", "\r\n"), "BOM": "\ufeff" + text, "BOM and CRLF": "\ufeff" + strings.ReplaceAll(text, "\n", "\r\n"),
	} {
		cfg, err := config.LoadText("w.conf", file, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dev := cfg.Inputs[0].Plugin.(*testDev)
		if cfg.Agent.Interval.D() != 5*time.Second || dev.Endpoint != "x" || dev.Devices[0].SlaveID != 4 || len(cfg.Outputs) != 1 {
			t.Fatalf("%s: agent %+v, device %+v", name, cfg.Agent, dev)
		}
		_, err = config.LoadText("w.conf", strings.Replace(file, "slave_id = 4", "slave_id = 400", 1), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "w.conf:9: inputs.testdev: device[0].slave_id: 400 is out of range") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestCheckBufferDirectory: with a disk buffer, a buffer_directory that is a file (or lies
// below one) is an error at its line; one that does not exist yet is made at the start.
func TestCheckBufferDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "buffer")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{file, fmt.Sprintf(`t.conf:3: agent: buffer_directory: %q is a file, not a directory`, file)},
		{filepath.Join(file, "sub"), fmt.Sprintf(`t.conf:3: agent: buffer_directory: %q cannot be made: %s is a file, not a directory`, filepath.Join(file, "sub"), file)},
		{filepath.Join(dir, "new", "sub"), ""},
		{dir, ""},
	} {
		text := fmt.Sprintf("[agent]\n  buffer_strategy = \"disk\"\n  buffer_directory = %q\n[[outputs.testout]]\n", c.path)
		_, err := config.LoadText("t.conf", text, nil)
		if got := fmt.Sprint(err); c.want == "" && err != nil || c.want != "" && got != c.want {
			t.Errorf("%s: got %v\nwant %s", c.path, err, c.want)
		}
		// With the memory buffer the directory is not used.
		if _, err := config.LoadText("t.conf", strings.Replace(text, `"disk"`, `"memory"`, 1), nil); err != nil {
			t.Errorf("memory buffer: %v", err)
		}
	}
}

// TestURLPasswordsRedacted: a URL that does not parse is echoed by the plugin's error; its
// password is not.
func TestURLPasswordsRedacted(t *testing.T) {
	for _, u := range []string{"http://admin:s3cr3t-pw@127.0.0.1:80 86", "http://admin:s3cr3t-pw\"@[::1", "http://admin:s3cr3t-pw@[fe80::1%en0]:x"} {
		text := fmt.Sprintf("[[outputs.testout]]\n  url = %q\n", u)
		_, err := config.LoadText("t.conf", text, nil)
		if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "admin:xxxxx@") || !strings.HasPrefix(err.Error(), "t.conf:2: ") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// TestEnvValueWithURLPasswordRedacted: the password may come from the environment too.
func TestEnvValueWithURLPasswordRedacted(t *testing.T) {
	_, err := config.LoadText("t.conf", "[[outputs.testout]]\n  url = \"http://op:${PW}@127.0.0.1:bad\"\n", env(map[string]string{"PW": "pa ss"}))
	if err == nil || strings.Contains(err.Error(), "pa ss") || !strings.Contains(err.Error(), "op:xxxxx@") {
		t.Fatalf("%v", err)
	}
}

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		addr      string
		ok, every bool
	}{
		{"127.0.0.1:9273", true, false},
		{"[::1]:9273", true, false},
		{":9273", true, true},
		{"0.0.0.0:9273", true, true},
		{"[::]:9273", true, true},
		{"localhost:0", true, false},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:70000", false, false},
		{"plant.example:9273", false, false},
	} {
		every, err := config.CheckListen(c.addr)
		if (err == nil) != c.ok || every != c.every {
			t.Errorf("CheckListen(%q) = %v, %v; want ok=%v every=%v", c.addr, every, err, c.ok, c.every)
		}
	}
}

// TestNestingRefused: nesting deeper than config.MaxDepth is refused at its line before the
// TOML library parses it (whose cost grows with the square of the depth), however it nests;
// a plugin's real depth loads.
func TestNestingRefused(t *testing.T) {
	deep := 3000
	for name, line := range map[string]string{
		"inline tables": "  x = " + strings.Repeat("{a = ", deep) + "1" + strings.Repeat("}", deep),
		"arrays":        "  x = " + strings.Repeat("[", deep) + strings.Repeat("]", deep),
		"dotted key":    "  " + strings.Repeat("a.", deep) + "b = 1",
		"mixed":         "  x = " + strings.Repeat("[{a.b.c = ", deep/4) + "1" + strings.Repeat("}]", deep/4),
		"header":        "[" + strings.Repeat("outputs.", deep) + "x]",
	} {
		text := "[agent]\n  interval = \"10s\"\n[[outputs.testout]]\n" + line + "\n"
		_, err := config.LoadText("t.conf", text, nil)
		want := fmt.Sprintf("t.conf:4: nested deeper than %d levels (tables, dotted keys, arrays and inline tables)", config.MaxDepth)
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %.300v\nwant %s", name, err, want)
		}
	}
	// Quotes and comments hold no nesting.
	text := "[[outputs.testout]]\n  url = \"" + strings.Repeat("[{", deep) + "\" # " + strings.Repeat("[", deep) + "\n"
	if _, err := config.LoadText("t.conf", text, nil); err != nil {
		t.Errorf("brackets in a string and a comment: %.300v", err)
	}
	text = "[[inputs.testdev]]\n  endpoint = \"x\"\n  tags = { a = \"1\" }\n  [[inputs.testdev.device]]\n    name = \"d\"\n"
	if _, err := config.LoadText("t.conf", text, nil); err != nil {
		t.Errorf("a plugin's depth: %v", err)
	}
}

// TestLoadingIsLinear: ten times the tables cost about ten times as much (the check that a
// table follows its parent compared every table with every earlier one; a line lookup walked
// every key), with or without a mistake in every table. Measured against the smaller file in
// the same test, medians of three: linear is about 10, the quadratic loader was over 40.
func TestLoadingIsLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 22,000 tables")
	}
	gen := func(n int, bad bool) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "[[outputs.testout]]\n  url = \"http://127.0.0.1:%d\"\n", i)
			if bad {
				b.WriteString("  metric_batch_size = -1\n")
			}
		}
		return b.String()
	}
	cost := func(text string) time.Duration {
		var runs []time.Duration
		for range 3 {
			start := time.Now()
			config.LoadText("t.conf", text, nil)
			runs = append(runs, time.Since(start))
		}
		slices.Sort(runs)
		return runs[1]
	}
	for _, bad := range []bool{false, true} {
		small, large := cost(gen(1000, bad)), cost(gen(10000, bad))
		if r := float64(large) / float64(small); r > 25 {
			t.Errorf("mistakes %v: 10 times the tables took %.0f times as long (%v, %v)", bad, r, small, large)
		}
	}
}

// TestErrorReportIsBounded: at most 100 errors are listed, the rest counted, and one message is
// clipped to 512 bytes.
func TestErrorReportIsBounded(t *testing.T) {
	var b strings.Builder
	for i := range 250 {
		fmt.Fprintf(&b, "[[outputs.testout]]\n  url%d = 1\n", i)
	}
	_, err := config.LoadText("t.conf", b.String(), nil)
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 101 || lines[100] != "… and 150 more errors" || lines[99] != "t.conf:200: outputs.testout: url99: unknown key" {
		t.Errorf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	long := strings.Repeat("k", 100000)
	_, err = config.LoadText("t.conf", "[[outputs.testout]]\n  "+long+" = 1\n", nil)
	if err == nil || len(err.Error()) > 600 || !strings.HasSuffix(err.Error(), "bytes more)") {
		t.Errorf("%d bytes: %.100v…", len(fmt.Sprint(err)), err)
	}
}
