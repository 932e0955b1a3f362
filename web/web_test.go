package web

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/tagpipe/tagpipe/internal/testkit/browser"
	"github.com/tagpipe/tagpipe/models"
)

func serve(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

// TestStatic: the page is one embedded page of at most 150 KB that loads nothing from outside
// (plants are offline): no URL but its own in a src, href, url() or import.
func TestStatic(t *testing.T) {
	total := 0
	outside := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(|@import|fetch\(\s*["'](https?:)?//`)
	fs.WalkDir(static, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(path)
		total += len(b)
		if m := outside.Find(b); m != nil {
			t.Errorf("%s loads from outside: %q", path, m)
		}
		return nil
	})
	t.Logf("the page weighs %d bytes", total)
	if total > 150*1000 {
		t.Errorf("the page weighs %d bytes, more than 150 KB", total)
	}
	h := Handler(newPlant(3))
	for path, ctype := range map[string]string{"/": "text/html", "/app.js": "javascript", "/app.css": "text/css"} {
		w := serve(t, h, path)
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("%s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
	}
	if w := serve(t, h, "/static/index.html"); w.Code != 404 {
		t.Errorf("/static/index.html: %d, want 404", w.Code)
	}
}

// TestHeaders: every answer carries the headers against framing, sniffing and injected scripts.
func TestHeaders(t *testing.T) {
	w := serve(t, Headers(Handler(newPlant(3))), "/")
	for k, want := range map[string]string{
		"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Content-Security-Policy": "default-src 'none'; script-src 'self'",
	} {
		if got := w.Header().Get(k); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := w.Header().Get("Content-Security-Policy"); strings.Contains(csp, "unsafe") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

// TestEscaped: names and errors from configs and devices reach the page as JSON strings with
// <, > and & escaped (the page puts them in with textContent; the browser test checks that).
func TestEscaped(t *testing.T) {
	p := newPlant(2)
	p.devs[0].status.Name = `<script>alert(1)</script>`
	p.devs[0].status.LastError = `bad answer: <img src=x onerror=alert(2)> & more`
	w := serve(t, Handler(p), "/api/devices")
	body := w.Body.String()
	if strings.ContainsAny(body, "<>") || strings.Contains(body, "& more") {
		t.Errorf("unescaped: %s", body)
	}
	var l Listing
	if err := json.Unmarshal(w.Body.Bytes(), &l); err != nil || !slices.ContainsFunc(l.Devices, func(d Device) bool { return d.Name == p.devs[0].status.Name }) {
		t.Errorf("the name does not come back whole: %v", err)
	}
}

func TestQuery(t *testing.T) {
	h := Handler(newPlant(1000))
	list := func(q string) Listing {
		t.Helper()
		w := serve(t, h, "/api/devices?"+q)
		if w.Code != 200 {
			t.Fatalf("?%s: %d %s", q, w.Code, w.Body)
		}
		var l Listing
		json.Unmarshal(w.Body.Bytes(), &l)
		return l
	}
	l := list("")
	// every 50th from 3 failing (20), every 200th from 7 breaker open (5)
	if l.Total != 1000 || l.Counts["failing"] != 20 || l.Counts["breaker open"] != 5 || l.Counts["ok"] != 975 || len(l.Devices) != 100 {
		t.Fatalf("total %d, counts %v, %d rows", l.Total, l.Counts, len(l.Devices))
	}
	if len(l.Inputs) != 1 || l.Inputs[0].Devices != 1000 || l.Inputs[0].Counts["failing"] != 20 {
		t.Errorf("inputs %+v", l.Inputs)
	}
	for q, want := range map[string]int{"": 1000, "?devices=0": 0} {
		var o Overview
		json.Unmarshal(serve(t, h, "/api/overview"+q).Body.Bytes(), &o)
		if o.Devices != want || len(o.Outputs) != 1 || o.Agent.Version != "test" || o.RSS == 0 {
			t.Errorf("/api/overview%s: %d devices, %+v", q, o.Devices, o)
		}
	}
	if l.Devices[0].Name != "plc-00003" || l.Devices[19].State != "failing" || l.Devices[20].State != "breaker open" || l.Devices[25].Name != "plc-00000" {
		t.Errorf("not failing first, then by name: %s %s %s %s", l.Devices[0].Name, l.Devices[19].State, l.Devices[20].State, l.Devices[25].Name)
	}
	// Every sort and page, against a full sort of the same listing.
	for key := range columns {
		for _, desc := range []string{"", "&desc=1"} {
			all := list("limit=1000&sort=" + key + desc).Devices
			var paged []string
			for page := 1; page <= 4; page++ {
				for _, d := range list("limit=250&page=" + string(rune('0'+page)) + "&sort=" + key + desc).Devices {
					paged = append(paged, d.Name)
				}
			}
			var whole []string
			for _, d := range all {
				whole = append(whole, d.Name)
			}
			if !slices.Equal(paged, whole) {
				t.Errorf("sort=%s%s: pages differ from the whole", key, desc)
			}
		}
	}
	asc := list("limit=1000&sort=rtt").Devices
	for i := 1; i < len(asc); i++ {
		if *asc[i].RTTMs < *asc[i-1].RTTMs {
			t.Fatalf("sort=rtt: %v after %v", *asc[i].RTTMs, *asc[i-1].RTTMs)
		}
	}
	if l := list("q=PLC-0099"); l.Matched != 10 || l.Devices[0].Name != "plc-00990" {
		t.Errorf("q=PLC-0099: %d matched", l.Matched)
	}
	if l := list("q=line=l7"); l.Matched != 25 {
		t.Errorf("q=line=l7: %d matched, want 25", l.Matched)
	}
	if l := list("q=10.0.3.7:"); l.Matched != 1 {
		t.Errorf("q by controller: %d matched", l.Matched)
	}
	if l := list("state=breaker-open,failing&limit=10&page=3"); l.Matched != 25 || l.Pages != 3 || len(l.Devices) != 5 {
		t.Errorf("state filter, last page: %d matched, %d pages, %d rows", l.Matched, l.Pages, len(l.Devices))
	}
	if l := list("page=99"); len(l.Devices) != 0 || l.Pages != 10 {
		t.Errorf("a page past the end: %d rows, %d pages", len(l.Devices), l.Pages)
	}
}

// TestDeviceByName: any name, a slash or a space in it too, finds its device.
func TestDeviceByName(t *testing.T) {
	p := newPlant(3)
	p.devs[1].status.Name = "line 2/boiler #3"
	h := Handler(p)
	w := serve(t, h, "/api/devices/"+url.PathEscape("line 2/boiler #3"))
	var d Device
	if err := json.Unmarshal(w.Body.Bytes(), &d); w.Code != 200 || err != nil || d.Name != "line 2/boiler #3" || d.Detail == nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if len(d.Detail.Errors) != 0 || len(d.RTTs) != models.RTTRing {
		t.Errorf("detail %+v, %d round trips", d.Detail, len(d.RTTs))
	}
	if w := serve(t, h, "/api/devices/plc-00000?input=inputs.other"); w.Code != 404 {
		t.Errorf("another input's device: %d", w.Code)
	}
}

func TestSortRange(t *testing.T) {
	for n := range 40 {
		for from := 0; from <= n; from++ {
			for to := from; to <= n; to++ {
				s := make([]int, n)
				for i := range s {
					s[i] = (i * 7919) % (n + 1)
				}
				want := slices.Clone(s)
				slices.Sort(want)
				sortRange(s, from, to, func(a, b int) int { return a - b })
				if !slices.Equal(s[from:to], want[from:to]) {
					t.Fatalf("n %d [%d:%d]: %v, want %v", n, from, to, s[from:to], want[from:to])
				}
			}
		}
	}
}

// TestGuard: basic auth with a bcrypt hash; wrong or missing credentials get 401 without a hint
// and a count; credentials that passed once are not hashed again.
func TestGuard(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	failures := models.RegisterStats("test_guard", nil).Get("auth_failures")
	h := Guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("in")) }),
		Access{Username: "op", PasswordHash: string(hash), Failures: failures})
	try := func(user, pass string) (int, string) {
		r := httptest.NewRequest("GET", "/", nil)
		if user != "" || pass != "" {
			r.SetBasicAuth(user, pass)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, strings.TrimSpace(w.Body.String())
	}
	for _, c := range [][2]string{{"", ""}, {"op", "wrong"}, {"other", "pw"}, {"op", ""}, {"OP", "pw"}} {
		if code, body := try(c[0], c[1]); code != 401 || body != "unauthorized" {
			t.Errorf("%q/%q: %d %q", c[0], c[1], code, body)
		}
	}
	if failures.Get() != 5 {
		t.Errorf("%d failures counted, want 5", failures.Get())
	}
	if code, body := try("op", "pw"); code != 200 || body != "in" {
		t.Errorf("the right credentials: %d %q", code, body)
	}
	g := h.(*guard)
	g.hash = []byte("not a hash any more") // a second request must not need it
	if code, _ := try("op", "pw"); code != 200 {
		t.Errorf("credentials that passed are checked again: %d", code)
	}
	if code, _ := try("op", "pw2"); code != 401 {
		t.Errorf("other credentials: %d", code)
	}
}

// TestSearchInBrowser: the page with 10,000 devices in Debian's chromium answers a search: the
// rows are filtered to the device typed. The time it takes is logged, not asserted (a loaded
// machine); BenchmarkDevicesPage measures the server's share.
func TestSearchInBrowser(t *testing.T) {
	srv := httptest.NewServer(Headers(Handler(newPlant(10000))))
	defer srv.Close()
	ctx := browser.New(t, 2*time.Minute)
	start := time.Now()
	browser.Do(t, ctx, chromedp.Navigate(srv.URL+"/"))
	browser.Wait(t, ctx, time.Minute, `document.querySelectorAll("#rows tr").length === 100 && document.getElementById("count-ok").textContent === "9,750"`)
	loaded := time.Since(start)
	start = time.Now()
	browser.Do(t, ctx, chromedp.SendKeys("#q", "plc-04242"))
	browser.Wait(t, ctx, time.Minute, `JSON.stringify([...document.querySelectorAll("#rows td.c-name")].map(td => td.textContent)) === '["plc-04242"]'`)
	t.Logf("10,000 devices: the page showed its first 100 after %v; a search answered %v after typing (12 keys, 120 ms pause before the request)",
		loaded.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if got := browser.Eval[string](t, ctx, `document.getElementById("matched").textContent`); got != "1 of 10,000 devices" {
		t.Errorf("the page says %q", got)
	}
}
