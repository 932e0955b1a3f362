package models

import (
	"slices"
	"sync"
)

// Buffer holds an output's metrics until the output acknowledges them. Batches are transactions:
// Begin lends out the oldest metrics, End takes back the verdict; what was neither accepted nor
// rejected stays at the front, in order, for the next try. One batch is out at a time.
// Implementations are safe for concurrent use (inputs add while the flusher writes).
type Buffer interface {
	// Add appends metrics. When the buffer is full the oldest are dropped; Add returns how many.
	Add(ms ...*Metric) (dropped int)
	// Begin lends out up to n of the oldest metrics (nil when empty).
	Begin(n int) *Transaction
	// End returns the batch with the output's verdict. It returns how many kept metrics had to
	// be dropped because the buffer filled up while the batch was out.
	End(tx *Transaction) (dropped int)
	// Len is how many metrics the buffer holds, the batch that is out included.
	Len() int
	// Close releases what the buffer holds on to (files, for a disk buffer).
	Close() error
}

// Transaction is a batch lent out by Buffer.Begin. The output's verdict is recorded in it before
// it goes back to Buffer.End.
type Transaction struct {
	Batch    []*Metric
	All      bool  // every metric was accepted
	Accepted []int // indices into Batch, delivered
	Rejected []int // indices into Batch, refused for good
}

// Settle records the outcome of Output.Write in the transaction.
func (tx *Transaction) Settle(err error) {
	if err == nil {
		tx.All = true
		return
	}
	if p, ok := AsPartialWrite(err); ok {
		tx.Accepted, tx.Rejected = p.Accepted, p.Rejected
	}
}

// kept returns the metrics of the batch that were neither accepted nor rejected, in order.
func (tx *Transaction) kept() []*Metric {
	if tx.All {
		return nil
	}
	done := make([]bool, len(tx.Batch))
	for _, i := range tx.Accepted {
		if i >= 0 && i < len(done) {
			done[i] = true
		}
	}
	for _, i := range tx.Rejected {
		if i >= 0 && i < len(done) {
			done[i] = true
		}
	}
	var out []*Metric
	for i, m := range tx.Batch {
		if !done[i] {
			out = append(out, m)
		}
	}
	return out
}

// MemoryBuffer is a ring of at most limit metrics in memory.
type MemoryBuffer struct {
	mu    sync.Mutex
	limit int
	ring  []*Metric // len(ring) is the capacity in use; grows up to limit
	head  int
	n     int
	out   int // metrics lent out
}

// NewMemoryBuffer returns a buffer holding at most limit metrics (limit ≥ 1).
func NewMemoryBuffer(limit int) *MemoryBuffer {
	limit = max(limit, 1)
	return &MemoryBuffer{limit: limit, ring: make([]*Metric, min(limit, 1024))}
}

func (b *MemoryBuffer) grow() bool {
	if len(b.ring) >= b.limit {
		return false
	}
	ring := make([]*Metric, min(len(b.ring)*2, b.limit))
	for i := 0; i < b.n; i++ {
		ring[i] = b.ring[(b.head+i)%len(b.ring)]
	}
	b.ring, b.head = ring, 0
	return true
}

// Add implements Buffer.
func (b *MemoryBuffer) Add(ms ...*Metric) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range ms {
		if b.n == len(b.ring) && !b.grow() {
			// Full: the oldest goes.
			b.ring[b.head] = nil
			b.head = (b.head + 1) % len(b.ring)
			b.n--
			dropped++
		}
		b.ring[(b.head+b.n)%len(b.ring)] = m
		b.n++
	}
	return dropped
}

// Begin implements Buffer.
func (b *MemoryBuffer) Begin(n int) *Transaction {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(n, b.n)
	if n <= 0 {
		return nil
	}
	batch := make([]*Metric, n)
	for i := range batch {
		batch[i] = b.ring[b.head]
		b.ring[b.head] = nil
		b.head = (b.head + 1) % len(b.ring)
	}
	b.n -= n
	b.out = n
	return &Transaction{Batch: batch}
}

// End implements Buffer.
func (b *MemoryBuffer) End(tx *Transaction) (dropped int) {
	keep := tx.kept()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.out = 0
	// Put the kept metrics back in front of what arrived meanwhile, newest first.
	for _, m := range slices.Backward(keep) {
		if b.n == len(b.ring) && !b.grow() {
			// Full: the kept ones are the oldest; this one goes.
			dropped++
			continue
		}
		b.head = (b.head - 1 + len(b.ring)) % len(b.ring)
		b.ring[b.head] = m
		b.n++
	}
	return dropped
}

// Len implements Buffer.
func (b *MemoryBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n + b.out
}

// Close implements Buffer.
func (b *MemoryBuffer) Close() error { return nil }
