// Package diskbuffer is an output's buffer as an append-only, segmented log on disk, so that no
// reading is lost when an output is down for hours or the agent is killed.
//
// It is split as VictoriaMetrics splits lib/persistentqueue:
//
//   - log (log.go) is the storage: segments, records, recovery, the read position, the
//     acknowledged offset and fsync. It is not safe for concurrent use: one goroutine owns it.
//   - Buffer (this file) is the thin concurrent front that implements models.Buffer. It owns
//     only the write queue (metrics encoded by Add, not yet on disk) and the goroutine that owns
//     the log; everything else it asks that goroutine to do.
//
// Add encodes and queues, so it never waits for the disk; the log's goroutine takes the queue,
// cuts it into records of about 256 KiB, compresses each with zstd, appends them to the active
// segment and fsyncs (after every write, or on an interval): one write and one fsync for whatever
// arrived during the last one (a natural group commit), which also makes records large enough to
// compress well. Begin reads records from the acknowledged position on; End advances that
// position past what the output accepted or rejected and persists it, so a restart does not
// resend what was delivered. A segment is removed once everything in it is acknowledged. Over
// the byte limit the oldest segment is dropped, logged and counted.
//
// Delivery is at least once: metrics of a batch written but not yet acknowledged when the agent
// dies are sent again after the restart, and so are the accepted metrics of a partly accepted
// batch whose first metric is still waiting.
//
// Why not a library: tidwall/wal (the candidate) stores no checksum per record, refuses to open
// a log with a torn tail instead of cutting it, holds its whole active segment in memory, and has
// no byte bound, interval fsync, lock file or acknowledged position — everything this buffer is
// for.
package diskbuffer

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// Config configures a disk buffer.
type Config struct {
	Dir         string
	Limit       int64         // bytes on disk; over it the oldest segment is dropped
	SegmentSize int64         // 0: a quarter of Limit, between 64 KiB and 64 MiB
	Fsync       time.Duration // 0: fsync after every write; otherwise at most this long apart
	Log         *slog.Logger
	StatTags    map[string]string // tags of the internal_disk_buffer stats
	// Dropped is the output's metrics_dropped (nil: none): metrics the buffer drops by itself,
	// for space or to a failed write, are counted there as well as in its own stats.
	Dropped *models.Stat
}

// Buffer is the disk buffer: a models.Buffer, safe for concurrent use.
//
// Its moving parts, each with one owner:
//   - mu guards the write queue (queue, queued, adds), which Add fills and the log's goroutine
//     empties;
//   - held counts the metrics in the buffer (Len) without a lock: Add raises it, the log lowers it
//     when metrics are delivered, rejected or dropped; problem, what Err reports, is set by the
//     log alone;
//   - run, a goroutine, owns the log. It takes work from two channels: wake (the queue has
//     records, never blocks Add) and calls (Begin, End, Sync, Close: a function run on the log,
//     the caller waiting for it). stopped is closed when it has closed the log.
type Buffer struct {
	log     *log // run's goroutine only
	held    atomic.Int64
	problem atomic.Pointer[problem] // set by the log, read by Err

	mu     sync.Mutex
	queue  []byte      // encoded metrics not yet on disk
	queued int         // metrics in queue
	adds   []queuedAdd // each Add's metrics, in order
	spare  []byte      // the last written queue, reused (run's goroutine only)

	wake     chan struct{}
	calls    chan call
	stopped  chan struct{}
	closeErr error // set by run before stopped is closed
}

// queuedAdd is the metrics of one Add and where their encoding ends in the queue.
type queuedAdd struct {
	ms  []*models.Metric
	end int
}

type call struct {
	f    func(*log)
	done chan struct{}
}

const (
	queueLimit    = 64 << 20 // Add waits for the disk past this much queued
	coalesceBytes = 256 << 10
	coalesceWait  = time.Millisecond
)

// Open opens (or creates) the buffer in cfg.Dir. A torn or corrupt record is logged and cut off;
// everything after the acknowledged position is replayed.
func Open(cfg Config) (*Buffer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 2 << 30
	}
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = min(max(cfg.Limit/4, 64<<10), 64<<20)
	}
	b := &Buffer{wake: make(chan struct{}, 1), calls: make(chan call), stopped: make(chan struct{})}
	l, err := openLog(cfg, &b.held, &b.problem)
	if err != nil {
		return nil, err
	}
	b.log = l
	go b.run(l)
	return b, nil
}

