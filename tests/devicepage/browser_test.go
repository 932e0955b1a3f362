package devicepage_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/tagpipe/tagpipe/agent"
	"github.com/tagpipe/tagpipe/internal/sim/modbussim"
	"github.com/tagpipe/tagpipe/internal/testkit/browser"
	"github.com/tagpipe/tagpipe/web"
)

const xssName = `<img src=x onerror=alert(1)>`

// refreshes is how many times the page has redrawn itself from the API.
const refreshes = `parseInt(document.getElementById("status").dataset.n || "0", 10)`

// clearSearch empties the search box as the keyboard would.
func clearSearch(t *testing.T, ctx context.Context) {
	t.Helper()
	browser.Eval[bool](t, ctx, `(() => { const q = document.getElementById("q"); q.value = ""; q.dispatchEvent(new Event("input")); return true })()`)
}

// rowNames are the names in the table's rows, as the browser shows them.
const rowNames = `[...document.querySelectorAll("#rows td.c-name")].map(td => td.textContent)`

// TestPageInBrowser loads the device page of an agent polling 1,000 simulated devices in
// Debian's chromium and uses it as an operator would: the counts, a search, a sort by RTT, a
// device switched off during the test turning failing without a reload, its detail, and a device
// whose name is HTML.
func TestPageInBrowser(t *testing.T) {
	const interval = time.Second
	p := newPlant(t, interval, "")
	// 990 devices behind ten gateways, the victim and the device named in HTML on ports of
	// their own, and eight whose ports refuse.
	gw := p.server(modbussim.Config{})
	for g := range 10 {
		addr := p.listen(gw)
		for u := 1; u <= 99; u++ {
			p.device(fmt.Sprintf("gw%d-meter-%03d", g, u), addr, u, "")
		}
	}
	victim := p.server(modbussim.Config{})
	p.device("victim-boiler", p.listen(victim), 1, "    tags = { line = \"V\" }\n")
	p.device(xssName, p.listen(gw), 1, "")
	for i := range 8 {
		p.device(fmt.Sprintf("off-%d", i), refusing(t), 1, "")
	}
	base := "http://" + p.run(agent.HTTPOptions{Version: "test"})

	ctx := browser.New(t, 3*time.Minute)
	start := time.Now()
	browser.Do(t, ctx, chromedp.Navigate(base+"/"))
	// The counts: 992 answer, 8 refuse (failing, then breaker open after five polls).
	browser.Wait(t, ctx, time.Minute, `document.getElementById("count-ok").textContent === "992" &&
		(parseInt(document.getElementById("count-failing").textContent) + parseInt(document.getElementById("count-breaker-open").textContent)) === 8`)
	t.Logf("1,000 devices counted on the page %v after it was opened", time.Since(start).Round(time.Millisecond))
	var l web.Listing
	getJSON(t, base+"/api/devices?limit=1", &l)
	if l.Total != 1000 {
		t.Fatalf("the API lists %d devices, want 1000", l.Total)
	}
	total := browser.Eval[string](t, ctx, `document.getElementById("matched").textContent`)
	if total != "1,000 of 1,000 devices" {
		t.Errorf("the page says %q", total)
	}
	first := browser.Eval[[]string](t, ctx, rowNames)
	if len(first) != 100 || !strings.HasPrefix(first[0], "off-") {
		t.Errorf("first page: %d rows starting %q: want 100, failing first", len(first), first[:min(3, len(first))])
	}

	// Search: type a name; the rows are filtered to it.
	browser.Eval[bool](t, ctx, `window.noReload = true`)
	start = time.Now()
	browser.Do(t, ctx, chromedp.SendKeys("#q", "victim"))
	browser.Wait(t, ctx, 30*time.Second, `JSON.stringify(`+rowNames+`) === '["victim-boiler"]'`)
	t.Logf("search among 1,000 devices answered in the browser %v after typing", time.Since(start).Round(time.Millisecond))

	// Sort by RTT: clear the search, click the column; the rows come in rising average RTT.
	clearSearch(t, ctx)
	browser.Do(t, ctx, chromedp.Click(`th[data-sort="rtt"]`))
	browser.Wait(t, ctx, 30*time.Second, `document.querySelector('th[data-sort="rtt"]').classList.contains("asc") && document.querySelectorAll("#rows tr").length === 100`)
	rtts := browser.Eval[[]string](t, ctx, `[...document.querySelectorAll("#rows td.c-rtt")].map(td => td.dataset.v)`)
	prev := -1.0
	for i, s := range rtts {
		var v float64
		if s == "" {
			t.Fatalf("row %d has no RTT on the first page of 992 that answer", i)
		}
		fmt.Sscan(s, &v)
		if v < prev {
			t.Fatalf("row %d: RTT %v after %v: not sorted: %v", i, v, prev, rtts)
		}
		prev = v
	}
	hash := browser.Eval[string](t, ctx, `location.hash`)
	if !strings.Contains(hash, "sort=rtt") {
		t.Errorf("the view is not kept in the URL: %q", hash)
	}

	// Switch the victim off; without a reload it turns failing within two intervals (two
	// refreshes of the page after the one under way).
	browser.Do(t, ctx, chromedp.SendKeys("#q", "victim"))
	browser.Wait(t, ctx, 30*time.Second, `JSON.stringify(`+rowNames+`) === '["victim-boiler"]' && document.querySelector("#rows tr").dataset.state === "ok"`)
	before := browser.Eval[int](t, ctx, refreshes)
	killed := time.Now()
	victim.Close()
	browser.Wait(t, ctx, 30*time.Second, `document.querySelector("#rows tr") && ["failing", "breaker open"].includes(document.querySelector("#rows tr").dataset.state)`)
	after := browser.Eval[int](t, ctx, refreshes)
	t.Logf("the victim showed failing %v after it was switched off, %d refreshes later", time.Since(killed).Round(time.Millisecond), after-before)
	if after-before > 3 {
		t.Errorf("the victim turned failing %d refreshes after it was switched off: want at most 2 (and the one under way)", after-before)
	}
	if !browser.Eval[bool](t, ctx, `window.noReload === true`) {
		t.Error("the page was reloaded")
	}

	// Its detail: click the row.
	browser.Do(t, ctx, chromedp.Click(`#rows tr`))
	browser.Wait(t, ctx, 30*time.Second, `!document.getElementById("detail").hidden && document.getElementById("detail-name").textContent === "victim-boiler" && document.querySelectorAll("#detail-errors tbody tr").length > 0`)
	summary := browser.Eval[string](t, ctx, `document.getElementById("detail-summary").textContent + " | " + document.getElementById("detail-plan").textContent`)
	if !strings.Contains(summary, "line=V") || !strings.Contains(summary, "holding 0..18") {
		t.Errorf("detail: %q", summary)
	}

	// A device named in HTML is shown as its name: no element is made of it.
	browser.Do(t, ctx, chromedp.Click("#close"))
	clearSearch(t, ctx)
	browser.Do(t, ctx, chromedp.SendKeys("#q", "onerror"))
	browser.Wait(t, ctx, 30*time.Second, `document.querySelectorAll("#rows tr").length === 1 && document.querySelector("#rows tr").dataset.name.includes("onerror")`)
	shown := browser.Eval[string](t, ctx, `document.querySelector("#rows td.c-name").textContent`)
	imgs := browser.Eval[int](t, ctx, `document.querySelectorAll("img").length`)
	if shown != xssName || imgs != 0 {
		t.Errorf("the device named %q shows as %q, with %d img elements on the page", xssName, shown, imgs)
	}
}

