package importer

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/config"
)

// source is one TOML file: its name, lines and the line of every key.
type source struct {
	file  string
	lines []string
	keys  map[string]int // config.KeyLines
	rep   *Report
}

func newSource(file, text string, rep *Report) *source {
	return &source{file: file, lines: strings.Split(text, "\n"), keys: config.KeyLines(text), rep: rep}
}

// table is a TOML table being imported. Every key read through it is marked; rest reports the
// keys nobody read, so that none is dropped silently.
type table struct {
	src   *source
	path  string // the scanner's path with indices ("inputs.modbus[0]"); "" for an inline table
	line  int    // the table's own line (header, or the line an inline table starts on)
	where string // `inputs.modbus "meter"`, for messages
	key   string // path below where ("request[1]"), prefix of the keys in messages
	m     map[string]any
	used  map[string]bool
	root  bool // the document: its keys' paths are the keys themselves
}

func (s *source) table(path, where string, m map[string]any) *table {
	return &table{src: s, path: path, line: s.keys[path], where: where, m: m, used: map[string]bool{}}
}

// lineOf returns the line of key, else the table's.
func (t *table) lineOf(key string) int {
	if t.root {
		if l, ok := t.src.keys[key]; ok {
			return l
		}
	}
	if t.path != "" {
		if l, ok := t.src.keys[t.path+"."+key]; ok {
			return l
		}
	}
	return t.line
}

func (t *table) keyName(key string) string {
	if t.key == "" {
		return key
	}
	return t.key + "." + key
}

// report adds an issue about key (or, with key "", the table).
func (t *table) report(key string, kind Kind, format string, args ...any) {
	line := t.line
	name := t.key
	if key != "" {
		line, name = t.lineOf(key), t.keyName(key)
	}
	t.src.rep.addf(t.src.file, line, t.where, name, kind, format, args...)
}

func (t *table) get(key string) (any, bool) {
	v, ok := t.m[key]
	if ok {
		t.used[key] = true
	}
	return v, ok
}

// skip marks key read and reports it (when set) as kind with the message.
func (t *table) skip(key string, kind Kind, format string, args ...any) {
	if _, ok := t.get(key); ok {
		t.report(key, kind, format, args...)
	}
}

// wrong reports a value of the wrong type; the key is left out.
func (t *table) wrong(key string, v any, want string) {
	t.report(key, Bad, "%v (%T): want %s; left out", v, v, want)
}

func (t *table) str(key string) (string, bool) {
	v, ok := t.get(key)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		t.wrong(key, v, "a string")
		return "", false
	}
	return s, true
}

func (t *table) boolean(key string) (bool, bool) {
	v, ok := t.get(key)
	if !ok {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		t.wrong(key, v, "true or false")
		return false, false
	}
	return b, true
}

func (t *table) integer(key string) (int64, bool) {
	v, ok := t.get(key)
	if !ok {
		return 0, false
	}
	n, isInt := v.(int64)
	if !isInt {
		t.wrong(key, v, "an integer")
		return 0, false
	}
	return n, true
}

func (t *table) number(key string) (float64, bool) {
	v, ok := t.get(key)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			return x, true
		}
	}
	t.wrong(key, v, "a finite number")
	return 0, false
}

// duration reads a duration as Telegraf writes it: "10s", or a number of seconds.
func (t *table) duration(key string) (time.Duration, bool) {
	v, ok := t.get(key)
	if !ok {
		return 0, false
	}
	var d config.Duration
	if err := d.UnmarshalTOML(v); err != nil {
		t.report(key, Bad, "%v; left out", err)
		return 0, false
	}
	return d.D(), true
}

