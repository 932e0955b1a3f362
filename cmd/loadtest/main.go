// Command loadtest measures tagpipe polling many Modbus devices on one machine, the way the
// agent runs in a plant: N simulated devices on their own loopback addresses (127.0.1.1
// upward) served by a simulator in a separate process, and the agent in another process with a
// generated configuration (every device polled every interval, 20 fields in one or two
// requests, line protocol to standard output, which this process reads). It prints the
// devices, the polls per second achieved, completeness (the share of the polls the healthy
// devices were due in the steady window that arrived), the lateness of each poll from its
// device's scheduled time (p50, p99, max; from the metric's time, which is when the answer
// arrived), the time from starting the agent to the first complete round, the agent's CPU (share
// of one core, from /proc over the steady window) and its peak resident memory (VmHWM).
//
//	go run ./cmd/loadtest -devices 10000
//	go run ./cmd/loadtest -devices 10000 -dead 0.01 -blackholed 0.01 -runs 3
//
// The schedule it checks lateness against is the one inputs/modbus documents (README,
// "Schedule"): each device polls at its phase (modbus.Phase, a hash of its controller, unit id
// and name, in 10 ms slots) after every multiple of the interval since the Unix epoch.
//
// It raises its open-files limit to what the simulator needs (two descriptors a device) and
// its children inherit it; raising the hard limit needs root (or CAP_SYS_RESOURCE), else it
// says what to run.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/inputs/modbus"
)

type options struct {
	role       string
	devices    int
	dead       float64
	blackholed float64
	slow       float64
	slowDelay  time.Duration
	interval   time.Duration
	fields     int
	requests   int
	warmup     time.Duration
	window     time.Duration
	runs       int
	base       netip.Addr
	port       int
	tagpipe    string
	inputExtra string
	keep       bool
	writeConf  string
	bare       bool
	compare    bool   // the bare poller, then the agent (the real binary, writing a file), per run
	toFile     bool   // the agent writes a line-protocol file (outputs.file), which is read as it grows
	outFile    string // that file, in the run's work folder (${HOSTNAME}: agent-N, a file each)
	// agents > 0: that many agents in one [cluster] group share the devices, with kfake as the
	// broker in a process of its own (the benchmark of docs/cluster.md).
	agents int
	split  bool   // -agents without [cluster]: each agent its own share of the devices
	page   string // "": no device page; else its address, read every interval

	// simulator role: the devices it serves
	simFrom, simTo int
	sims           int  // simulator processes
	record         bool // simulator role: record connections (-agents)

	// agent role
	config     string
	cpuProfile string
	memProfile string
	profileAt  time.Time
	profileFor time.Duration
}

