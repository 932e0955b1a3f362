package diskbuffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// log is the storage: segments of records on disk, the read position, the acknowledged offset
// and recovery. It is not safe for concurrent use: one goroutine (Buffer.run) owns it, and every
// method runs there. The only state it shares is held, an atomic count that Buffer.Add raises
// and the log lowers.
//
// On disk:
//
//	DIR/lock                      flock'ed: a second agent cannot open the directory
//	DIR/ack                       16 bytes: the acknowledged offset and its CRC
//	DIR/0000000000000000.seg      segments named by the global offset of their first byte
//	DIR/0000000000400000.seg
//
// A segment holds records: uint32 length, uint32 CRC-32C of the payload, payload. A payload is a
// batch: uvarint count, then that many metrics (codec.go). Records never span segments.
type log struct {
	cfg   Config
	lock  *os.File
	ack   *os.File
	held  *atomic.Int64 // metrics added and not yet delivered, rejected or dropped (Buffer.Len)
	dirty bool          // written since the last fsync

	segs     []*segment // oldest first; the last one is written to
	active   *os.File   // the last segment, for appending
	writeOff int64      // end of the log on disk
	readOff  int64      // next record to load
	readSeg  int        // index in segs of the segment holding readOff
	ackOff   int64      // everything before it is done
	pending  []pendingMetric
	out      int         // of pending, lent out by begin
	mem      []memRecord // written records whose metrics are still in memory, oldest first
	memCount int
	stored   int64 // metrics on disk not yet done, pending and out included
	// Metrics from records before dropFloor were dropped for space.
	dropFloor  int64
	dec        Decoder
	rbuf       []byte // read-ahead of rbufSeg from rbufOff
	rbufSeg    *segment
	rbufOff    int64
	lastSynced time.Time
	lastErr    error // of the last failed write: the same error is logged once
	closed     bool

	stats          *models.Stats
	statBytes      *models.Stat
	statMetrics    *models.Stat
	statDropped    *models.Stat
	statSegments   *models.Stat
	statCorrupt    *models.Stat
	statWriteError *models.Stat
}

type segment struct {
	start, end int64 // global offsets
	metrics    int64 // metrics in the segment's records
	read       int64 // of them, loaded by the reader
	path       string
	rf         *os.File // for reading, opened on demand
}

// memRecord is a written record whose metrics are still in memory: begin takes them from here
// instead of reading and decoding the record. Only after a restart, or for records that fell out
// of this bounded list, is the disk read.
type memRecord struct {
	off, size int64
	ms        []*models.Metric
}

// memLimit bounds the metrics held in memory for written records.
const memLimit = 100_000

type pendingMetric struct {
	m        *models.Metric
	recStart int64
}

