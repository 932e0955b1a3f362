// Package web is the device page: one embedded HTML page (with its CSS and a little JavaScript)
// that shows every device's state, and the JSON API it reads, which scripts may read too:
//
//	GET /                     the page (/app.js, /app.css beside it)
//	GET /api/devices          devices, filtered, sorted and paged:
//	                          ?state=failing,stale  only these states (models.DeviceState names)
//	                          &q=line=A             name, controller, input or tag contains q
//	                                                (a "key=value" q matches that tag exactly)
//	                          &sort=rtt&desc=1      any column; default: failing first, then name
//	                          &page=1&limit=100     1-based page; limit 1..1000 (default 100)
//	GET /api/devices/{name}   one device with its detail (?input= when two inputs share a name)
//	GET /api/overview         counts by state, outputs, agent version, uptime, CPU and RSS
//	                          (?devices=0: without the counts, which cost a walk of the devices)
//
// It shows state the inputs keep anyway (models.DeviceReporter, models.DeviceDetailer); a
// request walks the devices once and sorts them, and nothing is computed between requests.
// The package knows nothing of the agent: the agent gives it a Source.
package web

import (
	"cmp"
	"embed"
	"encoding/json"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/tagpipe/tagpipe/models"
)

//go:embed static
var static embed.FS

// Source is what the page shows. The agent implements it; every method is called per request
// and must be safe for concurrent use.
type Source interface {
	// Devices calls fn for each running input that reports devices, with its name as the
	// page shows it (`inputs.modbus "plant-1"`). None while no agent runs.
	Devices(fn func(input string, r models.DeviceReporter))
	// Outputs returns the outputs' state.
	Outputs() []Output
	// Agent returns what the page says of the agent.
	Agent() Agent
}

// Output is an output as the overview shows it.
type Output struct {
	Name        string    `json:"name"`
	Buffered    int64     `json:"buffered"`     // metrics held
	BufferLimit int64     `json:"buffer_limit"` // metrics (memory buffer)
	DiskBytes   int64     `json:"disk_bytes"`   // bytes of its disk buffer; -1: memory buffer
	LastWrite   time.Time `json:"-"`            // the last successful write; zero: none
	Written     int64     `json:"written"`
	Dropped     int64     `json:"dropped"`
	Errors      int64     `json:"errors"` // failed writes
	LastError   string    `json:"last_error,omitempty"`
	ErrorAt     time.Time `json:"-"`

	// set from LastWrite and ErrorAt: null when zero
	LastWriteJSON *time.Time `json:"last_write"`
	ErrorAtJSON   *time.Time `json:"error_at,omitempty"`
}

// Agent is what the overview says of the agent.
type Agent struct {
	Version  string        `json:"version"`
	Running  bool          `json:"running"` // false while starting or reloading
	Started  time.Time     `json:"started"` // the process
	Since    time.Time     `json:"since"`   // the running configuration (after the last reload)
	Interval time.Duration `json:"-"`       // the agent's interval: how often the page refreshes
}

// Handler serves the page and its API from src. Wrap it with Guard for basic auth and the
// security headers.
func Handler(src Source) http.Handler {
	h := &handler{src: src, proc: newProcStats()}
	sub, _ := fs.Sub(static, "static")
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /app.css", files)
	mux.HandleFunc("GET /api/devices", h.devices)
	mux.HandleFunc("GET /api/devices/{name...}", h.device) // a name may hold a slash
	mux.HandleFunc("GET /api/overview", h.overview)
	return mux
}

type handler struct {
	src  Source
	proc *procStats
	rows sync.Pool // *[]row
}

// row is a device in a listing: its status and the figures the columns show.
type row struct {
	input  string
	st     models.DeviceStatus
	f      models.DeviceFigures // f.Errors is nil: the kinds are read again for a page's rows
	errors uint64               // all kinds
	risk   float64
	hasRsk bool
}