func main() {
	o := &options{}
	var base string
	var profileAt int64
	flag.StringVar(&o.role, "role", "", "internal: sim or agent (the child processes)")
	flag.IntVar(&o.devices, "devices", 1000, "simulated devices, each on its own loopback address")
	flag.Float64Var(&o.dead, "dead", 0, "share of devices that refuse connections (nothing listens)")
	flag.Float64Var(&o.blackholed, "blackholed", 0, "share of devices that accept connections and never answer")
	flag.Float64Var(&o.slow, "slow", 0, "share of devices that answer after -slow-delay")
	flag.DurationVar(&o.slowDelay, "slow-delay", 800*time.Millisecond, "how late the slow devices answer")
	flag.DurationVar(&o.interval, "interval", time.Second, "poll interval of every device")
	flag.IntVar(&o.fields, "fields", 20, "fields per device")
	flag.IntVar(&o.requests, "requests", 1, "requests per poll: 1 (holding registers) or 2 (holding and input)")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "from the agent's start to the steady window")
	flag.DurationVar(&o.window, "window", 30*time.Second, "the steady window measured")
	flag.IntVar(&o.runs, "runs", 1, "runs; the medians are printed last")
	flag.StringVar(&base, "base", "127.0.1.1", "address of the first device")
	flag.IntVar(&o.port, "port", 1502, "port of every device")
	flag.StringVar(&o.tagpipe, "tagpipe", "", "run this tagpipe binary as the agent (default: the agent package in a child process)")
	flag.StringVar(&o.inputExtra, "input-config", "", "extra lines for the [[inputs.modbus]] table, e.g. 'health_metric = false'")
	flag.BoolVar(&o.bare, "bare", false, "run a bare poller (standard library only, no metrics, no output) in the agent's place: the floor to compare with")
	flag.BoolVar(&o.compare, "compare", false, "each run: the bare poller, then the agent (tagpipe built from this module, every metric written to a line-protocol file by outputs.file) on the same simulated devices; prints both rows and the ratio agent/bare")
	flag.StringVar(&o.page, "page", "", "serve the device page on this loopback address (127.0.0.1:9273) and read it every interval during the run, as an open browser tab does")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder (config, agent log, profile)")
	flag.StringVar(&o.writeConf, "write-config", "", "write the agent's configuration for -devices to this file and exit (to time `tagpipe --check` on a plant's configuration)")
	flag.BoolVar(&o.toFile, "file", false, "the agent writes every metric to a file in the work folder (as a plant's agent writes a file; -compare always does; with -agents, a file each: metrics-agent-N.lp), read as it grows")
	flag.IntVar(&o.agents, "agents", 0, "run this many agents in one [cluster] group sharing the devices (kfake as the broker, in its own process); 0: one agent without [cluster]")
	flag.BoolVar(&o.split, "split", false, "with -agents N: N agents without [cluster], each loading and polling its own N-th of the devices (the reference for what the group costs on an equally busy machine; -agents 1 -split is one agent, reported per agent)")
	flag.IntVar(&o.simFrom, "sim-from", 0, "internal (simulator role): first device served")
	flag.IntVar(&o.simTo, "sim-to", 0, "internal (simulator role): device after the last served")
	flag.BoolVar(&o.record, "record", false, "internal (simulator role): record each device's connections, for \"report\" on standard input")
	flag.StringVar(&o.config, "config", "", "internal (agent role): the configuration file")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write the agent's CPU profile of the steady window here (not with -tagpipe)")
	flag.StringVar(&o.memProfile, "memprofile", "", "write the agent's heap profile at the end of the window here, and log its memory figures (not with -tagpipe; with -agents, one per agent: PATH.agent-N)")
	flag.Int64Var(&profileAt, "profile-at", 0, "internal (agent role): Unix nanoseconds when the profile starts")
	flag.DurationVar(&o.profileFor, "profile-for", 0, "internal (agent role): length of the profile")
	flag.Parse()
	o.profileAt = time.Unix(0, profileAt)
	var err error
	if o.base, err = netip.ParseAddr(base); err != nil || !o.base.Is4() || !o.base.IsLoopback() {
		fatalf("-base %q: want an IPv4 loopback address", base)
	}
	if o.writeConf != "" {
		if err := os.WriteFile(o.writeConf, []byte(agentConfig(o, -1)), 0o644); err != nil {
			fatalf("%v", err)
		}
		return
	}
	switch o.role {
	case "sim":
		runSim(o)
		return
	case "agent":
		runAgent(o)
		return
	case "bare":
		runBare(o)
		return
	case "kafka":
		runBroker()
		return
	case "":
	default:
		fatalf("-role %q", o.role)
	}
	switch {
	case o.devices < 1:
		fatalf("-devices %d", o.devices)
	case o.requests != 1 && o.requests != 2:
		fatalf("-requests %d: 1 or 2", o.requests)
	case o.fields < o.requests || o.fields > 100:
		fatalf("-fields %d: %d..100", o.fields, o.requests)
	case o.dead+o.blackholed+o.slow >= 0.5:
		fatalf("at least half of the devices must be healthy")
	case o.interval < 100*time.Millisecond || o.window < 3*o.interval || o.runs < 1 || o.runs > 20:
		fatalf("-interval at least 100ms, -window at least 3 intervals, -runs 1..20")
	case o.bare && (o.tagpipe != "" || o.cpuProfile != "" || o.memProfile != "" || o.inputExtra != ""):
		fatalf("-bare runs the bare poller, not the agent")
	case o.compare && (o.bare || o.agents > 0 || o.tagpipe != "" || o.page != ""):
		fatalf("-compare runs the bare poller and the agent itself: not with -bare, -agents, -tagpipe or -page")
	case o.tagpipe != "" && (o.cpuProfile != "" || o.memProfile != ""):
		fatalf("-cpuprofile and -memprofile profile the agent package's process, not a -tagpipe binary")
	case o.agents < 0 || o.agents > 16 || o.agents > 0 && (o.bare || o.cpuProfile != ""):
		fatalf("-agents 0..16, not with -bare or -cpuprofile")
	case o.split && o.agents < 1:
		fatalf("-split needs -agents (1: one agent without [cluster], reported as the agents of a group are)")
	}
	// The agent needs a connection per device; a simulator process a listener and a connection
	// per device it serves. Where the limit cannot be raised, more simulator processes share the
	// devices.
	limit, err := raiseNoFile(uint64(2*o.devices + reserveFiles))
	if err != nil {
		fatalf("%v", err)
	}
	if uint64(o.devices+reserveFiles) > limit {
		fatalf("the agent needs %d open files (a connection per device), the limit is %d and cannot be raised here: run as root with CAP_SYS_RESOURCE, or `ulimit -Hn %d; ulimit -n %d` in a root shell first (at most fs.nr_open, %s)",
			o.devices+reserveFiles, limit, o.devices+reserveFiles, o.devices+reserveFiles, strings.TrimSpace(readFile("/proc/sys/fs/nr_open")))
	}
	perSim := int(limit-reserveFiles) / 2
	o.sims = (o.devices + perSim - 1) / perSim
	fmt.Printf("loadtest: %d devices (%s), %s interval, %d fields in %d %s, warm-up %s, window %s; open files %d (%d simulator %s); load average %s\n",
		o.devices, mix(o), o.interval, o.fields, o.requests, plural(o.requests, "request"), o.warmup, o.window,
		limit, o.sims, map[bool]string{true: "process", false: "processes"}[o.sims == 1], loadavg())
	if o.compare {
		runCompare(o)
		return
	}
	var results []result
	for run := range o.runs {
		r, err := runOnce(o, run)
		if err != nil {
			fatalf("run %d: %v", run+1, err)
		}
		results = append(results, r)
		if run == 0 {
			fmt.Println(header)
		}
		fmt.Println(r.row(fmt.Sprintf("run %d", run+1)))
	}
	if o.runs > 1 {
		m := median(results)
		m.label = results[0].label
		fmt.Println(m.row("median"))
	}
}

