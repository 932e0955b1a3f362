package config_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

// aliasOut declares aliases as a plugin does: a rename and a rename with a converted value.
type aliasOut struct {
	Codec string   `toml:"codec"`
	Keys  []string `toml:"keys"`
	Depth int      `toml:"depth"`
	Sub   struct {
		Legacy int `toml:"legacy"`
	} `toml:"sub"`
}

func (*aliasOut) SampleConfig() string                          { return "" }
func (*aliasOut) Connect(context.Context) error                 { return nil }
func (*aliasOut) Write(context.Context, []*models.Metric) error { return nil }
func (*aliasOut) Close() error                                  { return nil }
func (*aliasOut) Aliases() []config.Alias {
	return []config.Alias{
		{Old: "codec_number", New: "codec", Convert: func(v any) (any, error) {
			n, ok := v.(int64)
			if !ok || n < 0 || n > 1 {
				return nil, fmt.Errorf("%v: 0 (none) or 1 (gzip)", v)
			}
			return []string{"none", "gzip"}[n], nil
		}},
		{Old: "key_list", New: "keys"},
		{Old: "legacy", New: "depth"},
	}
}

func init() {
	outputs.Add("aliasout", func() models.Output { return &aliasOut{} })
}

func TestAliases(t *testing.T) {
	text := `[[outputs.aliasout]]
  alias = "a"
  codec_number = 1   # gzip
  key_list = [
    "device",
    "site",
  ]
  fieldinclude = ["voltage"]
  [outputs.aliasout.sub]
    legacy = 3

[[outputs.aliasout]]
  alias = "b"
  codec_number = 0
`
	cfg, err := config.LoadText("t.conf", text, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Outputs[0].Plugin.(*aliasOut)
	if a.Codec != "gzip" || strings.Join(a.Keys, ",") != "device,site" || a.Sub.Legacy != 3 || a.Depth != 0 {
		t.Fatalf("decoded %+v", a)
	}
	if f := cfg.Outputs[0].Config.Filter.FieldPass; len(f) != 1 || f[0] != "voltage" {
		t.Fatalf("fieldinclude was not read as fieldpass: %v", f)
	}
	if b := cfg.Outputs[1].Plugin.(*aliasOut); b.Codec != "none" {
		t.Fatalf("second table %+v", b)
	}
	// One notice per plugin and key, with the first place, the tagpipe key and the count of the
	// other places; an alias of a sub-table's key (legacy) is not rewritten.
	want := []string{
		`t.conf:3: outputs.aliasout "a": codec_number is Telegraf's name; tagpipe's is codec (read as codec = "gzip") (and 1 more places)`,
		`t.conf:4: outputs.aliasout "a": key_list is Telegraf's name; tagpipe's is keys`,
		`t.conf:8: outputs.aliasout "a": fieldinclude is Telegraf's name; tagpipe's is fieldpass`,
	}
	if strings.Join(cfg.Warnings, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notices:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

func TestAliasErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"[[outputs.aliasout]]\n  codec = \"gzip\"\n  codec_number = 1\n",
			"t.conf:3: outputs.aliasout: codec_number: Telegraf's name of codec, which is set too (line 2): keep one"},
		{"[[outputs.aliasout]]\n  codec_number = 7\n",
			"t.conf:2: outputs.aliasout: codec_number: 7: 0 (none) or 1 (gzip)"},
		{"[[outputs.aliasout]]\n  codec_number = \"gzip\"\n",
			"t.conf:2: outputs.aliasout: codec_number: gzip: 0 (none) or 1 (gzip)"},
	} {
		_, err := config.LoadText("t.conf", c.text, nil)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.text, err, c.want)
		}
	}
}
