package models

import (
	"math"
	"testing"
	"time"
	"unsafe"
)

func TestFieldValues(t *testing.T) {
	cases := []struct {
		f    Field
		typ  ValueType
		want any
	}{
		{Float("f", 3.25), TypeFloat, 3.25},
		{Float("nan", math.NaN()), TypeFloat, nil}, // checked apart
		{Int("i", -7), TypeInt, int64(-7)},
		{Uint("u", math.MaxUint64), TypeUint, uint64(math.MaxUint64)},
		{Bool("b", true), TypeBool, true},
		{Bool("nb", false), TypeBool, false},
		{String("s", "on"), TypeString, "on"},
	}
	for _, c := range cases {
		if c.f.Type() != c.typ {
			t.Errorf("%s: type %v, want %v", c.f.Key, c.f.Type(), c.typ)
		}
		if c.want != nil && c.f.Value() != c.want {
			t.Errorf("%s: value %#v, want %#v", c.f.Key, c.f.Value(), c.want)
		}
	}
	if !math.IsNaN(Float("nan", math.NaN()).FloatV()) {
		t.Error("NaN lost")
	}
	if n, ok := Bool("b", true).Number(); !ok || n != 1 {
		t.Errorf("bool as number: %v %v", n, ok)
	}
	if _, ok := String("s", "x").Number(); ok {
		t.Error("a string is no number")
	}
	if _, ok := FieldOf("x", []int{1}); ok {
		t.Error("a slice is no field")
	}
	if f, ok := FieldOf("x", uint16(9)); !ok || f.Type() != TypeUint || f.UintV() != 9 {
		t.Errorf("FieldOf(uint16): %v %v", f, ok)
	}
}

func TestNewSortsAndDedupsTags(t *testing.T) {
	in := []Tag{{"z", "1"}, {"a", "2"}, {"m", "3"}, {"a", "4"}}
	m := New("m", in, []Field{Int("v", 1)}, time.Unix(1, 0))
	want := []Tag{{"a", "4"}, {"m", "3"}, {"z", "1"}}
	if len(m.Tags) != len(want) {
		t.Fatalf("tags %v, want %v", m.Tags, want)
	}
	for i := range want {
		if m.Tags[i] != want[i] {
			t.Fatalf("tags %v, want %v", m.Tags, want)
		}
	}
	if in[0].Key != "z" {
		t.Error("New changed the caller's unsorted tags in place")
	}
	sorted := []Tag{{"a", "1"}, {"b", "2"}}
	m2 := New("m", sorted, nil, time.Time{})
	if &m2.Tags[0] != &sorted[0] {
		t.Error("sorted tags should be used as they are, not copied")
	}
}

func TestSetTagCopiesSharedTags(t *testing.T) {
	shared := []Tag{{"device", "d1"}, {"line", "A"}}
	m1 := New("m", shared, nil, time.Time{})
	m2 := New("m", shared, nil, time.Time{})
	m1.SetTag("line", "B")
	m1.SetTag("area", "north")
	m1.SetTag("zone", "z")
	if v, _ := m2.Tag("line"); v != "A" || len(m2.Tags) != 2 {
		t.Fatalf("SetTag on one metric changed another that shares its tags: %v", m2.Tags)
	}
	want := []Tag{{"area", "north"}, {"device", "d1"}, {"line", "B"}, {"zone", "z"}}
	for i := range want {
		if m1.Tags[i] != want[i] {
			t.Fatalf("tags %v, want %v", m1.Tags, want)
		}
	}
	m1.RemoveTag("device")
	m1.RemoveTag("nope")
	if _, ok := m1.Tag("device"); ok || len(m1.Tags) != 3 || shared[0].Value != "d1" {
		t.Fatalf("RemoveTag: %v (shared %v)", m1.Tags, shared)
	}
}