func mix(o *options) string {
	var parts []string
	for _, p := range []struct {
		frac float64
		name string
	}{{o.dead, "dead"}, {o.blackholed, "blackholed"}, {o.slow, fmt.Sprintf("answering after %s", o.slowDelay)}} {
		if p.frac > 0 {
			parts = append(parts, fmt.Sprintf("%g%% %s", 100*p.frac, p.name))
		}
	}
	if len(parts) == 0 {
		return "all healthy"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, w string) string {
	if n == 1 {
		return w
	}
	return w + "s"
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
	os.Exit(1)
}

// reserveFiles are the descriptors a process needs besides its connections.
const reserveFiles = 200

// raiseNoFile raises the open-files limit (soft and hard, inherited by the children) towards n
// and returns the soft limit in force. Raising the hard limit needs CAP_SYS_RESOURCE; without
// it the soft limit goes up to the hard one.
func raiseNoFile(n uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= n {
		return l.Cur, nil
	}
	want := syscall.Rlimit{Cur: n, Max: max(l.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return n, nil
	}
	want = syscall.Rlimit{Cur: l.Max, Max: l.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return l.Cur, nil
	}
	return l.Max, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func loadavg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// child is a started process of ours.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// stop ends the child: its standard input is closed (the simulator) or it gets SIGTERM (the
// agent); after 10 s it is killed. Only this process's own children are signalled, by PID.
func (c *child) stop(term bool) error {
	if c.stdin != nil {
		c.stdin.Close()
	}
	if term {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		return errors.New("did not stop within 10s: killed")
	}
}

func self() string {
	exe, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	return exe
}

// startSims starts the simulator processes, each serving its share of the devices, and waits
// (at most a minute each) until they serve.
func startSims(o *options) ([]*child, error) {
	var sims []*child
	per := (o.devices + o.sims - 1) / o.sims
	for from := 0; from < o.devices; from += per {
		c, err := startSim(o, from, min(from+per, o.devices))
		if err != nil {
			for _, s := range sims {
				s.stop(false)
			}
			return nil, err
		}
		sims = append(sims, c)
	}
	return sims, nil
}

func startSim(o *options, from, to int) (*child, error) {
	cmd := exec.Command(self(), "-role", "sim", "-devices", strconv.Itoa(o.devices),
		"-sim-from", strconv.Itoa(from), "-sim-to", strconv.Itoa(to),
		"-dead", fmt.Sprint(o.dead), "-blackholed", fmt.Sprint(o.blackholed), "-slow", fmt.Sprint(o.slow),
		"-slow-delay", o.slowDelay.String(), "-base", o.base.String(), "-port", strconv.Itoa(o.port),
		"-record="+strconv.FormatBool(o.agents > 0))
	c, _, err := startChild(cmd, "simulator", true)
	return c, err
}

// startChild starts cmd and waits (at most a minute) for its READY line, whose rest it returns.
// With stdin the child gets a pipe for its standard input (a simulator stops when it closes).
func startChild(cmd *exec.Cmd, what string, stdin bool) (*child, string, error) {
	cmd.Stderr = os.Stderr
	c := &child{cmd: cmd}
	if stdin {
		c.stdin, _ = cmd.StdinPipe()
	}
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	c.out = bufio.NewReader(stdout)
	ready := make(chan string, 1)
	go func() {
		line, _ := c.out.ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "READY")
		if !ok {
			c.stop(!stdin)
			return nil, "", fmt.Errorf("%s: %q", what, line)
		}
		return c, strings.TrimSpace(rest), nil
	case <-time.After(time.Minute):
		c.stop(!stdin)
		return nil, "", fmt.Errorf("%s not ready within a minute", what)
	}
}

// runOnce runs the simulator and the agent once and measures.
func runOnce(o *options, run int) (result, error) {
	dir, err := os.MkdirTemp("", "tagpipe-loadtest-")
	if err != nil {
		return result{}, err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Println("work folder:", dir)
	}
	// -file (and -compare): each agent writes a file of its own, read as it grows. Their one
	// configuration names it with ${HOSTNAME}, which is agent-N in each agent's environment.
	var outs []*tailFile
	if o.toFile {
		oc := *o
		oc.outFile = filepath.Join(dir, "metrics-${HOSTNAME}.lp")
		o = &oc
		for i := range max(o.agents, 1) {
			out, err := newTailFile(filepath.Join(dir, fmt.Sprintf("metrics-agent-%d.lp", i+1)))
			if err != nil {
				return result{}, err
			}
			defer out.Close()
			outs = append(outs, out)
		}
	}
	sims, err := startSims(o)
	if err != nil {
		return result{}, err
	}
	defer func() {
		for _, s := range sims {
			s.stop(false)
		}
	}()
	simsCPU := func() (t time.Duration) {
		for _, s := range sims {
			t += procCPU(s.cmd.Process.Pid)
		}
		return t
	}

	var texts []string // every agent's configuration, or one for each (-split)
	if o.split {
		// The reference for what the group costs: as many agents, as busy a machine, each
		// with an inventory of its own share and no [cluster].
		for i := range o.agents {
			texts = append(texts, agentConfig(o, i))
		}
	} else {
		text := agentConfig(o, -1)
		if o.agents > 0 {
			broker, addr, err := startBroker()
			if err != nil {
				return result{}, err
			}
			defer broker.stop(true)
			text = clusterConfig(addr) + text
		}
		texts = []string{text}
	}
	confs := make([]string, len(texts))
	for i, text := range texts {
		confs[i] = filepath.Join(dir, fmt.Sprintf("tagpipe-%d.conf", i+1))
		if err := os.WriteFile(confs[i], []byte(text), 0o644); err != nil {
			return result{}, err
		}
	}

	ks := kinds(o.devices, o.dead, o.blackholed, o.slow)
	start := time.Now()
	iv := int64(o.interval)
	k0 := (start.Add(o.warmup).UnixNano() + iv - 1) / iv // first slot of the window
	k1 := k0 + int64(o.window/o.interval)                // first slot after it
	window := []string{"-profile-at", strconv.FormatInt(k0*iv, 10), "-profile-for", time.Duration((k1 - k0) * iv).String()}
	col := newCollector(o, ks, start, k0, k1)
	readDone := make(chan error, max(o.agents, 1))
	var ags []*child
	var logPaths []string
	defer func() {
		for _, ag := range ags {
			ag.stop(true)
		}
	}()
	for i := range max(o.agents, 1) {
		conf := confs[min(i, len(confs)-1)]
		var cmd *exec.Cmd
		if o.bare {
			cmd = exec.Command(self(), append([]string{"-role", "bare", "-devices", strconv.Itoa(o.devices), "-base", o.base.String(),
				"-port", strconv.Itoa(o.port), "-interval", o.interval.String(), "-fields", strconv.Itoa(o.fields),
				"-requests", strconv.Itoa(o.requests)}, window...)...)
		} else if o.tagpipe != "" {
			cmd = exec.Command(o.tagpipe, "--config", conf)
		} else {
			args := []string{"-role", "agent", "-config", conf}
			numbered := func(p string) string { // PATH[.RUN][.agent-N]
				if o.runs > 1 {
					p = fmt.Sprintf("%s.%d", p, run+1)
				}
				if o.agents > 0 {
					p = fmt.Sprintf("%s.agent-%d", p, i+1)
				}
				return p
			}
			if o.cpuProfile != "" {
				args = append(args, "-cpuprofile", numbered(o.cpuProfile))
			}
			if o.memProfile != "" {
				args = append(args, "-memprofile", numbered(o.memProfile))
			}
			args = append(args, window...)
			cmd = exec.Command(self(), args...)
		}
		logPath := filepath.Join(dir, fmt.Sprintf("agent-%d.log", i+1))
		logFile, err := os.Create(logPath)
		if err != nil {
			return result{}, err
		}
		defer logFile.Close()
		cmd.Stderr = logFile
		cmd.Env = append(os.Environ(), fmt.Sprintf("HOSTNAME=agent-%d", i+1)) // the member name in cluster mode
		var src io.Reader
		var w *os.File
		if outs != nil {
			src = outs[i]
		} else {
			// A pipe of our own, not cmd.StdoutPipe: Wait (in stop) closes that one as soon as
			// the child exits, and the last line (the bare poller's counts, written at SIGTERM)
			// could be lost before it is read. This one ends at EOF, when the child has exited.
			r, pw, err := os.Pipe()
			if err != nil {
				return result{}, err
			}
			defer r.Close()
			cmd.Stdout, src, w = pw, r, pw
		}
		err = cmd.Start()
		if w != nil {
			w.Close() // the child holds its own copy
		}
		if err != nil {
			return result{}, err
		}
		ag := &child{cmd: cmd, out: bufio.NewReaderSize(src, 1<<20)}
		ags, logPaths = append(ags, ag), append(logPaths, logPath)
		go func() { readDone <- col.read(ag.out, i) }()
	}
	if o.page != "" {
		stopPage := readPage(o.page, o.interval)
		defer func() { fmt.Printf("run %d: %s\n", run+1, stopPage()) }()
	}

	// CPU of the agents and the simulator over the steady window, memory at its end.
	agentCPU := make([][2]time.Duration, len(ags))
	var simCPU, selfCPU [2]time.Duration
	r := result{devices: o.devices}
	marks := []time.Time{time.Unix(0, k0*iv), time.Unix(0, k1*iv)}
	// Each agent's RSS, and the private part of it, sampled once a second over the window: one
	// sample at its end lands anywhere in a garbage collector's cycle.
	var sampled [][2]int64 // per agent: sums of RSS and of private RSS
	var samples int
	sampleDone := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	defer func() {
		stopSampling()
		<-sampleDone
	}()
	go func() {
		defer close(sampleDone)
		select {
		case <-time.After(time.Until(marks[0])):
		case <-sampleCtx.Done():
			return
		}
		sampled = make([][2]int64, len(ags))
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for time.Now().Before(marks[1]) {
			for i, ag := range ags {
				_, now := procMem(ag.cmd.Process.Pid)
				sampled[i][0] += now
				sampled[i][1] += procPrivate(ag.cmd.Process.Pid)
			}
			samples++
			select {
			case <-tick.C:
			case <-sampleCtx.Done():
				return
			}
		}
	}()
	for j, at := range marks {
		select {
		case err := <-readDone:
			return result{}, fmt.Errorf("an agent's output ended early (%v); the logs: %s\n%s", err, strings.Join(logPaths, " "), tail(logPaths[0]))
		case <-time.After(time.Until(at)):
		}
		for i, ag := range ags {
			agentCPU[i][j] = procCPU(ag.cmd.Process.Pid)
		}
		simCPU[j], selfCPU[j] = simsCPU(), ownCPU()
		if j == 0 {
			for _, ag := range ags {
				peak, _ := procMem(ag.cmd.Process.Pid)
				r.rssPeakWarmup = max(r.rssPeakWarmup, peak)
			}
		}
	}
	windowSec := float64(k1-k0) * o.interval.Seconds()
	stopSampling()
	<-sampleDone
	for i, ag := range ags {
		peak, now := procMem(ag.cmd.Process.Pid)
		cpu := 100 * (agentCPU[i][1] - agentCPU[i][0]).Seconds() / windowSec
		a := agentResult{cpu: cpu, rssPeak: peak, rss: now}
		if samples > 0 && i < len(sampled) {
			a.rssMean, a.privMean = sampled[i][0]/int64(samples), sampled[i][1]/int64(samples)
		}
		r.perAgent = append(r.perAgent, a)
		r.agentCPU += cpu / float64(len(ags))
		r.rssPeak, r.rss = max(r.rssPeak, peak), max(r.rss, now)
	}
	r.simCPU = 100 * (simCPU[1] - simCPU[0]).Seconds() / windowSec
	r.selfCPU = 100 * (selfCPU[1] - selfCPU[0]).Seconds() / windowSec
	if o.agents > 0 {
		r.doubles = simDoubles(sims)
	}
	time.Sleep(o.interval + 2*time.Second) // the window's last polls, flushed
	for i, ag := range ags {
		if err := ag.stop(true); err != nil {
			return result{}, fmt.Errorf("agent %d: %v; its log: %s\n%s", i+1, err, logPaths[i], tail(logPaths[i]))
		}
	}
	ags = nil
	for _, out := range outs {
		out.finish() // the agents have ended: what they wrote is all there is
	}
	for range max(o.agents, 1) {
		select {
		case <-readDone:
		case <-time.After(10 * time.Second):
			return result{}, errors.New("an agent's output did not end after it stopped")
		}
	}
	col.finish(&r)
	r.load = loadavg()
	fmt.Printf("run %d: peak RSS %.1f MiB by the window's start; this process %.1f%% CPU, %d lines read\n",
		run+1, float64(r.rssPeakWarmup)/(1<<20), r.selfCPU, col.lines)
	if o.agents > 0 {
		var parts []string
		for i, a := range r.perAgent {
			parts = append(parts, fmt.Sprintf("agent-%d %d devices, %.1f%% CPU, peak RSS %.1f MiB, RSS at end %.1f MiB, RSS over the window %.1f MiB (private %.1f)",
				i+1, a.devices, a.cpu, float64(a.rssPeak)/(1<<20), float64(a.rss)/(1<<20), float64(a.rssMean)/(1<<20), float64(a.privMean)/(1<<20)))
		}
		fmt.Printf("run %d: %s; devices with two clients at once: %d\n", run+1, strings.Join(parts, "; "), r.doubles)
	}
	if r.problems != "" {
		fmt.Printf("run %d: %s (agent logs: %s)\n", run+1, r.problems, strings.Join(logPaths, " "))
	}
	return r, nil
}

func tail(path string) string {
	b := []byte(readFile(path))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// procCPU is the user and system CPU time of process pid, from /proc (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	s := readFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func ownCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procPrivate returns the anonymous (private) resident memory of process pid in bytes.
func procPrivate(pid int) int64 {
	for _, l := range strings.Split(readFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "Anonymous:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// procMem returns VmHWM and VmRSS of process pid in bytes.
func procMem(pid int) (peak, now int64) {
	for _, l := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "VmRSS:":
			now = kb << 10
		}
	}
	return peak, now
}

// collector reads the agent's line protocol and keeps what the report needs per device.
type collector struct {
	mu       sync.Mutex // several agents' outputs are read at once
	src      int        // the agent whose line is being read
	agentOf  []int      // the agent that last wrote each device's data, +1 (0: none)
	o        *options
	kinds    []kind
	start    time.Time
	k0, k1   int64
	iv       int64
	phase    []int64 // each device's scheduled offset in the interval
	first    []int64 // time of its first data metric
	inWindow []int32 // its polls in the window
	lastSlot []int64
	dups     int
	late     []int64 // lateness of every healthy device's poll in the window (ns)
	slowLate []int64
	breaker  []string // each device's last breaker state
	lines    int
	other    int

	bare      bool // the bare poller's summary line came
	barePolls int64
	bareLate  [3]int64 // p50, p99, max
}

func newCollector(o *options, ks []kind, start time.Time, k0, k1 int64) *collector {
	c := &collector{o: o, kinds: ks, start: start, k0: k0, k1: k1, iv: int64(o.interval),
		phase: make([]int64, o.devices), first: make([]int64, o.devices), inWindow: make([]int32, o.devices),
		lastSlot: make([]int64, o.devices), breaker: make([]string, o.devices), agentOf: make([]int, o.devices)}
	for i := range c.phase {
		c.phase[i] = int64(schedulePhase(o, i))
	}
	c.late = make([]int64, 0, o.devices*int(k1-k0))
	return c
}

// schedulePhase is the offset of device i in the interval, as inputs/modbus documents it
// (modbus.Phase: a hash of its controller, unit id and name, in 10 ms slots).
func schedulePhase(o *options, i int) time.Duration {
	addr := netip.AddrPortFrom(deviceAddr(o.base, i), uint16(o.port))
	return modbus.Phase("tcp://"+addr.String(), 1, deviceName(i), o.interval)
}

var (
	deviceTag  = []byte(",device=d")
	breakerKey = []byte(`breaker="`)
	health     = []byte("modbus_health")
	data       = []byte(measurement)
)

// read reads the output of agent src (several agents: each from its own goroutine).
func (c *collector) read(r *bufio.Reader, src int) error {
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return errors.New("a line longer than 1 MiB")
		}
		if len(line) > 0 {
			c.mu.Lock()
			c.src = src
			c.line(line)
			c.mu.Unlock()
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (c *collector) line(line []byte) {
	c.lines++
	line = bytes.TrimRight(line, "\n")
	if bytes.HasPrefix(line, []byte("bare ")) {
		fmt.Sscanf(string(line), "bare polls=%d p50=%d p99=%d max=%d", &c.barePolls, &c.bareLate[0], &c.bareLate[1], &c.bareLate[2])
		c.bare = true
		return
	}
	end := bytes.IndexAny(line, ", ")
	if end < 0 {
		c.other++
		return
	}
	name := line[:end]
	i := bytes.Index(line, deviceTag)
	sp := bytes.LastIndexByte(line, ' ')
	if i < 0 || sp < 0 {
		c.other++
		return
	}
	dev := 0
	for _, ch := range line[i+len(deviceTag):] {
		if ch < '0' || ch > '9' {
			break
		}
		dev = 10*dev + int(ch-'0')
	}
	ts, err := strconv.ParseInt(string(line[sp+1:]), 10, 64)
	if err != nil || dev >= len(c.kinds) {
		c.other++
		return
	}
	switch {
	case bytes.Equal(name, health):
		if j := bytes.Index(line, breakerKey); j >= 0 {
			v := line[j+len(breakerKey):]
			if k := bytes.IndexByte(v, '"'); k >= 0 && string(v[:k]) != c.breaker[dev] {
				c.breaker[dev] = string(v[:k])
			}
		}
	case bytes.Equal(name, data):
		if c.first[dev] == 0 {
			c.first[dev] = ts
		}
		x := ts - c.phase[dev]
		k := x / c.iv
		if k < c.k0 || k >= c.k1 {
			return
		}
		if k == c.lastSlot[dev] {
			c.dups++
			return
		}
		c.lastSlot[dev] = k
		c.inWindow[dev]++
		c.agentOf[dev] = c.src + 1
		switch c.kinds[dev] {
		case healthy:
			c.late = append(c.late, x-k*c.iv)
		case slow:
			c.slowLate = append(c.slowLate, x-k*c.iv)
		}
	default:
		c.other++
	}
}

// finish fills r from what was collected.
func (c *collector) finish(r *result) {
	slots := c.k1 - c.k0
	var got, want, all int64
	var firstRound int64
	missing := 0
	var problems []string
	for i, k := range c.kinds {
		all += int64(c.inWindow[i])
		if k != healthy {
			continue
		}
		want += slots
		got += int64(c.inWindow[i])
		if c.first[i] == 0 {
			missing++
		} else {
			firstRound = max(firstRound, c.first[i])
		}
	}
	for _, a := range c.agentOf {
		if a > 0 && a <= len(r.perAgent) {
			r.perAgent[a-1].devices++
		}
	}
	if c.bare {
		r.pollsPerSec = float64(c.barePolls) / (float64(slots) * c.o.interval.Seconds())
		r.complete = 100 * float64(c.barePolls) / float64(want)
		r.p50, r.p99, r.pmax = c.bareLate[0], c.bareLate[1], c.bareLate[2]
		r.label = "bare poller"
		return
	}
	r.pollsPerSec = float64(all) / (float64(slots) * c.o.interval.Seconds())
	r.complete = 100 * float64(got) / float64(want)
	if missing == 0 {
		r.firstRound = time.Duration(firstRound - c.start.UnixNano())
	} else {
		problems = append(problems, fmt.Sprintf("%d healthy devices never reported", missing))
	}
	slices.Sort(c.late)
	r.p50, r.p99, r.pmax = pct(c.late, 0.50), pct(c.late, 0.99), pct(c.late, 1)
	if len(c.slowLate) > 0 {
		slices.Sort(c.slowLate)
		problems = append(problems, fmt.Sprintf("slow devices: lateness p50 %s", time.Duration(pct(c.slowLate, 0.5)).Round(time.Millisecond)))
	}
	failing, open := 0, 0
	for i, k := range c.kinds {
		if k == dead || k == blackholed {
			failing++
			if c.breaker[i] == "open" {
				open++
			}
		}
	}
	if failing > 0 {
		r.breakers = fmt.Sprintf("%d/%d", open, failing)
	}
	if c.dups > 0 {
		problems = append(problems, fmt.Sprintf("%d polls twice in one slot", c.dups))
	}
	if c.other > 0 {
		problems = append(problems, fmt.Sprintf("%d lines not understood", c.other))
	}
	r.problems = strings.Join(problems, "; ")
}

func pct(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// agentResult is one agent's share of a run with several (-agents).
type agentResult struct {
	devices int // devices whose last data in the window came from it
	cpu     float64
	rssPeak int64
	rss     int64 // at the end of the window
	// rssMean is the mean of RSS over the window, sampled once a second; privMean that of its
	// private part (smaps_rollup's Anonymous: not the binary's code pages, which the processes
	// of one binary share and the Kafka client's code adds to).
	rssMean, privMean int64
}

type result struct {
	perAgent                    []agentResult
	doubles                     int    // -agents: devices that had two clients at once
	label                       string // "bare poller": no first round, no breakers
	devices                     int
	pollsPerSec                 float64
	complete                    float64
	p50, p99, pmax              int64
	firstRound                  time.Duration
	agentCPU                    float64
	rssPeak, rss, rssPeakWarmup int64
	simCPU, selfCPU             float64
	breakers                    string
	load                        string
	problems                    string
}

const header = "|  | devices | polls/s | complete | lateness p50 | p99 | max | first round | agent CPU | peak RSS (VmHWM) | RSS at end | failing devices' breakers open | simulator CPU | load average at the end |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

func (r result) row(label string) string {
	ms := func(ns int64) string { return fmt.Sprintf("%.1f ms", float64(ns)/1e6) }
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	br := r.breakers
	if br == "" {
		br = "-"
	}
	if r.label != "" {
		label += " (" + r.label + ")"
	}
	first := fmt.Sprintf("%.2f s", r.firstRound.Seconds())
	if r.label != "" {
		first = "-" // the bare poller reports its window only
	}
	return fmt.Sprintf("| %s | %d | %.0f | %.2f%% | %s | %s | %s | %s | %.1f%% | %s | %s | %s | %.1f%% | %s |",
		label, r.devices, r.pollsPerSec, r.complete, ms(r.p50), ms(r.p99), ms(r.pmax), first,
		r.agentCPU, mib(r.rssPeak), mib(r.rss), br, r.simCPU, r.load)
}

// medianOf is the median of v (sorted in place).
func medianOf(v []float64) float64 {
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// median is the median of each column over the runs.
func median(rs []result) result {
	f := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		return medianOf(v)
	}
	return result{
		devices:     rs[0].devices,
		pollsPerSec: f(func(r result) float64 { return r.pollsPerSec }),
		complete:    f(func(r result) float64 { return r.complete }),
		p50:         int64(f(func(r result) float64 { return float64(r.p50) })),
		p99:         int64(f(func(r result) float64 { return float64(r.p99) })),
		pmax:        int64(f(func(r result) float64 { return float64(r.pmax) })),
		firstRound:  time.Duration(f(func(r result) float64 { return float64(r.firstRound) })),
		agentCPU:    f(func(r result) float64 { return r.agentCPU }),
		rssPeak:     int64(f(func(r result) float64 { return float64(r.rssPeak) })),
		rss:         int64(f(func(r result) float64 { return float64(r.rss) })),
		simCPU:      f(func(r result) float64 { return r.simCPU }),
		breakers:    rs[len(rs)/2].breakers,
		load:        loadavg(),
	}
}
