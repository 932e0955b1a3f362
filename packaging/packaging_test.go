package packaging

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

// testVersion is stamped into the packages the tests build: with a "+" as a build from a tag
// plus commits gets, which both formats must take.
const testVersion = "1.2.3+4.gabcdef1"

var arches = []struct {
	goarch, deb, rpm string
	machine          elf.Machine
}{
	{"amd64", "amd64", "x86_64", elf.EM_X86_64},
	{"arm64", "arm64", "aarch64", elf.EM_AARCH64},
}

var scratch string // removed after the tests

func TestMain(m *testing.M) {
	var err error
	if scratch, err = os.MkdirTemp("", "tagpipe-packaging-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(scratch)
	os.Exit(code)
}

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Fatal("no go command on PATH or in GOROOT")
	}
	return p
}

// run runs a command and returns its standard output; it fails the test on a non-zero exit or
// when the command writes to standard error and quiet is set.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// buildStep runs a build once per test run; every test that needs it fails if it failed.
type buildStep struct {
	once sync.Once
	err  error
}

func (b *buildStep) run(t *testing.T, name string, args ...string) {
	t.Helper()
	b.once.Do(func() {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
}

var pkgBuild, binBuild buildStep

// packages builds the .deb and .rpm of both architectures with the Makefile (make deb rpm)
// into a scratch folder, and returns that folder.
func packages(t *testing.T) string {
	t.Helper()
	dist := filepath.Join(scratch, "dist")
	pkgBuild.run(t, "make", "-C", testpeer.Root(t), "GO="+goTool(t), "DIST="+dist, "VERSION="+testVersion, "deb", "rpm")
	return dist
}

// binary builds tagpipe for this machine.
func binary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(scratch, "tagpipe")
	binBuild.run(t, goTool(t), "build", "-o", path, testpeer.Root(t)+"/cmd/tagpipe")
	return path
}

func debPath(dist, arch string) string {
	return filepath.Join(dist, "tagpipe_"+testVersion+"-1_"+arch+".deb")
}

func rpmPath(dist, arch string) string {
	return filepath.Join(dist, "tagpipe-"+testVersion+"-1."+arch+".rpm")
}

// entry is what a package says about one path.
type entry struct {
	mode, owner, group string // "-rwxr-xr-x", "root", "root"
}

// want is what both packages must hold, with the modes and owners the service relies on.
var want = map[string]entry{
	"/usr/bin/tagpipe":                    {"-rwxr-xr-x", "root", "root"},
	"/etc/tagpipe":                        {"drwxr-xr-x", "root", "root"},
	"/etc/tagpipe/tagpipe.conf":           {"-rw-r-----", "root", "tagpipe"},
	"/etc/tagpipe/tagpipe.d":              {"drwxr-x---", "root", "tagpipe"},
	"/lib/systemd/system/tagpipe.service": {"-rw-r--r--", "root", "root"},
	"/usr/share/man/man1/tagpipe.1.gz":    {"-rw-r--r--", "root", "root"},
	"/usr/share/doc/tagpipe":              {"drwxr-xr-x", "root", "root"},
	"/usr/share/doc/tagpipe/README.md":    {"-rw-r--r--", "root", "root"},
	"/usr/share/doc/tagpipe/sample.conf":  {"-rw-r--r--", "root", "root"},
	"/var/lib/tagpipe":                    {"drwxr-x---", "tagpipe", "tagpipe"},
}

var scripts = map[string]string{ // deb control file → file in packaging/
	"preinst": "preinstall.sh", "postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh",
}

// TestDebContents looks into both .deb files: control fields, files with modes and owners, the
// conffile, the maintainer scripts, and a static binary for the right machine with the version
// stamped.
func TestDebContents(t *testing.T) {
	testpeer.LookPath(t, "dpkg-deb", "apt-get install dpkg")
	dist := packages(t)
	for _, a := range arches {
		t.Run(a.deb, func(t *testing.T) {
			deb := debPath(dist, a.deb)
			for field, v := range map[string]string{
				"Package": "tagpipe", "Version": testVersion + "-1", "Architecture": a.deb, "Pre-Depends": "passwd",
			} {
				if got := strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb, field)); got != v {
					t.Errorf("%s: %s %q, want %q", filepath.Base(deb), field, got, v)
				}
			}
			// dpkg-deb -c: "drwxr-x--- root/tagpipe 0 2026-11-25 12:33 ./etc/tagpipe/tagpipe.d/"
			got := map[string]entry{}
			for _, line := range strings.Split(strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-c", deb)), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("dpkg-deb -c line %q", line)
				}
				og := strings.SplitN(f[1], "/", 2)
				got[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = entry{f[0], og[0], og[1]}
			}
			checkEntries(t, got)
			if cf := strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-I", deb, "conffiles")); cf != "/etc/tagpipe/tagpipe.conf" {
				t.Errorf("conffiles %q, want only /etc/tagpipe/tagpipe.conf", cf)
			}
			for ctrl, file := range scripts {
				src, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if got := run(t, "", nil, "dpkg-deb", "-I", deb, ctrl); got != string(src) {
					t.Errorf("%s is not packaging/%s:\n%s", ctrl, file, got)
				}
			}
			root := t.TempDir()
			run(t, "", nil, "dpkg-deb", "-x", deb, root)
			checkBinary(t, filepath.Join(root, "usr/bin/tagpipe"), a.machine, a.goarch == runtime.GOARCH)
			checkManPage(t, filepath.Join(root, "usr/share/man/man1/tagpipe.1.gz"))
		})
	}
}

