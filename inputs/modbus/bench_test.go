package modbus

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/models"
)

type nopAcc struct{}

func (nopAcc) AddMetric(*models.Metric) {}
func (nopAcc) AddError(error)           {}

// benchProfile is a profile of n fields: FLOAT32, INT32 and UINT16 in turn, back to back from
// address 0, on holding registers unless kind says otherwise.
func benchProfile(n int) string {
	var b strings.Builder
	b.WriteString("  [[inputs.modbus.profile]]\n    name = \"bench\"\n")
	addr := 0
	for i := range n {
		typ := []string{"FLOAT32", "INT32", "UINT16"}[i%3]
		fmt.Fprintf(&b, "    [[inputs.modbus.profile.field]]\n      name = \"f%d\"\n      address = %d\n      data_type = %q\n", i, addr, typ)
		addr += typeNames[typ].registers()
	}
	return b.String()
}

func benchConfig(n int, controller, mode string) string {
	return fmt.Sprintf("[[inputs.modbus]]\n  transmission_mode = %q\n%s  [[inputs.modbus.device]]\n    name = \"bench-1\"\n    controller = %q\n    profile = \"bench\"\n    tags = { site = \"plant\" }\n",
		mode, benchProfile(n), controller)
}

// BenchmarkPlan plans a profile of 200 fields over the four tables, with gaps.
func BenchmarkPlan(b *testing.B) {
	var fields []fieldSpec
	for i := range 200 {
		fields = append(fields, spec(regKind(1+i%4), (i/4)*3, 1+i%2))
	}
	o := planOptions{maxGap: 2, maxRegisters: maxRegisters, maxBits: maxBits}
	b.ReportAllocs()
	for b.Loop() {
		plan(fields, o)
	}
}

// BenchmarkDecode125 decodes a 125-register answer into 75 fields and hands over the metric,
// which comes with its fields from models.NewMetric's shared chunks: nothing allocates per
// field, and a metric costs a share of a chunk.
func BenchmarkDecode125(b *testing.B) {
	m := load(b, benchConfig(75, "tcp://127.0.0.1:502", "tcp"))
	_, d := onePoller(b, m, nopAcc{})
	if len(d.plan) != 1 || d.plan[0].count != 125 {
		b.Fatalf("plan %s", describePlan(d.plan))
	}
	data := make([]byte, 250)
	for i := range data {
		data[i] = byte(i * 7)
	}
	at := time.Now()
	var scratch [250]byte
	st := m.stats()
	b.ReportAllocs()
	for b.Loop() {
		d.decode(&d.plan[0], data, at, scratch[:])
		d.emit(nopAcc{}, at, st)
	}
}

// BenchmarkDecode125Fields is the decoding alone, into a reused slice: nothing allocates.
func BenchmarkDecode125Fields(b *testing.B) {
	m := load(b, benchConfig(75, "tcp://127.0.0.1:502", "tcp"))
	_, d := onePoller(b, m, nopAcc{})
	data := make([]byte, 250)
	at := time.Now()
	d.decode(&d.plan[0], data, at, nil) // the metric, reused below
	b.ReportAllocs()
	for b.Loop() {
		d.decode(&d.plan[0], data, at, nil)
	}
}

