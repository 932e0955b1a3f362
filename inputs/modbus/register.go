package modbus

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tagpipe/tagpipe/models"
)

// regKind is a Modbus table; its value is the function code that reads it.
type regKind uint8

const (
	kindCoil     regKind = 1 // FC 1, read coils
	kindDiscrete regKind = 2 // FC 2, read discrete inputs
	kindHolding  regKind = 3 // FC 3, read holding registers
	kindInput    regKind = 4 // FC 4, read input registers
)

var kindNames = [...]string{kindCoil: "coil", kindDiscrete: "discrete", kindHolding: "holding", kindInput: "input"}

func (k regKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "table " + strconv.Itoa(int(k))
}

func (k regKind) isBits() bool { return k == kindCoil || k == kindDiscrete }

func parseKind(s string) (regKind, bool) {
	switch strings.ToLower(s) {
	case "coil", "coils":
		return kindCoil, true
	case "discrete", "discrete_input", "discrete_inputs":
		return kindDiscrete, true
	case "", "holding", "holding_register", "holding_registers":
		return kindHolding, true
	case "input", "input_register", "input_registers":
		return kindInput, true
	}
	return 0, false
}

// dataType is how a field's registers (or bit) are read.
type dataType uint8

const (
	typeBit dataType = iota + 1
	typeInt8L
	typeInt8H
	typeUint8L
	typeUint8H
	typeInt16
	typeUint16
	typeInt32
	typeUint32
	typeInt64
	typeUint64
	typeFloat16
	typeFloat32
	typeFloat64
	typeFixed  // signed integer with implied decimals, 1, 2 or 4 registers
	typeUfixed // unsigned integer with implied decimals
	typeString
)

var typeNames = map[string]dataType{
	"BIT": typeBit, "INT8L": typeInt8L, "INT8H": typeInt8H, "UINT8L": typeUint8L, "UINT8H": typeUint8H,
	"INT16": typeInt16, "UINT16": typeUint16, "INT32": typeInt32, "UINT32": typeUint32,
	"INT64": typeInt64, "UINT64": typeUint64, "FLOAT16": typeFloat16, "FLOAT32": typeFloat32,
	"FLOAT64": typeFloat64, "FIXED": typeFixed, "UFIXED": typeUfixed, "STRING": typeString,
}

// typeList is for messages, in the order of the documentation.
const typeList = "BIT, INT8L, INT8H, UINT8L, UINT8H, INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT16, FLOAT32, FLOAT64, FIXED, UFIXED, STRING"

// registers returns how many registers a type takes; FIXED, UFIXED and STRING take length.
func (t dataType) registers() int {
	switch t {
	case typeInt32, typeUint32, typeFloat32:
		return 2
	case typeInt64, typeUint64, typeFloat64:
		return 4
	}
	return 1
}

// byteOrder says how a device lays out the bytes of a value; A is the most significant byte.
// byteSwap: the two bytes of each register are swapped (BA, BADC; DCBA too). wordSwap: the
// registers come least significant first (CDAB; DCBA too).
type byteOrder struct {
	byteSwap, wordSwap bool
}

// parseByteOrder reads a byte order; wide says whether the type spans several registers
// (which the two-letter forms cannot describe).
func parseByteOrder(s string, wide bool) (byteOrder, error) {
	switch strings.ToUpper(s) {
	case "", "ABCD", "BIG":
		return byteOrder{}, nil
	case "DCBA", "LITTLE":
		return byteOrder{byteSwap: true, wordSwap: true}, nil
	case "BADC":
		return byteOrder{byteSwap: true}, nil
	case "CDAB":
		return byteOrder{wordSwap: true}, nil
	case "AB":
		if !wide {
			return byteOrder{}, nil
		}
	case "BA":
		if !wide {
			return byteOrder{byteSwap: true}, nil
		}
	default:
		return byteOrder{}, fmt.Errorf("%q is not a byte order (ABCD or big, DCBA or little, BADC, CDAB, or AB, BA for one-register types)", s)
	}
	return byteOrder{}, fmt.Errorf("%q is for one-register types; a value of several registers needs ABCD, DCBA, BADC or CDAB", s)
}