func checkEntries(t *testing.T, got map[string]entry) {
	t.Helper()
	for path, w := range want {
		g, ok := got[path]
		switch {
		case !ok:
			t.Errorf("%s is missing", path)
		case g != w:
			t.Errorf("%s: %v, want %v", path, g, w)
		}
	}
}

// checkBinary checks that the packaged binary is for machine, statically linked (no interpreter,
// no shared libraries), and stamped with the version; one that runs here is run.
func checkBinary(t *testing.T, path string, machine elf.Machine, runs bool) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %v, want %v", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an interpreter: not a static binary", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs %v: not a static binary", path, libs)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(testVersion)) {
		t.Errorf("%s: version %s not stamped", path, testVersion)
	}
	if !runs {
		return
	}
	out := run(t, "", nil, path, "version")
	re := regexp.MustCompile(`^tagpipe ` + regexp.QuoteMeta(testVersion) + ` \(commit ([0-9a-f]{12}|unknown), built \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\n$`)
	if !re.MatchString(out) {
		t.Errorf("%s version: %q, want %s", path, out, re)
	}
}

func checkManPage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\.TH TAGPIPE 1 "\d{4}-\d\d-\d\d" "tagpipe ` + regexp.QuoteMeta(testVersion) + `"`).Match(b) {
		t.Errorf("%s: no .TH line with the date and version:\n%.200s", path, b)
	}
}

// TestRPMContents reads both .rpm files with rpm -qp: the file list with modes and owners, the
// config file, the scriptlets, the architecture and the digests.
func TestRPMContents(t *testing.T) {
	testpeer.LookPath(t, "rpm", "apt-get install rpm")
	dist := packages(t)
	for _, a := range arches {
		t.Run(a.rpm, func(t *testing.T) {
			rpm := rpmPath(dist, a.rpm)
			list := strings.Fields(run(t, "", nil, "rpm", "-qpl", rpm))
			wantList := make([]string, 0, len(want))
			for p := range want {
				wantList = append(wantList, p)
			}
			slices.Sort(wantList)
			if !slices.Equal(list, wantList) {
				t.Errorf("rpm -qpl %s:\n%s\nwant:\n%s", filepath.Base(rpm), strings.Join(list, "\n"), strings.Join(wantList, "\n"))
			}
			got := map[string]entry{}
			out := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]`, rpm)
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				got[f[3]] = entry{f[0], f[1], f[2]}
			}
			checkEntries(t, got)
			if c := strings.TrimSpace(run(t, "", nil, "rpm", "-qpc", rpm)); c != "/etc/tagpipe/tagpipe.conf" {
				t.Errorf("config files %q", c)
			}
			if flags := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags}\n]`, rpm); !strings.Contains(flags, "/etc/tagpipe/tagpipe.conf cn") {
				t.Errorf("tagpipe.conf is not %%config(noreplace):\n%s", flags)
			}
			if arch := run(t, "", nil, "rpm", "-qp", "--qf", "%{ARCH} %{VERSION}-%{RELEASE}", rpm); arch != a.rpm+" "+testVersion+"-1" {
				t.Errorf("arch and version %q", arch)
			}
			sc := run(t, "", nil, "rpm", "-qp", "--scripts", rpm)
			for _, file := range scripts {
				src, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(sc, string(src)) {
					t.Errorf("rpm scriptlets do not hold packaging/%s:\n%s", file, sc)
				}
			}
			if k := run(t, "", nil, "rpm", "-K", "--nosignature", rpm); !strings.Contains(k, "digests OK") {
				t.Errorf("rpm -K: %s", k)
			}
		})
	}
}

// TestMakeVersion checks the version the Makefile derives from git (no VERSION given): valid as
// a deb and an rpm version.
func TestMakeVersion(t *testing.T) {
	v := strings.TrimSpace(run(t, "", nil, "make", "-s", "-C", testpeer.Root(t), "version"))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+(\+[0-9A-Za-z.]+)?$`).MatchString(v) {
		t.Errorf("make version: %q is not N.N.N[+ALNUM.]", v)
	}
}

