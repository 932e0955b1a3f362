package series

import (
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// The table forgets a series ttl after its last Get, a few slots per Sweep, and reuses the slot
// (with its value) for the next new series.
func TestTableSweep(t *testing.T) {
	tb := NewTable[[]int](time.Minute)
	min := int64(time.Minute)
	for k := uint64(1); k <= 5; k++ {
		v, isNew := tb.Get(k, 0)
		if !isNew {
			t.Fatalf("key %d: not new", k)
		}
		*v = append(*v, int(k))
	}
	tb.Get(3, min/2) // 3 seen again at 30 s
	// At 60 s: 1, 2, 4, 5 are a minute old, 3 only 30 s. Sweep two slots at a time.
	if n := tb.Sweep(min, 2, nil); n != 2 || tb.Len() != 3 {
		t.Fatalf("first sweep of 2 slots forgot %d, %d left; want 2 and 3", n, tb.Len())
	}
	var forgot []int
	if n := tb.Sweep(min, 2, func(v *[]int) { forgot = append(forgot, (*v)[0]) }); n != 1 || len(forgot) != 1 || forgot[0] != 4 {
		t.Fatalf("second sweep (slots 3, 4) forgot %d %v; want 1 [4]", n, forgot)
	}
	if n := tb.Sweep(min, 2, nil); n != 1 || tb.Len() != 1 { // slots 5, then 1 again (already free)
		t.Fatalf("third sweep forgot %d, %d left; want 1 and 1", n, tb.Len())
	}
	if _, ok := tb.Lookup(3); !ok {
		t.Fatal("3 was forgotten though seen 30 s ago")
	}
	// A new series takes a freed slot: its value is the old one, to reuse (and reset).
	v, isNew := tb.Get(99, min)
	if !isNew || len(*v) != 1 || len(tb.slots) != 5 {
		t.Fatalf("new series: new %v, old value %v, %d slots; want a reused slot of 5", isNew, *v, len(tb.slots))
	}
	n := 0
	tb.Range(func(uint64, int64, *[]int) bool { n++; return true })
	if n != 2 {
		t.Fatalf("Range saw %d series, want 2", n)
	}
}

func TestTableNoTTL(t *testing.T) {
	tb := NewTable[int](0)
	tb.Get(1, 0)
	if tb.Sweep(int64(1000*time.Hour), 10, nil) != 0 || tb.Len() != 1 {
		t.Fatal("a table without ttl forgot a series")
	}
}

func TestFind(t *testing.T) {
	type st struct{ key string }
	keyOf := func(s *st) string { return s.key }
	s := []st{{"a"}, {"b"}, {"c"}}
	for _, c := range []struct {
		hint int
		key  string
		want int
	}{{1, "b", 1}, {0, "c", 2}, {7, "a", 0}, {0, "x", -1}} {
		if got := Find(s, c.hint, c.key, keyOf); got != c.want {
			t.Errorf("Find(hint %d, %q) = %d, want %d", c.hint, c.key, got, c.want)
		}
	}
}

// Grow hands out slices from one block, each capped so that an append cannot reach into the
// next one; a slice with room is returned as it is.
func TestFieldsGrow(t *testing.T) {
	var a Fields
	x := []models.Field{models.Int("a", 1)}
	y := []models.Field{models.Int("b", 2), models.Int("c", 3)}
	gx := a.Grow(x, 2)
	gy := a.Grow(y, 2)
	if len(gx) != 1 || cap(gx) != 3 || len(gy) != 2 || cap(gy) != 4 || gx[0].IntV() != 1 || gy[1].IntV() != 3 {
		t.Fatalf("len/cap %d/%d and %d/%d", len(gx), cap(gx), len(gy), cap(gy))
	}
	gx = append(gx, models.Int("x1", 10), models.Int("x2", 11))
	if &gx[:3][2] == &gy[:1][0] || gy[0].IntV() != 2 {
		t.Fatal("appending to the first slice wrote into the second")
	}
	gx = append(gx, models.Int("x3", 12)) // past its room: Go copies it elsewhere
	if gy[0].IntV() != 2 || gx[3].IntV() != 12 {
		t.Fatal("an append past the room touched the block")
	}
	if g := a.Grow(gy, 2); &g[0] != &gy[0] {
		t.Fatal("a slice with room was copied")
	}
	big := make([]models.Field, blockFields/8)
	if g := a.Grow(big, 1); cap(g) != len(big)+1 {
		t.Fatalf("a large slice: cap %d, want its own allocation of %d", cap(g), len(big)+1)
	}
	// Allocation: one block serves many metrics.
	fs := make([]models.Field, 8)
	allocs := testing.AllocsPerRun(1000, func() { a.Grow(fs, 2) })
	if allocs > 0.02 { // one 1,024-field block per 102 slices of 10
		t.Errorf("%.3f allocations per Grow, want about 1/102", allocs)
	}
}

func TestBitsField(t *testing.T) {
	for _, f := range []models.Field{
		models.Float("f", -2.5), models.Int("i", -7), models.Uint("u", 1<<63), models.Bool("b", true),
		models.Bool("b", false), models.String("s", "x"),
	} {
		g := Field(f.Key, f.Type(), Bits(&f), f.StringV())
		if !g.Equal(f) {
			t.Errorf("%v → %v", f.Value(), g.Value())
		}
	}
	if Number(models.TypeInt, Bits(&[]models.Field{models.Int("i", -7)}[0])) != -7 {
		t.Error("Number of an int")
	}
}
