package models

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DiskBuffer is an output's buffer as an append-only, segmented log on disk, so that no reading
// is lost when an output is down for hours or the agent is killed.
//
// Why not a library: tidwall/wal (the candidate) stores no checksum per record, refuses to open
// a log with a torn tail instead of cutting it, holds its whole active segment in memory, and has
// no byte bound, interval fsync, lock file or acknowledged position — everything this buffer is
// for. The layout follows VictoriaMetrics' persistentqueue:
//
//	DIR/lock                      flock'ed: a second agent cannot open the directory
//	DIR/ack                       16 bytes: the acknowledged offset and its CRC
//	DIR/0000000000000000.seg      segments named by the global offset of their first byte
//	DIR/0000000000400000.seg
//
// A segment holds records: uint32 length, uint32 CRC-32C of the payload, payload. A payload is a
// batch: uvarint count, then that many metrics (codec.go). Add encodes and queues; a writer
// goroutine appends the queue to the active segment and fsyncs (after every write, or on an
// interval), so Add never waits for the disk. Begin reads records from the acknowledged position
// on; End advances that position past what the output accepted or rejected and persists it, so a
// restart does not resend what was delivered. A segment is removed once everything in it is
// acknowledged. Over the byte limit the oldest segment is dropped, logged and counted.
//
// Delivery is at least once: metrics of a batch written but not yet acknowledged when the agent
// dies are sent again after the restart, and so are the accepted metrics of a partly accepted
// batch whose first metric is still waiting.
type DiskBuffer struct {
	cfg  DiskBufferConfig
	lock *os.File
	ack  *os.File

	// The write queue: encoded records not yet on disk.
	wmu     sync.Mutex
	wq      []byte
	wqCount int
	wqMem   [][]*Metric // the metrics of each queued record, in order
	writing int         // metrics taken from the queue and not yet on disk
	wqFull  *sync.Cond
	wake    chan struct{}
	flushed chan chan struct{} // Sync's requests
	stop    chan struct{}
	stopped chan struct{}
	lastErr error

	mu         sync.Mutex
	segs       []*segment // oldest first; the last one is written to
	active     *os.File   // the last segment, for appending (writer goroutine only)
	writeOff   int64      // end of the log on disk
	readOff    int64      // next record to load
	readSeg    int        // index in segs of the segment holding readOff
	ackOff     int64      // everything before it is done
	pending    []pendingMetric
	out        int
	mem        []memRecord // written records whose metrics are still in memory, oldest first
	memCount   int
	stored     int64 // metrics on disk not yet done, pending and out included
	dropFloor  int64 // metrics from records before this offset were dropped for space
	dec        Decoder
	rbuf       []byte // read-ahead of rbufSeg from rbufOff
	rbufSeg    *segment
	rbufOff    int64
	lastSynced time.Time

	stats          *Stats
	statBytes      *Stat
	statMetrics    *Stat
	statDropped    *Stat
	statSegments   *Stat
	statCorrupt    *Stat
	statWriteError *Stat
}

// DiskBufferConfig configures a disk buffer.
type DiskBufferConfig struct {
	Dir         string
	Limit       int64         // bytes on disk; over it the oldest segment is dropped
	SegmentSize int64         // 0: a quarter of Limit, between 64 KiB and 64 MiB
	Fsync       time.Duration // 0: fsync after every write; otherwise at most this long apart
	Log         *slog.Logger
	StatTags    map[string]string // tags of the internal_disk_buffer stats
	// OnDrop is told how many metrics were dropped for space (the output's dropped counter).
	OnDrop func(n int)
}

type segment struct {
	start, end int64 // global offsets
	metrics    int64 // metrics in the segment's records
	read       int64 // of them, loaded by the reader
	path       string
	rf         *os.File // for reading, opened on demand
}

// memRecord is a written record whose metrics are still in memory: Begin takes them from here
// instead of reading and decoding the record. Only after a restart, or for records that fell out
// of this bounded list, is the disk read.
type memRecord struct {
	off, size int64
	ms        []*Metric
}