// TestHelpAndManPageCoverEveryFlag: every flag of the agent and of the demo is in --help and in
// the man page, and so is every command.
func TestHelpAndManPageCoverEveryFlag(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "--help")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("--help: %v, stderr %q (want exit 0, usage on stdout)", err, stderr.String())
	}
	help := stdout.String()
	// The demo's flag set prints its own defaults: "  -duration duration".
	demo := exec.Command(bin, "demo", "--help")
	demoOut, _ := demo.CombinedOutput()
	flagLine := regexp.MustCompile(`(?m)^\s+--?([a-z][a-z0-9-]*)`)
	var main, demoFlags []string
	for _, m := range flagLine.FindAllStringSubmatch(help[:strings.Index(help, "Demo flags")], -1) {
		main = append(main, m[1])
	}
	for _, m := range flagLine.FindAllStringSubmatch(string(demoOut), -1) {
		demoFlags = append(demoFlags, m[1])
	}
	if len(main) < 7 || len(demoFlags) < 5 {
		t.Fatalf("flags found: agent %v, demo %v; the usage formats changed?\n%s\n%s", main, demoFlags, help, demoOut)
	}
	man, err := os.ReadFile("tagpipe.1")
	if err != nil {
		t.Fatal(err)
	}
	manText := strings.ReplaceAll(string(man), `\-`, "-")
	demoHelp := help[strings.Index(help, "Demo flags"):]
	for _, f := range demoFlags {
		if !regexp.MustCompile(`(?m)^\s+--` + f + `\b`).MatchString(demoHelp) {
			t.Errorf("demo flag --%s is not in tagpipe --help", f)
		}
	}
	manDemo := manText[strings.Index(manText, ".SH DEMO OPTIONS"):strings.Index(manText, ".SH IMPORT OPTIONS")]
	for _, f := range demoFlags {
		if !strings.Contains(manDemo, "--"+f) {
			t.Errorf("demo flag --%s is not under DEMO OPTIONS in tagpipe.1", f)
		}
	}
	// The import flags (their own flag set): in --help after "Import flags" and under IMPORT
	// OPTIONS in the man page.
	impOut, _ := exec.Command(bin, "import", "--help").CombinedOutput()
	var importFlags []string
	for _, m := range flagLine.FindAllStringSubmatch(string(impOut), -1) {
		importFlags = append(importFlags, m[1])
	}
	if len(importFlags) < 5 || !strings.Contains(help, "Import flags") || !strings.Contains(manText, ".SH IMPORT OPTIONS") {
		t.Fatalf("import flags %v; --help or the man page has no import section?\n%s", importFlags, impOut)
	}
	importHelp := help[strings.Index(help, "Import flags"):]
	manImport := manText[strings.Index(manText, ".SH IMPORT OPTIONS"):]
	manImport = manImport[:strings.Index(manImport[1:], ".SH ")+1]
	for _, f := range importFlags {
		if !regexp.MustCompile(`(?m)^\s+--` + f + `\b`).MatchString(importHelp) {
			t.Errorf("import flag --%s is not in tagpipe --help", f)
		}
		if !regexp.MustCompile(`(?m)^\.BI? --` + f + `\b`).MatchString(manImport) {
			t.Errorf("import flag --%s has no entry under IMPORT OPTIONS in tagpipe.1", f)
		}
	}
	manOpts := manText[strings.Index(manText, ".SH OPTIONS"):strings.Index(manText, ".SH DEMO OPTIONS")]
	for _, f := range append(main, "help") {
		if !regexp.MustCompile(`(?m)^\.BI? --` + f + `\b`).MatchString(manOpts) {
			t.Errorf("flag --%s has no entry under OPTIONS in tagpipe.1", f)
		}
	}
	for _, c := range []string{"config", "demo", "import", "export", "passwd", "version", "help"} {
		if !strings.Contains(help, "tagpipe "+c) || !regexp.MustCompile(`(?m)^\.B `+c+`$`).MatchString(manText) {
			t.Errorf("command %q is missing from --help or from COMMANDS in tagpipe.1", c)
		}
	}
	// A bad flag: exit 2, a pointer to --help on stderr, nothing on stdout.
	cmd = exec.Command(bin, "--no-such-flag")
	stdout.Reset()
	stderr.Reset()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stdout.Len() > 0 || !strings.Contains(stderr.String(), "--help") {
		t.Errorf("bad flag: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
	if w, err := exec.LookPath("groff"); err == nil {
		out, err := exec.Command(w, "-ww", "-z", "-man", "tagpipe.1").CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff -ww finds problems in tagpipe.1: %v\n%s", err, out)
		}
	}
}

