// Package config reads tagpipe's TOML configuration into plugin instances: [agent],
// [global_tags], [[inputs.NAME]], [[processors.NAME]] and [[outputs.NAME]], with ${VAR}
// substitution. Every mistake is reported as FILE:LINE: PLUGIN: KEY: what is wrong.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"

	"github.com/tagpipe/tagpipe/internal/confval"
	"github.com/tagpipe/tagpipe/internal/logging"
	"github.com/tagpipe/tagpipe/models"
)

// Agent is the [agent] table.
type Agent struct {
	Interval          Duration `toml:"interval"`
	RoundInterval     bool     `toml:"round_interval"`
	CollectionJitter  Duration `toml:"collection_jitter"`
	FlushInterval     Duration `toml:"flush_interval"`
	FlushJitter       Duration `toml:"flush_jitter"`
	MetricBatchSize   int      `toml:"metric_batch_size"`
	MetricBufferLimit int      `toml:"metric_buffer_limit"`
	Precision         Duration `toml:"precision"`
	Hostname          string   `toml:"hostname"`
	OmitHostname      bool     `toml:"omit_hostname"`
	Debug             bool     `toml:"debug"`
	Quiet             bool     `toml:"quiet"`
	Logfile           string   `toml:"logfile"`
	LogFormat         string   `toml:"log_format"`
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`
	HTTPListen        string   `toml:"http_listen"`
	// The HTTP endpoint's TLS (both PEM files, or neither) and basic auth (a user name and a
	// bcrypt hash of the password) for everything but /healthz.
	HTTPTLSCert      string `toml:"http_tls_cert"`
	HTTPTLSKey       string `toml:"http_tls_key"`
	HTTPUsername     string `toml:"http_username"`
	HTTPPasswordHash string `toml:"http_password_hash"`
	// HealthFailingShare is the share of an input's devices that may fail while /healthz still
	// answers 200 (it lists them); 0: any failing device makes the input fail.
	HealthFailingShare float64 `toml:"health_failing_share"`

	BufferStrategy  string `toml:"buffer_strategy"`
	BufferDirectory string `toml:"buffer_directory"`
	BufferLimit     Size   `toml:"buffer_limit"`
	BufferFsync     string `toml:"buffer_fsync"`
}

// DefaultAgent returns the [agent] defaults. They suit a plant of thousands of devices: a
// buffer of 100,000 metrics holds ten seconds of a 10,000-device plant polled every second
// (Telegraf's 10,000 would hold one), and batches of 5,000 keep writes few.
func DefaultAgent() Agent {
	return Agent{
		Interval:          Duration(10 * time.Second),
		RoundInterval:     true,
		FlushInterval:     Duration(time.Second),
		MetricBatchSize:   5000,
		MetricBufferLimit: 100000,
		ShutdownTimeout:   Duration(10 * time.Second),
		BufferStrategy:    "memory",
		BufferDirectory:   "/var/lib/tagpipe/buffer",
		BufferLimit:       Size(2 << 30), // an hour of 10,000 devices takes 1.6 GiB (README)
		BufferFsync:       "batch",
	}
}

// Input is a configured input plugin.
type Input struct {
	Plugin models.Input
	Config *models.PluginConfig
	Log    *slog.Logger
}

// Processor is a configured processor plugin.
type Processor struct {
	Plugin models.Processor
	Config *models.PluginConfig
	Log    *slog.Logger
}

// Output is a configured output plugin.
type Output struct {
	Plugin   models.Output
	Config   *models.PluginConfig
	Settings models.OutputSettings
	Log      *slog.Logger
	// Identity names the output across reloads: plugin and alias, or plugin and a hash of its
	// table when it has no alias. A reload keeps the buffer of an output whose identity stays.
	Identity string
}

// Config is a loaded configuration.
type Config struct {
	Agent      Agent
	GlobalTags map[string]string
	Inputs     []*Input
	Processors []*Processor
	Outputs    []*Output
	// Cluster is the [cluster] table; nil without one (the agent polls every device).
	Cluster *Cluster
	Files   []string
	// Warnings are worth a log line but do not stop the start (an unset ${VAR}, a plugin's
	// ConfigWarnings).
	Warnings []string
}

// Error is a configuration error with its place.
type Error struct {
	File   string
	Line   int
	Plugin string // `inputs.modbus "boiler-3"`, or empty
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Plugin != "" {
		b.WriteString(e.Plugin + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// KeyError is returned by a plugin's Init for a bad value of one key. Key is the path below the
// plugin's table: "slave_id", "device[3].slave_id" or "device.slave_id" (the first such key).
// The loader turns it into FILE:LINE.
type KeyError = confval.KeyError

// keyedError is any error that names the key at fault: a *KeyError, or an error of a package
// that cannot import config (internal/tlsconfig) but has a ConfigKey method. Its message starts
// with the key.
type keyedError interface {
	error
	ConfigKey() string
}

// Warner is implemented by a plugin whose Init finds things worth a warning that do not stop
// the start (an address that looks 1-based). Each warning names its key as a KeyError does; the
// loader puts it in Config.Warnings as FILE:LINE: PLUGIN: KEY: what.
type Warner interface {
	ConfigWarnings() []error
}

// KeyHinter is implemented by a plugin that recognises, among the unknown keys of its table
// (paths below it, like "holding_registers" or "request.slave_id"), another program's keys: a
// Telegraf table, say. The loader reports every unknown key as usual and the hint, if not
// empty, once at the line of the table.
type KeyHinter interface {
	UnknownKeysHint(keys []string) string
}

// KeyErrorf returns a *KeyError for key.
func KeyErrorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

// Options says where the config comes from.
type Options struct {
	Files []string // --config (several allowed)
	Dirs  []string // --config-directory: every *.conf in it, sorted
	// Lookup replaces os.LookupEnv for ${VAR} (tests).
	Lookup func(string) (string, bool)
}

// Load reads the configuration files and builds every plugin. All errors found are returned
// together, each with its place.
func Load(opts Options) (*Config, error) {
	files := append([]string{}, opts.Files...)
	for _, d := range opts.Dirs {
		matches, err := filepath.Glob(filepath.Join(d, "*.conf"))
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("config directory: %w", err)
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	if len(files) == 0 {
		return nil, errors.New("no configuration: give --config FILE or --config-directory DIR")
	}
	l := newLoader(opts.Lookup)
	for _, f := range files {
		text, err := readFile(f)
		if err != nil {
			return nil, err
		}
		l.file(f, text)
	}
	return l.finish()
}

// readFile reads a file into a string without a copy of it in bytes (a plant's file is 11 MB).
func readFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		b.Grow(int(fi.Size()))
	}
	if _, err := io.Copy(&b, f); err != nil {
		return "", err
	}
	return b.String(), nil
}

// LoadText loads one configuration from text; name stands for the file in messages.
func LoadText(name, text string, lookup func(string) (string, bool)) (*Config, error) {
	l := newLoader(lookup)
	l.file(name, text)
	return l.finish()
}

// trimComments cuts the comment and blank lines at the end of a table's text: the options
// commented out below a table (as sample.conf writes them) are no part of it, and a plugin's
// strings decoded from the text would keep them in memory.
func trimComments(text string) string {
	for {
		body := strings.TrimRight(text, " \t\r\n")
		start := strings.LastIndexByte(body, '\n') + 1
		if !strings.HasPrefix(strings.TrimLeft(body[start:], " \t"), "#") {
			return text
		}
		text = body[:start]
	}
}

type loader struct {
	cfg    *Config
	errs   []error
	lookup func(string) (string, bool)
	// per-output overrides, resolved against [agent] once every file is read
	outputOverrides []*outputTable
	notices         map[string]*noticeCount // alias notices by plugin and key
	agentAt         map[string]place        // where each [agent] key was set last
	passwords       map[string]bool         // of URLs in the files, redacted from messages
}

// place is a FILE:LINE.
type place struct {
	file string
	line int
}

func newLoader(lookup func(string) (string, bool)) *loader {
	return &loader{cfg: &Config{Agent: DefaultAgent(), GlobalTags: map[string]string{}}, lookup: lookup, agentAt: map[string]place{}, passwords: map[string]bool{}}
}

func (l *loader) fail(file string, line int, plugin, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: file, Line: line, Plugin: plugin, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) file(name, raw string) {
	l.cfg.Files = append(l.cfg.Files, name)
	// A byte order mark is no key, and a CRLF line end is a line end: the scanner and the
	// sections cut out of the text work on LF lines.
	raw = strings.ReplaceAll(strings.TrimPrefix(raw, "\ufeff"), "\r\n", "\n")
	text, missing, problems := expandEnv(raw, l.lookup)
	for _, m := range missing {
		l.cfg.Warnings = append(l.cfg.Warnings, fmt.Sprintf("%s: environment variable %s is not set", name, m))
	}
	for _, p := range problems {
		l.fail(name, p.line, "", "%s", p.msg)
	}
	if len(problems) > 0 {
		return
	}
	if len(text) > math.MaxInt32 { // the scanner's offsets are 32 bits
		l.fail(name, 0, "", "%d bytes: a configuration file is at most 2 GiB", len(text))
		return
	}
	// The file is not parsed whole: each top-level table is parsed on its own below, and the
	// text above the first one here. Refused first: nesting whose parse would cost the square
	// of its depth.
	if line := nestingTooDeep(text); line > 0 {
		l.fail(name, line, "", "nested deeper than %d levels (tables, dotted keys, arrays and inline tables)", MaxDepth)
		return
	}
	textPasswords(text, l.passwords)
	sc := scanTOML(text)
	preamble := text
	if len(sc.tables) > 0 {
		preamble = text[:max(sc.tables[0].startOff-1, 0)]
	}
	if _, err := toml.Decode(preamble, &map[string]any{}); err != nil {
		line, _, msg := splitTOMLError(err)
		l.fail(name, line, "", "%s", msg)
		return
	}
	// Keys above the first table belong to no section.
	for _, k := range sc.rootKeys() {
		if !strings.ContainsAny(k.key, ".[") {
			l.fail(name, int(k.line), "", "%s: a key outside any table (put it under [agent] or a plugin)", k.key)
		}
	}
	tableAt := make(map[string]int, len(sc.tables)) // top-level tables so far by path: their line
	for _, t := range sc.tables {
		for i := range len(t.path) {
			if c := t.path[i]; c == '.' || c == '[' {
				if _, ok := tableAt[t.path[:i]]; ok {
					l.fail(name, t.start, "", "[%s] must directly follow the table it belongs to", t.path)
					break
				}
			}
		}
		if first, ok := tableAt[t.path]; ok {
			l.fail(name, t.start, "", "[%s] is defined twice in this file (first at line %d)", t.path, first)
			continue
		}
		tableAt[t.path] = t.start
		s := section{l: l, file: name, span: t, sc: sc, text: text[t.startOff : t.endOff-1], offset: t.start - 1, all: text}
		switch t.kind {
		case "agent":
			s.decodeTable("agent", &l.cfg.Agent)
		case "global_tags":
			var tags map[string]string
			if s.decodeTable("global_tags", &tags) {
				for k, v := range tags {
					l.cfg.GlobalTags[k] = v
				}
			}
		case "cluster":
			s.cluster()
		case "inputs", "processors", "outputs":
			if t.name == "" {
				l.fail(name, t.start, "", "[%s]: plugins are declared as [[%s.NAME]]", t.path, t.kind)
				continue
			}
			s.plugin()
		default:
			l.fail(name, t.start, "", "[%s]: unknown section (expected agent, global_tags, cluster, inputs, processors or outputs)", t.path)
		}
	}
}

// section decodes one top-level table of a file on its own, so that the TOML library's line
// numbers and undecoded keys belong to this table alone.
type section struct {
	l      *loader
	file   string
	span   tableSpan
	sc     *scanResult
	text   string
	offset int // lines before the snippet
	label  string
	all    string // the file's text
}

// ownString returns the string value of key in the table itself (not a sub-table) when it is
// written on one line; else "".
func (s *section) ownString(key string) string {
	for _, k := range s.sc.keysOf(s.span.hdr) {
		if k.key == key {
			line := s.all[k.off:]
			if end := strings.IndexByte(line, '\n'); end >= 0 {
				line = line[:end]
			}
			var m map[string]any
			toml.Decode(line, &m)
			v, _ := m[key].(string)
			return v
		}
	}
	return ""
}

var tomlErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?(?:\(last key "([^"]*)"\): )?(?:line \d+: )?(.*)$`)