const (
	recHeader     = 8
	maxRecord     = 256 << 20
	readAhead     = 256 << 10
	segNameDigits = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrLocked is returned when another process holds the buffer directory.
var ErrLocked = errors.New("buffer directory is in use by another agent")

// openLog locks cfg.Dir and recovers the log in it: a torn or corrupt record is logged and cut
// off; reading starts at the acknowledged position.
func openLog(cfg Config, held *atomic.Int64) (*log, error) {
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
	l := &log{cfg: cfg, lock: lock, held: held}
	l.stats = models.RegisterStats("internal_disk_buffer", cfg.StatTags)
	l.statBytes = l.stats.Gauge("bytes")
	l.statMetrics = l.stats.Gauge("metrics")
	l.statDropped = l.stats.Get("metrics_dropped")
	l.statSegments = l.stats.Gauge("segments")
	l.statCorrupt = l.stats.Get("corrupt_records")
	l.statWriteError = l.stats.Get("write_errors")
	if err := l.recover(); err != nil {
		l.stats.Unregister()
		l.closeFiles()
		return nil, err
	}
	held.Store(l.stored)
	return l, nil
}

// recover reads the acknowledged offset and scans every segment, cutting off what is corrupt.
func (l *log) recover() error {
	var err error
	if l.ack, err = os.OpenFile(filepath.Join(l.cfg.Dir, "ack"), os.O_CREATE|os.O_RDWR, 0o640); err != nil {
		return err
	}
	var meta [16]byte
	if n, _ := l.ack.ReadAt(meta[:], 0); n == 16 {
		if crc32.Checksum(meta[:8], castagnoli) == binary.LittleEndian.Uint32(meta[8:]) {
			l.ackOff = int64(binary.LittleEndian.Uint64(meta[:8]))
		} else {
			l.cfg.Log.Warn("disk buffer: acknowledged position is corrupt; replaying everything (duplicates possible)", "dir", l.cfg.Dir)
		}
	}
	names, err := filepath.Glob(filepath.Join(l.cfg.Dir, "*.seg"))
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		start, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(name), ".seg"), 16, 64)
		if err != nil {
			l.cfg.Log.Warn("disk buffer: ignoring a file that is no segment", "file", name)
			continue
		}
		s := &segment{start: start, end: start, path: name}
		if err := l.scan(s); err != nil {
			return err
		}
		if s.end == s.start && name != names[len(names)-1] {
			os.Remove(name)
			continue
		}
		l.segs = append(l.segs, s)
	}
	if len(l.segs) == 0 || l.segs[len(l.segs)-1].end-l.segs[len(l.segs)-1].start >= l.cfg.SegmentSize {
		start := l.ackOff
		if n := len(l.segs); n > 0 {
			start = max(start, l.segs[n-1].end)
		}
		if err := l.newSegment(start); err != nil {
			return err
		}
	} else {
		last := l.segs[len(l.segs)-1]
		if l.active, err = os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
			return err
		}
	}
	l.writeOff = l.segs[len(l.segs)-1].end
	// Start reading at the acknowledged position: skip what was delivered before the restart.
	if l.ackOff < l.segs[0].start || l.ackOff > l.writeOff {
		l.ackOff = l.segs[0].start
	}
	l.readOff = l.ackOff
	for i, s := range l.segs {
		if l.readOff < s.end || i == len(l.segs)-1 {
			l.readSeg = i
			if l.readOff < s.start {
				l.readOff = s.start
			}
			break
		}
	}
	if err := l.skipAcknowledged(); err != nil {
		return err
	}
	for i, s := range l.segs {
		switch {
		case i < l.readSeg:
			s.read = s.metrics
		default:
			l.stored += s.metrics - s.read
		}
	}
	l.removeDone()
	l.updateStats()
	if l.stored > 0 {
		l.cfg.Log.Info("disk buffer: metrics waiting from before the restart", "dir", l.cfg.Dir, "metrics", l.stored, "bytes", l.writeOff-l.ackOff)
	}
	return nil
}

// scan walks a segment's records, checking each, and cuts the file at the first bad one.
func (l *log) scan(s *segment) error {
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
		} else if n := int64(binary.LittleEndian.Uint32(hdr[:4])); n == 0 || n > maxRecord || pos+recHeader+n > size {
			bad = "torn or corrupt record length"
		} else {
			payload = slices.Grow(payload[:0], int(n))[:n]
			if _, err := f.ReadAt(payload, pos+recHeader); err != nil {
				bad = "unreadable record"
			} else if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
				bad = "record checksum mismatch"
			} else if count, k := binary.Uvarint(payload); k <= 0 {
				bad = "record without a count"
			} else {
				s.metrics += int64(count)
				pos += recHeader + n
				continue
			}
		}
		l.statCorrupt.Incr()
		l.cfg.Log.Error("disk buffer: "+bad+"; the rest of the segment is cut off", "segment", s.path, "offset", pos, "bytes_cut", size-pos)
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
func (l *log) skipAcknowledged() error {
	s := l.segs[l.readSeg]
	if l.readOff == s.start {
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
	for pos < l.readOff {
		if _, err := f.ReadAt(hdr[:], pos-s.start); err != nil {
			return err
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:4]))
		k, _ := f.ReadAt(buf, pos-s.start+recHeader)
		count, _ := binary.Uvarint(buf[:k])
		s.read += int64(count)
		pos += recHeader + n
	}
	if pos != l.readOff { // not a record boundary: the acknowledged position was damaged
		l.cfg.Log.Warn("disk buffer: acknowledged position is not on a record; moved to the next record", "dir", l.cfg.Dir)
		l.readOff, l.ackOff = pos, pos
	}
	return nil
}