// unitSettings reads a unit file into key → values (a key may repeat).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q", path, line)
		}
		s[k] = append(s[k], v)
	}
	return s
}

const (
	confArgs   = "--config /etc/tagpipe/tagpipe.conf --config-directory /etc/tagpipe/tagpipe.d"
	unitSource = "tagpipe.service"
)

// TestUnit checks the settings issue 10 asks of the unit, and rates its hardening with
// systemd-analyze security (offline: no systemd needs to run).
func TestUnit(t *testing.T) {
	s := unitSettings(t, unitSource)
	one := func(k, v string) {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	one("Type", "notify")
	one("User", "tagpipe")
	one("Group", "tagpipe")
	one("SupplementaryGroups", "dialout")
	one("StateDirectory", "tagpipe")
	one("Restart", "on-failure")
	one("ExecStartPre", "/usr/bin/tagpipe "+confArgs+" --check")
	one("ExecStart", "/usr/bin/tagpipe "+confArgs)
	one("ExecReload", "/bin/kill -HUP $MAINPID")
	one("ProtectSystem", "strict")
	one("ProtectHome", "yes")
	one("NoNewPrivileges", "yes")
	one("PrivateTmp", "yes")
	one("PrivateDevices", "no")
	one("DevicePolicy", "closed")
	if n, err := strconv.Atoi(strings.Join(s["LimitNOFILE"], "")); err != nil || n < 20000 {
		t.Errorf("LimitNOFILE=%v: 10,000 devices and their outputs need more than 20,000", s["LimitNOFILE"])
	}
	for _, fam := range []string{"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} {
		if !slices.Contains(strings.Fields(strings.Join(s["RestrictAddressFamilies"], " ")), fam) {
			t.Errorf("RestrictAddressFamilies lacks %s", fam)
		}
	}
	for _, dev := range []string{"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} {
		if !slices.Contains(s["DeviceAllow"], dev) {
			t.Errorf("DeviceAllow=%s is missing: serial devices would be refused", dev)
		}
	}

	analyze := testpeer.LookPath(t, "systemd-analyze", "apt-get install systemd")
	out, err := exec.Command(analyze, "security", "--offline=true", unitSource).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for tagpipe.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security said:\n%s", out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 2.5 {
		t.Errorf("exposure %.1f, want 2.5 or less (it was 1.7): hardening was lost\n%s", score, out)
	}
}