func TestFieldsEditing(t *testing.T) {
	m := New("m", nil, []Field{Int("a", 1), Int("b", 2)}, time.Time{})
	m.SetField(Float("a", 1.5))
	m.SetField(Bool("c", true))
	m.RemoveField("b")
	if len(m.Fields) != 2 || m.Fields[0].FloatV() != 1.5 || m.Fields[1].Key != "c" {
		t.Fatalf("fields %v", m.Fields)
	}
	c := m.Copy()
	c.SetField(Int("a", 9))
	if f, _ := m.Field("a"); f.Type() != TypeFloat {
		t.Fatal("Copy shares fields with the original")
	}
}

func TestSeriesIdentity(t *testing.T) {
	a := New("power", []Tag{{"device", "m1"}, {"line", "A"}}, nil, time.Time{})
	b := New("power", []Tag{{"line", "A"}, {"device", "m1"}}, nil, time.Time{})
	c := New("power", []Tag{{"device", "m1"}, {"line", "B"}}, nil, time.Time{})
	// Tag boundaries count: "ab"="c" is not "a"="bc".
	d := New("power", []Tag{{"ab", "c"}}, nil, time.Time{})
	e := New("power", []Tag{{"a", "bc"}}, nil, time.Time{})
	if a.SeriesHash() != b.SeriesHash() || a.SeriesKey() != "power,device=m1,line=A" {
		t.Fatalf("same series, different identity: %x %x %q", a.SeriesHash(), b.SeriesHash(), a.SeriesKey())
	}
	if a.SeriesHash() == c.SeriesHash() || d.SeriesHash() == e.SeriesHash() {
		t.Fatal("different series share a hash")
	}
	if HashTags("power", a.Tags, []string{"device"}) != HashTags("power", c.Tags, []string{"device"}) {
		t.Fatal("HashTags on device only must ignore line")
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = a.SeriesHash() }); allocs != 0 {
		t.Fatalf("SeriesHash allocates %v", allocs)
	}
}

func TestNewMetricCarvesWithoutSharing(t *testing.T) {
	tags := []Tag{{"device", "d"}}
	a := NewMetric("a", tags, 2, time.Unix(1, 0))
	b := NewMetric("b", tags, 2, time.Unix(2, 0))
	a.Fields = append(a.Fields, Int("x", 1), Int("y", 2))
	b.Fields = append(b.Fields, Int("x", 3), Int("y", 4))
	a.Fields = append(a.Fields, Int("z", 5)) // past its room: must not spill into b's
	if b.Fields[0].IntV() != 3 || len(b.Fields) != 2 || a.Fields[2].IntV() != 5 || a.Name != "a" || !b.Time.Equal(time.Unix(2, 0)) {
		t.Fatalf("a %v b %v", a.Fields, b.Fields)
	}
	if allocs := testing.AllocsPerRun(1000, func() { NewMetric("m", tags, 10, time.Time{}) }); allocs > 0.1 {
		t.Fatalf("NewMetric allocates %v per metric; want it amortized over chunks", allocs)
	}
	big := MakeFields(10000)
	if cap(big) != 10000 || len(big) != 0 {
		t.Fatal("MakeFields for a large metric")
	}
}

func TestFieldIs32Bytes(t *testing.T) {
	// A buffer of 100,000 metrics of 20 fields holds 2 million fields: every byte counts.
	if s := unsafe.Sizeof(Field{}); s != 32 {
		t.Fatalf("Field is %d bytes", s)
	}
	var zero Field
	if zero.Type() != 0 || zero.Value() != nil {
		t.Fatal("the zero Field has no type")
	}
	for _, f := range []Field{String("e", ""), String("s", "x"), Bool("b", false), Float("f", 0), Int("i", 0), Uint("u", 0)} {
		g := f
		if !f.Equal(g) || f.Type() == 0 {
			t.Fatalf("%s: %v", f.Key, f.Type())
		}
	}
	a, b := String("s", "same"), String("s", string([]byte("same")))
	if !a.Equal(b) || a.Equal(String("s", "other")) || String("s", "").Equal(Int("s", 0)) {
		t.Fatal("string fields compare by content")
	}
}
