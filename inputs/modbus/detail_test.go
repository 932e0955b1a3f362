package modbus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/models"
)

// TestDetail: the device page's detail of a device. Before a poll copies anything it shows the
// plan Init made; a poll copies values and the reads in force only while the detail is watched
// (a device nobody looks at copies nothing); a read split apart says where it came from and why.
func TestDetail(t *testing.T) {
	s := sim(t, "127.0.0.1:0", modbussim.Config{Faults: map[byte]modbussim.Fault{1: {MaxRead: 10}}})
	text := "[[inputs.modbus]]\n  timeout_max = \"60ms\"\n  retries = 0\n" + benchProfile(20) + `    [[inputs.modbus.profile.field]]
      name = "uptime"
      register = "input"
      address = 0
      data_type = "UINT16"
  [[inputs.modbus.device]]
    name = "watched"
    controller = "tcp://` + s.Addr() + `"
    profile = "bench"
  [[inputs.modbus.device]]
    name = "unwatched"
    controller = "tcp://` + s.Addr() + `"
    slave_id = 2
    profile = "bench"
`
	m := load(t, text)
	p, d := onePoller(t, m, newAcc())
	other := p.devices[1]
	var det models.DeviceDetail
	d.Detail(time.Now(), &det)
	if !det.ValuesAt.IsZero() || len(det.Values) != 0 || planOf(det.Plan) != "holding 0..33; input 0..0" {
		t.Fatalf("before a poll: values at %v (%d), plan %q", det.ValuesAt, len(det.Values), planOf(det.Plan))
	}
	ctx := context.Background()
	for range 12 { // a read of 30 registers times out; after two polls in a row it is split, twice
		p.poll(ctx, d, time.Now())
		p.poll(ctx, other, time.Now())
	}
	d.Detail(time.Now(), &det)
	if det.ValuesAt.IsZero() || len(det.Values) != 21 {
		t.Fatalf("values at %v, %d values", det.ValuesAt, len(det.Values))
	}
	for _, v := range det.Values {
		if v.Quality != "good" || v.Field.Key != v.Name || v.Measurement != "modbus" {
			t.Errorf("value %+v", v)
		}
	}
	if len(det.Plan) < 4 {
		t.Fatalf("plan %q: want the 30 registers split", planOf(det.Plan))
	}
	split := 0
	for _, r := range det.Plan {
		if strings.HasPrefix(r.Note, "split from holding") && strings.Contains(r.Note, "no answer") {
			split++
		}
	}
	if split < 3 {
		t.Errorf("plan %+v: the split reads do not say why", det.Plan)
	}
	if len(det.Errors) == 0 || !strings.Contains(det.Errors[0].Text, "timeout") {
		t.Errorf("errors %+v", det.Errors)
	}
	if other.status.snap.Load() != nil {
		t.Error("a device nobody watches copied its values")
	}
	// The watch ends: later polls copy nothing.
	d.status.watch.Store(time.Now().Add(-time.Second).UnixNano())
	before := d.status.snap.Load()
	p.poll(ctx, d, time.Now())
	if d.status.snap.Load() != before {
		t.Error("a poll copied the values after the watch ended")
	}
}

func planOf(plan []models.PlannedRead) string {
	var out []string
	for _, r := range plan {
		out = append(out, r.Read)
	}
	return strings.Join(out, "; ")
}
