package cluster

import (
	"fmt"
	"math"
	"testing"
)

// TestShardKnownValues pins the hash: a change would move every device of every plant at the
// next upgrade. The shard is the first 16 hex digits of sha256sum, as a number, modulo the
// shards: printf tcp://127.0.0.1:502 | sha256sum starts with 6e5d69a6c239565f.
func TestShardKnownValues(t *testing.T) {
	const first16 = 0x6e5d69a6c239565f
	for _, c := range []struct {
		unit   string
		shards int
		want   int
	}{
		{"tcp://127.0.0.1:502", 64, first16 % 64},
		{"tcp://127.0.0.1:502", 1000, first16 % 1000},
		{"x", 1, 0},
		{"x", 0, 0},
	} {
		if got := Shard(c.unit, c.shards); got != c.want {
			t.Errorf("Shard(%q, %d) = %d, want %d", c.unit, c.shards, got, c.want)
		}
	}
	// The same unit always lands in the same shard, whatever came before it.
	a := Shard("rtu:///dev/ttyS0", 64)
	for i := range 100 {
		Shard(fmt.Sprint(i), 64)
	}
	if Shard("rtu:///dev/ttyS0", 64) != a {
		t.Error("not stable")
	}
}

// TestShardSpread: 10,000 device addresses that differ in a digit or two spread over 64 shards
// as a uniform draw would (every shard within 5 standard deviations of the mean).
func TestShardSpread(t *testing.T) {
	const n, shards = 10000, 64
	counts := make([]int, shards)
	for i := range n {
		counts[Shard(fmt.Sprintf("tcp://127.0.%d.%d:1502", 1+i/250, 1+i%250), shards)]++
	}
	mean := float64(n) / shards
	sd := math.Sqrt(mean * (1 - 1.0/shards))
	for s, c := range counts {
		if math.Abs(float64(c)-mean) > 5*sd {
			t.Errorf("shard %d holds %d units, mean %.0f ± %.0f", s, c, mean, sd)
		}
	}
}
