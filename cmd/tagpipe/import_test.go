package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/xuri/excelize/v2"

	"github.com/tagpipe/tagpipe/internal/testkit/lptest"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

const fixtures = "../../importer/testdata/telegraf"

// runBinary runs the tagpipe binary and returns its stdout and stderr and the exit code.
func runBinary(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// pymodbusPort starts modbus_server.py (Debian's python3-pymodbus) on a free loopback port and
// returns the port; the peer is stopped by its PID when the test ends.
func pymodbusPort(t *testing.T, args ...string) string {
	t.Helper()
	if out, err := exec.Command(testpeer.Python, "-c", "import pymodbus").CombinedOutput(); err != nil {
		testpeer.Missing(t, "python3-pymodbus", "apt-get install python3-pymodbus", fmt.Errorf("%v: %s", err, out))
	}
	script := filepath.Join(testpeer.Root(t), "inputs/modbus/testdata/modbus_server.py")
	p := testpeer.Start(t, testpeer.Options{Timeout: 20 * time.Second}, testpeer.Python, append([]string{script, "--port", "0"}, args...)...)
	return p.Ready[1]
}

// series maps a series (measurement and tags, without tagpipe's own device tag) to its fields.
func series(t *testing.T, lp string, drop ...string) map[string][]models.Field {
	t.Helper()
	out := map[string][]models.Field{}
	for _, m := range lptest.Parse(t, []byte(lp), lineprotocol.Nanosecond) {
		if strings.HasSuffix(m.Name, "_health") {
			continue
		}
		var tags []string
		for _, tg := range m.Tags {
			if !contains(drop, tg.Key) {
				tags = append(tags, tg.Key+"="+tg.Value)
			}
		}
		key := m.Name + "," + strings.Join(tags, ",")
		out[key] = append(out[key], m.Fields...)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sameSeries fails the test unless got has exactly the series of want, each with the same
// fields: name, type and value.
func sameSeries(t *testing.T, got, want map[string][]models.Field) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g, ok := got[k]
		if !ok {
			t.Errorf("no series %s; got %v", k, sortedSeries(got))
			continue
		}
		byName := map[string]models.Field{}
		for _, f := range g {
			byName[f.Key] = f
		}
		for _, f := range want[k] {
			gf, ok := byName[f.Key]
			switch {
			case !ok:
				t.Errorf("%s: no field %s", k, f.Key)
			case !gf.Equal(f):
				t.Errorf("%s: field %s = %v (%v), want %v (%v)", k, f.Key, gf.Value(), gf.Type(), f.Value(), f.Type())
			}
			delete(byName, f.Key)
		}
		for name := range byName {
			t.Errorf("%s: field %s, not expected", k, name)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("series %s, not expected", k)
		}
	}
}

func sortedSeries(m map[string][]models.Field) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestImportTelegrafModbus imports a Telegraf configuration in each of the three Modbus styles
// (and over three transports), runs the result with --test against pymodbus serving the typed
// layout, and compares every series with the line protocol Telegraf's semantics give for the
// same registers (the .lp files beside the fixtures, written from Telegraf's type, byte order
// and scale rules and the layout's values): the same measurements, tags and fields, of the same
// types and values. tagpipe's own device tag and its modbus_health metric are left out.
func TestImportTelegrafModbus(t *testing.T) {
	for _, c := range []struct {
		fixture string
		peer    []string
		profile int // profiles the import must make
	}{
		{"register", []string{"--typed", "--units", "1,2"}, 1},
		{"request", []string{"--typed", "--units", "1,2", "--transport", "rtu-over-tcp"}, 1},
		{"metric", []string{"--typed", "--transport", "ascii-over-tcp"}, 1},
	} {
		t.Run(c.fixture, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "tagpipe.conf")
			_, report, code := runBinary(t, nil, "import", "telegraf", filepath.Join(fixtures, c.fixture+".conf"), "--out", conf)
			if code != 0 {
				t.Fatalf("import: exit %d\n%s", code, report)
			}
			text, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(text), "[[inputs.modbus.profile]]"); n != c.profile {
				t.Errorf("%d profiles, want %d:\n%s", n, c.profile, text)
			}
			port := pymodbusPort(t, c.peer...)
			out, logs, code := runBinary(t, []string{"MODBUS_PORT=" + port}, "--config", conf, "--test")
			if code != 0 {
				t.Fatalf("--test: exit %d\n%s\nconfig:\n%s", code, logs, text)
			}
			want, err := os.ReadFile(filepath.Join(fixtures, c.fixture+".lp"))
			if err != nil {
				t.Fatal(err)
			}
			sameSeries(t, series(t, out, "device"), series(t, string(want)))
			if t.Failed() {
				t.Logf("config:\n%s\n--test:\n%s", text, out)
			}
			if c.fixture != "register" {
				return
			}
			// Its [[outputs.file]] (standard output) writes the same series with --once.
			out, logs, code = runBinary(t, []string{"MODBUS_PORT=" + port}, "--config", conf, "--once")
			if code != 0 {
				t.Fatalf("--once: exit %d\n%s", code, logs)
			}
			sameSeries(t, series(t, out, "device"), series(t, string(want)))
		})
	}
}

