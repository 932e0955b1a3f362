package agent

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
)

// diskAgent is a configuration whose file output (alias "plant", buffer folder
// outputs.file_plant) buffers on disk in bufDir and writes to out.
func diskAgent(bufDir, out string) string {
	return fmt.Sprintf(`
[agent]
  interval = "50ms"
  round_interval = false
  flush_interval = "50ms"
  omit_hostname = true
  buffer_strategy = "disk"
  buffer_directory = %q
[[inputs.internal]]
  collect_process = false
[[outputs.file]]
  alias = "plant"
  files = [%q]
`, bufDir, out)
}

// loadConfig loads conf (a TOML text) with the real loader.
func loadConfig(t *testing.T, conf string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tagpipe.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Options{Files: []string{path}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// waitFile waits until the file at path holds want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d bytes (%v), none with %q", path, len(b), err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A segment of a disk buffer that cannot be opened (mode 000 for another user; here, as root
// may open anything, a folder where the segment should be) does not stop the agent: it is moved
// aside, the output writes what comes next, and /healthz names the output's buffer as failing.
func TestUnreadableSegmentDoesNotStopTheAgent(t *testing.T) {
	bufDir := t.TempDir()
	out := filepath.Join(t.TempDir(), "metrics.lp")
	// A first run buffers on disk: its output cannot connect (no such folder).
	a, stop := start(t, loadConfig(t, diskAgent(bufDir, filepath.Join(t.TempDir(), "missing", "x.lp"))), nil)
	waitFor(t, "metrics to be buffered on disk", func() bool { return a.Outputs()[0].BufferSize.Get() > 20 })
	stop()
	seg := filepath.Join(bufDir, "outputs.file_plant", "0000000000000000.seg")
	if os.Geteuid() == 0 {
		if err := os.Rename(seg, seg+".real"); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(seg, 0o750); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(seg, 0); err != nil {
		t.Fatal(err)
	}

	_, srv := startAgent(t, diskAgent(bufDir, out))
	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		`outputs.file "plant" (buffer): 1 unreadable file(s) set aside, their metrics not sent: `+seg+".unreadable")
	t.Logf("/healthz:\n%s", body)
	waitFile(t, out, "internal_output,")
	if _, err := os.Stat(seg + ".unreadable"); err != nil {
		t.Fatalf("the unreadable segment was not moved aside: %v", err)
	}
}

// A disk buffer that cannot be opened at all (its folder cannot be made) does not stop the
// agent either: the output buffers in memory and writes, and /healthz says why it fails.
func TestUnopenableDiskBufferFallsBackToMemory(t *testing.T) {
	bufDir := t.TempDir()
	out := filepath.Join(t.TempDir(), "metrics.lp")
	if err := os.WriteFile(filepath.Join(bufDir, "outputs.file_plant"), nil, 0o640); err != nil {
		t.Fatal(err) // a file where the output's folder should be
	}
	_, srv := startAgent(t, diskAgent(bufDir, out))
	body := waitHealth(t, srv, 5*time.Second, http.StatusServiceUnavailable,
		`outputs.file "plant" (buffer): disk buffer `+filepath.Join(bufDir, "outputs.file_plant")+" cannot be opened",
		"buffering in memory")
	t.Logf("/healthz:\n%s", body)
	waitFile(t, out, "internal_output,")
}
