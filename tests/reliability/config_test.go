package reliability_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	_ "github.com/tagpipe/tagpipe/outputs/all"
	"github.com/tagpipe/tagpipe/outputs/influxdb"
)

// hostilePassword is issue 18's: a quote, a line break and a table header.
const hostilePassword = "pw'\n[[outputs.file]]\n  files = ['stdout']\n#"

// TestConfigHostile runs the tagpipe binary on the configurations of issue 18 items 9-11.
func TestConfigHostile(t *testing.T) {
	dir := t.TempDir()
	bin := testpeer.Build(t, dir, "./cmd/tagpipe", "tagpipe")
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(conf string, env ...string) (string, error) {
		cmd := exec.Command(bin, "--check", "--config", conf)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("env value cannot add an output", func(t *testing.T) {
		conf := write("env.conf", "[[outputs.influxdb]]\n  urls = [\"http://127.0.0.1:8086\"]\n  username = \"op\"\n  password = '${TP_PW}'\n"+
			"[[outputs.file]]\n  files = [\""+filepath.Join(dir, "out.lp")+"\"]\n")
		out, err := check(conf, "TP_PW="+hostilePassword)
		if err != nil || !strings.Contains(out, "configuration OK: 0 inputs, 0 processors, 2 outputs") {
			t.Fatalf("%v: %s", err, out)
		}
		cfg, err := config.Load(config.Options{Files: []string{conf}, Lookup: func(string) (string, bool) { return hostilePassword, true }})
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.Outputs) != 2 {
			t.Fatalf("%d outputs", len(cfg.Outputs))
		}
		if got := cfg.Outputs[0].Plugin.(*influxdb.InfluxDB).Password.Reveal(); got != hostilePassword {
			t.Fatalf("password %q, want %q", got, hostilePassword)
		}
	})

	t.Run("limits name their line", func(t *testing.T) {
		for _, c := range []struct{ text, want string }{
			{"[agent]\n  interval = 18446744074\n", ":2: interval: 18446744074 seconds is longer than a duration can be"},
			{"[agent]\n  interval = \"1ns\"\n", ":2: agent: interval: 1ns is less than 10ms"},
			{"[agent]\n  interval = 0\n", ":2: agent: interval: must be more than 0"},
			{"[agent]\n  metric_batch_size = 0\n", ":2: agent: metric_batch_size: must be at least 1"},
			{"[agent]\n  buffer_fsync = \"often\"\n", ":2: agent: buffer_fsync: must be"},
			{"[agent]\n  buffer_limit = 10\n", ":2: agent: buffer_limit: must be at least 1MiB"},
			{"[agent]\n  http_listen = \"9273\"\n", ":2: agent: http_listen \"9273\""},
			{"[agent]\n  buffer_strategy = \"disk\"\n  buffer_directory = \"" + write("a-file", "") + "\"\n", ":3: agent: buffer_directory: "},
			{"[[outputs.influxdb]]\n  urls = [\"http://admin:s3cr3t@127.0.0.1:80 86\"]\n", ":2: outputs.influxdb: urls: "},
		} {
			conf := write("limits.conf", c.text)
			out, err := check(conf)
			if err == nil || !strings.Contains(out, conf+c.want) || strings.Contains(out, "s3cr3t") {
				t.Errorf("%q: %v\n%s\nwant %s%s", c.text, err, out, conf, c.want)
			}
		}
		out, err := check(write("crlf.conf", "\ufeff[agent]\r\n  interval = \"5s\"\r\n  http_listen = \":0\"\r\n[[outputs.file]]\r\n  files = [\"stdout\"]\r\n"))
		if err != nil || !strings.Contains(out, "crlf.conf:3: agent: http_listen") || !strings.Contains(out, "listens on every interface") {
			t.Errorf("a BOM, CRLF lines and a warning at its line: %v\n%s", err, out)
		}
	})

	t.Run("nesting refused fast, on start and on SIGHUP", func(t *testing.T) {
		deep := "[[outputs.file]]\n  files = [\"stdout\"]\n  x = " + strings.Repeat("{a = ", 3000) + "1" + strings.Repeat("}", 3000) + "\n"
		conf := write("deep.conf", deep)
		out, err := check(conf)
		if err == nil || strings.TrimSpace(out) != conf+":3: nested deeper than 64 levels (tables, dotted keys, arrays and inline tables)" {
			t.Fatalf("%v: %.500s", err, out)
		}
		// A running agent sent the file by SIGHUP keeps running on the old configuration and
		// logs one short line.
		live := write("live.conf", "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n[[outputs.file]]\n  files = [\""+filepath.Join(dir, "live.lp")+"\"]\n[[inputs.internal]]\n")
		cmd := exec.Command(bin, "--config", live)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stderr)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		waitFor(t, lines, "agent started", 30*time.Second)
		write("live.conf", deep)
		cmd.Process.Signal(syscall.SIGHUP)
		line := waitFor(t, lines, "nested deeper", 30*time.Second)
		if len(line) > 1000 || !strings.Contains(line, "live.conf:3:") {
			t.Fatalf("%d bytes: %.300s", len(line), line)
		}
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("the agent stopped: %v", err)
		}
	})
}

// waitFor returns the first line holding s, or fails after d.
func waitFor(t *testing.T, lines <-chan string, s string, d time.Duration) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the agent's log ended before %q", s)
			}
			if strings.Contains(l, s) {
				return l
			}
		case <-timer.C:
			t.Fatalf("no %q in the log after %v", s, d)
		}
	}
}