// splitTOMLError takes the line, the last key and the message out of the TOML library's error.
func splitTOMLError(err error) (line int, key, msg string) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Position.Line, pe.LastKey, pe.Message
	}
	m := tomlErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, "", err.Error()
	}
	line, _ = strconv.Atoi(m[1])
	return line, m[2], m[3]
}

func (s *section) keyErr(err error, prefix string) {
	line, key, msg := splitTOMLError(err)
	if line > 0 {
		line += s.offset
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(key, prefix), ".")
	if rel != "" {
		if l := s.sc.lookupIn(&s.span, rel); l > 0 {
			line = l
		}
		msg = rel + ": " + msg
	}
	if line == 0 {
		line = s.span.start
	}
	s.l.fail(s.file, line, s.label, "%s", msg)
}

// unknownKeys reports the keys below prefix that nothing decoded, each at its line. A plugin that
// recognises some of them as another program's (a KeyHinter) adds its hint, once, at the line
// of its table.
func (s *section) unknownKeys(md toml.MetaData, prefix string, plugin any) bool {
	var keys []string
	for _, k := range md.Undecoded() {
		full := k.String()
		if strings.HasPrefix(full, prefix+".") {
			keys = append(keys, strings.TrimPrefix(full, prefix+"."))
		}
	}
	if len(keys) == 0 {
		return true
	}
	if h, ok := plugin.(KeyHinter); ok {
		if hint := h.UnknownKeysHint(keys); hint != "" {
			s.l.fail(s.file, s.span.start, s.label, "%s", hint)
		}
	}
	for _, rel := range keys {
		line := s.sc.lookupIn(&s.span, rel)
		if line == 0 {
			line = s.span.start
		}
		s.l.fail(s.file, line, s.label, "%s: unknown key", rel)
	}
	return false
}

