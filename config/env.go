package config

import (
	"os"
	"strings"
)

// expandEnv replaces ${VAR} and ${VAR:-default} in a config file's text; $${ stays a literal ${.
// Inside a double-quoted string, quotes and backslashes of the value are escaped so that a
// password like a"b\c stays one string. It returns the names of variables that were unset
// and had no default.
func expandEnv(text string, lookup func(string) (string, bool)) (string, []string) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var b strings.Builder
	var missing []string
	inString := false // inside a "..." on the current line
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\n':
			inString = false
		case c == '\\' && inString && i+1 < len(text):
			b.WriteByte(c)
			i++
			b.WriteByte(text[i])
			continue
		case c == '"':
			inString = !inString
		case c == '#' && !inString:
			// A comment: copied as it is, to the end of the line.
			end := strings.IndexByte(text[i:], '\n')
			if end < 0 {
				end = len(text) - i
			}
			b.WriteString(text[i : i+end])
			i += end - 1
			continue
		case c == '$' && strings.HasPrefix(text[i:], "$${"):
			b.WriteString("${")
			i += 2
			continue
		case c == '$' && strings.HasPrefix(text[i:], "${"):
			end := strings.IndexByte(text[i:], '}')
			if end < 0 || strings.ContainsAny(text[i:i+end], "\n\"") {
				break
			}
			expr := text[i+2 : i+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			val, ok := lookup(name)
			if !ok || (hasDef && val == "") {
				val = def
				if !hasDef {
					missing = append(missing, name)
				}
			}
			if inString {
				val = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(val)
			}
			b.WriteString(val)
			i += end
			continue
		}
		b.WriteByte(c)
	}
	return b.String(), missing
}
