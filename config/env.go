package config

import (
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// envProblem is a ${VAR} whose value cannot stand where it is written.
type envProblem struct {
	line int
	msg  string
}

// expandEnv replaces ${VAR} and ${VAR:-default} in a config file's text; $${ stays a literal ${.
// Comments are left alone. A value never changes the structure of the document, whatever it
// holds (quotes, line breaks, "[[outputs.file]]"): it is escaped for the kind of string it
// lands in, and a literal string (single quotes, one or three) that takes a value is written as
// the basic string (double quotes, as many) of the same text, since a literal string cannot hold every value. In a
// bare position (slave_id = ${ID}) the value must be one TOML value on one line, else it is a
// problem at its line. Line breaks of values are escaped, so every line keeps its number.
//
// The text is walked once by a small lexer of TOML's string kinds (lex.go): substituting after
// parsing would leave bare values (numbers, arrays) out.
func expandEnv(text string, lookup func(string) (string, bool)) (string, []string, []envProblem) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if !strings.Contains(text, "${") {
		return text, nil, nil
	}
	e := &envExpander{lookup: lookup}
	var b strings.Builder
	b.Grow(len(text))
	for t := range tokens(text) {
		switch t.kind {
		case tokBasic, tokMLBasic:
			q := t.raw[:(len(t.raw)-len(t.body))/2] // the quotes around the body
			out, _ := e.expand(t.body, t.line, keepText, escapeValue, true)
			b.WriteString(q + out + q)
		case tokLiteral, tokMLLiteral:
			q := t.raw[:(len(t.raw)-len(t.body))/2]
			text := escapeValue
			if t.kind == tokMLLiteral {
				text = escapeMultiline
			}
			if out, changed := e.expand(t.body, t.line, text, escapeValue, false); changed {
				q = strings.Repeat(`"`, len(q))
				b.WriteString(q + out + q)
			} else {
				b.WriteString(q + unescapeDollar(t.body) + q)
			}
		case tokBare:
			out, _ := e.expand(t.raw, t.line, keepText, nil, false)
			b.WriteString(out)
		default: // line ends, comments, strings not closed
			b.WriteString(t.raw)
		}
	}
	return b.String(), e.missing, e.problems
}

type envExpander struct {
	lookup   func(string) (string, bool)
	missing  []string
	problems []envProblem
}

// expand replaces the ${VAR}s of s, a stretch of one kind of text starting at line. text
// prepares the text around the values, value each value; a nil value means a bare position,
// where values are checked instead. In a basic string (escapes) a backslash escapes what
// follows it: "\${X}" is not substituted, lest the value's first character be taken into
// the escape.
func (e *envExpander) expand(s string, line int, text, value func(string) string, escapes bool) (string, bool) {
	if !strings.Contains(s, "${") {
		return text(s), false
	}
	var b strings.Builder
	changed := false
	from := 0 // start of the text not written yet
	for i := 0; i < len(s); i++ {
		if escapes && s[i] == '\\' {
			i++
			continue
		}
		if s[i] != '$' {
			continue
		}
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString(text(s[from:i]) + text("${"))
			i += 2
			from = i + 1
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			break // no '}' further on: no ${ after this one closes either
		}
		if strings.ContainsAny(s[i:i+end], "\n\"'") {
			continue
		}
		expr := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		val, ok := e.lookup(name)
		if !ok || (hasDef && val == "") {
			val = def
			if !hasDef {
				e.missing = append(e.missing, name)
			}
		}
		b.WriteString(text(s[from:i]))
		if value == nil {
			if !oneValue(val) {
				e.problems = append(e.problems, envProblem{
					line: line + strings.Count(s[:i], "\n"),
					msg: fmt.Sprintf("${%s}: its value (%d bytes) is not one TOML value on one line (a number, true or false, "+
						"a quoted string, an array or an inline table): put ${%s} in quotes", name, len(val), name),
				})
			}
			b.WriteString(val)
		} else {
			b.WriteString(value(val))
		}
		changed = true
		i += end
		from = i + 1
	}
	b.WriteString(text(s[from:]))
	return b.String(), changed
}

// oneValue reports whether v, written bare after "key = ", is exactly one value: it parses,
// holds no line break, and no comment swallows what follows it (a comment would swallow the
// closing bracket of "[v]").
func oneValue(v string) bool {
	if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "\r\n") {
		return false
	}
	var m map[string]any
	if _, err := toml.Decode("v = "+v, &m); err != nil {
		return false
	}
	_, err := toml.Decode("v = ["+v+"]", &m)
	return err == nil
}

func keepText(s string) string { return s }

func unescapeDollar(s string) string { return strings.ReplaceAll(s, "$${", "${") }

// escapeValue escapes s for a basic string ("…" or """…"""): quotes, backslashes and every
// control character, line breaks included (so that the value keeps the line count). Invalid
// UTF-8 is left for the parser to refuse.
func escapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u` + fmt.Sprintf("%04X", r))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// escapeMultiline escapes the text of a multi-line literal string for a multi-line basic one:
// its line breaks stay line breaks.
func escapeMultiline(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}