// outType is the type of the field's value in the metric.
type outType uint8

const (
	outNative outType = iota // the data type's own: integers stay integers
	outFloat
	outInt
	outUint
)

func parseOutput(s string) (outType, bool) {
	switch strings.ToLower(s) {
	case "", "native":
		return outNative, true
	case "float", "float64":
		return outFloat, true
	case "int", "int64":
		return outInt, true
	case "uint", "uint64":
		return outUint, true
	}
	return 0, false
}

// fieldSpec is a field compiled for decoding. Profiles hold them; they are read-only after Init.
type fieldSpec struct {
	name    string
	kind    regKind
	address uint16
	typ     dataType
	order   byteOrder
	regs    uint16 // registers (register kinds) or 1 (bit kinds)
	bit     uint8  // BIT of a register
	divisor float64
	scale   float64
	offset  float64
	scaled  bool // scale != 1 or offset != 0
	out     outType
	group   int // index of the metric it goes to, in its profile
	pos     int // place among the group's fields
	strSlot int // index of the device's cache of the last string (STRING only)
}

// end returns the address after the field.
func (f *fieldSpec) end() int { return int(f.address) + int(f.regs) }

// decodeRaw assembles n register bytes (wire order) into an integer, most significant byte
// first, according to the byte order.
func decodeRaw(b []byte, n int, o byteOrder) uint64 {
	switch n {
	case 2:
		if o.byteSwap {
			return uint64(b[1])<<8 | uint64(b[0])
		}
		return uint64(b[0])<<8 | uint64(b[1])
	case 4:
		v := binary.BigEndian.Uint32(b)
		if o.byteSwap {
			v = v&0x00FF00FF<<8 | v>>8&0x00FF00FF
		}
		if o.wordSwap {
			v = v<<16 | v>>16
		}
		return uint64(v)
	case 8:
		v := binary.BigEndian.Uint64(b)
		if o.byteSwap {
			v = v&0x00FF00FF00FF00FF<<8 | v>>8&0x00FF00FF00FF00FF
		}
		if o.wordSwap {
			v = v<<48 | v<<16&0x0000FFFF00000000 | v>>16&0x00000000FFFF0000 | v>>48
		}
		return v
	}
	var v uint64
	words := n / 2
	for i := range n {
		w, j := i/2, i%2
		if o.wordSwap {
			w = words - 1 - w
		}
		if o.byteSwap {
			j = 1 - j
		}
		v = v<<8 | uint64(b[2*w+j])
	}
	return v
}

