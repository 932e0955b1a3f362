package diskbuffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tagpipe/tagpipe/internal/safefile"
	"github.com/tagpipe/tagpipe/models"
)

// log is the storage: segments of records on disk, the read position, the acknowledged offset
// and recovery. It is not safe for concurrent use: one goroutine (Buffer.run) owns it, and every
// method runs there. The only state it shares is held, an atomic count that Buffer.Add raises
// and the log lowers, and problem, which it sets for Buffer.Err.
//
// On disk:
//
//	DIR/lock                      flock'ed: a second agent cannot open the directory
//	DIR/ack                       the acknowledged position (persistAck)
//	DIR/0000000000000000.seg      segments named by the global offset of their first byte
//	DIR/0000000000400000.seg
//
// A segment holds records (record.go), each a header and a batch of metrics (codec.go). Records
// never span segments.
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
	ackSkip  int64      // and the first ackSkip metrics of the record at ackOff
	pending  []pendingMetric
	out      int         // of pending, lent out by begin
	mem      []memRecord // written records whose metrics are still in memory, oldest first
	memCount int
	stored   int64 // metrics on disk not yet done, pending and out included
	// Metrics from records before dropFloor were dropped for space.
	dropFloor  int64
	dec        Decoder
	zenc       *zstd.Encoder
	zdec       *zstd.Decoder
	framed     []byte             // records being written, reused
	recMems    [][]*models.Metric // their metrics, reused
	unzipped   []byte             // the last record read, decompressed
	readSkip   int64              // metrics of the record at readOff to leave out (acknowledged before a restart)
	rbuf       []byte             // read-ahead of rbufSeg from rbufOff
	rbufSeg    *segment
	rbufOff    int64
	lastSynced time.Time
	closed     bool
	failing    lossPeriod // while writes fail (a full disk)
	full       lossPeriod // while the log is at its limit and drops its oldest records

	problem  *atomic.Pointer[problem] // what Buffer.Err reports; set by report
	setAside []string                 // files moved out of the way as unreadable
	asideAt  time.Time

	stats          *models.Stats
	statBytes      *models.Stat
	statMetrics    *models.Stat
	statDropped    *models.Stat
	statSegments   *models.Stat
	statCorrupt    *models.Stat
	statCorruptB   *models.Stat
	statWriteError *models.Stat
}

type segment struct {
	start, end int64 // global offsets
	metrics    int64 // metrics in the segment's records
	records    int64 // records counted by scan (at start)
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
	recStart int64 // the offset of its record
	index    int64 // its place in the record
}

const (
	readAhead     = 256 << 10
	segNameDigits = 16
)

// ErrLocked is returned when another process holds the buffer directory.
var ErrLocked = errors.New("buffer directory is in use by another agent")