func segName(dir string, start int64) string {
	return filepath.Join(dir, fmt.Sprintf("%0*x.seg", segNameDigits, start))
}

// newSegment starts a segment at start and makes it the active one.
func (l *log) newSegment(start int64) error {
	path := segName(l.cfg.Dir, start)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	if d, err := os.Open(l.cfg.Dir); err == nil { // make the new name durable
		d.Sync()
		d.Close()
	}
	if l.active != nil {
		l.active.Close()
	}
	l.active = f
	l.segs = append(l.segs, &segment{start: start, end: start, path: path})
	return nil
}

// appendRecords writes encoded records (data, holding count metrics; mems holds each record's
// metrics, in order) to the end of the log, then drops the oldest segments while the log is over
// its limit.
func (l *log) appendRecords(data []byte, count int, mems [][]*models.Metric) {
	defer l.updateStats()
	for len(data) > 0 {
		last := l.segs[len(l.segs)-1]
		if last.end > last.start && last.end-last.start+int64(len(data)) > l.cfg.SegmentSize {
			// Records never span segments: start a new one when the active one is full.
			if err := l.newSegment(last.end); err != nil {
				l.writeFailed(err, count)
				return
			}
			last = l.segs[len(l.segs)-1]
		}
		size := last.end - last.start
		// Write the whole records that fit (at least one).
		n, c := 0, 0
		for n < len(data) {
			rl := recHeader + int(binary.LittleEndian.Uint32(data[n:]))
			if n > 0 && size+int64(n+rl) > l.cfg.SegmentSize {
				break
			}
			cnt, _ := binary.Uvarint(data[n+recHeader:])
			c += int(cnt)
			n += rl
		}
		if _, err := l.active.Write(data[:n]); err != nil {
			// The segment may now end in a partial record: cut it back so the next write is clean.
			l.active.Truncate(size)
			l.writeFailed(err, count)
			return
		}
		l.dirty = true
		for off := 0; off < n; {
			rl := recHeader + int(binary.LittleEndian.Uint32(data[off:]))
			l.mem = append(l.mem, memRecord{off: last.end + int64(off), size: int64(rl), ms: mems[0]})
			l.memCount += len(mems[0])
			mems = mems[1:]
			off += rl
		}
		for l.memCount > memLimit {
			l.popMem()
		}
		last.end += int64(n)
		last.metrics += int64(c)
		l.writeOff = last.end
		l.stored += int64(c)
		count -= c
		data = data[n:]
	}
	l.enforceLimit()
}

func (l *log) writeFailed(err error, count int) {
	l.held.Add(-int64(count))
	l.statWriteError.Incr()
	l.countDropped(count)
	if l.lastErr == nil || l.lastErr.Error() != err.Error() {
		l.cfg.Log.Error("disk buffer: write failed; metrics lost", "dir", l.cfg.Dir, "error", err, "metrics", count)
	}
	l.lastErr = err
}

// countDropped counts metrics dropped for space or lost to a failed write, in the buffer's stats
// and the output's.
func (l *log) countDropped(n int) {
	l.statDropped.Add(int64(n))
	if l.cfg.Dropped != nil {
		l.cfg.Dropped.Add(int64(n))
	}
}

// sync fsyncs the active segment if anything was written since the last time.
func (l *log) sync() {
	if !l.dirty {
		return
	}
	l.dirty = false
	if err := l.active.Sync(); err != nil {
		l.statWriteError.Incr()
		l.cfg.Log.Error("disk buffer: fsync failed", "dir", l.cfg.Dir, "error", err)
	}
}

