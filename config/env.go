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
// The text is walked once by a small lexer of TOML's string kinds: the TOML library parses
// whole documents only, and substituting after parsing would leave bare values (numbers,
// arrays) out.
func expandEnv(text string, lookup func(string) (string, bool)) (string, []string, []envProblem) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	e := &envExpander{lookup: lookup}
	var b strings.Builder
	b.Grow(len(text))
	line := 1
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == '\n':
			line++
			b.WriteByte(c)
			i++
		case c == '#':
			end := strings.IndexByte(text[i:], '\n')
			if end < 0 {
				end = len(text) - i
			}
			b.WriteString(text[i : i+end])
			i += end
		case strings.HasPrefix(text[i:], `"""`), strings.HasPrefix(text[i:], `'''`):
			delim := text[i : i+3]
			start := i + 3
			end := closeMultiline(text, start, delim[0])
			body := text[start:end]
			if end == len(text) { // not closed: left for the parser to report
				b.WriteString(text[i:])
				i = end
				continue
			}
			if delim[0] == '"' {
				out, _ := e.expand(body, line, keepText, escapeValue, true)
				b.WriteString(delim + out + delim)
			} else if out, changed := e.expand(body, line, escapeMultiline, escapeValue, false); changed {
				b.WriteString(`"""` + out + `"""`)
			} else {
				b.WriteString(delim + unescapeDollar(body) + delim)
			}
			line += strings.Count(body, "\n")
			i = end + 3
		case c == '"' || c == '\'':
			end := closeString(text, i+1, c)
			body := text[i+1 : end]
			if end == len(text) || text[end] != c { // not closed: left for the parser to report
				b.WriteString(text[i:end])
				i = end
				continue
			}
			if c == '"' {
				out, _ := e.expand(body, line, keepText, escapeValue, true)
				b.WriteString(`"` + out + `"`)
			} else if out, changed := e.expand(body, line, escapeValue, escapeValue, false); changed {
				b.WriteString(`"` + out + `"`)
			} else {
				b.WriteString(`'` + unescapeDollar(body) + `'`)
			}
			i = end + 1
		default:
			// Bare text up to the next string, comment or line end.
			end := i + 1
			for end < len(text) && !strings.ContainsRune("\n#\"'", rune(text[end])) {
				end++
			}
			out, _ := e.expand(text[i:end], line, keepText, nil, false)
			b.WriteString(out)
			i = end
		}
	}
	return b.String(), e.missing, e.problems
}

// closeString returns the index of the quote that ends a one-line string starting at start, or
// of the line end (or text end) when it is not closed.
func closeString(text string, start int, quote byte) int {
	for i := start; i < len(text); i++ {
		switch text[i] {
		case quote, '\n':
			return i
		case '\\':
			if quote == '"' && i+1 < len(text) && text[i+1] != '\n' {
				i++
			}
		}
	}
	return len(text)
}

// closeMultiline returns the index of the delimiter (three quotes) that ends a multi-line
// string starting at start: in a run of up to five quotes the last three close it, the others
// belong to the string. Not closed: the text's end.
func closeMultiline(text string, start int, quote byte) int {
	for i := start; i < len(text); i++ {
		switch {
		case quote == '"' && text[i] == '\\':
			i++
		case text[i] == quote:
			n := 0
			for i+n < len(text) && text[i+n] == quote && n < 5 {
				n++
			}
			if n >= 3 {
				return i + n - 3
			}
			i += n - 1
		}
	}
	return len(text)
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
		if end < 0 || strings.ContainsAny(s[i:i+end], "\n\"'") {
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
