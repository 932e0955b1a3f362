package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSmoke builds the command and runs it small: 40 devices, 2 refusing connections and 2
// blackholed, a short window. Every healthy device's polls arrive, the failing devices'
// breakers are open at the end, and the table names no problem.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the load test for about 10 s")
	}
	bin := filepath.Join(t.TempDir(), "loadtest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // a port free on 127.0.0.1 is likely free on 127.0.9.x too
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	out, err := exec.Command(bin, "-devices", "40", "-dead", "0.05", "-blackholed", "0.05", "-interval", "500ms",
		"-warmup", "4s", "-window", "2s", "-base", "127.0.9.1", "-port", strconv.Itoa(port),
		"-input-config", `timeout_max = "300ms"`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	var row []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "| run 1 |") {
			row = strings.Split(line, "|")
		}
		if strings.HasPrefix(line, "run 1: ") && !strings.Contains(line, "peak RSS") {
			t.Errorf("problems: %s", line)
		}
	}
	if len(row) < 14 {
		t.Fatalf("no result row")
	}
	cell := func(i int) string { return strings.TrimSpace(row[i]) }
	if cell(2) != "40" || cell(4) != "100.00%" || cell(12) != "4/4" {
		t.Errorf("devices %s, complete %s, failing devices' breakers open %s; want 40, 100.00%%, 4/4", cell(2), cell(4), cell(12))
	}
}
