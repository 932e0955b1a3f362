package config

import (
	"strconv"
	"strings"
)

// The TOML library (BurntSushi/toml) keeps key positions private and per key string, so two
// [[inputs.modbus]] tables cannot be told apart by it. This scanner walks the text once and
// records every table header with its path with array indices ("inputs.modbus[1].device[3]")
// and its line, and below each header its keys ("slave_id") with their lines. It only needs
// to find headers and keys: values are skipped (strings, multi-line strings, arrays and inline
// tables spanning lines).
//
// It is compact because a plant's file is large: 100,000 devices are 100,000 headers and
// 300,000 keys. A key is a piece of the text (no copy when it is written bare) and the number
// of its header; the maps that lookups use are built per top-level table, on its first lookup,
// from those pieces.

// header is a table header.
type header struct {
	path  string // with indices: "inputs.modbus[1].device[3]"
	line  int32
	off   int32 // byte offset of its line
	first int32 // its keys are keys[first:] up to the next header's first
}

// keyPos is a key below a header (or above every header): its dotted path below that header,
// quotes removed ("slave_id", "tags.line"), its line and the offset of its line in the text.
type keyPos struct {
	key  string
	line int32
	off  int32
}

type tableSpan struct {
	path  string // "inputs.modbus[1]", "agent"
	kind  string // "inputs", "processors", "outputs", "agent", "global_tags", ...
	name  string // plugin name for inputs/processors/outputs
	index int    // index among [[kind.name]] tables of this file
	start int    // header line
	end   int    // first line after the table and its sub-tables
	// byte offsets in the text of the lines start and end (end: len(text)+1 when the table
	// runs to the end of the text)
	startOff, endOff int
	hdr, hdrEnd      int // its headers: headers[hdr:hdrEnd], its own first
	n                int // its index in scanResult.tables
}

type scanResult struct {
	headers []header
	keys    []keyPos
	tables  []tableSpan // top-level tables in order
	index   []*tableIndex
}

// tableIndex makes a lookup in one top-level table cost the length of its path, not the number
// of its keys (a file of 100,000 tables, each with a mistake, was quadratic). Its maps hold
// pieces of the text and header paths the scan made: building it allocates no strings for
// keys written bare.
type tableIndex struct {
	headers  map[string]int32   // header path → its first header
	exact    map[exactKey]int32 // (first header of the path, key) → first line
	stripped map[strippedKey]int32
}

type exactKey struct {
	h   int32
	key string
}

// strippedKey is a path below the table without indices, cut in two: the header's part
// ("device", "" for the table's own keys) and the key's ("slave_id", "" for the header itself).
type strippedKey struct{ hdr, key string }

// keysOf returns the keys below header h.
func (r *scanResult) keysOf(h int) []keyPos {
	end := len(r.keys)
	if h+1 < len(r.headers) {
		end = int(r.headers[h+1].first)
	}
	return r.keys[r.headers[h].first:end]
}

// rootKeys returns the keys above the first header.
func (r *scanResult) rootKeys() []keyPos {
	if len(r.headers) == 0 {
		return r.keys
	}
	return r.keys[:r.headers[0].first]
}

func (r *scanResult) tableIndex(t *tableSpan) *tableIndex {
	if r.index == nil {
		r.index = make([]*tableIndex, len(r.tables))
	}
	if x := r.index[t.n]; x != nil {
		return x
	}
	x := &tableIndex{headers: map[string]int32{}, exact: map[exactKey]int32{}, stripped: map[strippedKey]int32{}}
	first := func(m map[strippedKey]int32, k strippedKey, line int32) {
		if _, ok := m[k]; !ok {
			m[k] = line
		}
	}
	for h := t.hdr; h < t.hdrEnd; h++ {
		hd := &r.headers[h]
		c, ok := x.headers[hd.path]
		if !ok {
			c = int32(h)
			x.headers[hd.path] = c
		}
		rel := ""
		if h > t.hdr {
			rel = stripIndices(hd.path[len(t.path)+1:])
			first(x.stripped, strippedKey{rel, ""}, hd.line)
		}
		for _, k := range r.keysOf(h) {
			if _, ok := x.exact[exactKey{c, k.key}]; !ok {
				x.exact[exactKey{c, k.key}] = k.line
			}
			first(x.stripped, strippedKey{rel, stripIndices(k.key)}, k.line)
		}
	}
	r.index[t.n] = x
	return x
}

