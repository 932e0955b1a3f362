package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
)

// Alias is another spelling of a plugin key that tagpipe accepts: Telegraf's, so that a table
// copied from a Telegraf configuration loads. The loader rewrites the key (and its value, with
// Convert) before decoding and leaves a notice in Config.Warnings, once per plugin and key,
// naming the place and the tagpipe key.
type Alias struct {
	Old string // the other spelling, e.g. "compression_codec"
	New string // tagpipe's key, e.g. "compression"
	// Convert turns the value written under Old into the value of New (nil: the same value).
	// Its error says what the old key accepts.
	Convert func(v any) (any, error)
}

// Aliaser is implemented by plugins that accept other spellings of their keys.
type Aliaser interface {
	Aliases() []Alias
}

// commonAliases apply to every plugin table: Telegraf's newer names of the generic filters.
var commonAliases = []Alias{
	{Old: "fieldinclude", New: "fieldpass"},
	{Old: "fieldexclude", New: "fielddrop"},
}

// applyAliases rewrites the keys of the section's own table (not of its sub-tables) that are
// spelled as an alias, line by line, so that every line keeps its number and errors keep their
// place. It reports whether the section may be decoded.
func (s *section) applyAliases(plugin any) bool {
	aliases := commonAliases
	if a, ok := plugin.(Aliaser); ok {
		aliases = append(append([]Alias{}, aliases...), a.Aliases()...)
	}
	byOld := make(map[string]Alias, len(aliases))
	for _, a := range aliases {
		byOld[a.Old] = a
	}
	// The table's own keys and the headers of its plain sub-tables, in file order.
	set := map[string]int{} // key → line
	var own []keyPos
	for _, k := range s.sc.keysOf(s.span.hdr) {
		if !strings.ContainsAny(k.key, ".[") {
			set[k.key] = int(k.line)
			own = append(own, k)
		}
	}
	for _, h := range s.sc.headers[s.span.hdr+1 : s.span.hdrEnd] {
		if rel := h.path[len(s.span.path)+1:]; !strings.ContainsAny(rel, ".[") {
			set[rel] = int(h.line)
			own = append(own, keyPos{key: rel, line: h.line})
		}
	}
	var lines []string
	ok := true
	for _, k := range own {
		a, found := byOld[k.key]
		if !found {
			continue
		}
		if newLine, dup := set[a.New]; dup {
			s.l.fail(s.file, int(k.line), s.label, "%s: Telegraf's name of %s, which is set too (line %d): keep one", k.key, a.New, newLine)
			ok = false
			continue
		}
		if lines == nil {
			lines = strings.Split(s.text, "\n")
		}
		i := int(k.line) - 1 - s.offset
		text, err := rewriteAlias(lines[i], a)
		if err != nil {
			s.l.fail(s.file, int(k.line), s.label, "%s: %v", k.key, err)
			ok = false
			continue
		}
		lines[i] = text
		msg := fmt.Sprintf("%s:%d: %s: %s is Telegraf's name; tagpipe's is %s", s.file, k.line, s.label, k.key, a.New)
		if a.Convert != nil {
			msg += " (read as " + strings.TrimSpace(text) + ")"
		}
		s.l.notice(msg, s.span.kind+"."+s.span.name+"."+k.key)
	}
	if lines != nil {
		s.text = strings.Join(lines, "\n")
	}
	return ok
}

// rewriteAlias returns the key/value line with the key renamed and, with a converter, the value
// converted. A value spanning several lines can only be renamed.
func rewriteAlias(line string, a Alias) (string, error) {
	indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	eq := keyEnd(line)
	if eq < 0 {
		return "", fmt.Errorf("cannot read this line")
	}
	if a.Convert == nil {
		return indent + a.New + " " + line[eq:], nil
	}
	var v map[string]any
	if _, err := toml.Decode(line, &v); err != nil || len(v) != 1 {
		return "", fmt.Errorf("write its value on one line, or write %s instead", a.New)
	}
	var old any
	for _, x := range v {
		old = x
	}
	nv, err := a.Convert(old)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{a.New: nv}); err != nil {
		return "", err
	}
	return indent + strings.TrimSpace(b.String()), nil
}

// notice adds a warning once per id (plugin and key) in one load; the places after the first are
// counted in it when the load ends (noticesDone).
func (l *loader) notice(msg, id string) {
	if l.notices == nil {
		l.notices = map[string]*noticeCount{}
	}
	if n, seen := l.notices[id]; seen {
		n.more++
		return
	}
	l.notices[id] = &noticeCount{index: len(l.cfg.Warnings)}
	l.cfg.Warnings = append(l.cfg.Warnings, msg)
}

type noticeCount struct{ index, more int }

func (l *loader) noticesDone() {
	for _, n := range l.notices {
		if n.more > 0 {
			l.cfg.Warnings[n.index] += fmt.Sprintf(" (and %d more places)", n.more)
		}
	}
}