// collect walks every device into rows (reused between requests).
func (h *handler) collect(now time.Time) *[]row {
	rp, _ := h.rows.Get().(*[]row)
	if rp == nil {
		rp = new([]row)
	}
	rows := (*rp)[:0]
	var f models.DeviceFigures
	h.src.Devices(func(input string, r models.DeviceReporter) {
		r.DeviceStates(now, func(s models.DeviceStatus) {
			rows = append(rows, row{input: input, st: s})
			x := &rows[len(rows)-1]
			if s.Detail != nil {
				s.Detail.Figures(&f)
				x.f = f
				x.f.Errors = nil
				for _, k := range f.Errors {
					x.errors += k.Count
				}
			}
		})
	})
	*rp = rows
	return rp
}

// release keeps the rows for the next request. What they refer to (devices, texts) is kept
// until then, or until the pool lets them go at a garbage collection.
func (h *handler) release(rp *[]row) { h.rows.Put(rp) }

// stateRank orders states for "failing first": the worst first, devices polled by another
// agent last.
var stateRank = [...]int{
	models.DeviceFailing:     0,
	models.DeviceBreakerOpen: 1,
	models.DeviceHalfOpen:    2,
	models.DeviceStale:       3,
	models.DeviceStarting:    4,
	models.DeviceOK:          5,
	models.DeviceRemote:      6,
}

func rank(s models.DeviceState) int {
	if int(s) < len(stateRank) {
		return stateRank[s]
	}
	return len(stateRank)
}

// columns are the sort keys of /api/devices?sort=.
var columns = map[string]func(a, b *row) int{
	"name":       func(a, b *row) int { return strings.Compare(a.st.Name, b.st.Name) },
	"input":      func(a, b *row) int { return strings.Compare(a.input, b.input) },
	"state":      func(a, b *row) int { return cmp.Compare(rank(a.st.State), rank(b.st.State)) },
	"controller": func(a, b *row) int { return strings.Compare(a.st.Controller, b.st.Controller) },
	"backup":     func(a, b *row) int { return cmp.Compare(a.f.Backup, b.f.Backup) },
	// the age of the last good poll: never polled is the oldest
	"age": func(a, b *row) int { return -compareTime(a.st.LastGood, b.st.LastGood) },
	// none answered yet (0) sorts after every real round trip
	"rtt":          func(a, b *row) int { return cmp.Compare(orMax(a.f.RTT), orMax(b.f.RTT)) },
	"timeout":      func(a, b *row) int { return cmp.Compare(a.f.Timeout, b.f.Timeout) },
	"polls":        func(a, b *row) int { return cmp.Compare(a.f.Polls, b.f.Polls) },
	"polls_failed": func(a, b *row) int { return cmp.Compare(a.f.PollsFailed, b.f.PollsFailed) },
	"errors":       func(a, b *row) int { return cmp.Compare(a.errors, b.errors) },
	"last_error":   func(a, b *row) int { return compareTime(a.st.ErrorAt, b.st.ErrorAt) },
	"risk":         func(a, b *row) int { return cmp.Compare(riskOr(a), riskOr(b)) },
	"owner":        func(a, b *row) int { return strings.Compare(a.st.Owner, b.st.Owner) },
}

func compareTime(a, b time.Time) int { return a.Compare(b) }

func orMax(d time.Duration) time.Duration {
	if d <= 0 {
		return 1<<63 - 1
	}
	return d
}

// lookRisk reads x's disconnect_risk from the board: for the rows of a page, or every row when
// they are sorted by it.
func (x *row) lookRisk() {
	x.risk, x.hasRsk = models.LinkRiskOf(models.LinkKey{Device: x.st.Name, Controller: x.st.Controller})
}

func riskOr(r *row) float64 {
	if !r.hasRsk {
		return -1
	}
	return r.risk
}

// query is a parsed /api/devices request.
type query struct {
	states []models.DeviceState // none: all
	q      string
	tagKey string // q is "key=value"
	tagVal string
	sort   func(a, b *row) int
	byRisk bool
	desc   bool
	page   int
	limit  int
}

// MaxLimit bounds the devices of one page of /api/devices.
const MaxLimit = 1000