// TestPageBasicAuth: with http_username set the page, its API and /metrics want the password;
// /healthz does not. A wrong password gets 401, no hint, and a count in internal_http.
func TestPageBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := newPlant(t, 500*time.Millisecond, "")
	p.device("meter-1", p.listen(p.server(modbussim.Config{})), 1, "")
	base := "http://" + p.run(agent.HTTPOptions{Username: "operator", PasswordHash: string(hash)})

	status := func(path, user, pass string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		path, user, pass string
		want             int
	}{
		{"/", "", "", 401}, {"/api/devices", "", "", 401}, {"/metrics", "", "", 401},
		{"/", "operator", "wrong", 401}, {"/", "someone", "s3cret", 401},
		{"/healthz", "", "", 200}, {"/", "operator", "s3cret", 200}, {"/api/devices", "operator", "s3cret", 200},
	} {
		code, body := status(c.path, c.user, c.pass)
		if code != c.want {
			t.Errorf("%s as %q: %d, want %d", c.path, c.user, code, c.want)
		}
		if code == 401 && strings.TrimSpace(body) != "unauthorized" {
			t.Errorf("%s as %q: 401 says %q: want no hint", c.path, c.user, body)
		}
	}
	_, metrics := status("/metrics", "operator", "s3cret")
	if !strings.Contains(metrics, "internal_http_auth_failures 5") {
		t.Errorf("/metrics does not count the 5 refusals:\n%s", grep(metrics, "internal_http"))
	}

	// In the browser: refused without the password, the page and its data with it.
	ctx := browser.New(t, 2*time.Minute)
	// Headless chromium asks nobody for a password: the load fails as unauthorized.
	err = chromedp.Do(ctx, chromedp.Navigate(base+"/"))
	if err == nil || !strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS") {
		t.Errorf("the page loaded without the password: %v", err)
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:s3cret"))
	browser.Do(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	}), chromedp.Navigate(base+"/"))
	browser.Wait(t, ctx, 30*time.Second, `document.querySelectorAll("#rows td.c-name").length === 1 && document.querySelector("#rows td.c-name").textContent === "meter-1"`)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
