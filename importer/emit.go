package importer

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// kv is one key = value line of the written configuration, with an optional trailing comment.
type kv struct {
	key     string
	val     any // string, int, int64, float64, bool, time.Duration, []string, map[string]string, raw
	comment string
}

// raw is a value written as it is (a TOML literal the importer built itself).
type raw string

// emitter writes TOML text: tables indented by depth, comments, values.
type emitter struct {
	b strings.Builder
}

func (e *emitter) String() string { return e.b.String() }

func (e *emitter) blank() { e.b.WriteByte('\n') }

// commentText makes text fit in a TOML comment: valid UTF-8, no control characters but tabs.
func commentText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// comment writes "# text" lines at depth, one per line of text.
func (e *emitter) comment(depth int, text string) {
	for _, line := range strings.Split(commentText(text), "\n") {
		e.b.WriteString(strings.Repeat("  ", depth))
		if line == "" {
			e.b.WriteString("#\n")
			continue
		}
		e.b.WriteString("# " + line + "\n")
	}
}

func (e *emitter) header(depth int, h string) {
	e.b.WriteString(strings.Repeat("  ", depth) + h + "\n")
}

func (e *emitter) kvs(depth int, list []kv) {
	for _, x := range list {
		e.b.WriteString(strings.Repeat("  ", depth) + tomlKey(x.key) + " = " + tomlValue(x.val))
		if x.comment != "" {
			e.b.WriteString("  # " + strings.ReplaceAll(commentText(x.comment), "\n", " "))
		}
		e.b.WriteByte('\n')
	}
}

// tomlKey quotes a key that is not bare.
func tomlKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return tomlString(k)
		}
	}
	return k
}

// tomlString writes a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlFloat writes a float so that it reads back as a float ("1.0", not "1").
func tomlFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return s
}

// tomlDuration writes a duration the way people write them: "1m30s", "250ms", "1h".
func tomlDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return tomlString(s)
}

// inlineTable writes { key = value, ... } with the keys sorted.
func inlineTable[V any](m map[string]V, value func(V) string) string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = tomlKey(k) + " = " + value(m[k])
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func tomlValue(v any) string {
	switch x := v.(type) {
	case raw:
		return string(x)
	case string:
		return tomlString(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint16:
		return strconv.Itoa(int(x))
	case float64:
		return tomlFloat(x)
	case bool:
		return strconv.FormatBool(x)
	case time.Duration:
		return tomlDuration(x)
	case []string:
		parts := make([]string, len(x))
		for i, s := range x {
			parts[i] = tomlString(s)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]string:
		return inlineTable(x, tomlString)
	case map[string][]string:
		return inlineTable(x, func(v []string) string { return tomlValue(v) })
	}
	return tomlString(fmt.Sprint(v))
}
