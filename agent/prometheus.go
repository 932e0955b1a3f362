package agent

import (
	"slices"
	"strconv"
	"strings"

	"github.com/tagpipe/tagpipe/models"
)

// AppendPrometheus appends ms in the Prometheus text exposition format (0.0.4) to dst: one
// family per measurement and field, named MEASUREMENT_FIELD (internal_output_metrics_written),
// the tags as labels, typed gauge when the stat was made as one (models.Stats.Gauge: buffer
// sizes, times taken, series held) and counter otherwise, no timestamps. Two metrics with the same name and tags (two outputs of one plugin without an
// alias) would be one series twice, which Prometheus refuses: the second gets a label
// index="2", the third index="3" and so on.
//
// Written by hand: the format is a few lines of text, and the client library would bring its
// protobuf model into the binary for it.
func AppendPrometheus(dst []byte, ms []*models.Metric) []byte {
	type sample struct {
		labels []byte
		value  models.Field
	}
	type field struct{ measurement, key string }
	families := map[string][]sample{}
	types := map[string]string{}
	famNames := map[field]string{} // a name is made once per family, not once per sample
	seen := map[string]int{}
	for _, m := range ms {
		var labels []byte
		for i, t := range m.Tags {
			if i > 0 {
				labels = append(labels, ',')
			}
			labels = appendLabel(labels, t.Key, t.Value)
		}
		key := m.Name + "\x00" + string(labels)
		seen[key]++
		if n := seen[key]; n > 1 {
			if len(labels) > 0 {
				labels = append(labels, ',')
			}
			labels = appendLabel(labels, "index", strconv.Itoa(n))
		}
		for _, f := range m.Fields {
			if f.Type() == models.TypeString {
				continue // a sample is a number
			}
			name, ok := famNames[field{m.Name, f.Key}]
			if !ok {
				name = promName(m.Name + "_" + f.Key)
				famNames[field{m.Name, f.Key}] = name
				types[name] = "counter"
				if models.IsGauge(m.Name, f.Key) {
					types[name] = "gauge"
				}
			}
			families[name] = append(families[name], sample{labels, f})
		}
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		dst = append(dst, "# TYPE "...)
		dst = append(dst, n...)
		dst = append(dst, ' ')
		dst = append(dst, types[n]...)
		dst = append(dst, '\n')
		for _, s := range families[n] {
			dst = append(dst, n...)
			if len(s.labels) > 0 {
				dst = append(dst, '{')
				dst = append(dst, s.labels...)
				dst = append(dst, '}')
			}
			dst = append(dst, ' ')
			dst = appendValue(dst, s.value)
			dst = append(dst, '\n')
		}
	}
	return dst
}

func appendValue(dst []byte, f models.Field) []byte {
	switch f.Type() {
	case models.TypeInt:
		return strconv.AppendInt(dst, f.IntV(), 10)
	case models.TypeUint:
		return strconv.AppendUint(dst, f.UintV(), 10)
	case models.TypeBool:
		if f.BoolV() {
			return append(dst, '1')
		}
		return append(dst, '0')
	}
	return strconv.AppendFloat(dst, f.FloatV(), 'g', -1, 64) // NaN, +Inf and -Inf as the format spells them
}

// appendLabel appends name="value", the name made valid and the value escaped as the format
// says: backslash, double quote and line feed.
func appendLabel(dst []byte, name, value string) []byte {
	name = promName(name)
	if strings.HasPrefix(name, "__") { // reserved for Prometheus itself
		name = "tag" + name
	}
	dst = append(dst, name...)
	dst = append(dst, '=', '"')
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '"':
			dst = append(dst, '\\', '"')
		case '\n':
			dst = append(dst, '\\', 'n')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// promName replaces what may not appear in a metric or label name ([a-zA-Z_][a-zA-Z0-9_]*) by
// an underscore.
func promName(s string) string {
	ok := s != ""
	for i := 0; ok && i < len(s); i++ {
		ok = isNameByte(s[i], i)
	}
	if ok {
		return s
	}
	b := []byte(s)
	if len(b) == 0 {
		return "_"
	}
	for i, c := range b {
		if !isNameByte(c, i) {
			b[i] = '_'
		}
	}
	return string(b)
}

func isNameByte(c byte, i int) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9'
}
