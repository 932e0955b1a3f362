package config_test

import (
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
)

// FuzzLoad feeds the loader any text and one environment value: it must return a config or an
// error, never panic; no error line may exceed the clip (512 bytes of message and its place);
// a value substituted into a quoted string never adds an output.
func FuzzLoad(f *testing.F) {
	for _, seed := range []struct{ text, env string }{
		{"[agent]\n  interval = \"10s\"\n[[outputs.testout]]\n  url = \"http://127.0.0.1:1\"\n", ""},
		{"[[inputs.testdev]]\n  endpoint = \"x\"\n  password = '${V}'\n[[outputs.testout]]\n", hostileValue},
		{"[[inputs.testdev]]\n  endpoint = \"x\"\n  password = '''${V}'''\n", "a'''\n[[outputs.testout]]"},
		{"[[inputs.testdev]]\n  endpoint = \"${V}\"\n  [[inputs.testdev.device]]\n    slave_id = ${V}\n", "7"},
		{"[[outputs.testout]]\n  x = " + strings.Repeat("{a = ", 100) + "1" + strings.Repeat("}", 100) + "\n", ""},
		{"[[outputs.testout]]\n  x = " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "\n", ""},
		{"[" + strings.Repeat("a.", 70) + "b]\n", ""},
		{"\ufeff[agent]\r\n  interval = 18446744074\r\n", ""},
		{"[agent]\n  interval = \"1ns\"\n  http_listen = \":9273\"\n", ""},
		{"[[outputs.testout]]\n  url = \"http://op:${V}@[::1\"\n", "pa\"ss"},
		{"[agent]\n[agent]\n[[outputs.testout]]\n[outputs.testout.x]\n", ""},
		{"a = \"\"\"\n[[outputs.testout]]\n\"\"\"\n[[outputs.testout]]\n", ""},
	} {
		f.Add(seed.text, seed.env)
	}
	f.Fuzz(func(t *testing.T, text, value string) {
		lookup := func(string) (string, bool) { return value, true }
		cfg, err := config.LoadText("f.conf", text, lookup)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if len(line) > 512+200 {
					t.Fatalf("an error line of %d bytes", len(line))
				}
			}
			return
		}
		// The same text with a quoted value instead of a substituted one has as many outputs.
		if !strings.Contains(text, "$") && strings.Contains(text, `"X"`) {
			with, err := config.LoadText("f.conf", strings.ReplaceAll(text, `"X"`, `"${V}"`), lookup)
			if err == nil && len(with.Outputs) != len(cfg.Outputs) {
				t.Fatalf("a value changed the outputs: %d, then %d", len(cfg.Outputs), len(with.Outputs))
			}
		}
	})
}