// decodeTable decodes a plain table ([agent], [global_tags]) strictly.
func (s *section) decodeTable(name string, v any) bool {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "T", Type: reflect.TypeOf(v).Elem(), Tag: reflect.StructTag(`toml:"` + name + `"`),
	}}))
	md, err := toml.Decode(trimComments(s.text), holder.Interface())
	if err != nil {
		s.keyErr(err, name)
		return false
	}
	reflect.ValueOf(v).Elem().Set(mergeStruct(reflect.ValueOf(v).Elem(), holder.Elem().Field(0), md, name))
	if name == "agent" {
		for key := range definedKeys(md, name) {
			s.l.agentAt[key] = place{s.file, s.sc.lookupIn(&s.span, key)}
		}
	}
	return s.unknownKeys(md, name, nil)
}

// mergeStruct returns dst with the keys that the TOML defined taken from src (so that a second
// file's [agent] changes only what it names).
func mergeStruct(dst, src reflect.Value, md toml.MetaData, name string) reflect.Value {
	if dst.Kind() != reflect.Struct {
		return src
	}
	out := reflect.New(dst.Type()).Elem()
	out.Set(dst)
	for i := 0; i < dst.NumField(); i++ {
		f := dst.Type().Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.IsExported() {
			// An embedded option set (tlsconfig.Client): its keys sit in the same table.
			out.Field(i).Set(mergeStruct(dst.Field(i), src.Field(i), md, name))
			continue
		}
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag != "" && md.IsDefined(name, tag) {
			out.Field(i).Set(src.Field(i))
		}
	}
	return out
}

