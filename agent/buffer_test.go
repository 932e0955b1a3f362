package agent

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/diskbuffer"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
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

// diskSetup is setup's configuration with every output buffering on disk in dir, limited to
// 1 MiB.
func diskSetup(s setup, dir string) *config.Config {
	cfg := s.config()
	for _, o := range cfg.Outputs {
		o.Settings.BufferStrategy, o.Settings.BufferDirectory, o.Settings.BufferBytes = "disk", dir, 1<<20
	}
	return cfg
}

// At shutdown with the output down, a disk-buffered output's metrics are kept for the next start,
// and the log says so: not "metrics lost", as it did (issue 18: metrics=4709 "lost" that were
// delivered after the restart).
func TestFinalFlushKeepsDiskBufferedMetrics(t *testing.T) {
	dir := t.TempDir()
	p := &pusher{started: make(chan struct{})}
	down := &memOut{down: true}
	cfg := diskSetup(setup{inputs: []models.Input{p}, outputs: []*memOut{down}, batch: 10}, dir)
	log, logged := outputtest.NewLogger(t)
	cfg.Outputs[0].Log = log
	_, stop := start(t, cfg, nil)
	<-p.started
	p.push(0, 50)
	stop()
	if log := logged.String(); strings.Contains(log, "lost") ||
		!strings.Contains(log, `msg="final flush failed; the metrics are kept in the disk buffer and sent after the next start"`) ||
		!strings.Contains(log, "metrics=50") {
		t.Fatalf("log:\n%s", log)
	}
	up := &memOut{}
	p2 := &pusher{started: make(chan struct{})}
	_, stop = start(t, diskSetup(setup{inputs: []models.Input{p2}, outputs: []*memOut{up}, batch: 10}, dir), nil)
	<-p2.started
	stop()
	if got := up.values(); !slices.Equal(got, seqFrom(0, 50)) {
		t.Fatalf("after the restart the output got %v", got)
	}
}

// A disk buffer at its limit shows in the agent's health, with the metrics lost.
func TestFullDiskBufferShowsInHealth(t *testing.T) {
	p := &pusher{started: make(chan struct{})}
	a, stop := start(t, diskSetup(setup{inputs: []models.Input{p}, outputs: []*memOut{{down: true}}, batch: 10,
		flush: 10 * time.Millisecond}, t.TempDir()), nil)
	defer stop()
	<-p.started
	p.pushNoisy(0, 30_000) // about 3 MB into 1 MiB
	ro := a.Outputs()[0]
	waitFor(t, "the metrics to reach the buffer", func() bool { return ro.MetricsAdded.Get() == 30_000 })
	ro.Buffer.(*diskbuffer.Buffer).Sync()
	var found string
	for _, pr := range a.Health(time.Now(), DefaultMinWindow) {
		if pr.Plugin == "outputs.out (buffer)" {
			found = pr.String()
		}
	}
	if !strings.Contains(found, "full (buffer_limit 1048576 bytes) since ") || !strings.Contains(found, "metrics lost") {
		t.Fatalf("health: %q", found)
	}
}

// pushNoisy pushes metrics numbered from (field n) that compress poorly (96 random hex digits
// each): a disk buffer fills with them.
func (p *pusher) pushNoisy(from, n int) {
	rng := rand.New(rand.NewPCG(1, uint64(from)))
	noise := make([]byte, 48)
	for i := from; i < from+n; i++ {
		for j := range noise {
			noise[j] = byte(rng.Uint32())
		}
		p.acc.AddMetric(models.New("push", nil, []models.Field{models.Int("n", int64(i)), models.String("noise", hex.EncodeToString(noise))},
			time.Unix(int64(i), 0)))
	}
}
