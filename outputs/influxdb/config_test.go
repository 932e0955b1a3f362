package influxdb

import (
	"context"
	"fmt"
	"github.com/tagpipe/tagpipe/internal/testkit/tsdb"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

func load(t *testing.T, text string) (*config.Config, error) {
	t.Helper()
	return config.LoadText("test.conf", text, func(string) (string, bool) { return "", false })
}

// uncomment turns every "# key = value" line of a sample into a setting, so that loading it
// proves each documented key exists; the TLS file paths are replaced with real files.
func uncomment(t *testing.T, sample string) string {
	f := tlstest.New(t)
	s := regexp.MustCompile(`(?m)^(\s*)# ([a-z_]+ = )`).ReplaceAllString(sample, "$1$2")
	return strings.NewReplacer("/etc/tagpipe/ca.pem", f.CA, "/etc/tagpipe/cert.pem", f.ClientCert,
		"/etc/tagpipe/key.pem", f.ClientKey, `bucket_tag = ""`, `bucket_tag = "site"`,
		`username = ""`, `username = "u"`).Replace(s)
}

func TestSampleConfigs(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"influxdb", "influxdb_v2"} {
		sample := outputs.Registry[name]().SampleConfig()
		if !strings.Contains(string(readme), sample) {
			t.Errorf("README.md does not hold the sample config of outputs.%s", name)
		}
		for what, text := range map[string]string{"as shipped": sample, "every key set": uncomment(t, sample)} {
			cfg, err := load(t, text)
			if err != nil {
				t.Fatalf("outputs.%s sample, %s: %v", name, what, err)
			}
			if len(cfg.Outputs) != 1 || cfg.Outputs[0].Config.Name != name {
				t.Fatalf("outputs.%s sample, %s: %d outputs", name, what, len(cfg.Outputs))
			}
		}
	}
}

// TestInitErrors: a bad value fails at start, naming the file, line and key.
func TestInitErrors(t *testing.T) {
	f := tlstest.New(t)
	for _, tc := range []struct{ plugin, line, want string }{
		{"influxdb", `urls = []`, "urls: give at least one URL"},
		{"influxdb", `urls = ["ftp://127.0.0.1"]`, "urls: \"ftp://127.0.0.1\": the scheme must be http or https"},
		{"influxdb", `urls = ["http://127.0.0.1:8086?db=x"]`, "urls: \"http://127.0.0.1:8086?db=x\": no query"},
		{"influxdb", `urls = ["http:///path"]`, `urls: "http:///path": no host`},
		{"influxdb", `timeout = "0s"`, "timeout: must be more than 0"},
		{"influxdb", `content_encoding = "br"`, `content_encoding: "br": must be "gzip" or "identity"`},
		{"influxdb", `precision = "10ms"`, `precision: 10ms: must be`},
		{"influxdb", `database = ""`, "database: give the database"},
		{"influxdb", `write_consistency = "most"`, `write_consistency: "most"`},
		{"influxdb", `password = "x"`, "password: give the user name in username too"},
		{"influxdb", `tls_ca = "/nonexistent.pem"`, "tls_ca: open /nonexistent.pem"},
		{"influxdb", fmt.Sprintf(`tls_cert = %q`, f.ClientCert), "tls_cert: give its key in tls_key too"},
		{"influxdb_v2", `bucket = ""`, "bucket: give the bucket"},
		{"influxdb_v2", `exclude_bucket_tag = true`, "exclude_bucket_tag: needs bucket_tag"},
		{"influxdb_v2", `org = "acme"`, "org: unknown key"},
	} {
		bucket := ""
		if tc.plugin == "influxdb_v2" && !strings.HasPrefix(tc.line, "bucket =") {
			bucket = "  bucket = \"b\"\n"
		}
		text := fmt.Sprintf("[[outputs.%s]]\n%s  %s\n", tc.plugin, bucket, tc.line)
		_, err := load(t, text)
		line := 2
		if bucket != "" {
			line = 3
		}
		want := fmt.Sprintf("test.conf:%d: outputs.%s: %s", line, tc.plugin, tc.want)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", tc.line, err, want)
		}
	}
}

// TestSecretsStayHidden: neither the password nor the token shows when a plugin is printed.
func TestSecretsStayHidden(t *testing.T) {
	cfg, err := load(t, `
[[outputs.influxdb]]
  username = "writer"
  password = "pa55word"
  skip_database_creation = true
[[outputs.influxdb_v2]]
  bucket = "b"
  token = "t0ken"
`)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range cfg.Outputs {
		if err := o.Plugin.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer o.Plugin.Close()
		for _, format := range []string{"%v", "%+v", "%#v"} {
			s := fmt.Sprintf(format, o.Plugin)
			if strings.Contains(s, "pa55word") || strings.Contains(s, "t0ken") ||
				strings.Contains(s, "d3JpdGVyOnBhNTV3b3Jk") { // base64 of writer:pa55word
				t.Errorf("%s shows a secret: %s", format, s)
			}
		}
	}
}

// TestBucketTag writes to InfluxDB 1.8.3's v2 API with the bucket taken from a tag: each bucket
// gets its metrics (without the tag, with exclude_bucket_tag); a bucket that does not exist keeps
// its metrics (404) without holding back the others.
func TestBucketTag(t *testing.T) {
	s := tsdb.Start(t, tsdb.Influx183, tsdb.Options{})
	for _, db := range []string{"north", "south", "fallback"} {
		s.Query("", "CREATE DATABASE "+db, "", "")
	}
	o, _ := newV2(t, func(o *InfluxDBv2) {
		o.URLs, o.Bucket, o.BucketTag, o.ExcludeBucketTag, o.UintSupport = []string{s.URL}, "fallback", "site", true, false
	})
	ms := plcMetrics("bt", 40, recentBase(), true)
	want := map[string][]*models.Metric{}
	var missing []int
	for i, m := range ms {
		site := [...]string{"north", "south", "", "nowhere"}[i%4]
		bucket := site
		if site == "" {
			bucket = "fallback"
		} else {
			m.SetTag("site", site)
		}
		if site == "nowhere" {
			missing = append(missing, i)
			continue
		}
		c := m.Copy()
		c.RemoveTag("site")
		want[bucket] = append(want[bucket], c)
	}
	err := o.Write(context.Background(), ms)
	p, ok := models.AsPartialWrite(err)
	if !ok || len(p.Rejected) != 0 || len(p.Accepted) != len(ms)-len(missing) ||
		!strings.Contains(err.Error(), `bucket "nowhere"`) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Write: %v", err)
	}
	for bucket, ms := range want {
		compare(t, "bucket "+bucket, s.Points(bucket, "bt"), influxExpect(ms))
	}
}