// TestDefaultConfigChecks: the packaged tagpipe.conf loads (the service's ExecStartPre).
func TestDefaultConfigChecks(t *testing.T) {
	out := run(t, "", nil, binary(t), "--config", "tagpipe.conf", "--check")
	if !strings.HasPrefix(out, "configuration OK: 1 inputs, 0 processors, 1 outputs") {
		t.Errorf("--check: %q", out)
	}
}

// TestInstallDeb installs the .deb for this machine with dpkg -i, checks what it installed and
// the tagpipe user, verifies the installed unit, checks and runs the installed configuration as
// the service's user, upgrades over a changed configuration (kept), purges, and checks that
// everything is gone. It needs root: CI runs as root; elsewhere it is skipped.
func TestInstallDeb(t *testing.T) {
	if os.Geteuid() != 0 {
		if testpeer.InCI() {
			t.Fatal("CI: installing the .deb needs root")
		}
		t.Skip("installing the .deb needs root (dpkg -i, useradd); run as root or in CI")
	}
	var arch string
	for _, a := range arches {
		if a.goarch == runtime.GOARCH {
			arch = a.deb
		}
	}
	if arch == "" {
		t.Skipf("no package is built for %s", runtime.GOARCH)
	}
	testpeer.LookPath(t, "dpkg", "a Debian machine")
	analyze := testpeer.LookPath(t, "systemd-analyze", "apt-get install systemd")
	testpeer.LookPath(t, "man", "apt-get install man-db") // verify runs it for Documentation=man:
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "tagpipe").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("tagpipe is installed on this machine already (%s): the test would replace it", out)
	}
	deb := debPath(packages(t), arch)

	// Images that leave out man pages and docs (dpkg path-exclude) would install neither.
	include := []string{"--path-include=/usr/share/man/man1/tagpipe.1.gz", "--path-include=/usr/share/doc/tagpipe/*"}
	run(t, "", nil, "dpkg", append(append([]string{"-i"}, include...), deb)...)
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "tagpipe").Run() })

	status := run(t, "", nil, "dpkg-query", "-W", "-f", "${Status}|${Version}|${Conffiles}", "tagpipe")
	if !strings.HasPrefix(status, "install ok installed|"+testVersion+"-1|") || !strings.Contains(status, "/etc/tagpipe/tagpipe.conf ") {
		t.Errorf("dpkg-query: %q", status)
	}

	u, err := user.Lookup("tagpipe")
	if err != nil {
		t.Fatalf("the tagpipe user: %v", err)
	}
	g, err := user.LookupGroup("tagpipe")
	if err != nil {
		t.Fatalf("the tagpipe group: %v", err)
	}
	if u.Gid != g.Gid || u.HomeDir != "/var/lib/tagpipe" {
		t.Errorf("tagpipe user: gid %s (group %s), home %s", u.Gid, g.Gid, u.HomeDir)
	}
	if pw := run(t, "", nil, "getent", "passwd", "tagpipe"); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("tagpipe can log in: %s", pw)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 {
		t.Errorf("tagpipe has uid %d: not a system user", uid)
	}
	ids := map[string]string{"root": "0", "tagpipe": u.Uid}
	gids := map[string]string{"root": "0", "tagpipe": g.Gid}
	for path, w := range want {
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if got := st.Mode().String(); got != w.mode || strconv.Itoa(int(sys.Uid)) != ids[w.owner] || strconv.Itoa(int(sys.Gid)) != gids[w.group] {
			t.Errorf("%s: %s %d:%d, want %s %s:%s", path, got, sys.Uid, sys.Gid, w.mode, w.owner, w.group)
		}
	}

	// systemd-analyze exits 0 on unknown keys and bad values: any output at all is a failure.
	cmd := exec.Command(analyze, "verify", "/lib/systemd/system/tagpipe.service")
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if w := strings.TrimSpace(run(t, "", nil, "man", "-w", "tagpipe")); w != "/usr/share/man/man1/tagpipe.1.gz" {
		t.Errorf("man -w tagpipe: %q", w)
	}

	if out := run(t, "", nil, "/usr/bin/tagpipe", "--config", "/etc/tagpipe/tagpipe.conf", "--check"); !strings.HasPrefix(out, "configuration OK") {
		t.Errorf("--check: %q", out)
	}
	// The unit's own ExecStartPre, as the service's user: it can read its configuration.
	unit := unitSettings(t, "/lib/systemd/system/tagpipe.service")
	pre := strings.Fields(unit["ExecStartPre"][0])
	run(t, "/var/lib/tagpipe", nil, "runuser", append([]string{"-u", "tagpipe", "--"}, pre...)...)
	// Its ExecStart, once: the default configuration runs with no device and writes its own
	// metrics to the state directory, which the user may write.
	start := strings.Fields(unit["ExecStart"][0])
	run(t, "/var/lib/tagpipe", nil, "runuser", append(append([]string{"-u", "tagpipe", "--"}, start...), "--once")...)
	lp, err := os.ReadFile("/var/lib/tagpipe/internal.lp")
	if err != nil || !bytes.Contains(lp, []byte("internal_output,")) || !bytes.Contains(lp, []byte("output=file ")) {
		t.Errorf("the default configuration wrote %q (%v), want the agent's own metrics", lp, err)
	}

	// An upgrade (the same package again runs prerm/preinst upgrade and postinst configure) keeps
	// the administrator's configuration.
	conf, err := os.ReadFile("/etc/tagpipe/tagpipe.conf")
	if err != nil {
		t.Fatal(err)
	}
	local := append(conf, []byte("\n# site-specific change\n")...)
	if err := os.WriteFile("/etc/tagpipe/tagpipe.conf", local, 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, "dpkg", append(append([]string{"-i", "--force-confold"}, include...), deb)...)
	if got, _ := os.ReadFile("/etc/tagpipe/tagpipe.conf"); !bytes.Equal(got, local) {
		t.Errorf("the upgrade changed /etc/tagpipe/tagpipe.conf:\n%s", got)
	}

	run(t, "", nil, "dpkg", "--purge", "tagpipe")
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "tagpipe").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Errorf("after dpkg --purge: %s", out)
	}
	for path := range want {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after dpkg --purge %s is still there (%v)", path, err)
		}
	}
	if _, err := user.Lookup("tagpipe"); err != nil {
		t.Errorf("the tagpipe user is gone after the purge (%v); it is meant to stay", err)
	}
}