// openLog locks cfg.Dir and recovers the log in it: a torn or corrupt record is logged and cut
// off; reading starts at the acknowledged position.
func openLog(cfg Config, held *atomic.Int64, prob *atomic.Pointer[problem]) (*log, error) {
	// Refuse a folder another user owns or could have swapped: they could plant links or
	// segments in it (segments and the other files are opened with O_NOFOLLOW as well). The
	// parent (buffer_directory) is checked before anything is made in it, and again after.
	parent := filepath.Dir(cfg.Dir)
	if err := safefile.OwnDir(parent, true); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("buffer directory %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, err
	}
	if err := safefile.OwnDir(parent, true); err != nil {
		return nil, fmt.Errorf("buffer directory %w", err)
	}
	if err := safefile.OwnDir(cfg.Dir, false); err != nil {
		return nil, err
	}
	lock, err := safefile.OpenFile(filepath.Join(cfg.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
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
	l := &log{cfg: cfg, lock: lock, held: held, problem: prob}
	l.stats = models.RegisterStats("internal_disk_buffer", cfg.StatTags)
	l.statBytes = l.stats.Gauge("bytes")
	l.statMetrics = l.stats.Gauge("metrics")
	l.statDropped = l.stats.Get("metrics_dropped")
	l.statSegments = l.stats.Gauge("segments")
	l.statCorrupt = l.stats.Get("corrupt_records")
	l.statCorruptB = l.stats.Get("corrupt_bytes")
	l.statWriteError = l.stats.Get("write_errors")
	// One frame per record, compressed and decompressed whole by the log's goroutine alone. The
	// fastest level and a 64 KiB window: on the plant stream (BenchmarkPlantLoad) the default and
	// better levels saved under 1% more and cost 35-60% more CPU, and a window of the whole
	// record (256 KiB) compressed 2% less for more CPU. The decoder refuses a frame that would
	// grow over maxRecord (a damaged or hostile segment).
	l.zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), zstd.WithWindowSize(64<<10), zstd.WithLowerEncoderMem(true))
	l.zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxRecord))
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
	ackPath := filepath.Join(l.cfg.Dir, "ack")
	_, err := os.Lstat(ackPath)
	ackMissing := errors.Is(err, fs.ErrNotExist)
	if l.ack, err = safefile.OpenFile(ackPath, os.O_CREATE|os.O_RDWR, 0o640); err != nil {
		l.setAsideFile(ackPath, err, "the acknowledged position is unknown: everything on disk is sent again")
		if l.ack, err = safefile.OpenFile(ackPath, os.O_CREATE|os.O_RDWR, 0o640); err != nil {
			return err
		}
	}
	var meta [ackSize]byte
	unknown := "" // why the acknowledged position is not known
	switch n, _ := l.ack.ReadAt(meta[:], 0); {
	case n == ackSize && crc32.Checksum(meta[:16], castagnoli) == binary.LittleEndian.Uint32(meta[16:]):
		l.ackOff = int64(binary.LittleEndian.Uint64(meta[:8]))
		l.ackSkip = int64(binary.LittleEndian.Uint32(meta[12:]))
	case n >= 16 && crc32.Checksum(meta[:8], castagnoli) == binary.LittleEndian.Uint32(meta[8:]):
		l.ackOff = int64(binary.LittleEndian.Uint64(meta[:8])) // written before the skip count was
	case n >= 16:
		unknown = "the ack file is corrupt"
	case n > 0:
		unknown = "the ack file is cut short"
	case len(l.setAside) > 0:
		unknown = "the ack file was set aside"
	case ackMissing:
		unknown = "the ack file is missing"
	} // an empty ack file: nothing was acknowledged yet
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
		if err := l.scan(s); errors.Is(err, errUnreadable) {
			continue // set aside
		} else if err != nil {
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
		if l.active, err = safefile.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
			return err
		}
	}
	l.writeOff = l.segs[len(l.segs)-1].end
	// Start reading at the acknowledged position: skip what was delivered before the restart.
	if l.ackOff < l.segs[0].start || l.ackOff > l.writeOff {
		l.ackOff, l.ackSkip = l.segs[0].start, 0
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
	switch {
	case l.stored > 0 && unknown != "":
		// Everything from the first record on is sent again: what was delivered before too.
		records := int64(0)
		for _, s := range l.segs {
			records += s.records
		}
		l.cfg.Log.Warn("disk buffer: the acknowledged position is unknown ("+unknown+"); every record on disk is sent again, "+
			"what was delivered before included (duplicates)", "dir", l.cfg.Dir, "records", records, "metrics", l.stored, "bytes", l.bytes())
	case l.stored > 0:
		l.cfg.Log.Info("disk buffer: metrics waiting from before the restart", "dir", l.cfg.Dir, "metrics", l.stored, "bytes", l.bytes())
	}
	return nil
}