// run owns the log until Close: it writes the queue when woken, runs the callers' functions, and
// fsyncs on the interval.
func (b *Buffer) run(l *log) {
	defer close(b.stopped)
	var tick <-chan time.Time
	if l.cfg.Fsync > 0 {
		t := time.NewTicker(l.cfg.Fsync)
		defer t.Stop()
		tick = t.C
	}
	for !l.closed {
		select {
		case <-b.wake:
			// Let a small queue grow for a moment: fewer, larger writes (and fsyncs).
			b.mu.Lock()
			small := len(b.queue) < coalesceBytes
			b.mu.Unlock()
			if small {
				time.Sleep(coalesceWait)
			}
			b.write(l, false)
		case c := <-b.calls:
			c.f(l)
			close(c.done)
		case <-tick:
			l.sync()
		}
	}
}

// write appends the queue to the log; it fsyncs when the buffer fsyncs every write, or when
// force is set. run's goroutine only.
func (b *Buffer) write(l *log, force bool) {
	b.mu.Lock()
	data, count, adds := b.queue, b.queued, b.adds
	b.queue, b.queued, b.adds = b.spare[:0], 0, nil
	b.mu.Unlock()
	if len(data) > 0 {
		l.appendQueued(data, count, adds)
	}
	b.spare = data
	if force || l.cfg.Fsync == 0 {
		l.sync()
	}
}

// do runs f on the log's goroutine and waits for it. It reports false (and does not run f) once
// the buffer is closed.
func (b *Buffer) do(f func(*log)) bool {
	c := call{f: f, done: make(chan struct{})}
	select {
	case b.calls <- c:
		<-c.done
		return true
	case <-b.stopped:
		return false
	}
}

// Add implements models.Buffer. It only encodes and queues; the log's goroutine writes. It waits
// only when the disk has fallen 64 MiB behind.
func (b *Buffer) Add(ms ...*models.Metric) (dropped int) {
	if len(ms) == 0 {
		return 0
	}
	b.held.Add(int64(len(ms)))
	b.mu.Lock()
	for _, m := range ms {
		b.queue = AppendMetric(b.queue, m)
	}
	b.queued += len(ms)
	b.adds = append(b.adds, queuedAdd{slices.Clone(ms), len(b.queue)}) // the caller reuses its slice
	full := len(b.queue) > queueLimit
	b.mu.Unlock()
	if full {
		b.do(func(l *log) { b.write(l, false) })
		return 0
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return 0
}

// CountDropsIn makes the buffer count the metrics it drops by itself in dropped from now on,
// instead of Config.Dropped: a buffer handed over to a new output by a reload counts in the new
// output's stats.
func (b *Buffer) CountDropsIn(dropped *models.Stat) {
	b.do(func(l *log) { l.cfg.Dropped = dropped })
}

// Sync returns once everything added before the call is written and fsynced.
func (b *Buffer) Sync() {
	b.do(func(l *log) { b.write(l, true) })
}

// Begin implements models.Buffer. When fewer than n metrics are on disk and more are queued, it
// writes the queue first, so batches are full.
func (b *Buffer) Begin(n int) *models.Transaction {
	var batch []*models.Metric
	b.do(func(l *log) {
		b.mu.Lock()
		queued := b.queued
		b.mu.Unlock()
		if queued > 0 && l.stored < int64(n) {
			b.write(l, true)
		}
		batch = l.begin(n)
	})
	if batch == nil {
		return nil
	}
	return &models.Transaction{Batch: batch}
}

// End implements models.Buffer. It persists the new acknowledged position.
func (b *Buffer) End(tx *models.Transaction) (dropped int) {
	b.do(func(l *log) { dropped = l.end(tx) })
	return dropped
}

// Err returns what is wrong with the buffer, and since when (nil when nothing is): files it set
// aside because it could not read them. The agent reports it in /healthz as a failure of the
// output.
func (b *Buffer) Err() (error, time.Time) {
	if p := b.problem.Load(); p != nil {
		return p.err, p.at
	}
	return nil, time.Time{}
}

// Len implements models.Buffer: metrics queued, on disk and not yet acknowledged, out included.
func (b *Buffer) Len() int { return int(b.held.Load()) }

// Bytes returns the bytes on disk not yet acknowledged.
func (b *Buffer) Bytes() (n int64) {
	b.do(func(l *log) { n = l.bytes() })
	return n
}

// Close writes what is queued, fsyncs, persists the acknowledged position and releases the
// directory.
func (b *Buffer) Close() error {
	b.do(func(l *log) {
		b.write(l, true)
		b.closeErr = l.close()
	})
	<-b.stopped
	return b.closeErr
}
