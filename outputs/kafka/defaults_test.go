package kafka

import (
	"reflect"
	"regexp"
	"testing"
)

// The sample configuration names the defaults: with every commented setting switched on (but
// for the ones that show an example value, not the default), the plugin is configured exactly
// as defaults() is.
func TestSampleNamesTheDefaults(t *testing.T) {
	examples := map[string]bool{"topic_suffix": true, "routing_tags": true, "tls_ca": true, "tls_cert": true, "tls_key": true}
	setting := regexp.MustCompile(`(?m)^  # ([a-z_]+) = .*$`)
	text := setting.ReplaceAllStringFunc(sampleConfig, func(line string) string {
		if examples[setting.FindStringSubmatch(line)[1]] {
			return line
		}
		return "  " + line[len("  # "):]
	})
	cfg, err := load(t, text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	got, want := cfg.Outputs[0].Plugin.(*Kafka), defaults()
	if err := want.Init(); err != nil {
		t.Fatal(err)
	}
	gv, wv := reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem()
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() || f.Tag.Get("toml") == "-" {
			continue
		}
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: sample.conf gives %#v, the default is %#v", f.Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}
