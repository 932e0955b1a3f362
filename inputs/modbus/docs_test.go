package modbus

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestSampleConfig: the embedded sample loads and checks.
func TestSampleConfig(t *testing.T) {
	m := load(t, sampleConfig)
	if m.inv.len() != 1 || len(m.inv.spec(0).prof.fields) != 6 {
		t.Fatalf("sample: %d devices", m.inv.len())
	}
	// holding 0-1 | 6-8 | 10-18 (max_gap 0 keeps the hole at 9 unread), coil 0
	if got := describePlan(m.inv.spec(0).plan); got != "coil 0+1/1, holding 0+2/1, holding 6+3/2, holding 10+9/2" {
		t.Errorf("plan %s", got)
	}
}

// The sample configuration names the defaults: it sets every option at the plugin's level (but
// those derived from others), and a device resolved with those settings is configured exactly
// as one resolved with none.
func TestSampleNamesTheDefaults(t *testing.T) {
	m := load(t, sampleConfig)
	top := reflect.ValueOf(&m.Options).Elem()
	def := reflect.ValueOf(&defaults).Elem()
	for i, key := range optionKeys {
		if top.Field(i).IsZero() && !def.Field(i).IsZero() {
			t.Errorf("sample.conf does not name %s (default %v)", key, def.Field(i).Elem())
		}
	}
	dev := &Device{Name: "d", Controller: "tcp://127.0.0.1:502"}
	with, _, _, err := m.resolve(dev, "device[0]", &Profile{}, "profile[0]", nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Options = Options{}
	without, _, _, err := m.resolve(dev, "device[0]", &Profile{}, "profile[0]", nil)
	if err != nil {
		t.Fatal(err)
	}
	if with != without {
		t.Errorf("the sample's settings differ from the defaults:\nsample   %+v\ndefaults %+v", with, without)
	}
}

// TestReadme: the README repeats the sample verbatim, and its worked examples load (the TLS one
// fails on its certificate files, which do not exist here).
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	if !strings.Contains(text, "```toml\n"+sampleConfig+"```") {
		t.Error("README.md does not repeat sample.conf verbatim")
	}
	blocks := strings.Split(text, "```toml\n")[1:]
	if len(blocks) < 6 {
		t.Fatalf("%d toml blocks", len(blocks))
	}
	for i, b := range blocks {
		b = b[:strings.Index(b, "```")]
		_, err := loadText(b)
		switch {
		case strings.Contains(b, "\n  tls_ca = "):
			if err == nil || !strings.Contains(err.Error(), "tls_ca: open /etc/tagpipe/modbus-ca.pem") {
				t.Errorf("block %d: want the missing CA file, got %v", i, err)
			}
		case err != nil:
			t.Errorf("block %d: %v\n%s", i, err, b)
		}
	}
}
