package serializer

import (
	"math"
	"math/bits"
	"slices"
	"strconv"
)

// AppendFloat appends v as strconv.AppendFloat(dst, v, 'g', -1, 64) does, byte for byte (the
// shortest decimal that parses back to v; exponent form below 1e-4 and from 1e6 up), and is what
// line protocol and JSON write for a float field.
//
// Written here because strconv's shortest formatting was a quarter of the pipeline's CPU
// (BenchmarkPipeline) while most readings are integers or short decimals (230.5, 49.98, 1234):
// those take a path of one multiplication and one division below, everything else goes to
// strconv. The path is exact, not a heuristic: see shortDecimal. TestAppendFloat and
// FuzzAppendFloat compare it with strconv.
func AppendFloat(dst []byte, v float64) []byte {
	a := math.Abs(v)
	if !(a >= 1e-4 && a < 1<<53) { // also NaN
		if v == 0 {
			if math.Signbit(v) {
				return append(dst, '-', '0')
			}
			return append(dst, '0')
		}
		return strconv.AppendFloat(dst, v, 'g', -1, 64)
	}
	w, frac, ok := shortDecimal(a)
	if !ok {
		return strconv.AppendFloat(dst, v, 'g', -1, 64)
	}
	if v < 0 {
		dst = append(dst, '-')
	}
	if frac == 0 && w < 1e6 {
		return appendUint(dst, w) // %f without a point
	}
	// The digits of w without its trailing zeros (at most 15: w < 2⁵³, or frac ≤ maxFrac):
	// d holds nd digits, dp of them before the point.
	if w%1e8 == 0 {
		w, frac = w/1e8, frac-8
	}
	if w%1e4 == 0 {
		w, frac = w/1e4, frac-4
	}
	if w%1e2 == 0 {
		w, frac = w/1e2, frac-2
	}
	if w%10 == 0 {
		w, frac = w/10, frac-1
	}
	// Written in place: the digits first, one byte to the right of where they go, then moved
	// left around the point.
	nd := decimalLen(w)
	dp := nd - frac
	dst = slices.Grow(dst, 24) // sign, 16 digits, point, exponent, or "0.000" and 6 digits
	l := len(dst)
	b := dst[l : l+24]
	if exp := dp - 1; exp >= 6 { // %e, as strconv's 'g' for a shortest format; exp < -4 cannot be
		putDigits(b[1:1+nd], w)
		b[0] = b[1]
		n := 1
		if nd > 1 {
			b[1] = '.'
			n = nd + 1
		}
		b[n], b[n+1], b[n+2], b[n+3] = 'e', '+', byte('0'+exp/10), byte('0'+exp%10)
		return dst[:l+n+4]
	}
	// %f
	switch {
	case dp >= nd: // only for integers ≥ 1e6, which are %e: kept for completeness
		dst = appendUint(dst, w)
		for range dp - nd {
			dst = append(dst, '0')
		}
		return dst
	case dp > 0:
		putDigits(b[1:1+nd], w)
		for i := range dp {
			b[i] = b[i+1]
		}
		b[dp] = '.'
		return dst[:l+nd+1]
	}
	b[0], b[1] = '0', '.'
	n := 2
	for range -dp {
		b[n] = '0'
		n++
	}
	putDigits(b[n:n+nd], w)
	return dst[:l+n+nd]
}

// pairs holds the two digits of 0 to 99.
const pairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// putDigits writes the decimal digits of w into b, which is decimalLen(w) long, two at a time.
func putDigits(b []byte, w uint64) {
	i := len(b)
	for w >= 100 {
		q := w / 100
		r := w - q*100
		i -= 2
		b[i], b[i+1] = pairs[2*r], pairs[2*r+1]
		w = q
	}
	if w >= 10 {
		b[i-2], b[i-1] = pairs[2*w], pairs[2*w+1]
		return
	}
	b[i-1] = byte('0' + w)
}

// pow10u holds the powers of ten a uint64 can hold.
var pow10u = [...]uint64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
	1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// decimalLen returns how many decimal digits w has.
func decimalLen(w uint64) int {
	// ⌊bits·log₁₀2⌋ (1233/2¹² is just below log₁₀2) is the number of digits or one less.
	t := bits.Len64(w) * 1233 >> 12
	if w >= pow10u[t] {
		return t + 1
	}
	return max(t, 1)
}

// appendUint appends w as strconv.AppendUint(dst, w, 10) does, writing the digits in place
// instead of into a buffer it then copies: integers and timestamps were a tenth of
// BenchmarkPipeline's time in strconv.
func appendUint(dst []byte, w uint64) []byte {
	n := decimalLen(w)
	dst = slices.Grow(dst, n)
	l := len(dst)
	dst = dst[:l+n]
	putDigits(dst[l:], w)
	return dst
}

// appendInt appends v as strconv.AppendInt(dst, v, 10) does.
func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendUint(append(dst, '-'), uint64(-v)) // -MinInt64 is MinInt64, which as a uint64 is right
	}
	return appendUint(dst, uint64(v))
}

// pow10 holds the powers of ten up to 10^maxFrac.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6}

// maxFrac is the most digits after the point that shortDecimal looks for: readings rarely have
// more, and looking further costs the values that have none a division before strconv.
const maxFrac = len(pow10) - 1

// shortDecimal returns the shortest decimal that rounds to a (1e-4 ≤ a < 2⁵³) as w/10^frac
// (w may end in zeros), or ok false when that decimal has more than maxFrac digits after the
// point.
//
// An integral a below 2⁵³ is its own shortest decimal: every integer there is a float64, so no
// other integer, and no decimal with fewer digits (which would be an integer too), rounds to a.
//
// Otherwise the path scales a by 10^J (J ≤ maxFrac, and a·10^J < 2⁵⁰) and rounds to an integer
// w. If a decimal of j ≤ J digits after the point rounds to a, it is within half an ulp of a, so
// its w_j·10^(J−j) is within 10^J·ulp(a)/2 ≤ ulp(a·10^J) ≤ 1/8 of the exact a·10^J, and the
// product is off by at most 1/16 more: w is exactly w_j·10^(J−j). The shortest decimal is then
// w without its trailing zeros (a shorter one would leave more of them), and it is unique, as the
// interval of decimals rounding to a is at most 1/4 wide at that scale. float64(w)/10^J is the
// correctly rounded value of the decimal (both operands are exact), so comparing it with a checks
// that the decimal rounds to a; when no decimal that short does, the check fails.
func shortDecimal(a float64) (w uint64, frac int, ok bool) {
	if w := uint64(a); float64(w) == a {
		return w, 0, true
	}
	if a >= 1<<50 {
		return 0, 0, false
	}
	// a < 2^(e+1), so a·10^J < 2⁵⁰ for J ≤ (49−e)·log₁₀2 (78913/2¹⁸ is just below log₁₀2).
	e := int(math.Float64bits(a)>>52&0x7ff) - 1023
	j := min((49-e)*78913>>18, maxFrac)
	// s+0.5 is exact (s < 2⁵⁰ has an ulp of 1/8 at most) and s > 0: this rounds to nearest.
	w = uint64(a*pow10[j] + 0.5)
	if float64(w)/pow10[j] != a {
		return 0, 0, false
	}
	return w, j, true
}
