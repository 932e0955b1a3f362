package diskbuffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
)

// Records. A segment is a sequence of records of two formats, told apart by their fourth byte:
//
//	v1 (written before records had a header checksum; still read):
//	  uint32 payload length (at most maxRecord, so the fourth byte is at most 0x10)
//	  uint32 CRC-32C of the payload
//	  payload: uvarint count, then that many metrics (codec.go)
//
//	v2 (written now), a header of 20 bytes:
//	  't' 'p' 'r' kind (kindPlain or kindZstd; the fourth byte is at least 0x80)
//	  uint32 payload length
//	  uint32 count of metrics
//	  uint32 CRC-32C of the payload
//	  uint32 CRC-32C of the 16 bytes before
//	  payload: the metrics, compressed with zstd (one frame) when the kind is kindZstd
//
// All integers are little endian. A v2 header is checked by its own CRC, so its length and count
// can be trusted when the payload is damaged: recovery skips exactly the bad record and counts
// its metrics. The magic lets recovery find the next record when a length is damaged too.
const (
	v1Header  = 8
	v2Header  = 20
	maxRecord = 256 << 20
	kindPlain = 0x81
	kindZstd  = 0x82
	// recordTarget is the size of the metrics, before compression, after which the log's
	// goroutine starts a new record.
	recordTarget = 256 << 10
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	magic      = []byte("tpr")
)

// header is a record's header, either format.
type header struct {
	v2     bool
	kind   byte
	hlen   int64  // header bytes
	size   int64  // header and payload
	count  int64  // metrics (v1: read from the payload by checkPayload)
	crc    uint32 // of the payload
	hdrCRC bool   // v2: the header's CRC matched (length and count can be trusted)
}

var errBadHeader = errors.New("no record header")

// parseHeader reads the header at the start of b, which holds at least v2Header bytes or the
// rest of the segment. It checks what the header alone can tell: a v2 header's CRC, a length
// that is not zero and not over maxRecord.
func parseHeader(b []byte) (header, error) {
	if len(b) >= 4 && b[3] >= 0x80 {
		if len(b) < v2Header || !bytes.Equal(b[:3], magic) || b[3] != kindPlain && b[3] != kindZstd {
			return header{}, errBadHeader
		}
		h := header{v2: true, kind: b[3], hlen: v2Header}
		if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
			return h, errBadHeader
		}
		h.hdrCRC = true
		n := int64(binary.LittleEndian.Uint32(b[4:]))
		h.size, h.count, h.crc = v2Header+n, int64(binary.LittleEndian.Uint32(b[8:])), binary.LittleEndian.Uint32(b[12:])
		if n == 0 || n > maxRecord || h.count == 0 {
			return h, errBadHeader
		}
		return h, nil
	}
	if len(b) < v1Header {
		return header{}, errBadHeader
	}
	n := int64(binary.LittleEndian.Uint32(b))
	h := header{hlen: v1Header, size: v1Header + n, crc: binary.LittleEndian.Uint32(b[4:])}
	if n == 0 || n > maxRecord {
		return h, errBadHeader
	}
	return h, nil
}

// checkPayload checks a payload against its header; for a v1 record it reads the count.
func (h *header) checkPayload(payload []byte) bool {
	if crc32.Checksum(payload, castagnoli) != h.crc {
		return false
	}
	_, ok := h.body(payload)
	return ok
}

// body returns the encoded metrics of a payload; for a v1 record it reads their count from it.
func (h *header) body(payload []byte) ([]byte, bool) {
	if h.v2 {
		return payload, true
	}
	count, k := binary.Uvarint(payload)
	if k <= 0 {
		return nil, false
	}
	h.count = int64(count)
	return payload[k:], true
}

// putHeader fills the v2 header at the start of rec for the payload after it.
func putHeader(rec []byte, kind byte, count int) {
	payload := rec[v2Header:]
	copy(rec, magic)
	rec[3] = kind
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[8:], uint32(count))
	binary.LittleEndian.PutUint32(rec[12:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(rec[16:], crc32.Checksum(rec[:16], castagnoli))
}

// framed returns the size and the metric count of the v2 record at the start of b, which this
// process wrote.
func framed(b []byte) (size, count int) {
	return v2Header + int(binary.LittleEndian.Uint32(b[4:])), int(binary.LittleEndian.Uint32(b[8:]))
}

// segFile reads a segment file during recovery.
type segFile struct {
	f       *os.File
	size    int64
	hdr     [v2Header]byte
	payload []byte
}

// recordAt reads and checks the record at pos. A header that cannot be parsed comes back with
// an error; h then says what is known of it.
func (sf *segFile) recordAt(pos int64) (h header, err error) {
	n, _ := sf.f.ReadAt(sf.hdr[:min(v2Header, sf.size-pos)], pos)
	if h, err = parseHeader(sf.hdr[:n]); err != nil {
		return h, err
	}
	if pos+h.size > sf.size {
		return h, io.ErrUnexpectedEOF
	}
	sf.payload = growTo(sf.payload, int(h.size-h.hlen))
	if _, err := sf.f.ReadAt(sf.payload, pos+h.hlen); err != nil {
		return h, err
	}
	if !h.checkPayload(sf.payload) {
		return h, errChecksum
	}
	return h, nil
}

var errChecksum = errors.New("record checksum mismatch")

// resync returns where the first intact record after the bad one at pos starts, or the size of
// the segment when none follows. It tries the place the bad record's own length points to (a
// damaged payload under an intact length), then every v2 header after pos, found by its magic
// and checked by its CRC (a damaged length). A v1 record after a damaged length is not found.
func (sf *segFile) resync(pos int64, h header) int64 {
	if h.size > 0 && pos+h.size < sf.size {
		if _, err := sf.recordAt(pos + h.size); err == nil {
			return pos + h.size
		}
	}
	const window = 1 << 20
	buf := make([]byte, window+v2Header)
	for from := pos + 1; from < sf.size; from += window {
		n, _ := sf.f.ReadAt(buf[:min(int64(len(buf)), sf.size-from)], from)
		for i := 0; i < min(n, window); {
			j := bytes.Index(buf[i:n], magic)
			if j < 0 || i+j >= window {
				break
			}
			p := from + int64(i+j)
			if _, err := sf.recordAt(p); err == nil {
				return p
			}
			i += j + 1
		}
	}
	return sf.size
}

// tombstone turns the bytes [pos, end) of a segment, at least v1Header+1 of them, into a v1
// record of no metrics that keeps the damaged bytes: every later reader skips them as a record.
func (sf *segFile) tombstone(pos, end int64) error {
	payload := make([]byte, end-pos-v1Header)
	if _, err := sf.f.ReadAt(payload, pos+v1Header); err != nil {
		return err
	}
	payload[0] = 0 // count
	var rec [v1Header + 1]byte
	binary.LittleEndian.PutUint32(rec[:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(payload, castagnoli))
	if _, err := sf.f.WriteAt(rec[:], pos); err != nil {
		return err
	}
	return sf.f.Sync()
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