// notifySocket listens where the agent sends its sd_notify messages, as systemd would.
func notifySocket(t *testing.T) (path string, msgs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return path, ch
}

func expectNotify(t *testing.T, msgs <-chan string, want string) {
	t.Helper()
	select {
	case m := <-msgs:
		if m != want {
			t.Fatalf("sd_notify: %q, want %q", m, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("sd_notify: no %q in 10 s", want)
	}
}

// TestAgentServiceLifecycle runs the built agent as systemd would (a notify socket) with
// http_listen and an output that cannot write: READY=1, /healthz 503 naming the output; a
// SIGHUP with a working output and another port: RELOADING=1, READY=1, the endpoint moves and
// answers 200, /metrics counts the writes; SIGTERM: STOPPING=1 and exit 0.
func TestAgentServiceLifecycle(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tagpipe.conf")
	missing := filepath.Join(dir, "no-such-dir", "out.lp")
	good := filepath.Join(dir, "out.lp")
	addr1, addr2 := testpeer.FreeAddr(t), testpeer.FreeAddr(t)
	write := func(addr, out string) {
		c := fmt.Sprintf(`[agent]
  interval = "100ms"
  round_interval = false
  flush_interval = "100ms"
  omit_hostname = true
  http_listen = %q
[[inputs.internal]]
  collect_process = false
[[outputs.file]]
  files = [%q]
`, addr, out)
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(addr1, missing)
	sock, msgs := notifySocket(t)

	cmd := exec.Command(binary(t), "--config", conf)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill() // by its PID
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agent log:\n%s", b)
		}
	})

	expectNotify(t, msgs, "READY=1")
	body := waitHTTP(t, "http://"+addr1+"/healthz", 503, "outputs.file: connect: open "+missing+": no such file or directory")
	t.Logf("503:\n%s", body)

	write(addr2, good)
	cmd.Process.Signal(syscall.SIGHUP)
	expectNotify(t, msgs, "RELOADING=1")
	expectNotify(t, msgs, "READY=1")
	waitHTTP(t, "http://"+addr2+"/healthz", 200, "ok: 1 inputs gathering, 1 outputs writing")
	if _, err := httpGet("http://" + addr1 + "/healthz"); err == nil {
		t.Errorf("the endpoint still answers on %s after http_listen moved to %s", addr1, addr2)
	}
	// /metrics: between two writes, the file output's written count is the lines in its file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		written, lines := metricsWritten(t, "http://"+addr2+"/metrics"), 0
		if b, err := os.ReadFile(good); err == nil {
			lines = bytes.Count(b, []byte("\n"))
		}
		if written > 0 && float64(lines) == written {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: metrics_written %v, file %d lines", written, lines)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, msgs, "STOPPING=1")
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("after SIGTERM: %v", exitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop 20 s after SIGTERM")
	}
}

func httpGet(url string) (*http.Response, error) {
	c := http.Client{Timeout: 5 * time.Second}
	return c.Get(url)
}

// waitHTTP polls url until it answers code with a body containing want (10 s at most).
func waitHTTP(t *testing.T, url string, code int, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := httpGet(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if resp.StatusCode == code && strings.Contains(string(b), want) {
				return string(b)
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: want %d with %q; last answer: %s", url, code, want, last)
	return ""
}

// metricsWritten reads internal_output_metrics_written{output="file"} from /metrics with
// Prometheus' own parser.
func metricsWritten(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := httpGet(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	f := fams["internal_output_metrics_written"]
	if f == nil {
		t.Fatalf("/metrics has no internal_output_metrics_written: %v", fams)
	}
	for _, m := range f.Metric {
		if len(m.Label) == 1 && m.Label[0].GetName() == "output" && m.Label[0].GetValue() == "file" {
			if c := m.GetCounter(); c != nil { // typed since /metrics types its counters
				return c.GetValue()
			}
			return m.GetUntyped().GetValue()
		}
	}
	t.Fatalf("no internal_output_metrics_written{output=\"file\"}: %v", f)
	return 0
}