func parseQuery(r *http.Request) (query, string) {
	v := r.URL.Query()
	q := query{page: 1, limit: 100, q: strings.TrimSpace(v.Get("q"))}
	if k, val, ok := strings.Cut(q.q, "="); ok {
		q.tagKey, q.tagVal = strings.TrimSpace(k), strings.TrimSpace(val)
	}
	for _, s := range strings.Split(v.Get("state"), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		st, ok := stateNamed(s)
		if !ok {
			return q, "state " + strconv.Quote(s) + ": not a state (" + strings.Join(stateNames(), ", ") + ")"
		}
		q.states = append(q.states, st)
	}
	if s := v.Get("sort"); s != "" {
		f, ok := columns[s]
		if !ok {
			keys := make([]string, 0, len(columns))
			for k := range columns {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			return q, "sort " + strconv.Quote(s) + ": not a column (" + strings.Join(keys, ", ") + ")"
		}
		q.sort, q.byRisk = f, s == "risk"
	}
	q.desc = v.Get("desc") == "1" || v.Get("desc") == "true"
	for _, p := range []struct {
		key      string
		dst      *int
		min, max int
	}{{"page", &q.page, 1, 1 << 30}, {"limit", &q.limit, 1, MaxLimit}} {
		s := v.Get(p.key)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < p.min || n > p.max {
			return q, p.key + " " + strconv.Quote(s) + ": must be a number " + strconv.Itoa(p.min) + ".." + strconv.Itoa(p.max)
		}
		*p.dst = n
	}
	return q, ""
}

// stateNamed parses a state's name ("breaker open"; "breaker_open" and "breaker-open" too).
func stateNamed(s string) (models.DeviceState, bool) {
	s = strings.NewReplacer("_", " ", "-", " ").Replace(strings.ToLower(s))
	for st := models.DeviceStarting; st <= models.DeviceRemote; st++ {
		if strings.ReplaceAll(st.String(), "-", " ") == s {
			return st, true
		}
	}
	return 0, false
}

func stateNames() []string {
	var out []string
	for st := models.DeviceStarting; st <= models.DeviceRemote; st++ {
		out = append(out, st.String())
	}
	return out
}

// match reports whether x passes q's state filter and search.
func (q *query) match(x *row) bool {
	if len(q.states) > 0 && !slices.Contains(q.states, x.st.State) {
		return false
	}
	if q.q == "" {
		return true
	}
	if q.tagKey != "" {
		for _, t := range x.f.Tags {
			if strings.EqualFold(t.Key, q.tagKey) && strings.EqualFold(t.Value, q.tagVal) {
				return true
			}
		}
	}
	if containsFold(x.st.Name, q.q) || containsFold(x.st.Controller, q.q) || containsFold(x.input, q.q) || containsFold(x.st.Owner, q.q) {
		return true
	}
	for _, t := range x.f.Tags {
		if containsFold(t.Value, q.q) {
			return true
		}
	}
	return false
}

// containsFold reports whether sub is in s, ignoring case, without allocating.
func containsFold(s, sub string) bool {
	if sub == "" {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// Listing is the answer of /api/devices.
type Listing struct {
	Now     time.Time      `json:"now"`
	Total   int            `json:"total"`   // devices of every input
	Matched int            `json:"matched"` // devices that pass the filter
	Page    int            `json:"page"`
	Pages   int            `json:"pages"`
	Limit   int            `json:"limit"`
	Counts  map[string]int `json:"counts"` // every device by state
	Inputs  []InputCount   `json:"inputs"` // each input's devices by state
	Devices []Device       `json:"devices"`
}

// Device is a device in the JSON API.
type Device struct {
	Name       string            `json:"name"`
	Input      string            `json:"input"`
	State      string            `json:"state"`
	Failing    bool              `json:"failing"` // counts against the input's health
	Controller string            `json:"controller"`
	Backup     int               `json:"backup"` // 0: the primary controller; n: backup n
	Owner      string            `json:"owner,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	LastGood   *time.Time        `json:"last_good"` // null: no answered poll since the input started
	AgeS       *float64          `json:"age_s"`     // seconds since LastGood
	RTTMs      *float64          `json:"rtt_ms"`    // EWMA; null: none answered yet
	TimeoutMs  float64           `json:"timeout_ms"`
	Polls      uint64            `json:"polls"`
	PollsFail  uint64            `json:"polls_failed"`
	Requests   uint64            `json:"requests"`
	Retries    uint64            `json:"retries"`
	Errors     map[string]uint64 `json:"errors"` // by kind
	ErrorsAll  uint64            `json:"errors_total"`
	LastError  string            `json:"last_error,omitempty"`
	ErrorAt    *time.Time        `json:"error_at,omitempty"`
	Risk       *float64          `json:"disconnect_risk,omitempty"` // when processors.predict runs
	RTTs       []*int64          `json:"rtts_us,omitempty"`         // µs, oldest first; null: no answer
	Detail     *Detail           `json:"detail,omitempty"`          // /api/devices/{name} only
}

// Detail is the detail view of one device.
type Detail struct {
	ValuesAt *time.Time   `json:"values_at"` // null: the next poll copies them (ask again)
	Values   []FieldValue `json:"values"`
	Plan     []Read       `json:"plan"`
	Errors   []Error      `json:"errors"`  // newest first
	Breaker  []Change     `json:"breaker"` // newest first
}

// FieldValue is a field's latest value.
type FieldValue struct {
	Measurement string     `json:"measurement"`
	Field       string     `json:"field"`
	Value       any        `json:"value"`
	Quality     string     `json:"quality"`
	At          *time.Time `json:"at"` // null: never read
}

// Read is one request of a device's poll.
type Read struct {
	Read   string   `json:"read"`
	Fields []string `json:"fields"`
	Note   string   `json:"note,omitempty"`
}

// Error is an error of a device, or the same one repeated.
type Error struct {
	At      time.Time `json:"at"`
	Text    string    `json:"text"`
	Repeats int       `json:"repeats"`
}

// Change is a change of a breaker.
type Change struct {
	At         time.Time `json:"at"`
	Controller string    `json:"controller"`
	To         string    `json:"to"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// device turns x into its JSON form; with rtts, its round trips too. Its errors by kind are
// read again here (the listing keeps only their sum).
func device(x *row, now time.Time, rtts []time.Duration) Device {
	if x.st.Detail != nil {
		var f models.DeviceFigures
		x.st.Detail.Figures(&f)
		x.f.Errors = f.Errors
	}
	d := Device{
		Name: x.st.Name, Input: x.input, State: x.st.State.String(), Failing: x.st.State.Failing(),
		Controller: x.st.Controller, Backup: x.f.Backup, Owner: x.st.Owner,
		LastGood: timePtr(x.st.LastGood), TimeoutMs: ms(x.f.Timeout),
		Polls: x.f.Polls, PollsFail: x.f.PollsFailed, Requests: x.f.Requests, Retries: x.f.Retries,
		ErrorsAll: x.errors, LastError: x.st.LastError, ErrorAt: timePtr(x.st.ErrorAt),
		Errors: make(map[string]uint64, len(x.f.Errors)),
	}
	if !x.st.LastGood.IsZero() {
		age := now.Sub(x.st.LastGood).Seconds()
		d.AgeS = &age
	}
	if x.f.RTT > 0 {
		v := ms(x.f.RTT)
		d.RTTMs = &v
	}
	if len(x.f.Tags) > 0 {
		d.Tags = make(map[string]string, len(x.f.Tags))
		for _, t := range x.f.Tags {
			d.Tags[t.Key] = t.Value
		}
	}
	for _, k := range x.f.Errors {
		d.Errors[k.Kind] = k.Count
	}
	if x.hasRsk {
		r := x.risk
		d.Risk = &r
	}
	if rtts != nil {
		d.RTTs = make([]*int64, len(rtts))
		vs := make([]int64, len(rtts))
		for i, r := range rtts {
			if r >= 0 {
				vs[i] = r.Microseconds()
				d.RTTs[i] = &vs[i]
			}
		}
	}
	return d
}

func (h *handler) devices(w http.ResponseWriter, r *http.Request) {
	q, bad := parseQuery(r)
	if bad != "" {
		http.Error(w, bad, http.StatusBadRequest)
		return
	}
	now := time.Now()
	rp := h.collect(now)
	defer h.release(rp)
	rows := *rp
	out := Listing{Now: now, Total: len(rows), Page: q.page, Limit: q.limit, Counts: map[string]int{}}
	for st := models.DeviceStarting; st <= models.DeviceRemote; st++ {
		out.Counts[st.String()] = 0
	}
	sel := make([]*row, 0, len(rows))
	out.Inputs = []InputCount{}
	for i := range rows {
		x := &rows[i]
		state := x.st.State.String()
		out.Counts[state]++
		if n := len(out.Inputs); n == 0 || out.Inputs[n-1].Name != x.input {
			out.Inputs = append(out.Inputs, InputCount{Name: x.input, Counts: map[string]int{}})
		}
		in := &out.Inputs[len(out.Inputs)-1]
		in.Devices++
		in.Counts[state]++
		if q.match(x) {
			sel = append(sel, x)
		}
	}
	out.Matched = len(sel)
	byName := func(a, b *row) int {
		return cmp.Or(strings.Compare(a.st.Name, b.st.Name), strings.Compare(a.input, b.input))
	}
	sortBy := q.sort
	if sortBy == nil {
		sortBy = columns["state"] // failing first
	}
	if q.byRisk {
		for _, x := range sel {
			x.lookRisk()
		}
	}
	out.Pages = max((len(sel)+q.limit-1)/q.limit, 1)
	from := min((q.page-1)*q.limit, len(sel))
	to := min(from+q.limit, len(sel))
	// Only the page is put in order: the rows before it and after it are only set apart.
	sortRange(sel, from, to, func(a, b *row) int {
		c := sortBy(a, b)
		if q.desc {
			c = -c
		}
		return cmp.Or(c, byName(a, b))
	})
	page := sel[from:to]
	out.Devices = make([]Device, len(page))
	var rtts []time.Duration
	for i, x := range page {
		rtts = rtts[:0]
		if x.st.Detail != nil {
			rtts = x.st.Detail.RTTs(rtts)
		}
		if !q.byRisk {
			x.lookRisk()
		}
		out.Devices[i] = device(x, now, rtts)
	}
	writeJSON(w, &out)
}

func (h *handler) device(w http.ResponseWriter, r *http.Request) {
	name, input := r.PathValue("name"), r.URL.Query().Get("input")
	now := time.Now()
	rp := h.collect(now)
	defer h.release(rp)
	for i := range *rp {
		x := &(*rp)[i]
		if x.st.Name != name || input != "" && x.input != input {
			continue
		}
		x.lookRisk()
		var rtts []time.Duration
		d := Detail{Values: []FieldValue{}, Plan: []Read{}, Errors: []Error{}, Breaker: []Change{}}
		if x.st.Detail != nil {
			rtts = x.st.Detail.RTTs(nil)
			var md models.DeviceDetail
			x.st.Detail.Detail(now, &md)
			d.ValuesAt = timePtr(md.ValuesAt)
			for _, v := range md.Values {
				fv := FieldValue{Measurement: v.Measurement, Field: v.Name, Quality: v.Quality, At: timePtr(v.At)}
				if v.Field.Key != "" {
					fv.Value = v.Field.Value()
				}
				d.Values = append(d.Values, fv)
			}
			for _, p := range md.Plan {
				d.Plan = append(d.Plan, Read{Read: p.Read, Fields: p.Fields, Note: p.Note})
			}
			for _, e := range md.Errors {
				d.Errors = append(d.Errors, Error{At: e.At, Text: e.Text, Repeats: e.Repeats})
			}
			for _, c := range md.Breaker {
				d.Breaker = append(d.Breaker, Change{At: c.At, Controller: c.Controller, To: c.To})
			}
		}
		dev := device(x, now, rtts)
		dev.Detail = &d
		writeJSON(w, &dev)
		return
	}
	http.Error(w, "no device "+strconv.Quote(name), http.StatusNotFound)
}

// Overview is the answer of /api/overview.
type Overview struct {
	Now       time.Time      `json:"now"`
	Agent     Agent          `json:"agent"`
	UptimeS   float64        `json:"uptime_s"`
	RefreshMs int64          `json:"refresh_ms"`  // how often the page refreshes: the agent's interval, 1..10 s
	CPU       *float64       `json:"cpu_percent"` // of one core, since the previous overview (the first: since the start)
	RSS       uint64         `json:"rss_bytes"`
	Devices   int            `json:"devices"`
	Counts    map[string]int `json:"counts"`
	Inputs    []InputCount   `json:"inputs"`
	Outputs   []Output       `json:"outputs"`
}

// InputCount is an input's devices by state.
type InputCount struct {
	Name    string         `json:"name"`
	Devices int            `json:"devices"`
	Counts  map[string]int `json:"counts"`
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	a := h.src.Agent()
	o := Overview{Now: now, Agent: a, UptimeS: now.Sub(a.Started).Seconds(), Counts: map[string]int{},
		Outputs: h.src.Outputs(), Inputs: []InputCount{}}
	o.RefreshMs = min(max(a.Interval, time.Second), 10*time.Second).Milliseconds()
	for st := models.DeviceStarting; st <= models.DeviceRemote; st++ {
		o.Counts[st.String()] = 0
	}
	// ?devices=0: no walk of the devices (the page has their counts from /api/devices).
	if r.URL.Query().Get("devices") != "0" {
		h.src.Devices(func(input string, r models.DeviceReporter) {
			ic := InputCount{Name: input, Counts: map[string]int{}}
			r.DeviceStates(now, func(s models.DeviceStatus) {
				ic.Devices++
				ic.Counts[s.State.String()]++
				o.Counts[s.State.String()]++
			})
			o.Devices += ic.Devices
			o.Inputs = append(o.Inputs, ic)
		})
	}
	if o.Outputs == nil {
		o.Outputs = []Output{}
	}
	for i := range o.Outputs {
		out := &o.Outputs[i]
		out.LastWriteJSON, out.ErrorAtJSON = timePtr(out.LastWrite), timePtr(out.ErrorAt)
	}
	o.CPU, o.RSS = h.proc.sample(now)
	writeJSON(w, &o)
}

// sortRange puts s[from:to] in the order of cmp, with every element of s[:from] before them and
// every one of s[to:] after: what a page of a sorted listing needs, in O(len(s)) comparisons on
// average rather than a full sort's O(n log n). cmp must be a total order (no two equal).
func sortRange[E any](s []E, from, to int, cmp func(a, b E) int) {
	nth(s, from, cmp)
	if to < len(s) {
		nth(s[from:], to-from, cmp)
	}
	slices.SortFunc(s[from:to], cmp)
}

// nth partially orders s so that s[k] is the element that sorting would put there, with
// s[:k] before it and s[k+1:] after (Hoare's selection, a random pivot).
func nth[E any](s []E, k int, cmp func(a, b E) int) {
	lo, hi := 0, len(s)-1
	for lo < hi && k >= lo && k <= hi {
		p := lo + rand.IntN(hi-lo+1)
		s[p], s[hi] = s[hi], s[p]
		i := lo
		for j := lo; j < hi; j++ {
			if cmp(s[j], s[hi]) < 0 {
				s[i], s[j] = s[j], s[i]
				i++
			}
		}
		s[i], s[hi] = s[hi], s[i]
		switch {
		case k < i:
			hi = i - 1
		case k > i:
			lo = i + 1
		default:
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w) // escapes <, > and & too
	enc.Encode(v)
}

// procStats measures the process's CPU between two overviews, and its RSS.
type procStats struct {
	mu   sync.Mutex
	p    *process.Process
	at   time.Time
	cpu  float64 // seconds
	last *float64
}

func newProcStats() *procStats {
	p, _ := process.NewProcess(int32(os.Getpid()))
	return &procStats{p: p}
}

// sample returns the CPU used since the previous sample (at least a second ago; the previous
// figure otherwise) in percent of one core, and the RSS.
func (s *procStats) sample(now time.Time) (*float64, uint64) {
	if s.p == nil {
		return nil, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var rss uint64
	if m, err := s.p.MemoryInfo(); err == nil {
		rss = m.RSS
	}
	if !s.at.IsZero() && now.Sub(s.at) < time.Second {
		return s.last, rss
	}
	t, err := s.p.Times()
	if err != nil {
		return s.last, rss
	}
	cpu := t.User + t.System
	switch {
	case !s.at.IsZero():
		pct := (cpu - s.cpu) / now.Sub(s.at).Seconds() * 100
		s.last = &pct
	default: // the first sample: the average since the process started
		if ms, err := s.p.CreateTime(); err == nil && now.UnixMilli() > ms+1000 {
			pct := cpu / (float64(now.UnixMilli()-ms) / 1000) * 100
			s.last = &pct
		}
	}
	s.at, s.cpu = now, cpu
	return s.last, rss
}