// scan walks a segment's records, checking each. A damaged record is skipped: reading resumes at
// the next intact record (see segFile.resync), and the damaged bytes become a record of no metrics
// so that they are skipped again after the next start without being counted again. What is lost
// is counted in metrics where the damaged record's header can still be read (a v2 header has its
// own CRC), in records and bytes where it cannot. A torn tail (a write cut short) is cut off.
func (l *log) scan(s *segment) error {
	f, err := safefile.OpenFile(s.path, os.O_RDWR, 0o640)
	if err == nil {
		defer f.Close()
	}
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
	}
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		l.setAsideFile(s.path, err, "its metrics are not sent")
		return errUnreadable
	}
	sf := &segFile{f: f, size: st.Size()}
	pos := int64(0)
	for pos < sf.size {
		h, err := sf.recordAt(pos)
		if err == nil {
			s.metrics += h.count
			s.records += min(h.count, 1) // not the records of no metrics that hide damage
			pos += h.size
			continue
		}
		next := sf.resync(pos, h)
		if next == sf.size { // nothing intact after it: cut the segment here
			l.countCorrupt(s, pos, next, h, err, "cut off")
			if err := f.Truncate(pos); err != nil {
				return err
			}
			f.Sync()
			break
		}
		if next-pos <= v1Header { // too short to hold a record: take the intact one after it too
			g, _ := sf.recordAt(next)
			l.countDropped(int(g.count))
			next += g.size
		}
		l.countCorrupt(s, pos, next, h, err, "skipped; reading resumes at the next intact record")
		if err := sf.tombstone(pos, next); err != nil {
			return err
		}
		pos = next
	}
	s.end = s.start + pos
	return nil
}

// countCorrupt logs and counts the damaged bytes [pos, end) of a segment: its metrics when its
// header tells how many (they are dropped), else one record and its bytes.
func (l *log) countCorrupt(s *segment, pos, end int64, h header, why error, what string) {
	l.statCorrupt.Incr()
	l.statCorruptB.Add(end - pos)
	attrs := []any{"segment", s.path, "offset", pos, "bytes", end - pos}
	if h.hdrCRC && end-pos <= h.size {
		l.countDropped(int(h.count))
		attrs = append(attrs, "metrics_lost", h.count)
	} else {
		attrs = append(attrs, "records_lost", 1, "metrics_lost", "unknown (the record's header is damaged)")
	}
	if errors.Is(why, errBadHeader) || errors.Is(why, io.ErrUnexpectedEOF) {
		why = errors.New("torn or damaged record header")
	}
	l.cfg.Log.Error("disk buffer: "+why.Error()+"; "+what, attrs...)
}

// skipAcknowledged moves the segment read counters past records before the acknowledged offset.
func (l *log) skipAcknowledged() error {
	s := l.segs[l.readSeg]
	if l.readOff == s.start && l.ackSkip == 0 {
		return nil
	}
	// Count the metrics of the records of this segment that lie before readOff.
	f, err := safefile.Open(s.path)
	if err != nil {
		return err
	}
	defer f.Close()
	sf := &segFile{f: f, size: s.end - s.start}
	pos := s.start
	for pos < l.readOff {
		h, err := sf.recordAt(pos - s.start) // scan checked every record
		if err != nil {
			return err
		}
		s.read += h.count
		pos += h.size
	}
	if pos != l.readOff { // not a record boundary: the acknowledged position was damaged
		l.cfg.Log.Warn("disk buffer: acknowledged position is not on a record; moved to the next record", "dir", l.cfg.Dir)
		l.readOff, l.ackOff, l.ackSkip = pos, pos, 0
	}
	if l.ackSkip > 0 && pos == l.ackOff && pos < s.end { // the first metrics of that record were delivered
		h, err := sf.recordAt(pos - s.start)
		if err != nil {
			return err
		}
		l.readSkip = min(l.ackSkip, h.count)
		s.read += l.readSkip
	}
	return nil
}

var errUnreadable = errors.New("unreadable file set aside")

// setAsideFile moves a file of the buffer that cannot be opened or read out of the way
// (NAME.unreadable): neither this process nor the next start trips over it again, and the rest
// of the buffer is used as if it were not there. It is logged as an error and Err reports it
// until the buffer is closed.
func (l *log) setAsideFile(path string, err error, consequence string) {
	attrs := []any{"file", path, "error", err}
	if rerr := os.Rename(path, path+".unreadable"); rerr != nil {
		attrs = append(attrs, "not_moved", rerr)
	} else {
		attrs = append(attrs, "moved_to", path+".unreadable")
		path += ".unreadable"
	}
	l.cfg.Log.Error("disk buffer: a file cannot be read and is set aside; "+consequence+
		"; the output reports failing in /healthz until the agent restarts: recover the file or delete it", attrs...)
	if errors.Is(err, safefile.ErrSymlink) {
		path += " (a symbolic link: refused)"
	}
	l.setAside = append(l.setAside, path)
	l.asideAt = time.Now()
	l.report()
}

