package devicepage_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/web"
)

// TestAPI runs the agent on five simulated devices, two that answer, one that never answers
// (blackholed: the simulator takes the requests and drops them), one whose port refuses and one
// whose breaker opens after two refused polls, and checks the JSON API against what the
// simulators saw.
func TestAPI(t *testing.T) {
	const interval = 250 * time.Millisecond
	p := newPlant(t, interval, "")
	var good, hole unitLog
	ok := p.server(modbussim.Config{OnRequest: good.onRequest})
	black := p.server(modbussim.Config{OnRequest: hole.onRequest, Faults: map[byte]modbussim.Fault{3: {NoAnswer: true}}})
	p.device("ok-1", p.listen(ok), 1, "    tags = { line = \"A\" }\n")
	p.device("ok-2", p.listen(ok), 2, "    tags = { line = \"B\" }\n")
	p.device("hole", p.listen(black), 3, "    breaker_failures = 1000\n")
	p.device("dead", refusing(t), 4, "    breaker_failures = 1000\n")
	p.device("tripped", refusing(t), 5, "    breaker_failures = 2\n    breaker_cool_down = \"1h\"\n")
	base := "http://" + p.run(agent.HTTPOptions{Version: "test"})

	var l web.Listing
	var byName map[string]web.Device
	waitFor(t, time.Minute, "devices in their states with a few polls", func() bool {
		l, byName = devices(t, base)
		return l.Counts["ok"] == 2 && l.Counts["failing"] == 2 && l.Counts["breaker open"] == 1 &&
			byName["ok-1"].Polls >= 4 && byName["hole"].Errors["timeout"] >= 3 && byName["dead"].Polls >= 3
	})
	if l.Total != 5 || l.Matched != 5 {
		t.Errorf("total %d, matched %d: want 5", l.Total, l.Matched)
	}
	// Failing first: failing (by name), breaker open, then ok.
	var order []string
	for _, d := range l.Devices {
		order = append(order, d.Name)
	}
	if want := []string{"dead", "hole", "tripped", "ok-1", "ok-2"}; !slices.Equal(order, want) {
		t.Errorf("default order %v, want %v", order, want)
	}

	for _, name := range []string{"ok-1", "ok-2"} {
		d := byName[name]
		unit := byte(name[3] - '0')
		seen, last := good.get(unit)
		// One poll may be under way: the simulator has its requests, the counters not yet.
		if d.Requests > uint64(seen) || d.Requests+requestsPerPoll < uint64(seen) {
			t.Errorf("%s: %d requests counted, the simulator received %d", name, d.Requests, seen)
		}
		if d.Requests != requestsPerPoll*d.Polls || d.PollsFail != 0 || d.ErrorsAll != 0 || d.LastError != "" {
			t.Errorf("%s: %d polls (%d failed), %d requests, %d errors (%q): want 3 requests a poll, no error",
				name, d.Polls, d.PollsFail, d.Requests, d.ErrorsAll, d.LastError)
		}
		if d.LastGood == nil || d.LastGood.Before(last.Add(-interval)) || d.LastGood.After(l.Now) {
			t.Errorf("%s: last good poll %v; the simulator's last request at %v", name, d.LastGood, last)
		}
		if d.RTTMs == nil || *d.RTTMs <= 0 || d.TimeoutMs < 50 || d.TimeoutMs > 200 {
			t.Errorf("%s: rtt %v ms, timeout %v ms: want an average, and a timeout in 50..200 ms", name, d.RTTMs, d.TimeoutMs)
		}
		if len(d.RTTs) != min(int(d.Requests), 60) || slices.Contains(d.RTTs, nil) {
			t.Errorf("%s: %d round trips kept (%d requests), with gaps: %v", name, len(d.RTTs), d.Requests, d.RTTs)
		}
		if d.Tags["line"] == "" || d.Controller == "" || d.Backup != 0 {
			t.Errorf("%s: tags %v, controller %q, backup %d", name, d.Tags, d.Controller, d.Backup)
		}
	}

	h := byName["hole"]
	seen, _ := hole.get(3)
	if h.State != "failing" || h.LastGood != nil || h.RTTMs != nil {
		t.Errorf("hole: %s, last good %v, rtt %v: want failing, never answered", h.State, h.LastGood, h.RTTMs)
	}
	// Every request it sent reached the simulator and timed out (retries = 0).
	if h.Requests > uint64(seen) || h.Requests+requestsPerPoll < uint64(seen) || h.Errors["timeout"] > h.Requests || h.Errors["timeout"]+1 < h.Requests {
		t.Errorf("hole: %d requests, %d timeouts; the simulator received %d", h.Requests, h.Errors["timeout"], seen)
	}
	if h.PollsFail != h.Polls || !strings.Contains(h.LastError, "timeout") || !slices.Contains(h.RTTs, nil) {
		t.Errorf("hole: %d polls, %d failed, last error %q, rtts %v", h.Polls, h.PollsFail, h.LastError, h.RTTs)
	}

	d := byName["dead"]
	if d.Requests != 0 || d.Errors["refused"] == 0 || d.PollsFail != d.Polls || !strings.Contains(d.LastError, "connection refused") || d.ErrorAt == nil {
		t.Errorf("dead: %d requests, errors %v, %d polls (%d failed), last error %q at %v", d.Requests, d.Errors, d.Polls, d.PollsFail, d.LastError, d.ErrorAt)
	}

	tr := byName["tripped"]
	if tr.Polls != 2 || tr.PollsFail != 2 || !tr.Failing {
		t.Errorf("tripped: %d polls, %d failed: want 2 and 2, then none while its breaker is open", tr.Polls, tr.PollsFail)
	}
	var det web.Device
	getJSON(t, base+"/api/devices/tripped", &det)
	if b := det.Detail.Breaker; len(b) != 1 || b[0].To != "open" || b[0].Controller != tr.Controller {
		t.Errorf("tripped: breaker history %+v: want one change to open on %s", b, tr.Controller)
	}
	if e := det.Detail.Errors; len(e) != 1 || e[0].Repeats != 2 || !strings.Contains(e[0].Text, "connection refused") {
		t.Errorf("tripped: errors %+v: want the refusal, twice", e)
	}

	// The detail of a good device: its values arrive with the poll after the first look.
	getJSON(t, base+"/api/devices/ok-1", &det)
	if got := readsOf(det.Detail.Plan); !slices.Equal(got, []string{"coil 0..0", "holding 0..18", "input 0..0"}) {
		t.Errorf("ok-1: plan %v", got)
	}
	waitFor(t, 20*interval, "the values of ok-1 copied by a poll", func() bool {
		getJSON(t, base+"/api/devices/ok-1", &det)
		return det.Detail.ValuesAt != nil
	})
	if len(det.Detail.Values) != 11 {
		t.Fatalf("ok-1: %d values, want the profile's 11: %+v", len(det.Detail.Values), det.Detail.Values)
	}
	for _, v := range det.Detail.Values {
		if v.Quality != "good" || v.Value == nil || v.Measurement != "power" {
			t.Errorf("ok-1: value %+v", v)
		}
	}

	// Filters, search, sort and paging.
	check := func(query string, want ...string) {
		t.Helper()
		var l web.Listing
		getJSON(t, base+"/api/devices?"+query, &l)
		var got []string
		for _, d := range l.Devices {
			got = append(got, d.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("?%s: %v, want %v", query, got, want)
		}
	}
	check("state=failing", "dead", "hole")
	check("state=breaker_open,ok", "tripped", "ok-1", "ok-2")
	check("q=OK-", "ok-1", "ok-2")
	check("q=line=B", "ok-2")
	check("sort=name&limit=2&page=2", "ok-1", "ok-2")
	check("sort=name&desc=1&limit=2", "tripped", "ok-2")
	// By RTT: the averages rise, and the devices that never answered come last.
	var byRTT web.Listing
	getJSON(t, base+"/api/devices?sort=rtt", &byRTT)
	for i, d := range byRTT.Devices {
		switch {
		case i < 2 && (d.RTTMs == nil || i == 1 && *d.RTTMs < *byRTT.Devices[0].RTTMs):
			t.Errorf("?sort=rtt: %d: %s with %v ms", i, d.Name, d.RTTMs)
		case i >= 2 && d.RTTMs != nil:
			t.Errorf("?sort=rtt: %d: %s has a round trip, after the two that answer", i, d.Name)
		}
	}
	for _, bad := range []string{"state=down", "sort=colour", "limit=0", "limit=5000", "page=x"} {
		resp, err := http.Get(base + "/api/devices?" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400", bad, resp.StatusCode)
		}
	}
	resp, err := http.Get(base + "/api/devices/nonesuch")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown device: %d, want 404", resp.StatusCode)
	}
}

func readsOf(plan []web.Read) []string {
	var out []string
	for _, r := range plan {
		out = append(out, r.Read)
	}
	slices.Sort(out)
	return out
}