// memLimit bounds the metrics held in memory for written records.
const memLimit = 100_000

type pendingMetric struct {
	m        *Metric
	recStart int64
}

const (
	recHeader     = 8
	maxRecord     = 256 << 20
	queueLimit    = 64 << 20 // Add waits for the disk past this much queued
	coalesceBytes = 256 << 10
	coalesceWait  = time.Millisecond
	readAhead     = 256 << 10
	segNameDigits = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrLocked is returned when another process holds the buffer directory.
var ErrLocked = errors.New("buffer directory is in use by another agent")

// OpenDiskBuffer opens (or creates) the buffer in cfg.Dir. A torn or corrupt record is logged and
// cut off; everything after the acknowledged position is replayed.
func OpenDiskBuffer(cfg DiskBufferConfig) (*DiskBuffer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 1 << 30
	}
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = min(max(cfg.Limit/4, 64<<10), 64<<20)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(lock.Name())
		lock.Close()
		return nil, fmt.Errorf("%s: %w (pid %s)", cfg.Dir, ErrLocked, strings.TrimSpace(string(owner)))
	}
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	b := &DiskBuffer{cfg: cfg, lock: lock, wake: make(chan struct{}, 1), flushed: make(chan chan struct{}),
		stop: make(chan struct{}), stopped: make(chan struct{})}
	b.wqFull = sync.NewCond(&b.wmu)
	b.stats = RegisterStats("internal_disk_buffer", cfg.StatTags)
	b.statBytes = b.stats.Gauge("bytes")
	b.statMetrics = b.stats.Gauge("metrics")
	b.statDropped = b.stats.Get("metrics_dropped")
	b.statSegments = b.stats.Gauge("segments")
	b.statCorrupt = b.stats.Get("corrupt_records")
	b.statWriteError = b.stats.Get("write_errors")
	if err := b.recover(); err != nil {
		b.closeFiles()
		return nil, err
	}
	go b.writer()
	return b, nil
}

// recover reads the acknowledged offset and scans every segment, cutting off what is corrupt.
func (b *DiskBuffer) recover() error {
	var err error
	if b.ack, err = os.OpenFile(filepath.Join(b.cfg.Dir, "ack"), os.O_CREATE|os.O_RDWR, 0o640); err != nil {
		return err
	}
	var meta [16]byte
	if n, _ := b.ack.ReadAt(meta[:], 0); n == 16 {
		if crc32.Checksum(meta[:8], castagnoli) == binary.LittleEndian.Uint32(meta[8:]) {
			b.ackOff = int64(binary.LittleEndian.Uint64(meta[:8]))
		} else {
			b.cfg.Log.Warn("disk buffer: acknowledged position is corrupt; replaying everything (duplicates possible)", "dir", b.cfg.Dir)
		}
	}
	names, err := filepath.Glob(filepath.Join(b.cfg.Dir, "*.seg"))
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		start, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(name), ".seg"), 16, 64)
		if err != nil {
			b.cfg.Log.Warn("disk buffer: ignoring a file that is no segment", "file", name)
			continue
		}
		s := &segment{start: start, end: start, path: name}
		if err := b.scan(s); err != nil {
			return err
		}
		if s.end == s.start && name != names[len(names)-1] {
			os.Remove(name)
			continue
		}
		b.segs = append(b.segs, s)
	}
	if len(b.segs) == 0 || b.segs[len(b.segs)-1].end-b.segs[len(b.segs)-1].start >= b.cfg.SegmentSize {
		start := b.ackOff
		if n := len(b.segs); n > 0 {
			start = max(start, b.segs[n-1].end)
		}
		if err := b.newSegment(start); err != nil {
			return err
		}
	} else {
		last := b.segs[len(b.segs)-1]
		if b.active, err = os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
			return err
		}
	}
	b.writeOff = b.segs[len(b.segs)-1].end
	// Start reading at the acknowledged position: skip what was delivered before the restart.
	if b.ackOff < b.segs[0].start || b.ackOff > b.writeOff {
		b.ackOff = b.segs[0].start
	}
	b.readOff = b.ackOff
	for i, s := range b.segs {
		if b.readOff < s.end || i == len(b.segs)-1 {
			b.readSeg = i
			if b.readOff < s.start {
				b.readOff = s.start
			}
			break
		}
	}
	if err := b.skipAcknowledged(); err != nil {
		return err
	}
	for i, s := range b.segs {
		switch {
		case i < b.readSeg:
			s.read = s.metrics
		default:
			b.stored += s.metrics - s.read
		}
	}
	b.removeDone()
	b.updateStats()
	if b.stored > 0 {
		b.cfg.Log.Info("disk buffer: metrics waiting from before the restart", "dir", b.cfg.Dir, "metrics", b.stored, "bytes", b.writeOff-b.ackOff)
	}
	return nil
}

