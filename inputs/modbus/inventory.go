package modbus

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"

	"github.com/tagpipe/tagpipe/models"
)

// inventory is every device's spec, as Init compiled it, held in a form that costs a device
// little: in cluster mode an agent keeps the whole inventory and polls a share of it, so most
// of what it holds describes devices other agents poll.
//
// A device is a record in one string: its kind, tag set and extras as indexes into tables the
// devices share, its unit id, and its name and controller URL spelled out. Decoding a record
// (decode) allocates nothing: the spec's strings are parts of recs. A device of a large
// inventory costs its record (about as long as its name and URL) and a 4-byte offset, not a
// spec of 80 bytes with three small allocations of its own (TestInventoryHeldLightly).
// The records are varints (encoding/binary's) and strings with their length before them;
// encoding/binary reads varints from bytes, not strings, so uvarint here reads them in place.
type inventory struct {
	recs  string         // every device's record, in configuration order
	at    []uint32       // where device i's record starts in recs (4 GiB: far past what loads)
	kinds []*deviceKind  // profile, plan and options, shared by devices of one profile alike
	tags  [][]models.Tag // tag sets (without the device tag), each shared by its devices
	more  []*specMore    // more[0] is nil: most devices have no backups and one tag set

	// Every device's first tag set with its device tag, for the device page's list of the
	// devices polled elsewhere: made the first time it asks (withDevice), one array for all.
	tagsOnce sync.Once
	devTags  []models.Tag
	devAt    []uint32 // device i's are devTags[devAt[i]:devAt[i+1]]
}

// withDevice returns device i's first tag set with its device tag (read-only). The first call
// makes them for every device; later calls allocate nothing.
func (v *inventory) withDevice(i int) []models.Tag {
	v.tagsOnce.Do(func() {
		var s deviceSpec
		n := 0
		for i := range v.len() {
			v.decode(i, &s)
			n += len(s.tags) + 1
		}
		v.devTags = make([]models.Tag, 0, n)
		v.devAt = make([]uint32, v.len()+1)
		for i := range v.len() {
			v.decode(i, &s)
			v.devTags = appendWithDevice(v.devTags, s.tags, s.name)
			v.devAt[i+1] = uint32(len(v.devTags))
		}
	})
	return slices.Clip(v.devTags[v.devAt[i]:v.devAt[i+1]])
}

// len is the number of devices.
func (v *inventory) len() int { return len(v.at) }

// decode sets s to device i's spec. Nothing is allocated.
func (v *inventory) decode(i int, s *deviceSpec) {
	r := v.recs[v.at[i]:]
	var kind, tags, more uint64
	kind, r = uvarint(r)
	tags, r = uvarint(r)
	more, r = uvarint(r)
	*s = deviceSpec{deviceKind: v.kinds[kind], tags: v.tags[tags], more: v.more[more], unit: r[0]}
	s.controller.framing, s.controller.split = framing(r[1]), r[2]
	s.name, r = str(r[3:])
	s.controller.url, _ = str(r)
}

// spec returns device i's spec, decoded into a value of its own (a poller keeps it).
func (v *inventory) spec(i int) *deviceSpec {
	s := new(deviceSpec)
	v.decode(i, s)
	return s
}

// appendWithDevice appends tags (sorted) to dst with the device tag in its place, over a tag of
// the same key.
func appendWithDevice(dst, tags []models.Tag, name string) []models.Tag {
	i, found := slices.BinarySearchFunc(tags, "device", func(t models.Tag, k string) int { return strings.Compare(t.Key, k) })
	dst = append(dst, tags[:i]...)
	dst = append(dst, models.Tag{Key: "device", Value: name})
	if found {
		i++
	}
	return append(dst, tags[i:]...)
}

// inventoryBuilder encodes the specs Init compiles into an inventory.
type inventoryBuilder struct {
	buf    []byte
	at     []uint32
	kinds  []*deviceKind
	tags   [][]models.Tag
	more   []*specMore
	kindOf map[*deviceKind]int
	tagsOf map[string]int // a tag set's key (appendTagsKey) → its index
	key    []byte         // scratch for the key
}

func newInventoryBuilder(devices int) *inventoryBuilder {
	// 48 bytes a record: a name and a URL of usual lengths. buf is garbage once done copies it,
	// so the guess only spares the copies of growing it (it still grows for longer ones).
	return &inventoryBuilder{buf: make([]byte, 0, 48*devices), at: make([]uint32, 0, devices), more: []*specMore{nil},
		kindOf: map[*deviceKind]int{}, tagsOf: map[string]int{}}
}

// add appends s as the next device.
func (b *inventoryBuilder) add(s *deviceSpec) {
	k, ok := b.kindOf[s.deviceKind]
	if !ok {
		k = len(b.kinds)
		b.kindOf[s.deviceKind] = k
		b.kinds = append(b.kinds, s.deviceKind)
	}
	b.key = appendTagsKey(b.key[:0], s.tags)
	t, ok := b.tagsOf[string(b.key)] // a lookup with string(bytes) copies nothing
	if !ok {
		t = len(b.tags)
		b.tagsOf[string(b.key)] = t
		b.tags = append(b.tags, s.tags)
	}
	more := 0
	if s.more != nil {
		more = len(b.more)
		b.more = append(b.more, s.more)
	}
	b.at = append(b.at, uint32(len(b.buf)))
	b.buf = binary.AppendUvarint(b.buf, uint64(k))
	b.buf = binary.AppendUvarint(b.buf, uint64(t))
	b.buf = binary.AppendUvarint(b.buf, uint64(more))
	b.buf = append(b.buf, s.unit, byte(s.controller.framing), s.controller.split)
	b.buf = appendStr(b.buf, s.name)
	b.buf = appendStr(b.buf, s.controller.url)
}

// done sets v to the inventory, its records copied once into a string of their own.
func (b *inventoryBuilder) done(v *inventory) {
	// Clones: the builder's spare capacity is not kept.
	*v = inventory{recs: string(b.buf), at: slices.Clone(b.at), kinds: slices.Clone(b.kinds),
		tags: slices.Clone(b.tags), more: slices.Clone(b.more)}
}

// appendTagsKey appends a tag set's key for sharing to b: each key and value with its length
// before it.
func appendTagsKey(b []byte, tags []models.Tag) []byte {
	for _, t := range tags {
		b = appendStr(appendStr(b, t.Key), t.Value)
	}
	return b
}

// uvarint reads a varint at the start of s; it returns the value and the rest.
func uvarint(s string) (uint64, string) {
	var x uint64
	for i, shift := 0, uint(0); ; i, shift = i+1, shift+7 {
		c := s[i]
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x, s[i+1:]
		}
	}
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// str reads a string at the start of s (its length, then its bytes); it returns the string
// (a part of s) and the rest.
func str(s string) (string, string) {
	n, r := uvarint(s)
	return r[:n], r[n:]
}
