package serializer

import (
	"strings"
	"testing"
)

// The packer fills each message up to max bytes, counting the overhead, and never splits a
// metric; JSON batches are framed and their items lose their line feed.
func TestPacker(t *testing.T) {
	items := []string{"a 1\n", "bb 2\n", "ccc 3\n", "d 4\n"}
	for _, c := range []struct {
		json     bool
		max, ovh int
		want     []string
	}{
		{false, 10, 0, []string{"a 1\nbb 2\n", "ccc 3\nd 4\n"}},
		{false, 12, 2, []string{"a 1\nbb 2\n", "ccc 3\nd 4\n"}},
		{false, 100, 0, []string{"a 1\nbb 2\nccc 3\nd 4\n"}},
		{true, 30, 0, []string{`{"metrics":[a 1,bb 2,ccc 3]}`, `{"metrics":[d 4]}`}},
	} {
		var buf []byte
		var members []int32
		var p Packer
		p.Begin(&buf, &members, c.json)
		var got []string
		var idx [][]int32
		keep := func(s Span) {
			got = append(got, string(buf[s.From:s.To]))
			idx = append(idx, members[s.MemFrom:s.MemTo])
		}
		for i, it := range items {
			if p.Size([]byte(it), c.ovh) > c.max {
				t.Fatalf("%q alone is over %d", it, c.max)
			}
			if done, ok := p.Add(int32(i), []byte(it), c.max, c.ovh); ok {
				keep(done)
			}
		}
		if done, ok := p.Close(); ok {
			keep(done)
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("json=%v max=%d overhead=%d: %q, want %q", c.json, c.max, c.ovh, got, c.want)
		}
		n := 0
		for _, ix := range idx {
			for _, i := range ix {
				if int(i) != n {
					t.Errorf("members %v: not every metric once, in order", idx)
				}
				n++
			}
		}
		if n != len(items) {
			t.Errorf("%d metrics packed, want %d", n, len(items))
		}
		if _, ok := p.Close(); ok {
			t.Error("a second Close gave a message")
		}
	}
}
