package mqtt

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

func load(t *testing.T, text string) (*config.Config, error) {
	t.Helper()
	return config.LoadText("test.conf", text, func(string) (string, bool) { return "", false })
}

// The sample is in the README, loads as shipped, and loads with every documented key set.
func TestSampleConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	sample := outputs.Registry["mqtt"]().SampleConfig()
	if !strings.Contains(string(readme), sample) {
		t.Error("README.md does not hold the sample config")
	}
	f := tlstest.New(t)
	all := regexp.MustCompile(`(?m)^(\s*)# ([a-z_]+ = )`).ReplaceAllString(sample, "$1$2")
	all = strings.NewReplacer("/etc/tagpipe/ca.pem", f.CA, "/etc/tagpipe/cert.pem", f.ClientCert,
		"/etc/tagpipe/key.pem", f.ClientKey, "sparkplug = false", "sparkplug = true",
		`username = ""`, `username = "u"`).Replace(all)
	for what, text := range map[string]string{"as shipped": sample, "every key set": all} {
		cfg, err := load(t, text)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, text)
		}
		o := cfg.Outputs[0].Plugin.(*MQTT)
		if what == "every key set" && (!o.Sparkplug || o.GroupID != "plant-1" || o.CA != f.CA || o.Username != "u") {
			t.Errorf("%s: not every key was set: %+v", what, o)
		}
	}
}

// Bad config fails at load with the file, the line and the key.
func TestInitErrors(t *testing.T) {
	for _, tc := range []struct{ lines, want string }{
		{`servers = []`, "servers: give at least one broker"},
		{`servers = ["broker"]`, `servers: "tcp://broker": give host:port`},
		{`servers = ["http://broker:80"]`, `servers: "http://broker:80": the scheme must be`},
		{`protocol = "5"`, "protocol: MQTT 5 is not available"},
		{`qos = 3`, "qos: 3: must be 0, 1 or 2"},
		{`will_qos = -1`, "will_qos: -1: must be 0, 1 or 2"},
		{`topic = "plant/+/x"`, `topic: "plant/+/x": '+' is a wildcard`},
		{`topic = "plant/#"`, `topic: "plant/#": '#' is a wildcard`},
		{`topic = "plant/\u0000"`, `topic: "plant/\x00": NUL is not allowed`},
		{`topic = '$SYS/{{.Name}}'`, `topic: "$SYS/{{.Name}}": topics beginning with $ belong to the broker`},
		{`topic = '{{.Name'`, `topic: "{{.Name": `},
		{`topic = '{{.Tags}}'`, `topic: "{{.Tags}}": {{.Tags}} is not allowed`},
		{`topic = '{{printf "%s" .Name}}'`, `topic: "{{printf \"%s\" .Name}}": {{printf "%s" .Name}} is not allowed: use {{.Name}} and {{.Tag "key"}}`},
		{`topic = '{{.Field}}'`, `topic: "{{.Field}}": {{.Field}} is not allowed`},
		{`topic = ""`, "topic: empty"},
		{`layout = "homie-v4"`, `layout: "homie-v4": must be`},
		{"layout = \"field\"\n  batch = true", `batch: batch = true contradicts layout = "field"`},
		{`data_format = "xml"`, `data_format: data_format = "xml"`},
		{`max_message_bytes = 10`, "max_message_bytes: 10: must be 128..268435456"},
		{`timeout = "0s"`, "timeout: must be more than 0"},
		{`keep_alive = "10ms"`, "keep_alive: 10ms: must be 0 (off) or at least 1s"},
		{`reconnect_max = "1ms"`, "reconnect_max: 1ms: must be at least 100ms"},
		{`client_id = ""`, "client_id: give the client id"},
		{`password = "x"`, "password: give username too"},
		{`will_topic = "a/#"`, `will_topic: "a/#": '#' is a wildcard`},
		{`birth_topic = "$x"`, `birth_topic: "$x": topics beginning with $`},
		{`tls_ca = "/nonexistent/ca.pem"`, "tls_ca: open /nonexistent/ca.pem"},
		{`group_id = "g"`, "group_id: needs sparkplug = true"},
		{"sparkplug = true\n  edge_node_id = \"n\"", "group_id: give the Sparkplug group_id"},
		{"sparkplug = true\n  group_id = \"a/b\"\n  edge_node_id = \"n\"", `group_id: "a/b": a Sparkplug id is one topic level`},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n+1\"", `edge_node_id: "n+1": '+' is a wildcard`},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  primary_host_id = \"h#\"", `primary_host_id: "h#": '#'`},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  persistent_session = true", "persistent_session: Sparkplug B asks every client for a clean session"},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  no_device = \"drop\"", `no_device: "drop": must be "node" or "reject"`},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  metric_name = '{{.Name}}'", "metric_name: \"{{.Name}}\": give {{.Field}}"},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  device_tag = \"\"", "device_tag: give the tag"},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  will_topic = \"w\"", "will_topic: a Sparkplug node's will and birth are NDEATH and NBIRTH"},
		{"sparkplug = true\n  group_id = \"g\"\n  edge_node_id = \"n\"\n  device_timeout = \"10ms\"", "device_timeout: 10ms: must be 0 (off) or at least 1s"},
	} {
		text := "[agent]\n  interval = \"1s\"\n\n[[outputs.mqtt]]\n  " + tc.lines + "\n"
		_, err := load(t, text)
		// The loader names the line of the key (line 5 for the first key of the table).
		if err == nil || !strings.Contains(err.Error(), "test.conf:") || !strings.Contains(err.Error(), "outputs.mqtt: "+tc.want) {
			t.Errorf("%s:\n got %v\nwant test.conf:N: outputs.mqtt: %s", tc.lines, err, tc.want)
			continue
		}
		key := strings.SplitN(tc.want, ":", 2)[0]
		line := 4 // a key that is not there: the table's line
		for i, l := range strings.Split(tc.lines, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), key+" ") {
				line = 5 + i
			}
		}
		if want := fmt.Sprintf("test.conf:%d:", line); !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v: want it at %s", tc.lines, err, want)
		}
	}
}

