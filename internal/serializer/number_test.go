package serializer

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// tenth and fifth make 0.30000000000000004 at run time (tenth + fifth as constants is exactly 0.3).
var tenth, fifth = 0.1, 0.2

// floatCases are the edges of AppendFloat's fast path and of strconv's 'g' format.
var floatCases = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 0.2, tenth + fifth, 0.25, -0.25, 230.5, 49.98, 1234, -1234,
	1e-4, 1e-5, 9.9999e-5, 0.00012, 1e-7, 1.5e-7, 999999, 999999.5, 999999.9999999999, 1e6, 1e6 + 0.5,
	1234567, 1e15, 1e16, 1e20, 1e21, 1e22, 1e23, 1 << 50, 1<<50 + 0.5, 1<<53 - 1, 1 << 53, 1<<53 + 2,
	math.MaxInt64, math.MaxFloat64, math.SmallestNonzeroFloat64, 2.2250738585072014e-308,
	2.225073858507201e-308, // subnormal
	math.NaN(), math.Inf(1), math.Inf(-1), 12345.600000000002, 0.3, 2.5e15, 9007199254740993,
}

func checkFloat(t *testing.T, v float64) {
	t.Helper()
	want := strconv.AppendFloat([]byte("x="), v, 'g', -1, 64)
	if got := AppendFloat([]byte("x="), v); string(got) != string(want) {
		t.Fatalf("%b (%v): got %s, strconv writes %s", v, v, got, want)
	}
}

// AppendFloat writes what strconv writes: on the edges, on random bit patterns (every exponent),
// and on the values its fast path is for (integers, short decimals) at every scale it takes.
func TestAppendFloat(t *testing.T) {
	for _, v := range floatCases {
		checkFloat(t, v)
		checkFloat(t, -v)
		checkFloat(t, math.Nextafter(v, 0))
		checkFloat(t, math.Nextafter(v, math.Inf(1)))
	}
	r := rand.New(rand.NewPCG(1, 2))
	n := 300_000
	if testing.Short() {
		n = 30_000
	}
	for range n {
		v := randomFloat(r)
		checkFloat(t, v)
		checkFloat(t, math.Nextafter(v, 0))
		checkFloat(t, math.Nextafter(v, math.Inf(1)))
	}
}

// randomFloat returns a random bit pattern (every exponent, NaN and infinities included), a
// decimal of up to 16 digits with up to 20 after the point, an integer below and around 2⁵³, or
// a reading as a device's scale makes it.
func randomFloat(r *rand.Rand) float64 {
	switch r.IntN(6) {
	case 0:
		return math.Float64frombits(r.Uint64())
	case 1:
		w := r.Int64N(int64(math.Pow10(r.IntN(16) + 1)))
		return float64(w) / math.Pow10(r.IntN(21))
	case 2:
		return float64(r.Int64N(1 << 54))
	case 3:
		return float64(r.IntN(65536)) * 0.1
	case 4:
		return float64(r.IntN(1<<31)-1<<30) * 0.01
	}
	return r.Float64() * 1e3
}

// The fast path covers what the inputs make, so it is worth having: integers and readings of a
// few decimals take it, and strconv is left the rest.
func TestShortDecimalCovers(t *testing.T) {
	for _, v := range []float64{1234, 230.5, 49.98, 0.001, 12345.6, 1e6 + 0.25, 0.0001, 1 << 52} {
		if _, _, ok := shortDecimal(v); !ok {
			t.Errorf("%v does not take the fast path", v)
		}
	}
	for _, v := range []float64{tenth + fifth, 12345.600000000002, 1<<50 + 0.5, math.Pi} {
		if _, _, ok := shortDecimal(v); ok {
			t.Errorf("%v takes the fast path", v)
		}
	}
}

// appendInt and appendUint write what strconv does, on the edges of every digit count and on
// random values of every length.
func TestAppendInt(t *testing.T) {
	check := func(v int64) {
		t.Helper()
		if got, want := appendInt([]byte("x="), v), strconv.AppendInt([]byte("x="), v, 10); string(got) != string(want) {
			t.Fatalf("%d: got %s", v, got)
		}
		if got, want := appendUint([]byte("x="), uint64(v)), strconv.AppendUint([]byte("x="), uint64(v), 10); string(got) != string(want) {
			t.Fatalf("%d: got %s", uint64(v), got)
		}
	}
	for _, v := range []int64{0, 1, 9, math.MaxInt64, math.MinInt64, -1} {
		check(v)
	}
	for p := int64(1); p <= 1e18; p *= 10 {
		for _, v := range []int64{p - 1, p, p + 1, 2*p - 1, 9 * p} {
			check(v)
			check(-v)
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 100_000 {
		check(int64(r.Uint64() >> r.IntN(64)))
	}
	if got := appendUint(nil, math.MaxUint64); string(got) != "18446744073709551615" {
		t.Fatalf("MaxUint64: %s", got)
	}
}

func FuzzAppendFloat(f *testing.F) {
	for _, v := range floatCases {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, bits uint64) { checkFloat(t, math.Float64frombits(bits)) })
}

func BenchmarkAppendFloat(b *testing.B) {
	values := []float64{230.5, 1234, 49.98, 1234567.25, 12345.600000000002, tenth + fifth}
	buf := make([]byte, 0, 64)
	for _, impl := range []struct {
		name string
		f    func([]byte, float64) []byte
	}{
		{"fast", AppendFloat},
		{"strconv", func(dst []byte, v float64) []byte { return strconv.AppendFloat(dst, v, 'g', -1, 64) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			for i := range b.N {
				buf = impl.f(buf[:0], values[i%len(values)])
			}
		})
	}
}