// scan walks a segment's records, checking each, and cuts the file at the first bad one.
func (b *DiskBuffer) scan(s *segment) error {
	f, err := os.OpenFile(s.path, os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	var hdr [recHeader]byte
	var payload []byte
	pos := int64(0)
	for pos < size {
		bad := ""
		if n, _ := f.ReadAt(hdr[:], pos); n < recHeader {
			bad = "torn record header"
		} else if l := int64(binary.LittleEndian.Uint32(hdr[:4])); l == 0 || l > maxRecord || pos+recHeader+l > size {
			bad = "torn or corrupt record length"
		} else {
			payload = slices.Grow(payload[:0], int(l))[:l]
			if _, err := f.ReadAt(payload, pos+recHeader); err != nil {
				bad = "unreadable record"
			} else if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
				bad = "record checksum mismatch"
			} else if count, n := binary.Uvarint(payload); n <= 0 {
				bad = "record without a count"
			} else {
				s.metrics += int64(count)
				pos += recHeader + l
				continue
			}
		}
		b.statCorrupt.Incr()
		b.cfg.Log.Error("disk buffer: "+bad+"; the rest of the segment is cut off", "segment", s.path, "offset", pos, "bytes_cut", size-pos)
		if err := f.Truncate(pos); err != nil {
			return err
		}
		f.Sync()
		break
	}
	s.end = s.start + pos
	return nil
}

// skipAcknowledged moves the segment read counters past records before the acknowledged offset.
func (b *DiskBuffer) skipAcknowledged() error {
	s := b.segs[b.readSeg]
	if b.readOff == s.start {
		return nil
	}
	// Count the metrics of the records of this segment that lie before readOff.
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr [recHeader]byte
	buf := make([]byte, binary.MaxVarintLen64)
	pos := s.start
	for pos < b.readOff {
		if _, err := f.ReadAt(hdr[:], pos-s.start); err != nil {
			return err
		}
		l := int64(binary.LittleEndian.Uint32(hdr[:4]))
		n, _ := f.ReadAt(buf, pos-s.start+recHeader)
		count, _ := binary.Uvarint(buf[:n])
		s.read += int64(count)
		pos += recHeader + l
	}
	if pos != b.readOff { // not a record boundary: the acknowledged position was damaged
		b.cfg.Log.Warn("disk buffer: acknowledged position is not on a record; moved to the next record", "dir", b.cfg.Dir)
		b.readOff, b.ackOff = pos, pos
	}
	return nil
}

func segName(dir string, start int64) string {
	return filepath.Join(dir, fmt.Sprintf("%0*x.seg", segNameDigits, start))
}

// newSegment starts a segment at start and makes it the active one. Called with mu held (or
// before the writer starts).
func (b *DiskBuffer) newSegment(start int64) error {
	path := segName(b.cfg.Dir, start)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	if d, err := os.Open(b.cfg.Dir); err == nil { // make the new name durable
		d.Sync()
		d.Close()
	}
	if b.active != nil {
		b.active.Close()
	}
	b.active = f
	b.segs = append(b.segs, &segment{start: start, end: start, path: path})
	return nil
}