// enforceLimit drops the oldest segments while the log is over its byte limit.
func (l *log) enforceLimit() {
	for len(l.segs) > 1 && l.writeOff-l.segs[0].start > l.cfg.Limit {
		s := l.segs[0]
		lost := s.metrics - s.read // never loaded
		// Loaded but not lent out: dropped now. Lent out: end drops those the output keeps.
		kept := l.pending[:l.out]
		for _, p := range l.pending[l.out:] {
			if p.recStart < s.end {
				lost++
				continue
			}
			kept = append(kept, p)
		}
		clear(l.pending[len(kept):])
		l.pending = kept
		l.dropFloor = s.end
		l.closeSegment(s)
		os.Remove(s.path)
		l.segs = l.segs[1:]
		l.readSeg = max(l.readSeg-1, 0)
		if l.readOff < l.segs[0].start {
			l.readOff = l.segs[0].start
			l.readSeg = 0
		}
		l.ackOff = max(l.ackOff, l.segs[0].start)
		l.stored -= lost
		l.held.Add(-lost)
		l.countDropped(int(lost))
		l.cfg.Log.Warn("disk buffer full: oldest segment dropped", "dir", l.cfg.Dir, "metrics", lost, "limit_bytes", l.cfg.Limit)
	}
}

func (l *log) closeSegment(s *segment) {
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
}

// load reads records from readOff until pending holds n metrics or the log is read.
func (l *log) load(n int) {
	for len(l.pending) < n && l.readOff < l.writeOff {
		s := l.segs[l.readSeg]
		if l.readOff >= s.end {
			if l.readSeg == len(l.segs)-1 {
				return
			}
			l.readSeg++
			l.readOff = l.segs[l.readSeg].start
			continue
		}
		for len(l.mem) > 0 && l.mem[0].off < l.readOff {
			l.popMem()
		}
		if len(l.mem) > 0 && l.mem[0].off == l.readOff {
			r := l.mem[0]
			l.popMem()
			for _, m := range r.ms {
				l.pending = append(l.pending, pendingMetric{m: m, recStart: r.off})
			}
			s.read += int64(len(r.ms))
			l.readOff += r.size
			continue
		}
		if s.rf == nil {
			f, err := os.Open(s.path)
			if err != nil {
				l.cfg.Log.Error("disk buffer: cannot read segment", "segment", s.path, "error", err)
				return
			}
			s.rf = f
		}
		rec, err := l.record(s)
		if err != nil {
			l.cfg.Log.Error("disk buffer: read failed", "segment", s.path, "error", err)
			return
		}
		size := len(rec) - recHeader
		recStart := l.readOff
		l.readOff += int64(recHeader + size)
		count, k := binary.Uvarint(rec[recHeader:])
		s.read += int64(count)
		data := rec[recHeader+k:]
		for i := uint64(0); i < count; i++ {
			m, rest, err := l.dec.Decode(data)
			if err != nil {
				// The CRC matched, so this is a bug or a format change: skip the record's rest.
				l.statCorrupt.Incr()
				lost := int64(count - i)
				l.stored -= lost
				l.held.Add(-lost)
				l.statDropped.Add(lost)
				l.cfg.Log.Error("disk buffer: undecodable record skipped", "segment", s.path, "metrics", lost, "error", err)
				break
			}
			data = rest
			l.pending = append(l.pending, pendingMetric{m: m, recStart: recStart})
		}
	}
}

func (l *log) popMem() {
	l.memCount -= len(l.mem[0].ms)
	l.mem[0] = memRecord{}
	l.mem = l.mem[1:]
}

// record returns the record at readOff, reading ahead so that small records cost no syscall
// each.
func (l *log) record(s *segment) ([]byte, error) {
	rel := l.readOff - s.start
	if rel < l.rbufOff || rel+recHeader > l.rbufOff+int64(len(l.rbuf)) || l.rbufSeg != s {
		if err := l.fill(s, rel, recHeader); err != nil {
			return nil, err
		}
	}
	i := rel - l.rbufOff
	n := int64(binary.LittleEndian.Uint32(l.rbuf[i:]))
	if i+recHeader+n > int64(len(l.rbuf)) {
		if err := l.fill(s, rel, recHeader+n); err != nil {
			return nil, err
		}
		i = 0
	}
	return l.rbuf[i : i+recHeader+n], nil
}