const taglists = "../../importer/testdata/taglists"

// neuronXLSX writes the rows of neuron.csv into an xlsx workbook with excelize, as Neuron's
// template is filled in, and returns its path.
func neuronXLSX(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(taglists, "neuron.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	f := excelize.NewFile()
	defer f.Close()
	for r, row := range rows {
		for c, v := range row {
			cell, _ := excelize.CoordinatesToCellName(c+1, r+1)
			if err := f.SetCellValue("Sheet1", cell, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "neuron.xlsx")
	if err := f.SaveAs(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestImportTagLists imports a Kepware CSV export, a Neuron template (xlsx) and tagpipe's own tag
// list with a device list, runs each result with --test against pymodbus serving the typed
// layout and compares every series with the values the tag list describes (the .lp files).
func TestImportTagLists(t *testing.T) {
	for _, c := range []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"kepware", func(*testing.T) []string {
			return []string{"csv", filepath.Join(taglists, "kepware.csv"), "--profile", "meter", "--controller", "tcp://127.0.0.1:${MODBUS_PORT}"}
		}, "kepware.lp"},
		{"neuron-xlsx", func(t *testing.T) []string {
			return []string{"xlsx", neuronXLSX(t), "--profile", "meter", "--controller", "tcp://127.0.0.1:${MODBUS_PORT}"}
		}, "neuron.lp"},
		{"plain-and-devices", func(*testing.T) []string {
			return []string{"csv", filepath.Join(taglists, "plain.csv"), filepath.Join(taglists, "devices.csv")}
		}, "plain.lp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "tagpipe.conf")
			_, report, code := runBinary(t, nil, append(append([]string{"import"}, c.args(t)...), "--out", conf)...)
			if code != 0 {
				t.Fatalf("import: exit %d\n%s", code, report)
			}
			text, _ := os.ReadFile(conf)
			port := pymodbusPort(t, "--typed", "--units", "1,2")
			out, logs, code := runBinary(t, []string{"MODBUS_PORT=" + port}, "--config", conf, "--test")
			if code != 0 {
				t.Fatalf("--test: exit %d\n%s\nconfig:\n%s", code, logs, text)
			}
			want, err := os.ReadFile(filepath.Join(taglists, c.want))
			if err != nil {
				t.Fatal(err)
			}
			sameSeries(t, series(t, out, "device", "host"), series(t, string(want)))
			if t.Failed() {
				t.Logf("report:\n%s\nconfig:\n%s\n--test:\n%s", report, text, out)
			}
		})
	}
}

// TestImportTelegrafOPCUA imports inputs.opcua (polled, security None) and opcua_listener
// (Telegraf's default security, the server's certificate unchecked) and runs the result with
// --test against node-opcua's test server: the same measurements, node names as fields with
// their types and values, and Telegraf's id and default tags. tagpipe's own source tag is left
// out; Telegraf's Quality field is not written (the report says so).
func TestImportTelegrafOPCUA(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join(testpeer.Root(t), "inputs/opcua/testdata/node-opcua"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-opcua")); err != nil {
		testpeer.Missing(t, "node-opcua 2.182.2", "cd inputs/opcua/testdata/node-opcua && npm ci", err)
	}
	testpeer.LookPath(t, "node", "apt-get install nodejs")
	conf := filepath.Join(t.TempDir(), "tagpipe.conf")
	// The written configuration is checked at import: its ${OPCUA_PORT} must be a port then.
	_, report, code := runBinary(t, []string{"OPCUA_PORT=4840"}, "import", "telegraf", filepath.Join(fixtures, "opcua.conf"), "--out", conf)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, report)
	}
	if !strings.Contains(report, "Quality is not written") {
		t.Errorf("the report does not say that Quality is not written:\n%s", report)
	}
	peer := testpeer.Start(t, testpeer.Options{Dir: dir}, "node", "opcua_server.js", "--port", "0", "--pki", t.TempDir())
	endpoint := peer.Ready[0]
	port := endpoint[strings.LastIndex(endpoint, ":")+1:]
	out, logs, code := runBinary(t, []string{"OPCUA_PORT=" + port, "STATE_DIRECTORY=" + t.TempDir()}, "--config", conf, "--test")
	text, _ := os.ReadFile(conf)
	if code != 0 {
		t.Fatalf("--test: exit %d\n%s\nconfig:\n%s", code, logs, text)
	}
	want, err := os.ReadFile(filepath.Join(fixtures, "opcua.lp"))
	if err != nil {
		t.Fatal(err)
	}
	sameSeries(t, series(t, out, "source"), series(t, string(want)))
	if t.Failed() {
		t.Logf("config:\n%s\n--test:\n%s\nlog:\n%s", text, out, logs)
	}
}
