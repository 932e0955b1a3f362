package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/tagpipe/tagpipe/models"
)

// MinInterval is the shortest interval (of [agent], of an input, of a flush): a shorter one
// polls or flushes flat out, which no plant needs.
const MinInterval = 10 * time.Millisecond

// definedKeys returns the keys that the TOML set directly in the table at path (not in its
// sub-tables).
func definedKeys(md toml.MetaData, path ...string) map[string]bool {
	set := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) != len(path)+1 {
			continue
		}
		match := true
		for i := range path {
			match = match && k[i] == path[i]
		}
		if match {
			set[k[len(path)]] = true
		}
	}
	return set
}

// check is one rule on the values of [agent] or an output table: when bad, msg is reported at
// the first of keys that a file set (keys[0] first), else at the file without a line.
type check struct {
	keys []string
	bad  bool
	msg  string
}

// checkAgent checks the [agent] table once every file is read, each error at the line where
// the key at fault was set.
func (l *loader) checkAgent() {
	a := &l.cfg.Agent
	for _, chk := range []check{
		{[]string{"interval"}, a.Interval <= 0, "must be more than 0"},
		{[]string{"interval"}, a.Interval > 0 && a.Interval < Duration(MinInterval), fmt.Sprintf("%s is less than %s, the shortest interval", a.Interval, Duration(MinInterval))},
		{[]string{"flush_interval"}, a.FlushInterval <= 0, "must be more than 0"},
		{[]string{"flush_interval"}, a.FlushInterval > 0 && a.FlushInterval < Duration(MinInterval), fmt.Sprintf("%s is less than %s, the shortest interval", a.FlushInterval, Duration(MinInterval))},
		{[]string{"metric_batch_size"}, a.MetricBatchSize < 1, "must be at least 1"},
		{[]string{"metric_buffer_limit", "metric_batch_size"}, a.MetricBufferLimit < a.MetricBatchSize, "must be at least metric_batch_size"},
		{[]string{"buffer_strategy"}, a.BufferStrategy != "memory" && a.BufferStrategy != "disk", "must be \"memory\" or \"disk\""},
		{[]string{"buffer_fsync"}, !validFsync(a.BufferFsync), "must be \"batch\" or a duration like \"1s\""},
		{[]string{"buffer_limit"}, a.BufferLimit < 1<<20, "must be at least 1MiB"},
		{[]string{"buffer_directory", "buffer_strategy"}, a.BufferStrategy == "disk" && a.BufferDirectory == "", "must be set for buffer_strategy = \"disk\""},
		{[]string{"health_failing_share"}, !(a.HealthFailingShare >= 0 && a.HealthFailingShare < 1), "must be at least 0 and less than 1 (0.05: 5% of an input's devices may fail)"},
		{[]string{"http_tls_key", "http_tls_cert"}, a.HTTPTLSCert != "" && a.HTTPTLSKey == "", "must be set with http_tls_cert"},
		{[]string{"http_tls_cert", "http_tls_key"}, a.HTTPTLSKey != "" && a.HTTPTLSCert == "", "must be set with http_tls_key"},
		{[]string{"http_password_hash", "http_username"}, a.HTTPUsername != "" && !isBcrypt(a.HTTPPasswordHash), "must be a bcrypt hash of the password (\"$2a$…\", \"$2b$…\" or \"$2y$…\"; make one with `tagpipe passwd`), not the password itself"},
		{[]string{"http_username", "http_password_hash"}, a.HTTPUsername == "" && a.HTTPPasswordHash != "", "must be set with http_password_hash"},
	} {
		if chk.bad {
			l.agentFail(chk.keys, chk.keys[0]+": "+chk.msg)
		}
	}
	if a.HTTPListen != "" {
		if all, err := CheckListen(a.HTTPListen); err != nil {
			l.agentFail([]string{"http_listen"}, err.Error())
		} else if all {
			p := l.agentPlace([]string{"http_listen"})
			l.cfg.Warnings = append(l.cfg.Warnings, (&Error{File: p.file, Line: p.line, Plugin: "agent", Msg: fmt.Sprintf(
				"http_listen %q listens on every interface: anyone who reaches this host on the port reads /metrics and the device page "+
					"(and /healthz, which needs no login); write \"127.0.0.1:PORT\" for this host alone", a.HTTPListen)}).Error())
		}
	}
}

