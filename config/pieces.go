package config

import (
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/BurntSushi/toml"
)

// A plant's configuration is one [[inputs.modbus]] table with 100,000 [[inputs.modbus.device]]
// tables in it. Parsed whole, the TOML library holds a tree of every key of it (a map and a key
// path for each) besides the structs it decodes, about 100 MB for 11 MB of text. Such a table is
// read in pieces instead: its head (the table without the array's elements) is decoded into the
// plugin, then the elements, at most pieceSize at a time, each piece parsed on its own and
// decoded straight into its place in the plugin's slice; a piece's tree is dropped before the
// next is parsed. The pieces are cut from the file's text at the headers the scanner found.
//
// Pieces only serve a load that succeeds. Any error (a parse error, a bad type, an unknown key)
// drops what was decoded and the table is read whole, as a small table always is, so that every
// message, its line and the order of the messages stay those of the whole parse.

// pieceSize is how many elements of an array of tables one piece holds; an array of more is
// read in pieces. A variable for the tests, which read small arrays in pieces.
var pieceSize = 1000

// piecesRead counts the tables read in pieces (for the tests).
var piecesRead atomic.Int64

// piecePlan is how a table is read in pieces.
type piecePlan struct {
	key   string        // the array's key below the table ("device")
	field reflect.Value // the plugin's slice that its elements decode into
	runs  []elementRun  // runs of consecutive elements, in file order
	count int           // elements
}

// elementRun is elements that follow each other in the file, headers[first:] up to the header
// of the next element or of whatever follows them.
type elementRun struct {
	elems []int32 // each element's header
	end   int     // first line after the run
	endOf int     // byte offset of that line in the file (len(text)+1 past the end)
}

// planPieces returns how to read the section's table in pieces, or nil to read it whole: when
// no array of tables in it has more than pieceSize elements, when the array's key is used
// otherwise too (a key, a plain table, a sub-table of an element written after other tables,
// another spelling), or when the plugin has no slice for it.
func (s *section) planPieces(plugin any) *piecePlan {
	t := &s.span
	hs := s.sc.headers[t.hdr+1 : t.hdrEnd]
	if len(hs) <= pieceSize {
		return nil // not as many sub-tables, let alone elements of one array
	}
	counts := map[string]int{}
	for _, h := range hs {
		if key, ok := elementKey(h.path[len(t.path)+1:]); ok {
			counts[key]++
		}
	}
	key, n := "", 0
	for k, c := range counts {
		if c > n || c == n && k < key {
			key, n = k, c
		}
	}
	if n <= pieceSize {
		return nil
	}
	for _, k := range s.sc.keysOf(t.hdr) {
		if first, _, _ := strings.Cut(k.key, "."); strings.EqualFold(first, key) {
			return nil
		}
	}
	field := sliceField(reflect.ValueOf(plugin), key)
	if !field.IsValid() {
		return nil
	}
	p := &piecePlan{key: key, field: field, count: n}
	cur := "" // path of the element whose lines these are
	var run *elementRun
	for i, h := range hs {
		rel := h.path[len(t.path)+1:]
		first := rel[:firstSegmentEnd(rel)]
		switch {
		case !strings.EqualFold(first, key):
			cur = ""
		case rel[len(first):] != "" && rel[len(first)] == '[' && !strings.ContainsAny(rel[len(first):], ".") && first == key:
			cur = h.path
			if run == nil || run.end != int(h.line) {
				p.runs = append(p.runs, elementRun{})
				run = &p.runs[len(p.runs)-1]
			}
			run.elems = append(run.elems, int32(t.hdr+1+i))
		case cur != "" && hasPathPrefix(h.path, cur):
		default:
			return nil // [inputs.modbus.device] or a sub-table of an element elsewhere
		}
		if cur == "" {
			continue
		}
		// The run reaches the next header, or the end of the table.
		if i+1 < len(hs) {
			run.end, run.endOf = int(hs[i+1].line), int(hs[i+1].off)
		} else {
			run.end, run.endOf = t.end, t.endOff
		}
	}
	return p
}

// elementKey returns the key of an array element's header below a table ("device" of
// "device[3]").
func elementKey(rel string) (string, bool) {
	i := strings.IndexByte(rel, '[')
	if i <= 0 || strings.ContainsAny(rel[:i], ".") || strings.ContainsAny(rel[i:], ".") {
		return "", false
	}
	return rel[:i], true
}

