// Package configcase runs configuration cases kept as folders, as Telegraf keeps a plugin's
// error cases: testcases/<case>/tagpipe.conf and what loading it must give, so that a user's
// bug report becomes a folder that a test reads.
//
//	testcases/<case>/tagpipe.conf   the configuration, loaded as the file "tagpipe.conf"
//	testcases/<case>/expected.err   the whole error it must fail with (FILE:LINE and all)
//	testcases/<case>/expected.warn  or: it loads, with exactly these warnings, one a line
//
// A case with neither file must load cleanly, without warnings.
package configcase

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tagpipe/tagpipe/config"
)

// Run runs every case in dir (a folder of case folders), each as a subtest.
func Run(t *testing.T, dir string) {
	t.Helper()
	cases, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		n++
		t.Run(c.Name(), func(t *testing.T) { runCase(t, filepath.Join(dir, c.Name())) })
	}
	if n == 0 {
		t.Fatalf("no cases in %s", dir)
	}
}

func runCase(t *testing.T, dir string) {
	text, err := os.ReadFile(filepath.Join(dir, "tagpipe.conf"))
	if err != nil {
		t.Fatal(err)
	}
	wantErr, errFile := read(t, filepath.Join(dir, "expected.err"))
	wantWarn, _ := read(t, filepath.Join(dir, "expected.warn"))
	// Environment variables are not looked up: a case reads the same everywhere.
	cfg, err := config.LoadText("tagpipe.conf", string(text), func(string) (string, bool) { return "", false })
	switch {
	case errFile && err == nil:
		t.Fatalf("loaded; want the error\n%s", wantErr)
	case errFile:
		if got := strings.TrimSpace(err.Error()); got != wantErr {
			t.Errorf("error\n%s\nwant\n%s", got, wantErr)
		}
	case err != nil:
		t.Fatalf("want it to load: %v", err)
	default:
		if g := strings.Join(cfg.Warnings, "\n"); g != wantWarn {
			t.Errorf("warnings\n%s\nwant\n%s", g, wantWarn)
		}
	}
}

// read returns a file's text without its trailing line feed, and whether it exists.
func read(t *testing.T, path string) (string, bool) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(string(b), "\n"), true
}