// Generic keys of every plugin table, besides the plugin's own.
type commonTable struct {
	Alias string `toml:"alias"`
	models.Filter
}

type inputTable struct {
	commonTable
	Interval     Duration          `toml:"interval"`
	NamePrefix   string            `toml:"name_prefix"`
	NameSuffix   string            `toml:"name_suffix"`
	NameOverride string            `toml:"name_override"`
	Tags         map[string]string `toml:"tags"`
}

type processorTable struct {
	commonTable
	Order int64 `toml:"order"`
}

type outputTable struct {
	commonTable
	MetricBatchSize   int      `toml:"metric_batch_size"`
	MetricBufferLimit int      `toml:"metric_buffer_limit"`
	FlushInterval     Duration `toml:"flush_interval"`
	FlushJitter       Duration `toml:"flush_jitter"`
	BufferStrategy    string   `toml:"buffer_strategy"`
	BufferLimit       Size     `toml:"buffer_limit"`
	BufferFsync       string   `toml:"buffer_fsync"`

	out *Output
	// where the table is and which of its generic keys it sets, for the checks made once
	// every file is read
	file string
	sc   *scanResult
	span tableSpan
	set  map[string]bool
}

func (s *section) plugin() {
	t := s.span
	// Copies: what the plugin keeps of them (its config, its logger) must not keep the file's text.
	kind, name := strings.Clone(t.kind), strings.Clone(t.name)
	prefix := kind + "." + name
	// The label comes from the lines of the table's alias and name alone: errors found while
	// the table is decoded carry it.
	s.label = prefix
	if a := s.ownString("alias"); a != "" {
		s.label += fmt.Sprintf(" %q", a)
	} else if n := s.ownString("name"); n != "" {
		s.label += fmt.Sprintf(" %q", n)
	}

	plugin := newPlugin(kind, name)
	if !s.applyAliases(plugin) {
		return
	}
	cfg := &models.PluginConfig{Name: name, Source: fmt.Sprintf("%s:%d", s.file, t.start)}
	var common *commonTable
	var generic any
	switch kind {
	case "inputs":
		it := &inputTable{}
		generic, common = it, &it.commonTable
		defer func() {
			if it.Interval > 0 && it.Interval < Duration(MinInterval) {
				s.l.fail(s.file, s.sc.lookupIn(&s.span, "interval"), s.label, "interval: %s is less than %s, the shortest interval", it.Interval, Duration(MinInterval))
			}
			cfg.Interval = time.Duration(it.Interval)
			cfg.NamePrefix, cfg.NameSuffix, cfg.NameOverride = it.NamePrefix, it.NameSuffix, it.NameOverride
			cfg.Tags = it.Tags
		}()
	case "processors":
		pt := &processorTable{}
		generic, common = pt, &pt.commonTable
		defer func() { cfg.Order = pt.Order }()
	case "outputs":
		ot := &outputTable{}
		generic, common = ot, &ot.commonTable
		defer func() {
			if ot.out != nil {
				ot.file, ot.sc, ot.span = s.file, s.sc, t
				s.l.outputOverrides = append(s.l.outputOverrides, ot)
			}
		}()
	}
	// A large array of tables is read in pieces (pieces.go); the identity of an output without
	// an alias hashes its whole table, which is therefore read whole.
	var md toml.MetaData
	var prim toml.Primitive
	inPieces := false
	if p := s.planPieces(plugin); p != nil {
		md, inPieces = s.decodePieces(p, plugin, generic)
		if !inPieces || kind == "outputs" && common.Alias == "" {
			inPieces = false
			plugin = newPlugin(kind, name)
			reflect.ValueOf(generic).Elem().SetZero()
		}
	}
	if !inPieces {
		var holder map[string]map[string][]toml.Primitive
		var err error
		md, err = toml.Decode(trimComments(s.text), &holder)
		if err != nil {
			s.keyErr(err, prefix)
			return
		}
		prim = holder[kind][name][0]
		if err := md.PrimitiveDecode(prim, generic); err != nil {
			s.keyErr(err, prefix)
			return
		}
	}
	cfg.Alias = common.Alias
	cfg.Filter = common.Filter
	if err := cfg.Filter.Compile(); err != nil {
		s.l.fail(s.file, s.span.start, s.label, "%v", err)
		return
	}

	if plugin == nil {
		s.l.fail(s.file, t.start, "", "[[%s]]: unknown plugin %q (known: %s)", prefix, name, strings.Join(knownNames(kind), ", "))
		return
	}
	if !inPieces {
		if err := md.PrimitiveDecode(prim, plugin); err != nil {
			s.keyErr(err, prefix)
			return
		}
		if !s.unknownKeys(md, prefix, plugin) {
			return
		}
	}
	var identity string
	if kind == "outputs" {
		identity = prefix
		if cfg.Alias != "" {
			identity += "/" + cfg.Alias
		} else {
			// The table as parsed, not as written: a comment or a space changes no identity.
			var table map[string]any
			md.PrimitiveDecode(prim, &table)
			sum := sha256.Sum256([]byte(fmt.Sprint(table)))
			identity += "/" + hex.EncodeToString(sum[:8])
		}
		generic.(*outputTable).set = definedKeys(md, kind, name)
	}
	// The parse is done with: what Init builds of a large table (100,000 devices) need not
	// share the memory with it.
	md, prim, s.text = toml.MetaData{}, toml.Primitive{}, ""
	log := logging.Plugin(kind, name, cfg.Alias)
	setLogger(plugin, log)
	if in, ok := plugin.(models.Initializer); ok {
		if err := in.Init(); err != nil {
			s.initErr(err)
			return
		}
	}
	if w, ok := plugin.(Warner); ok {
		for _, warning := range w.ConfigWarnings() {
			s.l.cfg.Warnings = append(s.l.cfg.Warnings, s.placed(warning).Error())
		}
	}
	switch kind {
	case "inputs":
		s.l.cfg.Inputs = append(s.l.cfg.Inputs, &Input{Plugin: plugin.(models.Input), Config: cfg, Log: log})
	case "processors":
		s.l.cfg.Processors = append(s.l.cfg.Processors, &Processor{Plugin: plugin.(models.Processor), Config: cfg, Log: log})
	case "outputs":
		o := &Output{Plugin: plugin.(models.Output), Config: cfg, Log: log, Identity: identity}
		s.l.cfg.Outputs = append(s.l.cfg.Outputs, o)
		ot := generic.(*outputTable)
		ot.out = o
	}
}