func (t *table) strings(key string) ([]string, bool) {
	v, ok := t.get(key)
	if !ok {
		return nil, false
	}
	list, isList := v.([]any)
	if !isList {
		if s, isStr := v.(string); isStr { // Telegraf accepts a single string for some lists
			return []string{s}, true
		}
		t.wrong(key, v, "a list of strings")
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, isStr := x.(string)
		if !isStr {
			t.wrong(key, v, "a list of strings")
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// stringMap reads a table of strings (tags).
func (t *table) stringMap(key string) (map[string]string, bool) {
	v, ok := t.get(key)
	if !ok {
		return nil, false
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		t.wrong(key, v, "a table of strings")
		return nil, false
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		s, isStr := x.(string)
		if !isStr {
			t.wrong(key+"."+k, x, "a string")
			continue
		}
		out[k] = s
	}
	return out, true
}

// sub returns the sub-table key ([x.key] or key = {...}), or nil.
func (t *table) sub(key string) *table {
	v, ok := t.get(key)
	if !ok {
		return nil
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		t.wrong(key, v, "a table")
		return nil
	}
	st := &table{src: t.src, where: t.where, key: t.keyName(key), m: m, used: map[string]bool{}, line: t.lineOf(key)}
	if t.root {
		st.path = key
	} else if t.path != "" {
		st.path = t.path + "." + key
		if l, ok := t.src.keys[st.path]; ok {
			st.line = l
		}
	}
	return st
}

// tables returns the array of tables key: [[x.key]] tables or an inline array of {...}.
func (t *table) tables(key string) []*table {
	v, ok := t.get(key)
	if !ok {
		return nil
	}
	var maps []map[string]any
	switch x := v.(type) {
	case []map[string]any:
		maps = x
	case []any:
		for _, e := range x {
			m, isMap := e.(map[string]any)
			if !isMap {
				t.wrong(key, v, "a list of tables")
				return nil
			}
			maps = append(maps, m)
		}
	default:
		t.wrong(key, v, "a list of tables")
		return nil
	}
	var inline []int
	arrayPath := ""
	if t.root {
		arrayPath = key
	} else if t.path != "" {
		arrayPath = t.path + "." + key
	}
	if _, isArrayOfTables := t.src.keys[arrayPath+"[0]"]; arrayPath == "" || !isArrayOfTables {
		inline = t.src.elementLines(t.lineOf(key), len(maps))
		arrayPath = ""
	}
	out := make([]*table, len(maps))
	for i, m := range maps {
		st := &table{src: t.src, where: t.where, key: fmt.Sprintf("%s[%d]", t.keyName(key), i), m: m, used: map[string]bool{}}
		if arrayPath != "" {
			st.path = fmt.Sprintf("%s[%d]", arrayPath, i)
			st.line = t.src.keys[st.path]
		} else {
			st.line = inline[i]
		}
		out[i] = st
	}
	return out
}

// drop marks every key of the table read: the table is left out as a whole, and reported so.
func (t *table) drop() {
	for k := range t.m {
		t.used[k] = true
	}
}

// rest reports every key of the table nobody read: tagpipe has nothing it maps to.
func (t *table) rest() {
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		if !t.used[k] {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(a, b int) bool {
		return t.lineOf(keys[a]) < t.lineOf(keys[b]) || keys[a] < keys[b] && t.lineOf(keys[a]) == t.lineOf(keys[b])
	})
	for _, k := range keys {
		t.report(k, Unmapped, "tagpipe has no such setting; left out")
	}
}

// elementLines returns the line each of the n tables of the inline array that starts on line
// starts on (its '{'); lines it cannot tell get the array's line. It reads the text only to find
// the braces: strings and comments are skipped.
func (s *source) elementLines(line, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = line
	}
	if line < 1 || line > len(s.lines) {
		return out
	}
	depth, found := 0, 0
	started := false
	for ln := line; ln <= len(s.lines) && found < n; ln++ {
		text := s.lines[ln-1]
		i := 0
		if !started {
			eq := strings.IndexByte(text, '=')
			if eq < 0 {
				return out
			}
			i, started = eq+1, true
		}
		for ; i < len(text); i++ {
			switch c := text[i]; c {
			case '#':
				i = len(text)
			case '"', '\'':
				for i++; i < len(text) && text[i] != c; i++ {
					if c == '"' && text[i] == '\\' {
						i++
					}
				}
			case '[':
				depth++
			case ']':
				depth--
				if depth <= 0 {
					return out
				}
			case '{':
				if depth == 1 && found < n {
					out[found] = ln
					found++
				}
				depth++
			case '}':
				depth--
			}
		}
	}
	return out
}