// unreadableSegment sets aside the segment being read, which cannot be opened or read any more:
// its metrics not yet read are dropped (counted), and reading goes on with the next segment. It
// reports false when it could not (no new segment could be made in place of the active one).
func (l *log) unreadableSegment(err error) bool {
	s := l.segs[l.readSeg]
	if l.readSeg == len(l.segs)-1 { // the active one: new records go to a new segment
		if nerr := l.newSegment(l.writeOff); nerr != nil {
			l.cfg.Log.Error("disk buffer: cannot read the active segment nor start a new one", "segment", s.path,
				"error", err, "new_segment_error", nerr)
			return false
		}
	}
	l.closeSegment(s)
	lost := s.metrics - s.read
	l.setAsideFile(s.path, err, fmt.Sprintf("%d metrics in it are not sent (counted as dropped)", lost))
	l.stored -= lost
	l.held.Add(-lost)
	l.countDropped(int(lost))
	l.segs = slices.Delete(l.segs, l.readSeg, l.readSeg+1)
	l.readOff = l.segs[l.readSeg].start
	l.updateStats()
	return true
}

// problem is what is wrong with the buffer, for the output's health.
type problem struct {
	err error
	at  time.Time
}

// report publishes what is wrong with the buffer now for Buffer.Err.
func (l *log) report() {
	// Full until the next segment would no longer push the oldest one out.
	if !l.full.since.IsZero() && l.writeOff-l.segs[0].start+l.cfg.SegmentSize <= l.cfg.Limit {
		l.full = lossPeriod{}
	}
	var errs []string
	var at time.Time
	if len(l.setAside) > 0 {
		errs = append(errs, fmt.Sprintf("%d unreadable file(s) set aside, their metrics not sent: %s", len(l.setAside), strings.Join(l.setAside, ", ")))
		at = l.asideAt
	}
	if f := l.failing; !f.since.IsZero() {
		errs = append(errs, fmt.Sprintf("writes fail since %s: %v; %d metrics lost", f.since.UTC().Format(time.RFC3339), f.err, f.lost))
		at = f.since
	}
	if f := l.full; !f.since.IsZero() {
		errs = append(errs, fmt.Sprintf("full (buffer_limit %d bytes) since %s: the oldest records are dropped; %d metrics lost",
			l.cfg.Limit, f.since.UTC().Format(time.RFC3339), f.lost))
		at = f.since
	}
	if len(errs) == 0 {
		l.problem.Store(nil)
		return
	}
	l.problem.Store(&problem{err: errors.New(strings.Join(errs, "; ")), at: at})
}

func segName(dir string, start int64) string {
	return filepath.Join(dir, fmt.Sprintf("%0*x.seg", segNameDigits, start))
}