// agentPlace is where the first of keys that a file set was set; else the last file.
func (l *loader) agentPlace(keys []string) place {
	for _, k := range keys {
		if p, ok := l.agentAt[k]; ok {
			return p
		}
	}
	return place{file: l.cfg.Files[len(l.cfg.Files)-1]}
}

func (l *loader) agentFail(keys []string, msg string) {
	p := l.agentPlace(keys)
	l.errs = append(l.errs, &Error{File: p.file, Line: p.line, Plugin: "agent", Msg: msg})
}

// checkOutput checks an output's settings (its own keys over [agent]'s). A rule is checked here
// only when the output sets one of its keys; [agent]'s own values are checkAgent's.
func (l *loader) checkOutput(ot *outputTable, set models.OutputSettings, fsync string) {
	label := "outputs." + ot.out.Config.ID()
	for _, chk := range []check{
		{[]string{"metric_batch_size"}, set.BatchSize < 1, "must be at least 1"},
		{[]string{"metric_buffer_limit"}, set.BufferLimit < 1, "must be at least 1"},
		{[]string{"metric_buffer_limit", "metric_batch_size"}, set.BufferLimit >= 1 && set.BufferLimit < set.BatchSize, "must be at least metric_batch_size"},
		{[]string{"flush_interval"}, ot.FlushInterval > 0 && ot.FlushInterval < Duration(MinInterval), fmt.Sprintf("%s is less than %s, the shortest interval", ot.FlushInterval, Duration(MinInterval))},
		{[]string{"buffer_strategy"}, set.BufferStrategy != "memory" && set.BufferStrategy != "disk", "must be \"memory\" or \"disk\""},
		{[]string{"buffer_fsync"}, !validFsync(fsync), "must be \"batch\" or a duration like \"1s\""},
		{[]string{"buffer_limit"}, set.BufferBytes < 1<<20, "must be at least 1MiB"},
	} {
		if !chk.bad {
			continue
		}
		for _, k := range chk.keys {
			if ot.set[k] {
				l.errs = append(l.errs, &Error{File: ot.file, Line: ot.sc.lookupIn(&ot.span, k), Plugin: label, Msg: chk.keys[0] + ": " + chk.msg})
				break
			}
		}
	}
}

// checkBufferDirectory: when an output buffers on disk, buffer_directory must be a directory,
// or a path where one can be made (what exists of it is a directory), so that --check says so
// rather than the start.
func (l *loader) checkBufferDirectory() {
	disk := l.cfg.Agent.BufferStrategy == "disk"
	for _, ot := range l.outputOverrides {
		disk = disk || ot.out.Settings.BufferStrategy == "disk"
	}
	dir := l.cfg.Agent.BufferDirectory
	if !disk || dir == "" {
		return
	}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			what := "is a file"
			if p != filepath.Clean(dir) {
				what = fmt.Sprintf("cannot be made: %s is a file", p)
			}
			l.agentFail([]string{"buffer_directory", "buffer_strategy"}, fmt.Sprintf("buffer_directory: %q %s, not a directory", dir, what))
			return
		case err == nil, !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR), filepath.Dir(p) == p:
			return // a directory, or something the start will report in its own words
		}
	}
}

// validFsync accepts "batch" (fsync every write) or a positive duration.
func validFsync(s string) bool {
	if s == "batch" {
		return true
	}
	d, err := time.ParseDuration(s)
	return err == nil && d > 0
}

// CheckListen checks an http_listen address ("127.0.0.1:9273", "[::1]:9273", ":9273") and
// reports whether it listens on every interface (no host, 0.0.0.0 or ::).
func CheckListen(addr string) (every bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("http_listen %q: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false, fmt.Errorf("http_listen %q: port must be a number 0..65535", addr)
	}
	ip := net.ParseIP(host)
	if host != "" && ip == nil && host != "localhost" {
		return false, fmt.Errorf("http_listen %q: host must be an IP address or localhost", addr)
	}
	return host == "" || ip != nil && ip.IsUnspecified(), nil
}