// Add implements Buffer. It only queues; the writer goroutine writes. It waits only when the
// disk has fallen 64 MiB behind.
func (b *DiskBuffer) Add(ms ...*Metric) (dropped int) {
	if len(ms) == 0 {
		return 0
	}
	b.wmu.Lock()
	for len(b.wq) > queueLimit {
		b.wqFull.Wait()
	}
	start := len(b.wq)
	b.wq = append(b.wq, make([]byte, recHeader)...)
	b.wq = binary.AppendUvarint(b.wq, uint64(len(ms)))
	for _, m := range ms {
		b.wq = AppendMetric(b.wq, m)
	}
	payload := b.wq[start+recHeader:]
	binary.LittleEndian.PutUint32(b.wq[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b.wq[start+4:], crc32.Checksum(payload, castagnoli))
	b.wqCount += len(ms)
	b.wqMem = append(b.wqMem, slices.Clone(ms)) // the caller reuses its slice
	b.wmu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return 0
}

// writer appends the queue to the log: a natural group commit, one write and one fsync for
// whatever arrived during the last one.
func (b *DiskBuffer) writer() {
	defer close(b.stopped)
	var spare []byte
	var tick <-chan time.Time
	if b.cfg.Fsync > 0 {
		t := time.NewTicker(b.cfg.Fsync)
		defer t.Stop()
		tick = t.C
	}
	dirty := false
	for {
		stopping := false
		var reply chan struct{}
		select {
		case <-b.wake:
		case reply = <-b.flushed:
		case <-tick:
			if dirty {
				b.sync()
				dirty = false
			}
			continue
		case <-b.stop:
			stopping = true
		}
		if !stopping && reply == nil {
			// Let a small queue grow for a moment: fewer, larger writes (and fsyncs).
			b.wmu.Lock()
			small := len(b.wq) < coalesceBytes
			b.wmu.Unlock()
			if small {
				time.Sleep(coalesceWait)
			}
		}
		b.wmu.Lock()
		data, count, mems := b.wq, b.wqCount, b.wqMem
		b.wq, b.wqCount, b.wqMem = spare[:0], 0, nil
		b.writing = count
		b.wqFull.Broadcast()
		b.wmu.Unlock()
		if len(data) > 0 {
			b.write(data, count, mems)
			dirty = true
		}
		spare = data
		if dirty && (b.cfg.Fsync == 0 || stopping || reply != nil) {
			b.sync()
			dirty = false
		}
		if reply != nil {
			close(reply)
		}
		if stopping {
			return
		}
	}
}

func (b *DiskBuffer) write(data []byte, count int, mems [][]*Metric) {
	// Only this goroutine appends: the file write happens without mu, so Len, Begin and End
	// never wait for the disk; readers only read below writeOff.
	for len(data) > 0 {
		b.mu.Lock()
		last := b.segs[len(b.segs)-1]
		if last.end > last.start && last.end-last.start+int64(len(data)) > b.cfg.SegmentSize {
			// Records never span segments: start a new one when the active one is full.
			if err := b.newSegment(last.end); err != nil {
				b.mu.Unlock()
				b.writeFailed(err, count)
				return
			}
			last = b.segs[len(b.segs)-1]
		}
		size := last.end - last.start
		b.mu.Unlock()
		// Write the whole records that fit (at least one).
		n, c := 0, 0
		for n < len(data) {
			l := recHeader + int(binary.LittleEndian.Uint32(data[n:]))
			if n > 0 && size+int64(n+l) > b.cfg.SegmentSize {
				break
			}
			cnt, _ := binary.Uvarint(data[n+recHeader:])
			c += int(cnt)
			n += l
		}
		if _, err := b.active.Write(data[:n]); err != nil {
			// The segment may now end in a partial record: cut it back so the next write is clean.
			b.active.Truncate(size)
			b.writeFailed(err, count)
			return
		}
		b.wmu.Lock() // lock order: wmu, then mu
		b.mu.Lock()
		for off := 0; off < n; {
			l := recHeader + int(binary.LittleEndian.Uint32(data[off:]))
			b.mem = append(b.mem, memRecord{off: last.end + int64(off), size: int64(l), ms: mems[0]})
			b.memCount += len(mems[0])
			mems = mems[1:]
			off += l
		}
		for b.memCount > memLimit {
			b.memCount -= len(b.mem[0].ms)
			b.mem[0] = memRecord{}
			b.mem = b.mem[1:]
		}
		last.end += int64(n)
		last.metrics += int64(c)
		b.writeOff = last.end
		b.stored += int64(c)
		b.writing -= c
		b.mu.Unlock()
		b.wmu.Unlock()
		count -= c
		data = data[n:]
	}
	b.mu.Lock()
	b.enforceLimit()
	b.updateStats()
	b.mu.Unlock()
}

func (b *DiskBuffer) writeFailed(err error, count int) {
	b.wmu.Lock()
	b.writing -= count
	b.wmu.Unlock()
	b.statWriteError.Incr()
	b.statDropped.Add(int64(count))
	if b.cfg.OnDrop != nil {
		b.cfg.OnDrop(count)
	}
	if b.lastErr == nil || b.lastErr.Error() != err.Error() {
		b.cfg.Log.Error("disk buffer: write failed; metrics lost", "dir", b.cfg.Dir, "error", err, "metrics", count)
	}
	b.lastErr = err
}

func (b *DiskBuffer) sync() {
	b.mu.Lock()
	f := b.active
	b.mu.Unlock()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		b.statWriteError.Incr()
		b.cfg.Log.Error("disk buffer: fsync failed", "dir", b.cfg.Dir, "error", err)
	}
}