// newSegment starts a segment at start and makes it the active one.
func (l *log) newSegment(start int64) error {
	path := segName(l.cfg.Dir, start)
	f, err := safefile.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
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

// appendQueued writes the queue of the front (data, the encoded metrics of adds, count of them)
// as records: the metrics of the Adds in turn until they pass recordTarget bytes, compressed.
func (l *log) appendQueued(data []byte, count int, adds []queuedAdd) {
	l.framed, l.recMems = l.framed[:0], l.recMems[:0]
	start, from, n := 0, 0, 0
	for i, a := range adds {
		n += len(a.ms)
		if a.end-start < recordTarget && i < len(adds)-1 {
			continue
		}
		ms := adds[from].ms
		if i > from { // several Adds: their metrics in one slice
			ms = make([]*models.Metric, 0, n)
			for _, b := range adds[from : i+1] {
				ms = append(ms, b.ms...)
			}
		}
		l.framed = l.frame(l.framed, data[start:a.end], n)
		l.recMems = append(l.recMems, ms)
		start, from, n = a.end, i+1, 0
	}
	l.appendRecords(l.framed, count, l.recMems)
	clear(l.recMems)
}

// frame appends to dst a record of the count metrics encoded in raw: compressed, unless that
// makes it no smaller.
func (l *log) frame(dst, raw []byte, count int) []byte {
	h := len(dst)
	dst = append(dst, make([]byte, v2Header)...)
	dst = l.zenc.EncodeAll(raw, dst)
	kind := byte(kindZstd)
	if len(dst)-h-v2Header >= len(raw) {
		dst, kind = append(dst[:h+v2Header], raw...), kindPlain
	}
	putHeader(dst[h:], kind, count)
	return dst
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
			rl, cnt := framed(data[n:])
			if n > 0 && size+int64(n+rl) > l.cfg.SegmentSize {
				break
			}
			c += cnt
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
			rl, _ := framed(data[off:])
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
	l.writeWorks()
	l.enforceLimit()
}

// lossPeriod is a time during which the buffer loses metrics: writes fail, or it is full.
type lossPeriod struct {
	err      error     // the write error (failing only)
	since    time.Time // zero: not in such a period
	lost     int64     // metrics lost since then
	unlogged int64     // of them, not yet in a log message
	logged   time.Time // the last log message
}

// add counts n metrics lost at now and reports whether to log them now: the first loss at once,
// then at most once a minute, each message with the metrics lost since the one before.
func (p *lossPeriod) add(n int64, now time.Time) bool {
	if p.since.IsZero() {
		p.since = now
	}
	p.lost += n
	p.unlogged += n
	return p.logged.IsZero() || now.Sub(p.logged) >= time.Minute
}

// writeFailed counts the metrics of a failed write as lost and logs them: every message carries
// the metrics lost since the message before, and the total is logged when writes work again.
func (l *log) writeFailed(err error, count int) {
	l.held.Add(-int64(count))
	l.statWriteError.Incr()
	l.countDropped(count)
	now := time.Now()
	changed := l.failing.err == nil || l.failing.err.Error() != err.Error()
	l.failing.err = err
	if l.failing.add(int64(count), now) || changed {
		l.cfg.Log.Error("disk buffer: write failed; metrics lost (repeats are logged once a minute)", "dir", l.cfg.Dir,
			"error", err, "metrics", l.failing.unlogged, "metrics_lost_since", l.failing.since.Format(time.RFC3339))
		l.failing.unlogged, l.failing.logged = 0, now
	}
}

// writeWorks ends a period of failed writes, logging what it cost in total.
func (l *log) writeWorks() {
	if l.failing.since.IsZero() {
		return
	}
	l.cfg.Log.Warn("disk buffer: writes work again", "dir", l.cfg.Dir, "metrics_lost", l.failing.lost,
		"not_logged_before", l.failing.unlogged, "failing_for", time.Since(l.failing.since).Round(time.Second))
	l.failing = lossPeriod{}
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
		if l.ackOff < l.segs[0].start {
			l.ackOff, l.ackSkip = l.segs[0].start, 0
		}
		l.stored -= lost
		l.held.Add(-lost)
		l.countDropped(int(lost))
		l.full.add(lost, time.Now())
		attrs := []any{"dir", l.cfg.Dir, "metrics", lost, "limit_bytes", l.cfg.Limit, "metrics_lost_since", l.full.since.Format(time.RFC3339),
			"metrics_lost_total", l.full.lost}
		l.cfg.Log.Warn("disk buffer full: oldest segment dropped; metrics lost", attrs...)
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
			for i, m := range r.ms {
				l.pending = append(l.pending, pendingMetric{m: m, recStart: r.off, index: int64(i)})
			}
			s.read += int64(len(r.ms))
			l.readOff += r.size
			continue
		}
		if s.rf == nil {
			f, err := safefile.Open(s.path)
			if err != nil {
				if !l.unreadableSegment(err) {
					return
				}
				continue
			}
			s.rf = f
		}
		rec, err := l.record(s)
		if err != nil {
			if !l.unreadableSegment(err) {
				return
			}
			continue
		}
		h, _ := parseHeader(rec) // scan or this process checked the record
		data, _ := h.body(rec[h.hlen:])
		recStart, skip := l.readOff, l.readSkip
		l.readOff += h.size
		l.readSkip = 0
		s.read += h.count - skip // the skipped ones were counted at the start
		if h.kind == kindZstd {
			if l.unzipped, err = l.zdec.DecodeAll(data, l.unzipped[:0]); err != nil {
				l.undecodable(s, recStart, h.count-skip, err)
				continue
			}
			data = l.unzipped
		}
		for i := range h.count {
			m, rest, err := l.dec.Decode(data)
			if err != nil {
				l.undecodable(s, recStart, h.count-max(i, skip), err)
				break
			}
			data = rest
			if i >= skip {
				l.pending = append(l.pending, pendingMetric{m: m, recStart: recStart, index: i})
			}
		}
	}
}

