package modbus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/models"
)

// layoutEntry is one value of modbus_server.py's typed layout: registers packed by Python's
// struct module, and the value Python reads back from them.
type layoutEntry struct {
	Name      string      `json:"name"`
	DataType  string      `json:"data_type"`
	ByteOrder string      `json:"byte_order"`
	Address   int         `json:"address"`
	Length    int         `json:"length"`
	Decimals  *int        `json:"decimals"`
	Bit       *int        `json:"bit"`
	Value     json.Number `json:"value"`
	raw       json.RawMessage
}

// typedLayout asks the peer script for its layout.
func typedLayout(t testing.TB) []layoutEntry {
	t.Helper()
	pymodbusWorks(t, "testdata/modbus_server.py")
	out, err := runQuiet(testpeer.Python, "testdata/modbus_server.py", "--print-layout")
	if err != nil {
		t.Fatalf("modbus_server.py --print-layout: %v: %s", err, out)
	}
	var layout []layoutEntry
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var e layoutEntry
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		var raw struct {
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(line, &raw); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if raw.Value[0] == '"' || raw.Value[0] == 't' || raw.Value[0] == 'f' {
			e.raw = raw.Value
			var tmp struct {
				Name      string `json:"name"`
				DataType  string `json:"data_type"`
				ByteOrder string `json:"byte_order"`
				Address   int    `json:"address"`
				Length    int    `json:"length"`
				Bit       *int   `json:"bit"`
			}
			if err := json.Unmarshal(line, &tmp); err != nil {
				t.Fatal(err)
			}
			e.Name, e.DataType, e.ByteOrder, e.Address, e.Length, e.Bit = tmp.Name, tmp.DataType, tmp.ByteOrder, tmp.Address, tmp.Length, tmp.Bit
		} else if err := d.Decode(&e); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		layout = append(layout, e)
	}
	if len(layout) < 60 {
		t.Fatalf("layout has %d entries", len(layout))
	}
	return layout
}

// typedProfile is a profile with every entry of the layout, plus coils, discrete inputs and
// input registers of the fixed layout.
func typedProfile(layout []layoutEntry) string {
	var b strings.Builder
	b.WriteString(`
  [[inputs.modbus.profile]]
    name = "typed"
    measurement = "typed"
`)
	for _, e := range layout {
		fmt.Fprintf(&b, `    [[inputs.modbus.profile.field]]
      name = %q
      register = "holding"
      address = %d
      data_type = %q
      byte_order = %q
`, e.Name, e.Address, e.DataType, e.ByteOrder)
		switch e.DataType {
		case "STRING", "FIXED", "UFIXED":
			fmt.Fprintf(&b, "      length = %d\n", e.Length)
		}
		if e.Decimals != nil {
			fmt.Fprintf(&b, "      decimals = %d\n", *e.Decimals)
		}
		if e.Bit != nil {
			fmt.Fprintf(&b, "      bit = %d\n", *e.Bit)
		}
	}
	for i := range 10 {
		fmt.Fprintf(&b, `    [[inputs.modbus.profile.field]]
      name = "coil_%d"
      register = "coil"
      address = %d
    [[inputs.modbus.profile.field]]
      name = "discrete_%d"
      register = "discrete"
      address = %d
`, i, i, i, i)
	}
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&b, `    [[inputs.modbus.profile.field]]
      name = "input_%d"
      register = "input"
      address = %d
      data_type = "UINT16"
`, i, i)
	}
	return b.String()
}

