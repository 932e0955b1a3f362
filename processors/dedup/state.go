package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/processors/internal/series"
)

// The state file holds, for every series, the value last sent of each field and when:
//
//	magic   "TPDEDUP1" (8 bytes)
//	count   uvarint: series that follow
//	series  hash (uint64 LE, models.Metric.SeriesHash), uvarint field count, then per field:
//	          key    uvarint length + bytes
//	          type   1 byte (models.ValueType)
//	          value  uint64 LE (series.Bits), or for a string uvarint length + bytes
//	          sent   int64 LE, unix ns of the metric it was sent with
//	crc     uint32 LE: CRC-32C of everything before it
//
// It is written whole to a temporary file in the same folder, synced and renamed over the old
// one (and the folder synced), so a crash leaves the old file or the new one, never half of one.
const stateMagic = "TPDEDUP1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeState appends the state of t to dst.
func encodeState(dst []byte, t *series.Table[seriesState]) []byte {
	dst = append(dst, stateMagic...)
	dst = binary.AppendUvarint(dst, uint64(t.Len()))
	t.Range(func(hash uint64, _ int64, s *seriesState) bool {
		dst = binary.LittleEndian.AppendUint64(dst, hash)
		dst = binary.AppendUvarint(dst, uint64(len(s.fields)))
		for i := range s.fields {
			f := &s.fields[i]
			dst = binary.AppendUvarint(dst, uint64(len(f.key)))
			dst = append(dst, f.key...)
			dst = append(dst, byte(f.typ))
			if f.typ == models.TypeString {
				dst = binary.AppendUvarint(dst, uint64(len(f.str)))
				dst = append(dst, f.str...)
			} else {
				dst = binary.LittleEndian.AppendUint64(dst, f.bits)
			}
			dst = binary.LittleEndian.AppendUint64(dst, uint64(f.sent))
		}
		return true
	})
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst, castagnoli))
}

// errCorrupt says why a state file cannot be used.
type errCorrupt struct{ why string }

func (e errCorrupt) Error() string { return "corrupt state file: " + e.why }

// decodeState checks data whole (magic, checksum, every length) and calls add for each series,
// with fields that are only valid during the call. Field keys are interned: 10,000 series of the
// same 20 fields load 20 key strings.
func decodeState(data []byte, add func(hash uint64, fields []fieldState)) error {
	if len(data) < len(stateMagic)+1+4 || string(data[:len(stateMagic)]) != stateMagic {
		return errCorrupt{"not a tagpipe dedup state file (bad header)"}
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return errCorrupt{"checksum mismatch (truncated or damaged)"}
	}
	r := reader{b: body[len(stateMagic):]}
	count := r.uvarint()
	keys := map[string]string{}
	var fields []fieldState
	for n := uint64(0); n < count && r.err == nil; n++ {
		hash := r.u64()
		nf := r.uvarint()
		if nf > uint64(len(r.b)) { // each field takes more than a byte: a lie
			return errCorrupt{fmt.Sprintf("series %d: %d fields in %d bytes", n, nf, len(r.b))}
		}
		fields = fields[:0]
		for range nf {
			kb := r.bytes()
			key, ok := keys[string(kb)]
			if !ok {
				key = string(kb)
				keys[key] = key
			}
			f := fieldState{key: key, typ: models.ValueType(r.byte()), band: -1}
			switch {
			case f.typ == models.TypeString:
				f.str = string(r.bytes())
			case f.typ >= models.TypeFloat && f.typ <= models.TypeBool:
				f.bits = r.u64()
			default:
				r.fail("field %q: type %d", key, f.typ)
			}
			f.sent = int64(r.u64())
			fields = append(fields, f)
		}
		if r.err != nil {
			break
		}
		add(hash, fields)
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return errCorrupt{fmt.Sprintf("%d bytes after the last series", len(r.b))}
	}
	return nil
}

// reader reads the state file's parts; the first error sticks and every later read returns 0.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = errCorrupt{fmt.Sprintf(format, args...)}
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail("short value")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("short type")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("string of %d bytes in %d", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// load reads the state file into the table. A missing file is a first start; a file that cannot
// be read or used is logged and counted, and the processor starts without state (it then sends
// every field once). A corrupt file is kept aside as FILE.corrupt for a look.
func (d *Dedup) load() {
	data, err := os.ReadFile(d.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		d.Log.Info("no state file yet; every field is sent once", "state_file", d.StateFile)
		return
	}
	if err != nil {
		d.stateErrors.Incr()
		d.Log.Warn("state file cannot be read; starting without state", "state_file", d.StateFile, "error", err)
		return
	}
	now := d.now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	nseries, nfields := 0, 0
	err = decodeState(data, func(hash uint64, fields []fieldState) {
		s, _ := d.table.Get(hash, now)
		s.fields = append(s.fields[:0], fields...)
		nseries++
		nfields += len(fields)
	})
	if err != nil {
		d.table = series.NewTable[seriesState](d.SeriesTTL.D())
		d.stateErrors.Incr()
		aside := d.StateFile + ".corrupt"
		if rerr := os.Rename(d.StateFile, aside); rerr != nil {
			aside = ""
		}
		d.Log.Warn("state file ignored; starting without state", "state_file", d.StateFile, "error", err,
			"kept_as", aside)
		return
	}
	d.held.Set(int64(d.table.Len()))
	d.Log.Info("state loaded", "state_file", d.StateFile, "series", nseries, "fields", nfields)
}

// save writes the state file if the state changed since the last save. It is called by the
// saver and by Stop, never both at once.
func (d *Dedup) save() {
	d.mu.Lock()
	if !d.dirty {
		d.mu.Unlock()
		return
	}
	d.buf = encodeState(d.buf[:0], d.table)
	d.dirty = false
	d.mu.Unlock()
	if err := writeAtomic(d.StateFile, d.buf); err != nil {
		d.mu.Lock()
		d.dirty = true // try again next time
		d.mu.Unlock()
		d.stateErrors.Incr()
		d.Log.Error("state file not saved; a restart would resend unchanged values", "state_file", d.StateFile, "error", err)
		return
	}
	d.saves.Incr()
}

// writeAtomic replaces path with data: a temporary file in the same folder, written, synced,
// renamed over path, and the folder synced so that the rename itself survives a power cut.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	dirf, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer dirf.Close()
	return dirf.Sync()
}