func (s *section) initErr(err error) { s.l.errs = append(s.l.errs, s.placed(err)) }

// placed gives a plugin's error or warning its place: the line of the key it names (a
// keyedError), else the line of the plugin's table.
func (s *section) placed(err error) *Error {
	line := 0
	var ke keyedError
	if errors.As(err, &ke) {
		line = s.sc.lookupIn(&s.span, ke.ConfigKey())
	}
	if line == 0 {
		line = s.span.start
	}
	return &Error{File: s.file, Line: line, Plugin: s.label, Msg: err.Error()}
}

// setLogger sets the plugin's `Log *slog.Logger` field, if it has one.
func setLogger(plugin any, log *slog.Logger) {
	v := reflect.ValueOf(plugin)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	f := v.Elem().FieldByName("Log")
	if f.IsValid() && f.CanSet() && f.Type() == reflect.TypeOf(log) {
		f.Set(reflect.ValueOf(log))
	}
}

func (l *loader) finish() (*Config, error) {
	l.noticesDone()
	c := l.cfg
	a := &c.Agent
	l.checkAgent()
	for _, ot := range l.outputOverrides {
		set := models.OutputSettings{
			BatchSize:     a.MetricBatchSize,
			BufferLimit:   a.MetricBufferLimit,
			FlushInterval: time.Duration(a.FlushInterval),
			FlushJitter:   time.Duration(a.FlushJitter),
		}
		if ot.set["metric_batch_size"] {
			set.BatchSize = ot.MetricBatchSize
		}
		if ot.set["metric_buffer_limit"] {
			set.BufferLimit = ot.MetricBufferLimit
		}
		if ot.FlushInterval > 0 {
			set.FlushInterval = time.Duration(ot.FlushInterval)
		}
		if ot.FlushJitter > 0 {
			set.FlushJitter = time.Duration(ot.FlushJitter)
		}
		set.BufferStrategy, set.BufferDirectory, set.BufferBytes = a.BufferStrategy, a.BufferDirectory, int64(a.BufferLimit)
		fsync := a.BufferFsync
		if ot.BufferStrategy != "" {
			set.BufferStrategy = ot.BufferStrategy
		}
		if ot.set["buffer_limit"] {
			set.BufferBytes = int64(ot.BufferLimit)
		}
		if ot.BufferFsync != "" {
			fsync = ot.BufferFsync
		}
		l.checkOutput(ot, set, fsync)
		if fsync != "batch" {
			d, _ := time.ParseDuration(fsync)
			set.BufferFsync = d
		}
		ot.out.Settings = set
	}
	l.checkBufferDirectory()
	if !a.OmitHostname && a.Hostname == "" {
		a.Hostname, _ = os.Hostname()
	}
	l.finishCluster()
	l.report()
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	// Processors run by `order`, then in file order.
	sort.SliceStable(c.Processors, func(i, j int) bool { return c.Processors[i].Config.Order < c.Processors[j].Config.Order })
	if !a.OmitHostname {
		if _, set := c.GlobalTags["host"]; !set && a.Hostname != "" {
			c.GlobalTags["host"] = a.Hostname
		}
	}
	return c, nil
}

// isBcrypt reports whether h is a bcrypt hash ([agent] http_password_hash).
func isBcrypt(h string) bool {
	_, err := bcrypt.Cost([]byte(h))
	return err == nil
}