// enforceLimit drops the oldest segments while the log is over its byte limit. mu held.
func (b *DiskBuffer) enforceLimit() {
	for len(b.segs) > 1 && b.writeOff-b.segs[0].start > b.cfg.Limit {
		s := b.segs[0]
		lost := s.metrics - s.read // never loaded
		// Loaded but not lent out: dropped now. Lent out: End drops those the output keeps.
		kept := b.pending[:b.out]
		for _, p := range b.pending[b.out:] {
			if p.recStart < s.end {
				lost++
				continue
			}
			kept = append(kept, p)
		}
		clear(b.pending[len(kept):])
		b.pending = kept
		b.dropFloor = s.end
		b.closeSegment(s)
		os.Remove(s.path)
		b.segs = b.segs[1:]
		b.readSeg = max(b.readSeg-1, 0)
		if b.readOff < b.segs[0].start {
			b.readOff = b.segs[0].start
			b.readSeg = 0
		}
		b.ackOff = max(b.ackOff, b.segs[0].start)
		b.stored -= lost
		b.statDropped.Add(lost)
		if b.cfg.OnDrop != nil {
			b.cfg.OnDrop(int(lost))
		}
		b.cfg.Log.Warn("disk buffer full: oldest segment dropped", "dir", b.cfg.Dir, "metrics", lost, "limit_bytes", b.cfg.Limit)
	}
}

func (b *DiskBuffer) closeSegment(s *segment) {
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
}

