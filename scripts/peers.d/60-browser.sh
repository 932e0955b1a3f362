# The device page (web/, tests/devicepage): its browser tests drive Debian's chromium, headless,
# through chromedp (internal/testkit/browser). The step starts it once on a blank page, so that a
# chromium that cannot run here shows now with its own error, not later as a failed test.
apt_need chromium
step "chromium (device page tests)" '
  out=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --disable-quic \
    --user-data-dir="$(mktemp -d)" --dump-dom about:blank 2>&1) || {
    echo "peers: chromium does not start:" >&2
    echo "$out" >&2
    exit 1
  }
  echo "peers: $(chromium --version 2>/dev/null)"
'
