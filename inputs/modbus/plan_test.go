package modbus

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// spec is a field for planner tests: kind, address, registers.
func spec(kind regKind, addr, regs int) fieldSpec {
	return fieldSpec{name: fmt.Sprintf("%s%d", kind, addr), kind: kind, address: uint16(addr), regs: uint16(regs), typ: typeUint16}
}

func describePlan(reqs []request) string {
	var parts []string
	for _, r := range reqs {
		parts = append(parts, fmt.Sprintf("%s %d+%d/%d", r.kind, r.addr, r.count, len(r.fields)))
	}
	return strings.Join(parts, ", ")
}

var defaultPlan = planOptions{maxRegisters: maxRegisters, maxBits: maxBits}

func TestPlan(t *testing.T) {
	with := func(f func(*planOptions)) planOptions { o := defaultPlan; f(&o); return o }
	f := func(name string, fields []fieldSpec, o planOptions, want string) {
		t.Helper()
		if got := describePlan(plan(fields, o)); got != want {
			t.Errorf("%s:\n got  %s\n want %s", name, got, want)
		}
	}
	f("contiguous fields, one request", []fieldSpec{spec(kindHolding, 0, 2), spec(kindHolding, 2, 1), spec(kindHolding, 3, 4)}, defaultPlan, "holding 0+7/3")
	f("sorted whatever the config order", []fieldSpec{spec(kindHolding, 3, 4), spec(kindHolding, 0, 2), spec(kindHolding, 2, 1)}, defaultPlan, "holding 0+7/3")
	f("a gap splits by default", []fieldSpec{spec(kindHolding, 0, 1), spec(kindHolding, 5, 1)}, defaultPlan, "holding 0+1/1, holding 5+1/1")
	f("max_gap bridges it", []fieldSpec{spec(kindHolding, 0, 1), spec(kindHolding, 5, 1)}, with(func(o *planOptions) { o.maxGap = 4 }), "holding 0+6/2")
	f("but not a wider one", []fieldSpec{spec(kindHolding, 0, 1), spec(kindHolding, 6, 1)}, with(func(o *planOptions) { o.maxGap = 4 }), "holding 0+1/1, holding 6+1/1")
	f("125 registers at most", []fieldSpec{spec(kindInput, 0, 100), spec(kindInput, 100, 25), spec(kindInput, 125, 1)}, defaultPlan, "input 0+125/2, input 125+1/1")
	f("a field is never split", []fieldSpec{spec(kindInput, 0, 124), spec(kindInput, 124, 2)}, defaultPlan, "input 0+124/1, input 124+2/1")
	f("max_request_registers", []fieldSpec{spec(kindHolding, 0, 2), spec(kindHolding, 2, 2), spec(kindHolding, 4, 2)}, with(func(o *planOptions) { o.maxRegisters = 4 }), "holding 0+4/2, holding 4+2/1")
	f("one request per field", []fieldSpec{spec(kindHolding, 0, 2), spec(kindHolding, 2, 2)}, with(func(o *planOptions) { o.onePerField = true }), "holding 0+2/1, holding 2+2/1")
	f("tables apart, in function order", []fieldSpec{spec(kindInput, 0, 1), spec(kindCoil, 0, 1), spec(kindHolding, 0, 1), spec(kindDiscrete, 0, 1)}, defaultPlan,
		"coil 0+1/1, discrete 0+1/1, holding 0+1/1, input 0+1/1")
	var bits []fieldSpec
	for i := range 2001 {
		bits = append(bits, spec(kindCoil, i, 1))
	}
	f("2000 bits at most", bits, defaultPlan, "coil 0+2000/2000, coil 2000+1/1")
	f("coils from zero", []fieldSpec{spec(kindCoil, 40, 1), spec(kindCoil, 41, 1), spec(kindDiscrete, 40, 1)}, with(func(o *planOptions) { o.coilsFromZero = true }),
		"coil 0+42/2, discrete 40+1/1")
	f("coils from zero, later coils as usual", []fieldSpec{spec(kindCoil, 10, 1), spec(kindCoil, 30, 1)}, with(func(o *planOptions) { o.coilsFromZero = true }),
		"coil 0+11/1, coil 30+1/1")
	// two fields in one register (bits, bytes) share it
	b0, b1 := spec(kindHolding, 7, 1), spec(kindHolding, 7, 1)
	b0.typ, b1.typ, b1.bit = typeBit, typeBit, 1
	f("sub-register fields", []fieldSpec{b0, b1, spec(kindHolding, 8, 1)}, defaultPlan, "holding 7+2/3")
}

// TestPlanOffsets: every field lies inside its request at the offset the plan says.
func TestPlanOffsets(t *testing.T) {
	var fields []fieldSpec
	for i := range 300 {
		fields = append(fields, spec(kindHolding, (i*7)%1000, 1+i%4))
	}
	for _, o := range []planOptions{defaultPlan, {maxGap: 10, maxRegisters: 50, maxBits: 100}, {onePerField: true, maxRegisters: 125, maxBits: 2000}} {
		reqs := plan(fields, o)
		seen := map[int]bool{}
		for _, r := range reqs {
			if int(r.count) > o.maxRegisters {
				t.Fatalf("request of %d registers, limit %d", r.count, o.maxRegisters)
			}
			for _, ref := range r.fields {
				fl := &fields[ref.field]
				if int(r.addr)+ref.off != int(fl.address) || ref.off+int(fl.regs) > int(r.count) {
					t.Fatalf("field %d+%d misplaced in request %d+%d at %d", fl.address, fl.regs, r.addr, r.count, ref.off)
				}
				seen[ref.field] = true
			}
		}
		if len(seen) != len(fields) {
			t.Fatalf("%d of %d fields planned", len(seen), len(fields))
		}
		if !slices.IsSortedFunc(reqs, func(a, b request) int { return int(a.addr) - int(b.addr) }) {
			t.Fatal("requests out of order")
		}
	}
}
