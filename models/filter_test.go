package models

import (
	"testing"
	"time"
)

func metric(name string, tags map[string]string, fields ...string) *Metric {
	fs := make([]Field, len(fields))
	for i, f := range fields {
		fs[i] = Int(f, int64(i))
	}
	return New(name, TagsFromMap(tags), fs, time.Unix(0, 0))
}

func TestFilterSelect(t *testing.T) {
	f := Filter{
		NamePass: []string{"modbus*", "opcua"},
		NameDrop: []string{"modbus_health"},
		TagPass:  map[string][]string{"line": {"A", "B*"}},
		TagDrop:  map[string][]string{"device": {"test-*"}},
	}
	if err := f.Compile(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		m    *Metric
		want bool
	}{
		{metric("modbus", map[string]string{"line": "A", "device": "m1"}), true},
		{metric("modbus_power", map[string]string{"line": "B2", "device": "m1"}), true},
		{metric("opcua", map[string]string{"line": "A"}), true},
		{metric("internal", map[string]string{"line": "A"}), false},                   // namepass
		{metric("modbus_health", map[string]string{"line": "A"}), false},              // namedrop
		{metric("modbus", map[string]string{"line": "C"}), false},                     // tagpass
		{metric("modbus", map[string]string{"device": "m1"}), false},                  // tagpass: no line
		{metric("modbus", map[string]string{"line": "A", "device": "test-1"}), false}, // tagdrop
	}
	for i, c := range cases {
		if got := f.Select(c.m); got != c.want {
			t.Errorf("case %d %s: Select = %v, want %v", i, c.m.SeriesKey(), got, c.want)
		}
	}
}

func TestFilterModify(t *testing.T) {
	f := Filter{FieldPass: []string{"v*", "temp"}, FieldDrop: []string{"v2"}, TagExclude: []string{"secret*"}}
	if err := f.Compile(); err != nil {
		t.Fatal(err)
	}
	shared := TagsFromMap(map[string]string{"device": "d", "secret_id": "x"})
	m := New("m", shared, []Field{Int("v1", 1), Int("v2", 2), Int("temp", 3), Int("other", 4)}, time.Time{})
	if !f.Modify(m) {
		t.Fatal("fields are left: Modify must keep the metric")
	}
	if len(m.Fields) != 2 || m.Fields[0].Key != "v1" || m.Fields[1].Key != "temp" {
		t.Fatalf("fields %v, want v1 and temp", m.Fields)
	}
	if len(m.Tags) != 1 || m.Tags[0].Key != "device" {
		t.Fatalf("tags %v, want device only", m.Tags)
	}
	if len(shared) != 2 || shared[1].Key != "secret_id" {
		t.Fatalf("tagexclude changed a shared tag slice: %v", shared)
	}
	empty := New("m", nil, []Field{Int("other", 1)}, time.Time{})
	if f.Modify(empty) {
		t.Fatal("no field left: Modify must report the metric as dropped")
	}
}

func TestFilterBadPattern(t *testing.T) {
	f := Filter{TagPass: map[string][]string{"line": {"[A"}}}
	if err := f.Compile(); err == nil || err.Error() != `tagpass.line: bad pattern "[A"` {
		t.Fatalf("got %v", err)
	}
	f = Filter{NameDrop: []string{"a[-]"}}
	if err := f.Compile(); err == nil {
		t.Fatal("a bad namedrop pattern must fail")
	}
}

func TestInactiveFilterPassesAll(t *testing.T) {
	var f Filter
	if err := f.Compile(); err != nil || f.IsActive() {
		t.Fatal("an empty filter is inactive")
	}
	m := metric("x", nil, "a")
	if !f.Select(m) || !f.Modify(m) || len(m.Fields) != 1 {
		t.Fatal("an empty filter must pass everything")
	}
}
