// Package browser starts Debian's chromium (/usr/bin/chromium, headless) for tests and drives it
// with chromedp. Nothing downloads a browser of its own; a missing chromium fails the test in
// CI and skips it elsewhere (testpeer.Missing). scripts/peers.d/60-browser.sh installs it.
package browser

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
)

// Path is Debian's chromium.
const Path = "/usr/bin/chromium"

// New starts a headless chromium with a fresh profile and returns a context of one tab in it,
// cancelled (the browser stopped) when the test ends. timeout bounds the test's use of it.
func New(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		testpeer.Missing(t, "chromium", "apt-get install chromium", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.DisableGPU,
		chromedp.NoSandbox, // as root, chromium runs only without its sandbox
		chromedp.WindowSize(1400, 900),
		// Nothing but the page under test: no updates, sync, or QUIC probes to the outside.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first run starts the browser, which lives as long as that run's context: no timeout
	// on it (chromedp.Run), only on the context derived from it afterwards.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start %s: %v", Path, err)
	}
	ctx, cancel := context.WithTimeout(tab, timeout)
	t.Cleanup(cancel)
	return ctx
}

// Eval evaluates a JavaScript expression in the page and returns its value.
func Eval[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// Do runs actions in the page, failing the test at the first error.
func Do(t testing.TB, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// Wait evaluates a boolean JavaScript expression every 50 ms until it is true; it fails the
// test after limit.
func Wait(t testing.TB, ctx context.Context, limit time.Duration, js string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !Eval[bool](t, ctx, js) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, js)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
