package importer

import (
	"fmt"
	"strconv"
	"strings"
)

// kepwareTypes maps Kepware's data types to tagpipe's (Boolean: a coil, a discrete input or a
// bit of a register).
var kepwareTypes = map[string]string{
	"boolean": "BIT", "short": "INT16", "word": "UINT16", "long": "INT32", "dword": "UINT32",
	"float": "FLOAT32", "double": "FLOAT64", "llong": "INT64", "qword": "UINT64", "string": "STRING",
}

// kepwareAddress reads a Modbus address as Kepware writes it: the table digit (0 coils,
// 1 discrete inputs, 3 input registers, 4 holding registers) and the 1-based item, padded or
// not (41, 40001 and 400001 are all holding register 1), in the 4x forms (4x00001), in hex
// (H4000A), with a bit (400001.15) or a string length in bytes and byte order (400001.20H,
// 400001.20L). It returns tagpipe's register kind and zero-based address.
func kepwareAddress(s string) (register string, addr, bit, strBytes int, strOrder byte, err error) {
	bit, strBytes = -1, -1
	a := strings.ToUpper(strings.TrimSpace(s))
	if a == "" {
		return "", 0, 0, 0, 0, fmt.Errorf("empty")
	}
	main, suffix, hasSuffix := strings.Cut(a, ".")
	if strings.ContainsAny(main, "[]") {
		return "", 0, 0, 0, 0, fmt.Errorf("%q: arrays are not supported; give one tag per element", s)
	}
	hex := strings.HasPrefix(main, "H")
	if hex {
		main = main[1:]
	}
	if len(main) < 2 {
		return "", 0, 0, 0, 0, fmt.Errorf("%q: want a table digit and an item, e.g. 400001", s)
	}
	table, item := main[0], main[1:]
	if len(item) > 1 && item[0] == 'X' { // 4x00001
		item = strings.TrimPrefix(item[1:], ":")
	}
	register = map[byte]string{'0': "coil", '1': "discrete", '3': "input", '4': "holding"}[table]
	if register == "" {
		return "", 0, 0, 0, 0, fmt.Errorf("%q: the first digit is the table: 0 coils, 1 discrete inputs, 3 input registers, 4 holding registers", s)
	}
	base := 10
	if hex {
		base = 16
	}
	n, perr := strconv.ParseUint(item, base, 32)
	if perr != nil || n < 1 || n > 65536 {
		return "", 0, 0, 0, 0, fmt.Errorf("%q: the item after the table digit is 1..65536 (the first register is 1)", s)
	}
	if hasSuffix {
		if suffix == "" {
			return "", 0, 0, 0, 0, fmt.Errorf("%q: nothing after the dot: want .BIT or .LENGTH H/L", s)
		}
		if register == "coil" || register == "discrete" {
			return "", 0, 0, 0, 0, fmt.Errorf("%q: a coil or discrete input has no suffix", s)
		}
		switch last := suffix[len(suffix)-1]; {
		case last == 'H' || last == 'L':
			b, err := strconv.Atoi(suffix[:len(suffix)-1])
			if err != nil || b < 1 || b > 250 {
				return "", 0, 0, 0, 0, fmt.Errorf("%q: a string is .LENGTH (bytes, 1..250) then H or L", s)
			}
			strBytes, strOrder = b, last
		default:
			b, err := strconv.Atoi(suffix)
			if err != nil || b < 0 || b > 15 {
				return "", 0, 0, 0, 0, fmt.Errorf("%q: the bit of a register is .0 to .15", s)
			}
			bit = b
		}
	}
	return register, int(n) - 1, bit, strBytes, strOrder, nil
}

// kepwareRow reads a row of a Kepware CSV export.
func (s *sheet) kepwareRow(r int, l *tagList) (field, bool) {
	var f field
	f.Name = s.cell(r, "tag_name")
	if f.Name == "" {
		s.bad(r, "tag_name", Bad, "empty; the row is left out")
		return f, false
	}
	register, addr, bit, strBytes, strOrder, err := kepwareAddress(s.cell(r, "address"))
	if err != nil {
		s.bad(r, "address", Bad, "%v; the row is left out", err)
		return f, false
	}
	if register != "holding" {
		f.Register = register
	}
	f.Address = &addr
	kt := s.cell(r, "data_type")
	dt, ok := kepwareTypes[strings.ToLower(kt)]
	if !ok {
		s.bad(r, "data_type", Bad, "%q: tagpipe reads Boolean, Short, Word, Long, DWord, LLong, QWord, Float, Double and String; the row is left out", kt)
		return f, false
	}
	if !s.typedField(r, &f, register, dt, "data_type", kt, bit, strBytes, strOrder) {
		return f, false
	}
	bits := register == "coil" || register == "discrete"
	// Scaling: linear from the raw range to the scaled range; negation; clamping is not done.
	scale, offset := 1.0, 0.0
	switch strings.ToLower(s.cell(r, "scaling")) {
	case "", "none":
	case "linear":
		var v [4]float64
		for i, c := range []string{"raw_low", "raw_high", "scaled_low", "scaled_high"} {
			x, err := strconv.ParseFloat(s.cell(r, c), 64)
			if err != nil {
				s.bad(r, c, Bad, "%q: linear scaling needs a number; the row is left out", s.cell(r, c))
				return f, false
			}
			v[i] = x
		}
		if v[1] == v[0] {
			s.bad(r, "raw_high", Bad, "the raw range is empty; the row is left out")
			return f, false
		}
		scale = (v[3] - v[2]) / (v[1] - v[0])
		offset = v[2] - v[0]*scale
		switch strings.ToLower(s.cell(r, "scaled_data_type")) {
		case "", "float", "double":
		case "short", "long", "llong", "char":
			f.Output = "int"
		case "word", "dword", "qword", "byte":
			f.Output = "uint"
		default:
			s.bad(r, "scaled_data_type", Bad, "%q: want Float, Double or an integer type; the row is left out", s.cell(r, "scaled_data_type"))
			return f, false
		}
		if f.Output != "" {
			s.bad(r, "scaled_data_type", Approximate, "tagpipe rounds the scaled value to the nearest integer")
		}
		for _, c := range []string{"clamp_low", "clamp_high"} {
			if strings.EqualFold(s.cell(r, c), "true") || s.cell(r, c) == "1" {
				s.bad(r, c, Approximate, "tagpipe does not clamp a scaled value to the scaled range")
			}
		}
	default:
		s.bad(r, "scaling", Bad, "%q: tagpipe scales linearly only; the row is left out", s.cell(r, "scaling"))
		return f, false
	}
	if v := s.cell(r, "negate_value"); strings.EqualFold(v, "true") || v == "1" {
		scale, offset = -scale, -offset
	}
	if scale != 1 || offset != 0 {
		if dt == "STRING" || bits || dt == "BIT" {
			s.bad(r, "scaling", Bad, "a %s is not scaled; the row is left out", kt)
			return f, false
		}
		f.Scale, f.Offset = &scale, offset
	}
	var notes []string
	if d := s.cell(r, "description"); d != "" {
		notes = append(notes, d)
	}
	if u := s.cell(r, "eng_units"); u != "" {
		notes = append(notes, "unit: "+u)
	}
	f.comment = strings.Join(notes, "; ")
	if v := s.cell(r, "scan_rate"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 1 {
			s.bad(r, "scan_rate", Bad, "%q: want milliseconds; the scan rate is left out", v)
		} else {
			f.rate = ms
		}
	}
	if err := checkField(&f.Field); err != nil {
		s.bad(r, err.col, Bad, "%v; the row is left out", err.err)
		return f, false
	}
	return f, true
}