// load reads records from readOff until pending holds n metrics or the log is read. mu held.
func (b *DiskBuffer) load(n int) {
	for len(b.pending) < n && b.readOff < b.writeOff {
		s := b.segs[b.readSeg]
		if b.readOff >= s.end {
			if b.readSeg == len(b.segs)-1 {
				return
			}
			b.readSeg++
			b.readOff = b.segs[b.readSeg].start
			continue
		}
		for len(b.mem) > 0 && b.mem[0].off < b.readOff {
			b.popMem()
		}
		if len(b.mem) > 0 && b.mem[0].off == b.readOff {
			r := b.mem[0]
			b.popMem()
			for _, m := range r.ms {
				b.pending = append(b.pending, pendingMetric{m: m, recStart: r.off})
			}
			s.read += int64(len(r.ms))
			b.readOff += r.size
			continue
		}
		if s.rf == nil {
			f, err := os.Open(s.path)
			if err != nil {
				b.cfg.Log.Error("disk buffer: cannot read segment", "segment", s.path, "error", err)
				return
			}
			s.rf = f
		}
		rec, err := b.record(s)
		if err != nil {
			b.cfg.Log.Error("disk buffer: read failed", "segment", s.path, "error", err)
			return
		}
		l := len(rec) - recHeader
		recStart := b.readOff
		b.readOff += int64(recHeader + l)
		count, k := binary.Uvarint(rec[recHeader:])
		s.read += int64(count)
		data := rec[recHeader+k:]
		for i := uint64(0); i < count; i++ {
			m, rest, err := b.dec.Decode(data)
			if err != nil {
				// The CRC matched, so this is a bug or a format change: skip the record's rest.
				b.statCorrupt.Incr()
				lost := int64(count - i)
				b.stored -= lost
				b.statDropped.Add(lost)
				b.cfg.Log.Error("disk buffer: undecodable record skipped", "segment", s.path, "metrics", lost, "error", err)
				break
			}
			data = rest
			b.pending = append(b.pending, pendingMetric{m: m, recStart: recStart})
		}
	}
}

// Sync returns once everything added before the call is written and fsynced.
func (b *DiskBuffer) Sync() {
	reply := make(chan struct{})
	select {
	case b.flushed <- reply:
		<-reply
	case <-b.stopped:
	}
}

func (b *DiskBuffer) popMem() {
	b.memCount -= len(b.mem[0].ms)
	b.mem[0] = memRecord{}
	b.mem = b.mem[1:]
}

// record returns the record at readOff, reading ahead so that small records cost no syscall
// each. mu held.
func (b *DiskBuffer) record(s *segment) ([]byte, error) {
	rel := b.readOff - s.start
	if rel < b.rbufOff || rel+recHeader > b.rbufOff+int64(len(b.rbuf)) || b.rbufSeg != s {
		if err := b.fill(s, rel, recHeader); err != nil {
			return nil, err
		}
	}
	i := rel - b.rbufOff
	l := int64(binary.LittleEndian.Uint32(b.rbuf[i:]))
	if i+recHeader+l > int64(len(b.rbuf)) {
		if err := b.fill(s, rel, recHeader+l); err != nil {
			return nil, err
		}
		i = 0
	}
	return b.rbuf[i : i+recHeader+l], nil
}

// fill reads at least need bytes of s from rel (up to readAhead, never past the written end).
func (b *DiskBuffer) fill(s *segment, rel, need int64) error {
	n := min(max(need, readAhead), s.end-s.start-rel)
	if n < need {
		return io.ErrUnexpectedEOF
	}
	b.rbuf = slices.Grow(b.rbuf[:0], int(n))[:n]
	if _, err := s.rf.ReadAt(b.rbuf, rel); err != nil && err != io.EOF {
		b.rbufSeg = nil
		return err
	}
	b.rbufSeg, b.rbufOff = s, rel
	return nil
}