// TestSimulatorProcess is not a test: with MODBUSSIM_HELPER=tcp|rtu it serves modbussim in
// this process until stdin closes, so that tests and benchmarks measure the client's CPU alone.
// MODBUSSIM_PORTS=n serves n ports; MODBUSSIM_KINDS="healthy:185,blackholed:5,slow:5" serves
// that many ports of each kind in that order (blackholed: accepts, never answers; slow: answers
// after MODBUSSIM_SLOW, default 800ms). It prints READY and the addresses.
func TestSimulatorProcess(t *testing.T) {
	mode := os.Getenv("MODBUSSIM_HELPER")
	if mode == "" {
		t.Skip("helper process for the benchmarks")
	}
	fr := map[string]modbussim.Framing{"tcp": modbussim.TCP, "rtu": modbussim.RTU}[mode]
	slow, err := time.ParseDuration(cmp.Or(os.Getenv("MODBUSSIM_SLOW"), "800ms"))
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*modbussim.Server{
		"healthy":    modbussim.New(modbussim.Config{Framing: fr}),
		"blackholed": modbussim.New(modbussim.Config{Framing: fr, Faults: map[byte]modbussim.Fault{1: {NoAnswer: true}}}),
		"slow":       modbussim.New(modbussim.Config{Framing: fr, Faults: map[byte]modbussim.Fault{1: {Delay: slow}}}),
	}
	kinds := os.Getenv("MODBUSSIM_KINDS")
	if kinds == "" {
		kinds = "healthy:" + cmp.Or(os.Getenv("MODBUSSIM_PORTS"), "1")
	}
	var addrs []string
	for _, k := range strings.Split(kinds, ",") {
		name, n, _ := strings.Cut(k, ":")
		count, err := strconv.Atoi(n)
		if servers[name] == nil || err != nil {
			t.Fatalf("MODBUSSIM_KINDS %q", kinds)
		}
		for range count {
			a, err := servers[name].AddListener("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addrs = append(addrs, a)
		}
	}
	fmt.Println("READY", strings.Join(addrs, " "))
	bufio.NewReader(os.Stdin).ReadString('\n')
	for _, s := range servers {
		s.Close()
	}
}

// startSimProcess runs modbussim in a child process (this test binary) and returns its
// addresses; env adds to the helper's environment (MODBUSSIM_PORTS, MODBUSSIM_KINDS, ...).
func startSimProcess(t testing.TB, mode string, env ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSimulatorProcess$", "-test.bench=^$")
	cmd.Env = append(append(os.Environ(), "MODBUSSIM_HELPER="+mode), env...)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		t.Fatalf("simulator: %q %v", line, err)
	}
	return strings.Fields(strings.TrimPrefix(line, "READY "))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPoll polls one device of 20 fields (one request of 30 registers) over loopback, as
// fast as it answers, against modbussim in another process. polls/s and the CPU time of this
// process per poll are reported besides ns/op.
func BenchmarkPoll(b *testing.B) {
	for _, mode := range []string{"tcp", "rtu"} {
		b.Run(mode, func(b *testing.B) {
			addr := startSimProcess(b, mode)[0]
			m := load(b, benchConfig(20, "tcp://"+addr, map[string]string{"tcp": "tcp", "rtu": "rtuovertcp"}[mode]))
			p, d := onePoller(b, m, nopAcc{})
			p.onErr = func(err error) { b.Fatal(err) }
			ctx := context.Background()
			p.poll(ctx, d, time.Now())
			b.ReportAllocs()
			cpu, start := cpuTime(), time.Now()
			for b.Loop() {
				p.poll(ctx, d, time.Now())
			}
			elapsed, used := time.Since(start), cpuTime()-cpu
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "polls/s")
			b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/poll")
		})
	}
}

// BenchmarkDevices runs the plugin as the agent does, with n devices of 20 fields polled every
// second (each on its own connection, against modbussim in another process), for b.N intervals
// after two to connect. It reports the CPU share of one core, the CPU time per poll and the
// resident memory of this process. Run it with -benchtime=10x.
func BenchmarkDevices(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var cfg strings.Builder
			cfg.WriteString("[[inputs.modbus]]\n" + benchProfile(20))
			for i, a := range startSimProcess(b, "tcp", fmt.Sprintf("MODBUSSIM_PORTS=%d", n)) {
				fmt.Fprintf(&cfg, "  [[inputs.modbus.device]]\n    name = \"d%d\"\n    controller = \"tcp://%s\"\n    profile = \"bench\"\n", i, a)
			}
			m := load(b, cfg.String())
			m.SetInterval(time.Second)
			if err := m.Start(context.Background(), nopAcc{}); err != nil {
				b.Fatal(err)
			}
			defer m.Stop()
			time.Sleep(2 * time.Second) // connect (loopback ports may be scarce after earlier runs)
			polls0, errs0, cpu0, start := m.st.polls.Get(), m.st.pollErrors.Get(), cpuTime(), time.Now()
			for b.Loop() {
				time.Sleep(time.Second)
			}
			polls, cpu, elapsed := m.st.polls.Get()-polls0, cpuTime()-cpu0, time.Since(start)
			if errs := m.st.pollErrors.Get() - errs0; errs > 0 {
				b.Fatalf("%d of %d polls failed", errs, polls)
			}
			b.ReportMetric(float64(polls)/elapsed.Seconds(), "polls/s")
			b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%core")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(polls), "cpu-ns/poll")
			b.ReportMetric(float64(rss())/(1<<20), "rss-MiB")
			runtime.GC() // what stays: the devices' state, not the metrics handed over
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.StackInuse)/(1<<20), "stack-MiB")
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "live-heap-MiB")
		})
	}
}

func rss() int64 {
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
