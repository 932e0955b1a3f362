package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"
)

// runCompare is -compare: each run measures the bare poller (-bare) and then the agent on the
// same simulated devices, and prints both and the ratio agent/bare of each figure. The agent is
// tagpipe built from this module (`tagpipe --config`), writing every metric (data and health)
// to a line-protocol file through outputs.file, so that serialization and the write are part of
// what is measured; the parent reads the file as it grows. With -cpuprofile the agent runs as
// this command's agent role instead, which runs what `tagpipe --config` runs (config.Load,
// agent.New, Run) and profiles the steady window.
func runCompare(o *options) {
	ob := *o
	ob.compare, ob.bare, ob.inputExtra, ob.cpuProfile, ob.memProfile = false, true, "", "", ""
	oa := *o
	oa.compare, oa.toFile = false, true
	var what string
	if o.cpuProfile == "" && o.memProfile == "" {
		dir, err := os.MkdirTemp("", "tagpipe-loadtest-bin-")
		if err != nil {
			fatalf("%v", err)
		}
		defer os.RemoveAll(dir)
		oa.tagpipe = filepath.Join(dir, "tagpipe")
		if out, err := exec.Command("go", "build", "-o", oa.tagpipe, "github.com/tagpipe/tagpipe/cmd/tagpipe").CombinedOutput(); err != nil {
			fatalf("building tagpipe: %v\n%s", err, out)
		}
		what = "tagpipe (built from this module)"
	} else {
		what = "the agent role (what tagpipe --config runs, profiled)"
	}
	fmt.Printf("compare: each run the bare poller, then %s writing line protocol to a file\n", what)
	var pairs [][2]result
	for run := range o.runs {
		var pair [2]result
		for j, oo := range []*options{&ob, &oa} {
			r, err := runOnce(oo, run)
			if err != nil {
				fatalf("run %d: %v", run+1, err)
			}
			if run == 0 && j == 0 {
				fmt.Println(header)
			}
			fmt.Println(r.row(fmt.Sprintf("run %d", run+1)))
			pair[j] = r
		}
		pairs = append(pairs, pair)
	}
	fmt.Println()
	fmt.Printf("| %d devices, %s | CPU (%% of one core) | steady RSS | peak RSS | polls complete |\n|---|---|---|---|---|\n", o.devices, mix(o))
	for i, p := range pairs {
		fmt.Print(compareRows(fmt.Sprintf("run %d", i+1), p, ratioOf(p)))
	}
	if len(pairs) > 1 {
		var bs, as []result
		var cpu, rss, peak []float64
		for _, p := range pairs {
			bs, as = append(bs, p[0]), append(as, p[1])
			r := ratioOf(p)
			cpu, rss, peak = append(cpu, r.cpu), append(rss, r.rss), append(peak, r.peak)
		}
		// the median ratio is the median of the runs' ratios, not the ratio of the medians
		fmt.Print(compareRows("median", [2]result{median(bs), median(as)}, ratio{medianOf(cpu), medianOf(rss), medianOf(peak)}))
	}
}

// ratio is agent/bare of each figure of a run.
type ratio struct{ cpu, rss, peak float64 }

func ratioOf(p [2]result) ratio {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return ratio{div(p[1].agentCPU, p[0].agentCPU), div(float64(p[1].rss), float64(p[0].rss)), div(float64(p[1].rssPeak), float64(p[0].rssPeak))}
}

func compareRows(label string, p [2]result, r ratio) string {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	var s string
	for i, name := range []string{"bare poller", "tagpipe"} {
		s += fmt.Sprintf("| %s %s | %.2f%% | %s | %s | %.2f%% |\n", label, name, p[i].agentCPU, mib(p[i].rss), mib(p[i].rssPeak), p[i].complete)
	}
	return s + ratioRow(label, r)
}

func ratioRow(label string, r ratio) string {
	if r.cpu == 0 {
		return fmt.Sprintf("| %s tagpipe / bare | - (the bare poller's CPU was below the 10 ms tick) | %.2f | %.2f | - |\n", label, r.rss, r.peak)
	}
	return fmt.Sprintf("| %s tagpipe / bare | %.2f | %.2f | %.2f | - |\n", label, r.cpu, r.rss, r.peak)
}

// tailFile reads a file another process appends to: at its end it waits for more until finish
// is called, then it reads what is left and ends.
type tailFile struct {
	f    *os.File
	done atomic.Bool
}

// newTailFile creates the (empty) file and opens it for reading.
func newTailFile(path string) (*tailFile, error) {
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &tailFile{f: f}, nil
}

func (t *tailFile) Read(b []byte) (int, error) {
	for {
		done := t.done.Load() // before the read: a write before finish is seen
		n, err := t.f.Read(b)
		if n > 0 || err != nil && err != io.EOF {
			return n, err
		}
		if done {
			return 0, io.EOF
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish says the writer has ended.
func (t *tailFile) finish() { t.done.Store(true) }

func (t *tailFile) Close() error { return t.f.Close() }
