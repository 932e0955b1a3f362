package config

import (
	"iter"
	"strings"
)

// A small lexer of TOML's strings, comments and line ends: what ${VAR} substitution and the
// nesting check need to know of a text before the TOML library parses it (the library parses
// whole documents only).

type tokKind int

const (
	tokBare      tokKind = iota // keys, numbers, brackets, '=' and ',' up to a string, comment or line end
	tokNewline                  // "\n"
	tokComment                  // "# ..." up to the line end
	tokBasic                    // "..."
	tokLiteral                  // '...'
	tokMLBasic                  // """..."""
	tokMLLiteral                // '''...'''
	tokOpen                     // a string not closed (up to its line end, or the text end): left for the parser to report
)

type token struct {
	kind tokKind
	raw  string // as written, quotes included
	body string // of a closed string: between its quotes
	line int    // where it starts
}

// tokens splits text into tokens; the raw texts of the tokens, in order, are the text.
func tokens(text string) iter.Seq[token] {
	return func(yield func(token) bool) {
		line := 1
		for i := 0; i < len(text); {
			c := text[i]
			t := token{line: line}
			end := i + 1
			switch {
			case c == '\n':
				t.kind = tokNewline
			case c == '#':
				t.kind = tokComment
				end = strings.IndexByte(text[i:], '\n')
				if end < 0 {
					end = len(text)
				} else {
					end += i
				}
			case strings.HasPrefix(text[i:], `"""`), strings.HasPrefix(text[i:], `'''`):
				t.kind = tokMLBasic
				if c == '\'' {
					t.kind = tokMLLiteral
				}
				close := closeMultiline(text, i+3, c)
				if close == len(text) {
					t.kind, end = tokOpen, len(text)
				} else {
					t.body, end = text[i+3:close], close+3
				}
			case c == '"' || c == '\'':
				t.kind = tokBasic
				if c == '\'' {
					t.kind = tokLiteral
				}
				close := closeString(text, i+1, c)
				if close == len(text) || text[close] != c {
					t.kind, end = tokOpen, close
				} else {
					t.body, end = text[i+1:close], close+1
				}
			default:
				t.kind = tokBare
				if j := strings.IndexAny(text[end:], "\n#\"'"); j >= 0 {
					end += j
				} else {
					end = len(text)
				}
			}
			t.raw = text[i:end]
			if !yield(t) {
				return
			}
			line += strings.Count(t.raw, "\n")
			i = end
		}
	}
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

// MaxDepth is how deep a configuration may nest tables, dotted keys, arrays and inline tables
// (a plugin's deepest table, [[inputs.modbus.device.field]] with an inline table in it, is 6).
// The TOML library's cost grows with the square of the depth (every level copies the key
// path): a file of 12 KB nested 3,000 deep took 600 MB. Deeper is refused before parsing.
const MaxDepth = 64

// nestingTooDeep returns the line where text nests deeper than MaxDepth, or 0.
func nestingTooDeep(text string) int {
	type frame struct {
		array bool
		base  int // depth of the array or inline table itself
	}
	var stack []frame
	atLineStart, header := true, false
	key := true    // reading a key (line start, after '{' or ',' in an inline table)
	keyBase := 0   // depth of the table the key is in
	segs := 1      // segments of the key so far
	tableBase := 0 // depth of the current [table]
	for t := range tokens(text) {
		switch t.kind {
		case tokNewline:
			if len(stack) == 0 {
				atLineStart, header, key, keyBase, segs = true, false, true, tableBase, 1
			}
			continue
		case tokBare:
		default:
			atLineStart = false
			continue
		}
		for i := 0; i < len(t.raw); i++ {
			c := t.raw[i]
			if c == ' ' || c == '\t' || c == '\r' {
				continue
			}
			if atLineStart && c == '[' && len(stack) == 0 {
				header = true
			}
			atLineStart = false
			switch {
			case header:
				switch c {
				case '.':
					segs++
				case ']':
					tableBase = segs
				}
				if segs > MaxDepth {
					return t.line
				}
			case key:
				switch c {
				case '.':
					segs++
				case '=':
					key = false
					keyBase += segs
				}
				if keyBase+segs > MaxDepth {
					return t.line
				}
			default: // a value at depth keyBase
				switch c {
				case '{':
					stack = append(stack, frame{base: keyBase})
					key, segs = true, 1
				case '[':
					stack = append(stack, frame{array: true, base: keyBase})
					keyBase++
				case ',':
					if n := len(stack); n > 0 && !stack[n-1].array {
						key, segs, keyBase = true, 1, stack[n-1].base
					} else if n > 0 {
						keyBase = stack[n-1].base + 1
					}
				case '}', ']':
					if n := len(stack); n > 0 {
						keyBase = stack[n-1].base
						stack = stack[:n-1]
					}
				}
				if keyBase > MaxDepth || len(stack) > MaxDepth {
					return t.line
				}
			}
		}
	}
	return 0
}