// Begin implements Buffer. When fewer than n metrics are on disk and more are queued, it waits
// for the writer first, so batches are full.
func (b *DiskBuffer) Begin(n int) *Transaction {
	b.wmu.Lock()
	queued := b.wqCount + b.writing
	b.wmu.Unlock()
	if queued > 0 {
		b.mu.Lock()
		short := int(b.stored) < n
		b.mu.Unlock()
		if short {
			b.Sync()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.load(n)
	n = min(n, len(b.pending))
	if n == 0 {
		return nil
	}
	batch := make([]*Metric, n)
	for i := range batch {
		batch[i] = b.pending[i].m
	}
	b.out = n
	return &Transaction{Batch: batch}
}

// End implements Buffer. It persists the new acknowledged position.
func (b *DiskBuffer) End(tx *Transaction) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(tx.Batch)
	if b.out == 0 || n > len(b.pending) {
		return 0
	}
	b.out = 0
	done := make([]bool, n)
	if tx.All {
		for i := range done {
			done[i] = true
		}
	}
	for _, i := range tx.Accepted {
		if i >= 0 && i < n {
			done[i] = true
		}
	}
	for _, i := range tx.Rejected {
		if i >= 0 && i < n {
			done[i] = true
		}
	}
	kept := 0
	finished := int64(0)
	for i := 0; i < n; i++ {
		p := b.pending[i]
		switch {
		case done[i]:
			finished++
		case p.recStart < b.dropFloor:
			// Its segment was dropped for space while the batch was out (the caller counts it).
			dropped++
			finished++
			b.statDropped.Incr()
		default:
			b.pending[kept] = p
			kept++
		}
	}
	b.pending = append(b.pending[:kept], b.pending[n:]...)
	clear(b.pending[len(b.pending):cap(b.pending)])
	b.stored -= finished
	if len(b.pending) > 0 {
		b.ackOff = max(b.ackOff, b.pending[0].recStart)
	} else {
		b.ackOff = max(b.ackOff, b.readOff)
	}
	b.persistAck()
	b.removeDone()
	b.updateStats()
	return dropped
}

// persistAck writes the acknowledged offset: 8 bytes and their CRC in one sector, in place.
func (b *DiskBuffer) persistAck() {
	var meta [16]byte
	binary.LittleEndian.PutUint64(meta[:8], uint64(b.ackOff))
	binary.LittleEndian.PutUint32(meta[8:], crc32.Checksum(meta[:8], castagnoli))
	if _, err := b.ack.WriteAt(meta[:], 0); err != nil {
		b.statWriteError.Incr()
		b.cfg.Log.Error("disk buffer: cannot persist the acknowledged position", "dir", b.cfg.Dir, "error", err)
		return
	}
	if b.cfg.Fsync == 0 || time.Since(b.lastSynced) >= b.cfg.Fsync {
		b.ack.Sync()
		b.lastSynced = time.Now()
	}
}

// removeDone deletes segments whose every record is acknowledged (never the active one). mu held.
func (b *DiskBuffer) removeDone() {
	for len(b.segs) > 1 && b.segs[0].end <= b.ackOff {
		b.closeSegment(b.segs[0])
		os.Remove(b.segs[0].path)
		b.segs = b.segs[1:]
		b.readSeg = max(b.readSeg-1, 0)
	}
}

func (b *DiskBuffer) updateStats() {
	b.statBytes.Set(b.writeOff - b.ackOff)
	b.statMetrics.Set(b.stored)
	b.statSegments.Set(int64(len(b.segs)))
}

// Len implements Buffer: metrics queued, on disk and not yet acknowledged, out included.
func (b *DiskBuffer) Len() int {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wqCount + b.writing + int(b.stored)
}

// Bytes returns the bytes on disk not yet acknowledged.
func (b *DiskBuffer) Bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writeOff - b.ackOff
}

// Close writes what is queued, fsyncs, persists the acknowledged position and releases the
// directory.
func (b *DiskBuffer) Close() error {
	close(b.stop)
	<-b.stopped
	b.mu.Lock()
	defer b.mu.Unlock()
	b.persistAck()
	b.ack.Sync()
	b.stats.Unregister()
	return b.closeFiles()
}

func (b *DiskBuffer) closeFiles() error {
	var errs []error
	for _, s := range b.segs {
		b.closeSegment(s)
	}
	if b.active != nil {
		errs = append(errs, b.active.Sync(), b.active.Close())
	}
	if b.ack != nil {
		errs = append(errs, b.ack.Close())
	}
	syscall.Flock(int(b.lock.Fd()), syscall.LOCK_UN)
	errs = append(errs, b.lock.Close())
	return errors.Join(errs...)
}
