package importer

import (
	"fmt"
	"strconv"
	"strings"
)

// neuronTypes maps Neuron's tag types to tagpipe's.
var neuronTypes = map[string]string{
	"INT16": "INT16", "UINT16": "UINT16", "INT32": "INT32", "UINT32": "UINT32", "INT64": "INT64", "UINT64": "UINT64",
	"FLOAT": "FLOAT32", "DOUBLE": "FLOAT64", "BIT": "BIT", "STRING": "STRING",
}

// neuronOrders maps Neuron's #ENDIAN suffixes, by the size of the type, to tagpipe's byte
// orders (Neuron's documentation: #L 1,2 and #B 2,1 for 16 bits; #LL 1,2,3,4, #LB 2,1,4,3,
// #BB 3,4,1,2, #BL 4,3,2,1 for 32 bits; the defaults #L and #LL). For 64 bits #L is taken as
// 1..8 and #B as 8..1.
var neuronOrders = map[int]map[string]string{
	1: {"": "", "L": "", "B": "BA"},
	2: {"": "", "LL": "", "LB": "BADC", "BB": "CDAB", "BL": "DCBA"},
	4: {"": "", "L": "", "B": "DCBA"},
}

// neuronAddress reads SLAVE!ADDRESS[.BIT][#ENDIAN][.LEN[H|L|D|E]]: ADDRESS is the table digit
// and the 1-based register (400001 is holding register 0).
func neuronAddress(s, dataType string) (slave int, register string, addr, bit int, order string, strBytes int, strOrder byte, err error) {
	bit, strBytes = -1, -1
	sl, rest, ok := strings.Cut(strings.TrimSpace(s), "!")
	n, perr := strconv.Atoi(sl)
	if !ok || perr != nil || n < 0 || n > 255 {
		err = fmt.Errorf("%q: want SLAVE!ADDRESS, e.g. 1!400001", s)
		return
	}
	slave = n
	main, endian, _ := strings.Cut(rest, "#")
	suffix := ""
	if i := strings.IndexByte(main, '.'); i >= 0 {
		main, suffix = main[:i], main[i+1:]
		if suffix == "" {
			err = fmt.Errorf("%q: nothing after the dot: want .BIT or .LEN", s)
			return
		}
	}
	if i := strings.IndexByte(endian, '.'); i >= 0 { // 1!400001#LL.10 is not a form; the suffix comes first
		err = fmt.Errorf("%q: the .BIT or .LEN suffix comes before #ENDIAN", s)
		return
	}
	if len(main) < 2 {
		err = fmt.Errorf("%q: want the table digit and the register, e.g. 1!400001", s)
		return
	}
	register = map[byte]string{'0': "coil", '1': "discrete", '3': "input", '4': "holding"}[main[0]]
	item, perr := strconv.Atoi(main[1:])
	if register == "" || perr != nil || item < 1 || item > 65536 {
		err = fmt.Errorf("%q: the address is 000001..065536 (coils), 100001.. (inputs), 300001.. (input registers) or 400001.. (holding registers)", s)
		return
	}
	addr = item - 1
	switch {
	case suffix == "":
	case dataType == "STRING":
		last := suffix[len(suffix)-1]
		digits := suffix
		if strings.IndexByte("HLDE", last) >= 0 {
			digits, strOrder = suffix[:len(suffix)-1], last
		} else {
			strOrder = 'H' // Neuron's default
		}
		b, e := strconv.Atoi(digits)
		if e != nil || b < 1 || b > 250 {
			err = fmt.Errorf("%q: a string is .LEN (bytes) and H, L, D or E", s)
			return
		}
		strBytes = b
	case dataType == "BIT":
		b, e := strconv.Atoi(suffix)
		if e != nil || b < 0 || b > 15 {
			err = fmt.Errorf("%q: the bit is .0 to .15", s)
			return
		}
		bit = b
	default:
		err = fmt.Errorf("%q: only BIT and STRING take a .suffix", s)
		return
	}
	regs := map[string]int{"INT32": 2, "UINT32": 2, "FLOAT32": 2, "INT64": 4, "UINT64": 4, "FLOAT64": 4}[dataType]
	if regs == 0 {
		regs = 1
	}
	o, known := neuronOrders[regs][endian]
	if !known || endian != "" && (dataType == "BIT" || dataType == "STRING") {
		err = fmt.Errorf("%q: #%s is not a byte order of %s", s, endian, dataType)
		return
	}
	order = o
	return
}

// neuronRow reads a row of Neuron's tag template: group, name, address, attribute, type,
// description, precision, decimal. The group becomes the measurement; decimal is the factor the
// value is multiplied by (Neuron's tag setting; its import page swaps the two names), precision
// the digits Neuron shows, which tagpipe does not round to.
func (s *sheet) neuronRow(r int, l *tagList) (field, bool) {
	var f field
	f.Name = s.cell(r, "name")
	if f.Name == "" {
		s.bad(r, "name", Bad, "empty; the row is left out")
		return f, false
	}
	attr := strings.ToLower(s.cell(r, "attribute"))
	if n, err := strconv.Atoi(attr); err == nil {
		if n&1 == 0 && n&4 == 0 {
			s.bad(r, "attribute", Note, "%d has neither read (1) nor subscribe (4): tagpipe only reads; the row is left out", n)
			return f, false
		}
	} else if !strings.Contains(attr, "read") && !strings.Contains(attr, "subscribe") {
		s.bad(r, "attribute", Note, "%q: not read or subscribe: tagpipe only reads; the row is left out", s.cell(r, "attribute"))
		return f, false
	}
	nt := strings.ToUpper(s.cell(r, "type"))
	dt, ok := neuronTypes[nt]
	if !ok {
		s.bad(r, "type", Bad, "%q: want INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT, DOUBLE, BIT or STRING; the row is left out", s.cell(r, "type"))
		return f, false
	}
	slave, register, addr, bit, order, strBytes, strOrder, err := neuronAddress(s.cell(r, "address"), dt)
	if err != nil {
		s.bad(r, "address", Bad, "%v; the row is left out", err)
		return f, false
	}
	if l.slave < 0 {
		l.slave = slave
	} else if slave != l.slave {
		s.bad(r, "address", Bad, "slave %d: the rows above are slave %d, and a profile is one device's map; "+
			"import this slave's rows with another --profile; the row is left out", slave, l.slave)
		return f, false
	}
	if register != "holding" {
		f.Register = register
	}
	f.Address, f.ByteOrder = &addr, order
	if !s.typedField(r, &f, register, dt, "type", nt, bit, strBytes, strOrder) {
		return f, false
	}
	if v := s.cell(r, "decimal"); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil:
			s.bad(r, "decimal", Bad, "%q: want a number (the value is multiplied by it); the row is left out", v)
			return f, false
		case x != 0 && x != 1:
			if dt == "STRING" || dt == "BIT" {
				s.bad(r, "decimal", Bad, "a %s is not scaled; the row is left out", nt)
				return f, false
			}
			f.Scale = &x
		}
	}
	if v := s.cell(r, "precision"); v != "" && v != "0" {
		s.bad(r, "precision", Approximate, "%s digits: tagpipe writes the value unrounded", v)
	}
	f.Measurement = s.cell(r, "group")
	f.comment = s.cell(r, "description")
	if err := checkField(&f.Field); err != nil {
		s.bad(r, err.col, Bad, "%v; the row is left out", err.err)
		return f, false
	}
	return f, true
}