// lookupExact returns the line of path (with indices, in table t), or of its longest known
// prefix; 0 when nothing matches.
func (r *scanResult) lookupExact(t *tableSpan, path string) int {
	x := r.tableIndex(t)
	for p := path; p != ""; {
		best := int32(0)
		if h, ok := x.headers[p]; ok {
			best = r.headers[h].line
		}
		for j := len(p) - 1; j > 0; j-- {
			if p[j] != '.' {
				continue
			}
			if h, ok := x.headers[p[:j]]; ok {
				if line, ok := x.exact[exactKey{h, p[j+1:]}]; ok && (best == 0 || line < best) {
					best = line
				}
			}
		}
		if best > 0 {
			return int(best)
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// lookupStripped returns the first line in table t of key, a path below it without indices
// ("device.slave_id"); 0 when there is none.
func (r *scanResult) lookupStripped(t *tableSpan, key string) int {
	x := r.tableIndex(t)
	best, ok := x.stripped[strippedKey{"", key}]
	if line, found := x.stripped[strippedKey{key, ""}]; found && (!ok || line < best) {
		best, ok = line, true
	}
	for j := len(key) - 1; j > 0; j-- {
		if key[j] != '.' {
			continue
		}
		if line, found := x.stripped[strippedKey{key[:j], key[j+1:]}]; found && (!ok || line < best) {
			best, ok = line, true
		}
	}
	return int(best)
}

// lookupIn finds key (a path below table t without indices, like "device.slave_id", or with
// them) inside the table: the first line where it occurs.
func (r *scanResult) lookupIn(t *tableSpan, key string) int {
	full := t.path + "." + key
	if strings.Contains(key, "[") {
		if line := r.lookupExact(t, full); line > 0 {
			return line
		}
	}
	if line := r.lookupStripped(t, stripIndices(key)); line > 0 {
		return line
	}
	return r.lookupExact(t, full)
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

// scanner is scanTOML's state.
type scanner struct {
	r *scanResult
	// resolved array-table paths (no own index) → their current index, and the array tables
	// first seen in the current element of each (forgotten when the next element starts)
	arrayIdx map[string]int
	under    map[string][]string
	count    map[string]int // [[kind.name]] tables so far
	segs     []string
	buf      []byte
}

func scanTOML(text string) *scanResult {
	// The slices are made about the size they end: grown by appending, a large one costs five
	// times its size in copies.
	headers, keys := estimate(text)
	r := &scanResult{headers: make([]header, 0, headers), keys: make([]keyPos, 0, keys)}
	s := &scanner{r: r, arrayIdx: map[string]int{}, under: map[string][]string{}, count: map[string]int{}}
	var top *tableSpan
	var cont valueScanner // state of a value spanning lines
	lineNo := 0
	for off := 0; off <= len(text); {
		lineNo++
		raw := text[off:]
		next := len(text) + 1
		if i := strings.IndexByte(raw, '\n'); i >= 0 {
			raw, next = raw[:i], off+i+1
		}
		lineOff := off
		off = next
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
			resolved, segs := s.header(headerName(line, isArray), isArray)
			r.headers = append(r.headers, header{path: resolved, line: int32(lineNo), off: int32(lineOff), first: int32(len(r.keys))})
			if top == nil || !hasPathPrefix(resolved, top.path) {
				if top != nil {
					top.end, top.endOff, top.hdrEnd = lineNo, lineOff, len(r.headers)-1
				}
				span := tableSpan{path: resolved, kind: segs[0], start: lineNo, startOff: lineOff, hdr: len(r.headers) - 1, n: len(r.tables)}
				if isArray && len(segs) == 2 {
					id := segs[0] + "." + segs[1]
					span.name = segs[1]
					span.index = s.count[id]
					s.count[id]++
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
		r.keys = append(r.keys, keyPos{key: normalKey(strings.TrimSpace(line[:eq])), line: int32(lineNo), off: int32(lineOff)})
		cont = valueScanner{}
		cont.feed(line[eq+1:])
	}
	if top != nil {
		top.end, top.endOff, top.hdrEnd = lineNo+1, len(text)+1, len(r.headers)
	}
	return r
}

// estimate returns about how many headers and keys text has, never more than it has lines (a
// line holds at most one): the lines that start with '[' and those with '='.
func estimate(text string) (headers, keys int) {
	for off := 0; off < len(text); {
		line := text[off:]
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		off += len(line) + 1
		if strings.IndexByte(line, '=') >= 0 {
			keys++
		} else if t := strings.TrimLeft(line, " \t"); t != "" && t[0] == '[' {
			headers++
		}
	}
	return headers, keys
}

// header resolves a header's name (without brackets) to its path with the indices of the
// array tables it lies in, and counts it when it is an array table itself. It returns the path
// and the name's segments (valid until the next call).
func (s *scanner) header(name string, isArray bool) (string, []string) {
	if bareKey(name) {
		s.segs = s.segs[:0]
		for {
			i := strings.IndexByte(name, '.')
			if i < 0 {
				s.segs = append(s.segs, name)
				break
			}
			s.segs = append(s.segs, name[:i])
			name = name[i+1:]
		}
	} else {
		s.segs = splitKey(name)
	}
	b := s.buf[:0]
	for j, seg := range s.segs {
		if j > 0 {
			b = append(b, '.')
		}
		b = append(b, seg...)
		if j < len(s.segs)-1 {
			if idx, ok := s.arrayIdx[string(b)]; ok {
				b = strconv.AppendInt(append(b, '['), int64(idx), 10)
				b = append(b, ']')
			}
		}
	}
	if isArray {
		array := string(b)
		idx, seen := s.arrayIdx[array]
		if seen {
			idx++
			s.forget(array)
		} else if parent := parentArray(array); parent != "" {
			s.under[parent] = append(s.under[parent], array)
		}
		s.arrayIdx[array] = idx
		b = strconv.AppendInt(append(b, '['), int64(idx), 10)
		b = append(b, ']')
	}
	s.buf = b
	return string(b), s.segs
}

// forget drops the indices of the array tables in the current element of array (and in
// theirs): the next element starts them afresh.
func (s *scanner) forget(array string) {
	for _, sub := range s.under[array] {
		s.forget(sub)
		delete(s.arrayIdx, sub)
	}
	delete(s.under, array)
}

// parentArray returns the array table whose element the path lies in ("a[1].b[0].c" →
// "a[1].b"), or "".
func parentArray(path string) string {
	i := strings.LastIndexByte(path, ']')
	if i < 0 {
		return ""
	}
	j := strings.LastIndexByte(path[:i], '[')
	if j < 0 {
		return "" // a ']' of a quoted key
	}
	return path[:j]
}

// hasPathPrefix reports whether path lies below prefix ("a.b.c" below "a.b").
func hasPathPrefix(path, prefix string) bool {
	return len(path) > len(prefix) && path[len(prefix)] == '.' && strings.HasPrefix(path, prefix)
}

// bareKey reports whether a key is written bare (letters, digits, '_', '-' and dots without
// spaces): its normal form is itself.
func bareKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// normalKey returns a dotted key with its segments unquoted and joined by dots.
func normalKey(k string) string {
	if bareKey(k) {
		return k
	}
	return strings.Join(splitKey(k), ".")
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
