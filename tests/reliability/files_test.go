package reliability

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/diskbuffer"
	"github.com/tagpipe/tagpipe/internal/safefile"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
	"github.com/tagpipe/tagpipe/outputs/file"
)

const victimText = "root's file: not to be touched\n"

// plant makes dir/name a symbolic link to a new victim file and returns the victim's path.
func plant(t *testing.T, dir, name string) string {
	t.Helper()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte(victimText), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return victim
}

func untouched(t *testing.T, victim string) {
	t.Helper()
	if b, err := os.ReadFile(victim); err != nil || string(b) != victimText {
		t.Errorf("the file the link points to was changed: %q, %v", b, err)
	}
}

// TestFileOutputRefusesSymlink (issue 18, item 12): a link planted where outputs.file writes is
// refused with an error naming the file; the file it points to is not written.
func TestFileOutputRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := plant(t, dir, "out.lp")
	o := outputs.Registry["file"]().(*file.File)
	o.Files = []string{filepath.Join(dir, "out.lp")}
	if err := o.Init(); err != nil {
		t.Fatal(err)
	}
	err := o.Connect(context.Background())
	if err == nil {
		o.Write(context.Background(), []*models.Metric{models.New("m", nil, []models.Field{models.Int("v", 1)}, time.Now())})
		o.Close()
		t.Fatalf("Connect through a planted link succeeded")
	}
	if !errors.Is(err, safefile.ErrSymlink) || !strings.Contains(err.Error(), filepath.Join(dir, "out.lp")) {
		t.Errorf("Connect: %v; want the symbolic link named", err)
	}
	untouched(t, victim)
}

// TestDiskBufferRefusesSymlinks (issue 18, item 12): a segment and the acknowledged position
// planted as links in a disk buffer's folder are refused (named in the log and in the buffer's
// error, set aside) and never written through; the buffer still works.
func TestDiskBufferRefusesSymlinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outputs.influxdb_plant")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	segVictim := plant(t, dir, "0000000000000000.seg")
	ackVictim := plant(t, dir, "ack")
	log, logs := outputtest.NewLogger(t)
	b, err := diskbuffer.Open(diskbuffer.Config{Dir: dir, Log: log})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b.Add(models.New("m", nil, []models.Field{models.Int("v", 1)}, time.Now()))
	if tx := b.Begin(10); tx == nil || len(tx.Batch) != 1 {
		t.Errorf("the buffer does not work after refusing the links")
	} else {
		tx.Settle(nil)
		b.End(tx)
	}
	b.Sync()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	untouched(t, segVictim)
	untouched(t, ackVictim)
	for _, name := range []string{"0000000000000000.seg", "ack"} {
		if n := logs.Count(filepath.Join(dir, name), "is a symbolic link: refused"); n == 0 {
			t.Errorf("no log line naming %s as a refused link:\n%s", name, logs)
		}
	}
	if err, _ := b.Err(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("buffer error %v, want the refused link", err)
	}
}

// TestDiskBufferRefusesForeignDir (issue 18, item 12): a buffer_directory owned by another user
// (nobody) is refused: the agent starts, the output buffers in memory, and /healthz names the
// folder and its owner. Needs root (to chown).
func TestDiskBufferRefusesForeignDir(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run this test as root: it chowns a folder to nobody")
		}
		t.Skip("not root: cannot chown a folder to another user (runs as root in CI)")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	bufDir := filepath.Join(t.TempDir(), "buffer")
	if err := os.Mkdir(bufDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(bufDir, uid, -1); err != nil {
		t.Fatal(err)
	}
	// The library refuses it...
	_, err = diskbuffer.Open(diskbuffer.Config{Dir: filepath.Join(bufDir, "outputs.file")})
	if !errors.Is(err, safefile.ErrForeignOwner) || !strings.Contains(err.Error(), bufDir) || !strings.Contains(err.Error(), "uid "+nobody.Uid) {
		t.Errorf("Open in a folder nobody owns: %v; want it refused, naming the folder and the owner", err)
	}
	// ...and so does the agent, which keeps running with the output in memory, failing.
	out := filepath.Join(t.TempDir(), "out.lp")
	cfg, err := config.LoadText("foreign.conf", `
[agent]
  interval = "1h"
  flush_interval = "1h"
  omit_hostname = true
  buffer_strategy = "disk"
  buffer_directory = '`+bufDir+`'
[[outputs.file]]
  files = ['`+out+`']
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, nil)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	var problem string
	for _, p := range a.Health(time.Now(), time.Second) {
		if strings.HasPrefix(p.Plugin, "outputs.file") {
			problem += p.Plugin + ": " + p.Reason
		}
	}
	if !strings.Contains(problem, "owned by another user") || !strings.Contains(problem, bufDir) {
		t.Errorf("health: %q, want the output's buffer failing with the foreign folder", problem)
	}
	if entries, _ := os.ReadDir(bufDir); len(entries) > 1 {
		t.Errorf("files made in the foreign folder: %v", entries)
	}
}
