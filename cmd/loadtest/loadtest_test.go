package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
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
	bin, port := build(t)
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

// build builds the command and returns it and a port for its devices.
func build(t *testing.T) (bin string, port int) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "loadtest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // a port free on 127.0.0.1 is likely free on 127.0.9.x too
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return bin, l.Addr().(*net.TCPAddr).Port
}

// TestCompare runs -compare small (20 devices, two runs): each run has a row of the bare
// poller and one of tagpipe (built and writing a file) whose polls arrived, and a ratio row
// that is the quotient of the two; the medians come last.
func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tagpipe and runs the load test for about 30 s")
	}
	bin, port := build(t)
	out, err := exec.Command(bin, "-compare", "-devices", "20", "-interval", "100ms", "-warmup", "3s", "-window", "4s", "-runs", "2",
		"-base", "127.0.9.1", "-port", strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	rows := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) == 7 {
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows[cells[1]] = cells[2:6]
		}
	}
	num := func(s string) float64 {
		f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(s, "%"), " MiB"), 64)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return f
	}
	for _, label := range []string{"run 1", "run 2", "median"} {
		bare, agent, ratio := rows[label+" bare poller"], rows[label+" tagpipe"], rows[label+" tagpipe / bare"]
		if bare == nil || agent == nil || ratio == nil {
			t.Fatalf("%s: rows of the bare poller, tagpipe and their ratio: got %q, %q, %q", label, bare, agent, ratio)
		}
		if label != "median" {
			for _, r := range [][]string{bare, agent} {
				if num(r[3]) <= 0 || num(r[0]) <= 0 || num(r[1]) <= 0 || num(r[2]) < num(r[1]) {
					t.Errorf("%s: want polls, CPU and memory (peak at least steady): %q", label, r)
				}
			}
			// The ratios are computed from the unrounded figures: within the rounding of the cells.
			for _, c := range []struct {
				col  int
				half float64 // half the last digit of the cells
			}{{0, 0.005}, {1, 0.05}, {2, 0.05}} {
				a, b := num(agent[c.col]), num(bare[c.col])
				lo, hi := (a-c.half)/(b+c.half), (a+c.half)/(b-c.half)
				if q := num(ratio[c.col]); q < lo-0.005 || q > hi+0.005 {
					t.Errorf("%s: ratio %v in column %d, want %v/%v", label, q, c.col, agent[c.col], bare[c.col])
				}
			}
		}
	}
}

// TestFileAgents runs two agents of a group writing files (-agents 2 -file): each agent's file
// is read as its own, so every device is counted once, by the agent that polls it, and every
// poll arrives. (With one file for both, the agents' lines were read by either reader.)
func TestFileAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the load test with a broker for about 20 s")
	}
	bin, port := build(t)
	out, err := exec.Command(bin, "-agents", "2", "-file", "-devices", "40", "-interval", "500ms",
		"-warmup", "8s", "-window", "2s", "-base", "127.0.9.1", "-port", strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	polled, agents := 0, 0
	for _, m := range regexp.MustCompile(`agent-\d+ (\d+) devices`).FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		polled += n
		agents++
	}
	if agents != 2 || polled != 40 {
		t.Errorf("%d agents polled %d devices in all; want 2 and 40", agents, polled)
	}
	if !strings.Contains(string(out), "| 100.00% |") {
		t.Error("not every poll arrived")
	}
}