// fill reads at least need bytes of s from rel (up to readAhead, never past the written end).
func (l *log) fill(s *segment, rel, need int64) error {
	n := min(max(need, readAhead), s.end-s.start-rel)
	if n < need {
		return io.ErrUnexpectedEOF
	}
	l.rbuf = slices.Grow(l.rbuf[:0], int(n))[:n]
	if _, err := s.rf.ReadAt(l.rbuf, rel); err != nil && err != io.EOF {
		l.rbufSeg = nil
		return err
	}
	l.rbufSeg, l.rbufOff = s, rel
	return nil
}

// begin lends out up to n of the oldest metrics (nil when there are none).
func (l *log) begin(n int) []*models.Metric {
	l.load(n)
	n = min(n, len(l.pending))
	if n == 0 {
		return nil
	}
	batch := make([]*models.Metric, n)
	for i := range batch {
		batch[i] = l.pending[i].m
	}
	l.out = n
	return batch
}

// end takes back the batch lent out by begin with the output's verdict, and persists the new
// acknowledged position. It returns how many kept metrics had to be dropped because their
// segment was dropped for space while the batch was out.
func (l *log) end(tx *models.Transaction) (dropped int) {
	n := len(tx.Batch)
	if l.out == 0 || n > len(l.pending) {
		return 0
	}
	l.out = 0
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
		p := l.pending[i]
		switch {
		case done[i]:
			finished++
		case p.recStart < l.dropFloor:
			// Its segment was dropped for space while the batch was out (the caller counts it).
			dropped++
			finished++
			l.statDropped.Incr()
		default:
			l.pending[kept] = p
			kept++
		}
	}
	l.pending = append(l.pending[:kept], l.pending[n:]...)
	clear(l.pending[len(l.pending):cap(l.pending)])
	l.stored -= finished
	l.held.Add(-finished)
	if len(l.pending) > 0 {
		l.ackOff = max(l.ackOff, l.pending[0].recStart)
	} else {
		l.ackOff = max(l.ackOff, l.readOff)
	}
	l.persistAck()
	l.removeDone()
	l.updateStats()
	return dropped
}

// persistAck writes the acknowledged offset: 8 bytes and their CRC in one sector, in place.
func (l *log) persistAck() {
	var meta [16]byte
	binary.LittleEndian.PutUint64(meta[:8], uint64(l.ackOff))
	binary.LittleEndian.PutUint32(meta[8:], crc32.Checksum(meta[:8], castagnoli))
	if _, err := l.ack.WriteAt(meta[:], 0); err != nil {
		l.statWriteError.Incr()
		l.cfg.Log.Error("disk buffer: cannot persist the acknowledged position", "dir", l.cfg.Dir, "error", err)
		return
	}
	if l.cfg.Fsync == 0 || time.Since(l.lastSynced) >= l.cfg.Fsync {
		l.ack.Sync()
		l.lastSynced = time.Now()
	}
}

// removeDone deletes segments whose every record is acknowledged (never the active one).
func (l *log) removeDone() {
	for len(l.segs) > 1 && l.segs[0].end <= l.ackOff {
		l.closeSegment(l.segs[0])
		os.Remove(l.segs[0].path)
		l.segs = l.segs[1:]
		l.readSeg = max(l.readSeg-1, 0)
	}
}

func (l *log) updateStats() {
	l.statBytes.Set(l.bytes())
	l.statMetrics.Set(l.stored)
	l.statSegments.Set(int64(len(l.segs)))
}

// bytes is the size of the records not yet acknowledged.
func (l *log) bytes() int64 { return l.writeOff - l.ackOff }

// close fsyncs, persists the acknowledged position and releases the directory.
func (l *log) close() error {
	l.persistAck()
	l.ack.Sync()
	l.stats.Unregister()
	return l.closeFiles()
}

// closeFiles closes every file and releases the lock, without persisting anything (what a crash
// leaves).
func (l *log) closeFiles() error {
	l.closed = true
	var errs []error
	for _, s := range l.segs {
		l.closeSegment(s)
	}
	if l.active != nil {
		errs = append(errs, l.active.Sync(), l.active.Close())
	}
	if l.ack != nil {
		errs = append(errs, l.ack.Close())
	}
	syscall.Flock(int(l.lock.Fd()), syscall.LOCK_UN)
	errs = append(errs, l.lock.Close())
	return errors.Join(errs...)
}
