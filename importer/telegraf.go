package importer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Result is an import: the tagpipe configuration written and what did not map as it stands.
type Result struct {
	Config string
	Report *Report
	// Partial says why Config is not a whole configuration yet (a profile without devices);
	// "" when it is, and must pass --check.
	Partial string
}

// part is one piece of the written configuration, in the order of the input.
type part struct {
	order  int // file index · 1e6 + line
	write  func(e *emitter)
	inputs bool // written with the inputs (else with the outputs)
}

type telegrafImport struct {
	rep        *Report
	files      []string
	agent      []kv
	agentFrom  []string
	globalTags map[string]string
	tagsFrom   []string
	parts      []part
	modbus     map[string]*modbusTable // by plugin-level keys
}

// Telegraf reads Telegraf configuration files (a folder: every *.conf in it, sorted, as
// telegraf.d is read) and returns the equivalent tagpipe configuration. A file that is not
// TOML, or cannot be read, is an error with its place; everything else that does not map is in
// the report.
func Telegraf(paths []string) (*Result, error) {
	files, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	im := &telegrafImport{rep: &Report{}, globalTags: map[string]string{}, modbus: map[string]*modbusTable{}}
	for fi, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := im.file(fi, f, string(text)); err != nil {
			return nil, err
		}
	}
	return &Result{Config: im.write(), Report: im.rep}, nil
}

func expandPaths(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no Telegraf configuration given: name files or a telegraf.d folder")
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.conf"))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no *.conf file in this folder", p)
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	return files, nil
}

// tomlError gives a TOML syntax error its place: FILE:LINE: message.
func tomlError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s:%d: %s", file, pe.Position.Line, pe.Message)
	}
	return fmt.Errorf("%s: %v", file, err)
}

// plugin is one [[KIND.NAME]] table of a file, in file order.
type pluginTable struct {
	kind, name string
	t          *table
}

func (im *telegrafImport) file(fi int, file, text string) error {
	var doc map[string]any
	if _, err := toml.Decode(text, &doc); err != nil {
		return tomlError(file, err)
	}
	im.files = append(im.files, file)
	src := newSource(file, text, im.rep)
	root := src.table("", "", doc)
	root.line, root.root = 1, true
	if a := root.sub("agent"); a != nil {
		a.where, a.key = "agent", ""
		im.agentTable(a)
	}
	if g, ok := root.stringMap("global_tags"); ok {
		for k, v := range g {
			im.globalTags[k] = v
		}
		im.tagsFrom = append(im.tagsFrom, fmt.Sprintf("%s:%d", file, root.lineOf("global_tags")))
	}
	var plugins []pluginTable
	for _, kind := range []string{"inputs", "outputs", "processors", "aggregators"} {
		kt := root.sub(kind)
		if kt == nil {
			continue
		}
		for name := range kt.m {
			for _, t := range kt.pluginTables(name) {
				t.where = kind + "." + name
				if n, ok := t.m["alias"].(string); ok && n != "" {
					t.where += fmt.Sprintf(" %q", n)
				} else if n, ok := t.m["name"].(string); ok && n != "" && kind == "inputs" {
					t.where += fmt.Sprintf(" %q", n)
				}
				plugins = append(plugins, pluginTable{kind: kind, name: name, t: t})
			}
		}
	}
	sort.SliceStable(plugins, func(a, b int) bool { return plugins[a].t.line < plugins[b].t.line })
	for _, p := range plugins {
		order := fi*1_000_000 + p.t.line
		switch p.kind + "." + p.name {
		case "inputs.modbus":
			im.modbusBlock(order, p.t)
		case "inputs.opcua":
			im.opcua(order, p.t, false)
		case "inputs.opcua_listener":
			im.opcua(order, p.t, true)
		case "outputs.influxdb", "outputs.influxdb_v2", "outputs.kafka", "outputs.file":
			im.output(order, p.name, p.t)
		default:
			p.t.report("", Unmapped, "tagpipe has no %s plugin; the table is left out", p.kind+"."+p.name)
			where, from := p.t.where, p.t.src.file
			line := p.t.line
			im.parts = append(im.parts, part{order: order, inputs: p.kind != "outputs", write: func(e *emitter) {
				e.comment(0, fmt.Sprintf("[[%s]] (%s:%d) is left out: tagpipe has no such plugin.", where, from, line))
			}})
		}
	}
	root.rest()
	return nil
}

// pluginTables returns the tables of [[KIND.NAME]] (or the one [KIND.NAME]).
func (t *table) pluginTables(name string) []*table {
	if m, ok := t.m[name].(map[string]any); ok {
		st := t.sub(name)
		st.m, st.key = m, ""
		return []*table{st}
	}
	list := t.tables(name)
	for _, st := range list {
		st.key = ""
	}
	return list
}

// agentKeys map one to one; the rest of [agent] is handled by agentTable.
var agentKeys = []string{"interval", "round_interval", "metric_batch_size", "metric_buffer_limit",
	"collection_jitter", "flush_interval", "flush_jitter", "precision", "hostname", "omit_hostname",
	"debug", "quiet", "logfile", "buffer_strategy", "buffer_directory"}

