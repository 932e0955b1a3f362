package modbus

import (
	"cmp"
	"slices"
)

// Protocol limits of one read request (Modbus Application Protocol v1.1b3, 6.1-6.4).
const (
	maxRegisters = 125
	maxBits      = 2000
)

// request is one read of a contiguous range, planned in Init and shared read-only by every
// device with the same profile and planning options.
type request struct {
	kind   regKind
	addr   uint16
	count  uint16
	fields []fieldRef // decoded from this answer
	note   string     // a read split off another: which, when and why (the device page)
}

// fieldRef places a field in an answer: off is its first register (or bit) from the start of
// the request.
type fieldRef struct {
	field int // index in the profile's fields
	off   int
}

// dataBytes is the size of the answer's data (after the byte count).
func (r *request) dataBytes() int {
	if r.kind.isBits() {
		return (int(r.count) + 7) / 8
	}
	return 2 * int(r.count)
}

// planOptions are the device settings that change a plan.
type planOptions struct {
	maxGap        int  // unread registers (bits) allowed inside one request
	maxRegisters  int  // registers per request, ≤ 125
	maxBits       int  // bits per request, ≤ 2000
	onePerField   bool // quirk: every field read on its own
	coilsFromZero bool // quirk: the first coil request starts at address 0
}

// plan coalesces the fields of a profile into the fewest requests: fields are sorted by address
// per table and each request grows while the next field still fits (at most max registers or
// bits from its start, at most maxGap unread addresses before it). A field is never split.
// Greedy is optimal here: a request that takes every field it can leaves the fewest behind.
func plan(fields []fieldSpec, o planOptions) []request {
	var out []request
	for _, kind := range []regKind{kindCoil, kindDiscrete, kindHolding, kindInput} {
		idx := make([]int, 0, len(fields))
		for i := range fields {
			if fields[i].kind == kind {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			return cmp.Or(cmp.Compare(fields[a].address, fields[b].address), cmp.Compare(fields[a].end(), fields[b].end()))
		})
		limit := o.maxRegisters
		if kind.isBits() {
			limit = o.maxBits
		}
		var cur *request
		end := 0 // end of cur
		for n, i := range idx {
			f := &fields[i]
			start, fend := int(f.address), f.end()
			fits := cur != nil && !o.onePerField && fend-int(cur.addr) <= limit && start-end <= o.maxGap
			if !fits {
				addr := start
				if n == 0 && kind == kindCoil && o.coilsFromZero && fend <= limit {
					addr = 0 // quirk: the gap below the first coil is read too, whatever max_gap says
				}
				out = append(out, request{kind: kind, addr: uint16(addr)})
				cur, end = &out[len(out)-1], addr
			}
			end = max(end, fend)
			cur.count = uint16(end - int(cur.addr))
			cur.fields = append(cur.fields, fieldRef{field: i, off: start - int(cur.addr)})
		}
	}
	return out
}