// undecodable drops the lost metrics of a record that cannot be decompressed or decoded. Its CRC
// matched, so this is a bug or a format change.
func (l *log) undecodable(s *segment, off, lost int64, err error) {
	l.statCorrupt.Incr()
	l.stored -= lost
	l.held.Add(-lost)
	l.countDropped(int(lost))
	l.cfg.Log.Error("disk buffer: undecodable record skipped; metrics lost", "segment", s.path, "offset", off, "metrics", lost, "error", err)
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
	need := min(v2Header, s.end-s.start-rel) // a whole header of either format
	if rel < l.rbufOff || rel+need > l.rbufOff+int64(len(l.rbuf)) || l.rbufSeg != s {
		if err := l.fill(s, rel, need); err != nil {
			return nil, err
		}
	}
	i := rel - l.rbufOff
	h, err := parseHeader(l.rbuf[i:min(i+v2Header, int64(len(l.rbuf)))])
	if err != nil {
		return nil, err
	}
	if i+h.size > int64(len(l.rbuf)) {
		if err := l.fill(s, rel, h.size); err != nil {
			return nil, err
		}
		i = 0
	}
	return l.rbuf[i : i+h.size], nil
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
	if dropped > 0 {
		l.full.add(int64(dropped), time.Now())
		l.cfg.Log.Warn("disk buffer full: metrics of the batch that was out were in a dropped segment and not accepted; metrics lost",
			"dir", l.cfg.Dir, "metrics", dropped, "metrics_lost_total", l.full.lost)
	}
	l.pending = append(l.pending[:kept], l.pending[n:]...)
	clear(l.pending[len(l.pending):cap(l.pending)])
	l.stored -= finished
	l.held.Add(-finished)
	if p := l.pending; len(p) > 0 && p[0].recStart >= l.ackOff {
		l.ackOff, l.ackSkip = p[0].recStart, p[0].index
	} else if len(p) == 0 && l.readOff >= l.ackOff {
		l.ackOff, l.ackSkip = l.readOff, l.readSkip
	}
	l.persistAck()
	l.removeDone()
	l.updateStats()
	return dropped
}

// ackSize is the size of the ack file.
const ackSize = 20

// persistAck writes the acknowledged position in place, in one sector: the offset of a record
// (8 bytes), their CRC-32C (4), how many metrics at the start of that record are done (4), and
// the CRC-32C of those 16 bytes. A version that knew only the first 12 bytes (all there was)
// still reads the offset; this one reads a file of those 16 bytes as a count of 0.
func (l *log) persistAck() {
	var meta [ackSize]byte
	binary.LittleEndian.PutUint64(meta[:8], uint64(l.ackOff))
	binary.LittleEndian.PutUint32(meta[8:], crc32.Checksum(meta[:8], castagnoli))
	binary.LittleEndian.PutUint32(meta[12:], uint32(l.ackSkip))
	binary.LittleEndian.PutUint32(meta[16:], crc32.Checksum(meta[:16], castagnoli))
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
	l.report()
}

// bytes is the size of the records not yet acknowledged.
func (l *log) bytes() int64 { return l.writeOff - l.ackOff }

// close fsyncs, persists the acknowledged position and releases the directory.
func (l *log) close() error {
	if l.failing.unlogged > 0 {
		l.cfg.Log.Error("disk buffer: write failed; metrics lost", "dir", l.cfg.Dir, "error", l.failing.err,
			"metrics", l.failing.unlogged, "metrics_lost_total", l.failing.lost)
	}
	l.persistAck()
	l.ack.Sync()
	l.stats.Unregister()
	return l.closeFiles()
}

// closeFiles closes every file and releases the lock, without persisting anything (what a crash
// leaves).
func (l *log) closeFiles() error {
	l.closed = true
	if l.zdec != nil {
		l.zdec.Close()
	}
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