func (im *telegrafImport) agentTable(t *table) {
	im.agentFrom = append(im.agentFrom, fmt.Sprintf("%s:%d", t.src.file, t.line))
	for _, k := range agentKeys {
		v, ok := t.get(k)
		if !ok {
			continue
		}
		switch k {
		case "interval", "collection_jitter", "flush_interval", "flush_jitter", "precision":
			t.used[k] = false
			d, ok := t.duration(k)
			if !ok {
				continue
			}
			v = d
		}
		im.setAgent(k, v)
	}
	t.skip("collection_offset", Unmapped, "tagpipe spreads each input's polls over the interval itself")
	t.skip("logtarget", Approximate, "tagpipe logs to standard error (the journal under systemd) unless logfile is set")
	t.skip("log_with_timezone", Unmapped, "tagpipe logs in UTC")
	for _, k := range []string{"logfile_rotation_interval", "logfile_rotation_max_size", "logfile_rotation_max_archives"} {
		t.skip(k, Unmapped, "tagpipe does not rotate its log file: use logrotate or the journal")
	}
	t.skip("snmp_translator", Unmapped, "tagpipe has no SNMP")
	t.rest()
}

func (im *telegrafImport) setAgent(k string, v any) {
	for i := range im.agent {
		if im.agent[i].key == k {
			im.agent[i].val = v
			return
		}
	}
	im.agent = append(im.agent, kv{key: k, val: v})
}

// commonInput reads the keys every Telegraf input has and returns tagpipe's: interval, names,
// alias, filters. Tags are left to the caller (tags is read here only when wantTags).
func commonInput(t *table, wantTags bool) []kv {
	var out []kv
	if d, ok := t.duration("interval"); ok {
		out = append(out, kv{key: "interval", val: d})
	}
	for _, k := range []string{"name_override", "name_prefix", "name_suffix", "alias"} {
		if s, ok := t.str(k); ok {
			out = append(out, kv{key: k, val: s})
		}
	}
	if wantTags {
		if tags, ok := t.stringMap("tags"); ok && len(tags) > 0 {
			out = append(out, kv{key: "tags", val: tags})
		}
	}
	out = append(out, filters(t)...)
	t.skip("precision", Approximate, "tagpipe stamps metrics at the agent's precision")
	t.skip("collection_jitter", Unmapped, "tagpipe spreads each input's polls over the interval itself")
	t.skip("collection_offset", Unmapped, "tagpipe spreads each input's polls over the interval itself")
	t.skip("log_level", Unmapped, "tagpipe sets the log level for the whole agent ([agent] debug, quiet, --debug)")
	t.skip("startup_error_behavior", Unmapped, "tagpipe retries a device that is down from the start, with backoff")
	return out
}

// filters reads Telegraf's metric filters; tagpipe has the same except metricpass.
func filters(t *table) []kv {
	var out []kv
	for _, k := range []struct{ telegraf, tagpipe string }{
		{"namepass", "namepass"}, {"namedrop", "namedrop"}, {"fieldpass", "fieldpass"}, {"fielddrop", "fielddrop"},
		{"fieldinclude", "fieldpass"}, {"fieldexclude", "fielddrop"}, {"taginclude", "taginclude"}, {"tagexclude", "tagexclude"},
	} {
		if list, ok := t.strings(k.telegraf); ok {
			out = append(out, kv{key: k.tagpipe, val: list})
		}
	}
	for _, k := range []string{"tagpass", "tagdrop"} {
		sub := t.sub(k)
		if sub == nil {
			continue
		}
		m := map[string][]string{}
		for tag := range sub.m {
			if list, ok := sub.strings(tag); ok {
				m[tag] = list
			}
		}
		sub.rest()
		out = append(out, kv{key: k, val: m})
	}
	t.skip("metricpass", Unmapped, "tagpipe has no CEL filter; use namepass, fieldpass and tagpass")
	t.skip("namepass_separator", Unmapped, "tagpipe's globs have no separator")
	t.skip("namedrop_separator", Unmapped, "tagpipe's globs have no separator")
	return out
}

func (im *telegrafImport) write() string {
	var e emitter
	e.comment(0, "tagpipe configuration imported from Telegraf: "+strings.Join(im.files, ", ")+".")
	e.comment(0, "Written by `tagpipe import telegraf`; every part says where it came from (FILE:LINE).")
	if len(im.rep.Issues) > 0 {
		e.comment(0, "")
		e.comment(0, "Not mapped, or mapped approximately (also printed when importing):")
		for _, i := range im.rep.sorted() {
			e.comment(0, "  "+i.String())
		}
	}
	if len(im.agent) > 0 {
		e.blank()
		e.comment(0, "From "+strings.Join(im.agentFrom, ", ")+".")
		e.header(0, "[agent]")
		e.kvs(1, im.agent)
	}
	if len(im.globalTags) > 0 {
		e.blank()
		e.comment(0, "From "+strings.Join(im.tagsFrom, ", ")+".")
		e.header(0, "[global_tags]")
		list := make([]kv, 0, len(im.globalTags))
		for _, k := range sortedKeys(im.globalTags) {
			list = append(list, kv{key: k, val: im.globalTags[k]})
		}
		e.kvs(1, list)
	}
	sort.SliceStable(im.parts, func(a, b int) bool {
		if im.parts[a].inputs != im.parts[b].inputs {
			return im.parts[a].inputs
		}
		return im.parts[a].order < im.parts[b].order
	})
	for _, p := range im.parts {
		e.blank()
		p.write(&e)
	}
	return e.String()
}
