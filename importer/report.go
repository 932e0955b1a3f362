// Package importer turns what a plant already has into tagpipe configuration: Telegraf
// configuration files (inputs.modbus in its three styles, inputs.opcua and opcua_listener, the
// outputs influxdb, influxdb_v2, kafka and file, [agent] and [global_tags]) and tag lists
// (Kepware's CSV export, Neuron's tag template as CSV or xlsx, tagpipe's own CSV and device
// lists). It also writes a profile back as tagpipe's CSV, so that a spreadsheet round-trips.
//
// Nothing is dropped silently: every key or row that cannot be mapped, or is mapped only
// approximately, is an Issue of the Report with its file and line (or row and column), and is
// written as a comment into the configuration too.
package importer

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Kind says what became of a key or a row.
type Kind int

const (
	// Unmapped: tagpipe has no such setting; the key is left out.
	Unmapped Kind = iota + 1
	// Approximate: mapped, but tagpipe's behaviour differs in the way the message says.
	Approximate
	// Note: mapped as it says; worth knowing before running the configuration.
	Note
	// Bad: the input is wrong here; the row, field or key is left out and the rest imported.
	Bad
)

func (k Kind) String() string {
	switch k {
	case Unmapped:
		return "not mapped"
	case Approximate:
		return "approximate"
	case Note:
		return "note"
	case Bad:
		return "error"
	}
	return "kind " + strconv.Itoa(int(k))
}

// Issue is one key, row or cell that was not imported as it stands.
type Issue struct {
	File   string
	Line   int // line of a TOML file, row of a tag list (1 is the header); 0 when unknown
	Column int // column of a tag list (1-based); 0 for TOML and whole rows
	Where  string
	Key    string // the key (below Where) or the column name
	Kind   Kind
	Msg    string
}

// Place is FILE:LINE, or FILE:ROW:COLUMN for a tag list cell.
func (i Issue) Place() string {
	s := i.File
	if i.Line > 0 {
		s += ":" + strconv.Itoa(i.Line)
		if i.Column > 0 {
			s += ":" + strconv.Itoa(i.Column)
		}
	}
	return s
}

// String is the report line: FILE:LINE: WHERE: KEY: KIND: MESSAGE.
func (i Issue) String() string {
	var b strings.Builder
	b.WriteString(i.Place() + ": ")
	if i.Where != "" {
		b.WriteString(i.Where + ": ")
	}
	if i.Key != "" {
		b.WriteString(i.Key + ": ")
	}
	b.WriteString(i.Kind.String() + ": " + i.Msg)
	return b.String()
}

// Report collects the issues of one import.
type Report struct {
	Issues []Issue
}

func (r *Report) add(i Issue) { r.Issues = append(r.Issues, i) }

func (r *Report) addf(file string, line int, where, key string, kind Kind, format string, args ...any) {
	r.add(Issue{File: file, Line: line, Where: where, Key: key, Kind: kind, Msg: fmt.Sprintf(format, args...)})
}

// Count returns how many issues are of kind k.
func (r *Report) Count(k Kind) int {
	n := 0
	for _, i := range r.Issues {
		if i.Kind == k {
			n++
		}
	}
	return n
}

// sorted returns the issues by file, line and column, keeping the order of equal places.
func (r *Report) sorted() []Issue {
	out := append([]Issue(nil), r.Issues...)
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.File != y.File {
			return x.File < y.File
		}
		if x.Line != y.Line {
			return x.Line < y.Line
		}
		return x.Column < y.Column
	})
	return out
}

// String lists every issue, one a line, sorted by place.
func (r *Report) String() string {
	var b strings.Builder
	for _, i := range r.sorted() {
		b.WriteString(i.String())
		b.WriteByte('\n')
	}
	return b.String()
}