// float16 converts IEEE 754 half precision bits.
func float16(h uint16) float64 {
	exp, frac := int(h>>10&0x1f), float64(h&0x3ff)
	var v float64
	switch exp {
	case 0: // zero and subnormals
		v = math.Ldexp(frac, -24)
	case 0x1f:
		v = math.Inf(1)
		if frac != 0 {
			v = math.NaN()
		}
	default:
		v = math.Ldexp(frac+1024, exp-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

// decodeRegisters decodes f from b, the bytes of its registers as they came on the wire.
// len(b) must be at least 2·f.regs. Only STRING fields may allocate (a new string when the text
// changed: last is the field's previous string, reused when equal); scratch must hold 2·f.regs.
func (f *fieldSpec) decodeRegisters(b []byte, last string, scratch []byte) models.Field {
	switch f.typ {
	case typeString:
		return models.String(f.name, decodeString(b[:2*f.regs], f.order.byteSwap, last, scratch))
	case typeBit:
		raw := decodeRaw(b, 2, f.order)
		return f.emitBool(raw>>f.bit&1 == 1)
	}
	n := 2 * int(f.regs)
	raw := decodeRaw(b, n, f.order)
	switch f.typ {
	case typeInt8L:
		return f.emitInt(int64(int8(raw)))
	case typeInt8H:
		return f.emitInt(int64(int8(raw >> 8)))
	case typeUint8L:
		return f.emitUint(raw & 0xff)
	case typeUint8H:
		return f.emitUint(raw >> 8 & 0xff)
	case typeInt16:
		return f.emitInt(int64(int16(raw)))
	case typeUint16, typeUint32, typeUint64:
		return f.emitUint(raw)
	case typeInt32:
		return f.emitInt(int64(int32(raw)))
	case typeInt64:
		return f.emitInt(int64(raw))
	case typeFloat16:
		return f.emitFloat(float16(uint16(raw)))
	case typeFloat32:
		return f.emitFloat(float64(math.Float32frombits(uint32(raw))))
	case typeFloat64:
		return f.emitFloat(math.Float64frombits(raw))
	case typeFixed:
		shift := 64 - 8*n // sign-extend from n bytes
		return f.emitFloat(float64(int64(raw<<shift)>>shift) / f.divisor)
	case typeUfixed:
		return f.emitFloat(float64(raw) / f.divisor)
	}
	return models.Field{}
}

// decodeString reads text from register bytes: with swap the first character of each register
// is its low byte. The text ends at the first NUL; trailing spaces are cut.
func decodeString(b []byte, swap bool, last string, scratch []byte) string {
	if swap {
		s := scratch[:len(b)]
		for i := 0; i+1 < len(b); i += 2 {
			s[i], s[i+1] = b[i+1], b[i]
		}
		b = s
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimRight(b, " ")
	if string(b) == last { // no allocation: the compiler compares in place
		return last
	}
	return string(b)
}

// bitAt returns bit i of a coil or discrete answer (LSB first within each byte).
func bitAt(b []byte, i int) bool { return b[i>>3]>>(i&7)&1 == 1 }

func (f *fieldSpec) emitBool(v bool) models.Field {
	if f.scaled || f.out != outNative {
		var n uint64
		if v {
			n = 1
		}
		return f.emitUint(n)
	}
	return models.Bool(f.name, v)
}

func (f *fieldSpec) emitInt(v int64) models.Field {
	if f.scaled {
		return f.emitScaled(float64(v))
	}
	switch f.out {
	case outFloat:
		return models.Float(f.name, float64(v))
	case outUint:
		return models.Uint(f.name, uint64(max(v, 0)))
	}
	return models.Int(f.name, v)
}

func (f *fieldSpec) emitUint(v uint64) models.Field {
	if f.scaled {
		return f.emitScaled(float64(v))
	}
	switch f.out {
	case outFloat:
		return models.Float(f.name, float64(v))
	case outInt:
		return models.Int(f.name, int64(min(v, math.MaxInt64)))
	}
	return models.Uint(f.name, v)
}

func (f *fieldSpec) emitFloat(v float64) models.Field {
	if f.scaled {
		return f.emitScaled(v)
	}
	return f.convertFloat(v)
}

func (f *fieldSpec) emitScaled(v float64) models.Field {
	return f.convertFloat(v*f.scale + f.offset)
}

// convertFloat gives a float the field's output type: integers are rounded to the nearest and
// clamped to the type's range (NaN gives 0).
func (f *fieldSpec) convertFloat(v float64) models.Field {
	switch f.out {
	case outInt:
		r := math.Round(v)
		switch {
		case r != r:
			r = 0
		case r >= math.MaxInt64:
			return models.Int(f.name, math.MaxInt64)
		case r <= math.MinInt64:
			return models.Int(f.name, math.MinInt64)
		}
		return models.Int(f.name, int64(r))
	case outUint:
		r := math.Round(v)
		switch {
		case r != r || r <= 0:
			return models.Uint(f.name, 0)
		case r >= math.MaxUint64:
			return models.Uint(f.name, math.MaxUint64)
		}
		return models.Uint(f.name, uint64(r))
	}
	return models.Float(f.name, v)
}