// checkTyped compares every field with the value the peer was told to hold.
func checkTyped(t *testing.T, ms []*models.Metric, layout []layoutEntry) {
	t.Helper()
	var typed []*models.Metric
	for _, m := range ms {
		if m.Name == "typed" {
			typed = append(typed, m)
		}
	}
	if len(typed) != 1 {
		t.Fatalf("want one typed metric, got %d (of %d)", len(typed), len(ms))
	}
	m := typed[0]
	for _, e := range layout {
		f, ok := m.Field(e.Name)
		if !ok {
			t.Errorf("%s: missing", e.Name)
			continue
		}
		want := string(e.Value)
		var got string
		switch {
		case e.raw != nil:
			got, want = fieldJSON(f), string(e.raw)
		case strings.HasPrefix(e.DataType, "INT"):
			if f.Type() != models.TypeInt {
				t.Errorf("%s: type %s, want int", e.Name, f.Type())
			}
			got = strconv.FormatInt(f.IntV(), 10)
		case strings.HasPrefix(e.DataType, "UINT"):
			if f.Type() != models.TypeUint {
				t.Errorf("%s: type %s, want uint", e.Name, f.Type())
			}
			got = strconv.FormatUint(f.UintV(), 10)
		default: // FLOAT*, FIXED, UFIXED: exactly the double Python computed
			if f.Type() != models.TypeFloat {
				t.Errorf("%s: type %s, want float", e.Name, f.Type())
			}
			w, err := strconv.ParseFloat(want, 64)
			if err != nil {
				t.Fatal(err)
			}
			if f.FloatV() != w {
				got = strconv.FormatFloat(f.FloatV(), 'g', -1, 64)
				want = strconv.FormatFloat(w, 'g', -1, 64)
			} else {
				got = want
			}
		}
		if got != want {
			t.Errorf("%s (%s %s at %d): got %s, want %s", e.Name, e.DataType, e.ByteOrder, e.Address, got, want)
		}
	}
	for i := range 10 {
		if got := field(t, typed, fmt.Sprintf("coil_%d", i)); got.BoolV() != (i%2 == 0) || got.Type() != models.TypeBool {
			t.Errorf("coil %d: got %v, the peer holds coil i on when i is even", i, got.Value())
		}
		if got := field(t, typed, fmt.Sprintf("discrete_%d", i)); got.BoolV() != (i%3 == 0) {
			t.Errorf("discrete %d: got %v, the peer holds discrete i on when i %% 3 == 0", i, got.Value())
		}
	}
	for i := 1; i <= 3; i++ {
		if got := field(t, typed, fmt.Sprintf("input_%d", i)); got.UintV() != uint64(1000+i) {
			t.Errorf("input %d: got %v, the peer holds 1000+i", i, got.Value())
		}
	}
}

func fieldJSON(f models.Field) string {
	b, _ := json.Marshal(f.Value())
	return string(b)
}

func typedConfig(controller, mode, extra string, layout []layoutEntry) string {
	return fmt.Sprintf(`[[inputs.modbus]]
  transmission_mode = %q
  timeout = "2s"
%s
%s
  [[inputs.modbus.device]]
    name = "typed-1"
    controller = %q
    slave_id = 1
    profile = "typed"
`, mode, extra, typedProfile(layout), controller)
}

// TestDataTypesTCP reads every data type and byte order from pymodbus over Modbus TCP, in the
// fewest requests.
func TestDataTypesTCP(t *testing.T) { testTransport(t, "auto", "tcp://", nil, "") }

// TestScaleOffsetOutput checks scale, offset and output types on values pymodbus holds.
func TestScaleOffsetOutput(t *testing.T) {
	p := startPymodbus(t, "--typed")
	m := load(t, fmt.Sprintf(`[[inputs.modbus]]
  [[inputs.modbus.profile]]
    name = "p"
    [[inputs.modbus.profile.field]]
      name = "scaled"
      address = 100
      data_type = "INT16"
      scale = 0.5
      offset = 10.0
    [[inputs.modbus.profile.field]]
      name = "pi_int"
      address = 2
      data_type = "FLOAT32"
      output = "int"
    [[inputs.modbus.profile.field]]
      name = "u16_float"
      address = 0
      data_type = "UINT16"
      output = "float"
    [[inputs.modbus.profile.field]]
      name = "minus_one_uint"
      address = 1
      data_type = "INT16"
      output = "uint"
    [[inputs.modbus.profile.field]]
      name = "coil_int"
      register = "coil"
      address = 0
      output = "int"
  [[inputs.modbus.device]]
    name = "d"
    controller = "tcp://%s"
    profile = "p"
`, p.addr))
	ms, err := gather(t, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  string
		want any
	}{
		{"scaled", -12345*0.5 + 10}, // holding 100 holds INT16 -12345
		{"pi_int", int64(3)},        // holding 2-3: FLOAT32 3.14
		{"u16_float", float64(0x1234)},
		{"minus_one_uint", uint64(0)}, // -1 clamped
		{"coil_int", int64(1)},        // coil 0 is on
	} {
		if got := field(t, ms, c.key).Value(); got != c.want {
			t.Errorf("%s: got %v (%T), want %v (%T)", c.key, got, got, c.want, c.want)
		}
	}
}