// The password shows nowhere when the plugin is printed.
func TestSecretsStayHidden(t *testing.T) {
	cfg, err := load(t, "[[outputs.mqtt]]\n  username = \"u\"\n  password = \"pa55word\"\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v"} {
		if s := fmt.Sprintf(format, cfg.Outputs[0].Plugin); strings.Contains(s, "pa55word") {
			t.Errorf("%s shows the password: %s", format, s)
		}
	}
}

// Templates expand names and tags, escape what a topic cannot hold, and refuse at parse what
// is not a topic.
func TestTemplate(t *testing.T) {
	m := models.New("cpu+1", []models.Tag{{Key: "host", Value: "a#b"}, {Key: "line", Value: "L/1"}},
		[]models.Field{models.Int("x", 1)}, time.Time{})
	f := func(src, field string, escape func([]byte, string) ([]byte, int), want string, wantEscaped int) {
		t.Helper()
		tp, err := parseTemplate(src, true)
		if err != nil {
			t.Fatal(err)
		}
		got, n := tp.appendTo(nil, m, field, escape)
		if string(got) != want || n != wantEscaped {
			t.Errorf("%s: %q (%d escaped), want %q (%d)", src, got, n, want, wantEscaped)
		}
	}
	f(`p/{{.Tag "host"}}/{{.Name}}`, "", escapeTopic, "p/a_b/cpu_1", 2)
	f(`p/{{ .Tag "line" }}/{{.Name}}`, "", escapeTopic, "p/L/1/cpu_1", 1)
	f(`p/{{.Tag "line"}}`, "", escapeLevel, "p/L_1", 1)
	f(`{{.Tag "missing"}}/x`, "", escapeTopic, "/x", 0)
	f(`{{.Name}}/{{.Field}}`, "a/b", escapeNone, "cpu+1/a/b", 0)
	got, n := escapeTopic(nil, "ok\x00\xffü")
	if string(got) != "ok__ü" || n != 2 {
		t.Errorf("escapeTopic: %q %d", got, n)
	}
}