func firstSegmentEnd(rel string) int {
	if i := strings.IndexAny(rel, ".["); i >= 0 {
		return i
	}
	return len(rel)
}

// sliceField returns the slice field of the struct v points to that the TOML key decodes into,
// or an invalid Value when there is none, or more than one field might take the key (the TOML
// library matches names without regard to case, too).
func sliceField(v reflect.Value, key string) reflect.Value {
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	var found reflect.Value
	matches := 0
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(v.Field(i))
				continue
			}
			if name == "" {
				name = f.Name
			}
			if strings.EqualFold(name, key) {
				matches++
				if name == key && f.IsExported() && f.Type.Kind() == reflect.Slice {
					found = v.Field(i)
				}
			}
		}
	}
	walk(v.Elem())
	if matches != 1 {
		return reflect.Value{}
	}
	return found
}

// headText returns the section's text without the lines of the plan's elements. (Its line
// numbers are not the file's, but a head with a mistake is read again whole.)
func (s *section) headText(p *piecePlan) string {
	t := &s.span
	// Aliases rewrite only the table's own keys, which stand above its first sub-table: the
	// elements' lines are where they were, shifted by what the rewrite added.
	shift := len(s.text) - (t.endOff - 1 - t.startOff)
	at := func(fileOff int) int { return min(fileOff-t.startOff+shift, len(s.text)) }
	var b strings.Builder
	from := 0
	for _, r := range p.runs {
		b.WriteString(s.text[from:at(int(s.sc.headers[r.elems[0]].off))])
		from = at(r.endOf)
	}
	b.WriteString(trimComments(s.text[from:]))
	return b.String()
}

// decodePieces reads the table in pieces into plugin and generic (the keys of every plugin
// table). It returns the head's metadata, or false when the table must be read whole: then
// plugin and generic may hold part of what was decoded.
func (s *section) decodePieces(p *piecePlan, plugin, generic any) (toml.MetaData, bool) {
	kind, name := s.span.kind, s.span.name
	prefix := kind + "." + name
	var holder map[string]map[string][]toml.Primitive
	md, err := toml.Decode(s.headText(p), &holder)
	if err != nil || len(holder[kind][name]) != 1 {
		return md, false
	}
	prim := holder[kind][name][0]
	if md.PrimitiveDecode(prim, generic) != nil || md.PrimitiveDecode(prim, plugin) != nil || hasUndecoded(md, prefix) {
		return md, false
	}
	all := reflect.MakeSlice(p.field.Type(), p.count, p.count)
	done := 0
	for _, r := range p.runs {
		for i := 0; i < len(r.elems); i += pieceSize {
			j := min(i+pieceSize, len(r.elems))
			from := int(s.sc.headers[r.elems[i]].off)
			to := r.endOf
			if j < len(r.elems) {
				to = int(s.sc.headers[r.elems[j]].off)
			}
			if !s.decodePiece(s.all[from:min(to, len(s.all))], all.Slice3(done, done+j-i, done+j-i), p.key) {
				return md, false
			}
			done += j - i
		}
	}
	if done != p.count {
		return md, false
	}
	p.field.Set(all)
	piecesRead.Add(1)
	return md, true
}

// decodePiece decodes text, elements of the section's array key, into dst (a slice of as
// many). It reports whether they all decoded, in place and with no key left over.
func (s *section) decodePiece(text string, dst reflect.Value, key string) bool {
	kind, name := s.span.kind, s.span.name
	var holder map[string]map[string]map[string]toml.Primitive
	md, err := toml.Decode(text, &holder)
	if err != nil {
		return false
	}
	prim, ok := holder[kind][name][key]
	if !ok || len(holder) != 1 || len(holder[kind]) != 1 || len(holder[kind][name]) != 1 {
		return false
	}
	into := reflect.New(dst.Type())
	into.Elem().Set(dst)
	if md.PrimitiveDecode(prim, into.Interface()) != nil || hasUndecoded(md, kind+"."+name) {
		return false
	}
	got := into.Elem()
	return got.Len() == dst.Len() && (dst.Len() == 0 || got.Pointer() == dst.Pointer())
}

// hasUndecoded reports whether a key below prefix was not decoded.
func hasUndecoded(md toml.MetaData, prefix string) bool {
	for _, k := range md.Undecoded() {
		if full := k.String(); strings.HasPrefix(full, prefix+".") {
			return true
		}
	}
	return false
}
