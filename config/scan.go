package config

import (
	"strconv"
	"strings"
)

// The TOML library (BurntSushi/toml) keeps key positions private and per key string, so two
// [[inputs.modbus]] tables cannot be told apart by it. This scanner walks the text once and
// records, for every table header and key, its path with array indices
// ("inputs.modbus[1].device[3].slave_id") and its line. It only needs to find headers and keys:
// values are skipped (strings, multi-line strings, arrays and inline tables spanning lines).

type position struct {
	path string // with indices
	line int
}

type tableSpan struct {
	path  string // "inputs.modbus[1]", "agent"
	kind  string // "inputs", "processors", "outputs", "agent", "global_tags", ...
	name  string // plugin name for inputs/processors/outputs
	index int    // index among [[kind.name]] tables of this file
	start int    // header line
	end   int    // first line after the table and its sub-tables
}

type scanResult struct {
	keys   []position
	tables []tableSpan // top-level tables in order
	// built by index on the first lookup
	exact   map[string]int // path with indices → first line
	byTable map[string]int // top-level table path + "\x00" + key path without indices → first line
}

// lookup returns the line of path, or of its longest known prefix; 0 when nothing matches.
func (r *scanResult) lookup(path string) int {
	r.index()
	for p := path; p != ""; {
		if line, ok := r.exact[p]; ok {
			return line
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// lookupIn finds key (a path without indices below prefix, like "device.slave_id", or with them)
// inside the table at prefix: the first line where it occurs.
func (r *scanResult) lookupIn(prefix, key string) int {
	if line := r.lookup(prefix + "." + key); line > 0 && strings.Contains(key, "[") {
		return line
	}
	if line, ok := r.byTable[prefix+"\x00"+stripIndices(key)]; ok {
		return line
	}
	return r.lookup(prefix + "." + key)
}

// index builds, once, the maps that make every lookup cost the length of its path, not the
// number of keys (a file of 100,000 tables, each with a mistake, was quadratic).
func (r *scanResult) index() {
	if r.exact != nil {
		return
	}
	r.exact = make(map[string]int, len(r.keys))
	r.byTable = make(map[string]int, len(r.keys))
	for _, k := range r.keys {
		if _, ok := r.exact[k.path]; !ok {
			r.exact[k.path] = k.line
		}
	}
	// Below each top-level table: the keys by their path without indices.
	t := 0
	for _, k := range r.keys {
		for t < len(r.tables) && k.line >= r.tables[t].end {
			t++
		}
		if t == len(r.tables) {
			break
		}
		span := r.tables[t]
		if k.line < span.start {
			continue
		}
		if rel, ok := strings.CutPrefix(k.path, span.path+"."); ok {
			id := span.path + "\x00" + stripIndices(rel)
			if _, ok := r.byTable[id]; !ok {
				r.byTable[id] = k.line
			}
		}
	}
}

func stripIndices(p string) string {
	if !strings.Contains(p, "[") {
		return p
	}
	var b strings.Builder
	depth := 0
	for _, c := range p {
		switch {
		case c == '[':
			depth++
		case c == ']':
			depth--
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func scanTOML(text string) *scanResult {
	r := &scanResult{}
	arrayIdx := map[string]int{} // resolved array-table path (no own index) -> current index
	current := ""                // resolved path of the current table
	var top *tableSpan
	pluginCount := map[string]int{}

	lines := strings.Split(text, "\n")
	var cont valueScanner // state of a value spanning lines
	for i, raw := range lines {
		lineNo := i + 1
		if cont.open() {
			cont.feed(raw)
			continue
		}
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			isArray := strings.HasPrefix(line, "[[")
			name := headerName(line, isArray)
			segs := splitKey(name)
			resolved := ""
			for j, s := range segs {
				if j > 0 {
					resolved += "."
				}
				resolved += s
				if j < len(segs)-1 {
					if idx, ok := arrayIdx[resolved]; ok {
						resolved += "[" + strconv.Itoa(idx) + "]"
					}
				}
			}
			if isArray {
				idx := 0
				if prev, ok := arrayIdx[resolved]; ok {
					idx = prev + 1
				}
				arrayIdx[resolved] = idx
				// Forget indices of sub-arrays of the previous element.
				for k := range arrayIdx {
					if strings.HasPrefix(k, resolved+"[") {
						delete(arrayIdx, k)
					}
				}
				resolved += "[" + strconv.Itoa(idx) + "]"
			}
			current = resolved
			r.keys = append(r.keys, position{resolved, lineNo})
			if top == nil || !strings.HasPrefix(resolved, top.path+".") {
				if top != nil {
					top.end = lineNo
				}
				span := tableSpan{path: resolved, kind: segs[0], start: lineNo}
				if len(segs) >= 2 && isArray && len(segs) == 2 {
					span.name = segs[1]
					span.index = pluginCount[segs[0]+"."+segs[1]]
					pluginCount[segs[0]+"."+segs[1]]++
				}
				r.tables = append(r.tables, span)
				top = &r.tables[len(r.tables)-1]
			}
			continue
		}
		eq := keyEnd(line)
		if eq < 0 {
			continue
		}
		key := strings.Join(splitKey(strings.TrimSpace(line[:eq])), ".")
		path := key
		if current != "" {
			path = current + "." + key
		}
		r.keys = append(r.keys, position{path, lineNo})
		cont = valueScanner{}
		cont.feed(line[eq+1:])
	}
	if top != nil {
		top.end = len(lines) + 1
	}
	return r
}

func headerName(line string, isArray bool) string {
	open, close := "[", "]"
	if isArray {
		open, close = "[[", "]]"
	}
	s := strings.TrimPrefix(line, open)
	if i := strings.Index(s, close); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// splitKey splits a dotted TOML key, removing quotes around segments.
func splitKey(k string) []string {
	var segs []string
	var b strings.Builder
	quote := byte(0)
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			b.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			segs = append(segs, strings.TrimSpace(b.String()))
			b.Reset()
		case c == ' ' || c == '\t':
		default:
			b.WriteByte(c)
		}
	}
	return append(segs, strings.TrimSpace(b.String()))
}

// keyEnd returns the index of the '=' that ends the key of a key/value line, or -1.
func keyEnd(line string) int {
	quote := byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == '#':
			return -1
		}
	}
	return -1
}

// valueScanner follows a value across lines: open brackets and multi-line strings.
type valueScanner struct {
	depth int
	multi string // `"""` or `'''` while inside a multi-line string
}

func (v *valueScanner) open() bool { return v.depth > 0 || v.multi != "" }

func (v *valueScanner) feed(s string) {
	for i := 0; i < len(s); i++ {
		if v.multi != "" {
			if strings.HasPrefix(s[i:], v.multi) {
				i += 2
				v.multi = ""
			} else if v.multi == `"""` && s[i] == '\\' {
				i++
			}
			continue
		}
		switch c := s[i]; c {
		case '#':
			return
		case '"', '\'':
			delim := string([]byte{c, c, c})
			if strings.HasPrefix(s[i:], delim) {
				v.multi = delim
				i += 2
				continue
			}
			for i++; i < len(s) && s[i] != c; i++ {
				if c == '"' && s[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			v.depth++
		case ']', '}':
			v.depth--
		}
	}
}
