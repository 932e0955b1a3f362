// Package buffertest holds what the tests of every models.Buffer share: numbered metrics, a drain,
// and the transaction behaviour every buffer must have (Suite).
package buffertest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Seq returns n metrics numbered from: field i and the time (in seconds) are the number.
func Seq(from, n int) []*models.Metric {
	out := make([]*models.Metric, n)
	for i := range out {
		out[i] = models.New("m", nil, []models.Field{models.Int("i", int64(from+i))}, time.Unix(int64(from+i), 0))
	}
	return out
}

// IDs returns the numbers of metrics made by Seq.
func IDs(ms []*models.Metric) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Fields[0].IntV()
	}
	return out
}

// Drain takes everything out of b in batches of 3, each accepted, and returns the numbers.
func Drain(t testing.TB, b models.Buffer) []int64 {
	t.Helper()
	var all []int64
	for {
		tx := b.Begin(3)
		if tx == nil {
			return all
		}
		all = append(all, IDs(tx.Batch)...)
		tx.All = true
		b.End(tx)
	}
}

// Suite checks the transaction behaviour every buffer shares, each subtest on a buffer from open.
func Suite(t *testing.T, open func(t *testing.T) models.Buffer) {
	t.Run("partial", func(t *testing.T) {
		b := open(t)
		defer b.Close()
		b.Add(Seq(0, 6)...)
		tx := b.Begin(4)
		if tx == nil || !slices.Equal(IDs(tx.Batch), []int64{0, 1, 2, 3}) || b.Len() != 6 {
			t.Fatalf("Begin: %v, Len %d", tx, b.Len())
		}
		b.Add(Seq(6, 2)...)
		tx.Settle(&models.PartialWriteError{Accepted: []int{0, 2}, Rejected: []int{3}})
		b.End(tx)
		if got := Drain(t, b); !slices.Equal(got, []int64{1, 4, 5, 6, 7}) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("failed", func(t *testing.T) {
		b := open(t)
		defer b.Close()
		b.Add(Seq(0, 5)...)
		tx := b.Begin(3)
		tx.Settle(errors.New("refused"))
		b.End(tx)
		if b.Len() != 5 {
			t.Fatalf("Len %d after a failed write", b.Len())
		}
		if got := Drain(t, b); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("empty", func(t *testing.T) {
		b := open(t)
		defer b.Close()
		if tx := b.Begin(10); tx != nil || b.Len() != 0 {
			t.Fatal("an empty buffer lends nothing")
		}
	})
}
