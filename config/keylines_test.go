package config_test

import (
	"maps"
	"testing"

	"github.com/tagpipe/tagpipe/config"
)

// TestKeyLines: every header and key by its path with the indices of the array tables it lies
// in; an element's sub-arrays count afresh in the next element; quoted and dotted keys are
// unquoted; a key in a multi-line value is no key.
func TestKeyLines(t *testing.T) {
	text := `top = 1
[[a]]
  x = 1
  [[a.b]]
  [[a.b]]
    "q.r" = 2
    [[a.b.c]]
[[a]]
  [[a.b]]
    s.t = """
u = 3
"""
    [a.b.tags]
      v = 'w'
["p" . q]
`
	want := map[string]int{
		"top": 1, "a[0]": 2, "a[0].x": 3, "a[0].b[0]": 4, "a[0].b[1]": 5, "a[0].b[1].q.r": 6,
		"a[0].b[1].c[0]": 7, "a[1]": 8, "a[1].b[0]": 9, "a[1].b[0].s.t": 10, "a[1].b[0].tags": 13,
		"a[1].b[0].tags.v": 14, "p.q": 15,
	}
	if got := config.KeyLines(text); !maps.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}
