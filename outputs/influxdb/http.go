package influxdb

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/internal/serializer"
	"github.com/tagpipe/tagpipe/models"
)

// writer is the HTTP write path shared by outputs.influxdb (/write) and outputs.influxdb_v2
// (/api/v2/write). A batch is serialized once into a reused buffer, sent (gzip'd from a pool)
// to the first URL that takes it, and the server's answer becomes the batch's verdict:
//
//	2xx                  every line accepted
//	400, 422             the lines the server names are rejected, the rest is sent again to
//	                     confirm it (a rewrite of the same points is idempotent in InfluxDB);
//	                     when the answer names no line, the lines are bisected
//	413                  see tooLarge: the batch is kept and split into halves from the next
//	                     flush (one 413 per Write at most); a single line is dropped only when
//	                     the same URL accepted a smaller body before
//	429, 503             the URL is not written to before Retry-After passes; batch kept
//	5xx, reset, timeout  the URL backs off (exponential); the next URL is tried; batch kept
//	401, 403             logged once per change; the next URL is tried; batch kept
//	other                batch kept, with the server's message
//
// A writer is not safe for concurrent use (the agent never calls Write concurrently).
type writer struct {
	log     *slog.Logger
	client  *http.Client
	eps     []*endpoint
	cur     int         // index of the URL that answered last
	header  http.Header // sent with every request (read-only once built)
	gzip    bool
	timeout time.Duration
	ser     *serializer.Influx
	uints   bool   // write uint fields as unsigned (else as integers, clamped)
	dropTag string // a tag left out of the lines (bucket_tag with exclude_bucket_tag)

	// notFound is called on a 404; it returns true when the write is worth trying once more on
	// the same URL (outputs.influxdb creates the missing database).
	notFound func(ctx context.Context, e *endpoint, msg string) bool

	// Backoff after a failed request (per URL), and the cap on requests for one Write
	// (bisecting 400s and splitting 413s can take several): what is left waits for the next
	// flush. Fields, so tests can shorten them.
	minWait, maxWait time.Duration
	maxRetryAfter    time.Duration
	maxRequests      int
	maxBody          int              // learned from a 413: bodies above it are split before sending (0: none)
	splitLog         models.ErrorFold // "batches are split", at most once a minute

	stats *models.Stats
	st    writerStats

	// Reused between writes.
	body     []byte // the lines of the group being written
	lines    []line
	send     []byte // a body assembled from lines that are not next to each other
	zbuf     bytes.Buffer
	scratch  models.Metric
	tagBuf   []models.Tag
	fieldBuf []models.Field
	all      []int

	// The verdict of the write in progress.
	accepted, rejected []int
	requests           int
	firstLine          string
	firstReason        string
}

type writerStats struct {
	requests, networkErrors, serverErrors, retryAfter, authErrors, tooLarge, linesRejected *models.Stat
	droppedTooLarge                                                                        *models.Stat // lines dropped as over the server's limit (each also in linesRejected)
}

// endpoint is one of the configured URLs.
type endpoint struct {
	label     string // scheme://host/path without credentials, for logs
	base      *url.URL
	write     string // the write URL without its query
	notBefore time.Time
	reason    string // what it answered last, the reason it waits until notBefore
	kind      string // the kind of failure reason is (urlError)
	backoff   *resilience.Backoff
	authCode  int // the 401/403 it answered last, 0 once it accepts
	// The smallest body (bytes as sent) this URL accepted with a 2xx (0: none yet): a 413 on a
	// single line larger than this shows the limit lies between the two; a 413 on a body far
	// below it is the server's fault, not the body's.
	okMin int
}

// line is one serialized metric: its index in the batch and its bytes in writer.body.
type line struct{ idx, start, end int32 }

// gzipPool holds gzip writers for all influxdb outputs: a writer's compressor state is large,
// and an output only needs it while it compresses a body.
var gzipPool = sync.Pool{New: func() any {
	z, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return z
}}

// transportOptions is what a plugin's Connect hands to setup.
type transportOptions struct {
	name      string
	urls      []string
	path      string // "write" or "api/v2/write"
	timeout   time.Duration
	gzip      bool
	headers   map[string]string
	auth      string // the Authorization header, "" for none
	tls       *tls.Config
	precision time.Duration
	uints     bool
	dropTag   string
}

// setup (re)builds the writer for Connect: HTTP client, URLs, headers, serializer, stats.
func (w *writer) setup(o transportOptions, log *slog.Logger) error {
	w.close()
	w.log, w.timeout, w.gzip, w.uints, w.dropTag = log, o.timeout, o.gzip, o.uints, o.dropTag
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.minWait == 0 {
		w.minWait, w.maxWait = time.Second, 30*time.Second
	}
	if w.maxRetryAfter == 0 {
		w.maxRetryAfter = time.Hour
	}
	if w.maxRequests == 0 {
		w.maxRequests = 64
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = o.tls
	tr.MaxIdleConnsPerHost = 2
	w.client = &http.Client{Transport: tr}
	w.header = http.Header{}
	for k, v := range o.headers {
		w.header.Set(k, v)
	}
	w.header.Set("Content-Type", "text/plain; charset=utf-8")
	w.header.Set("User-Agent", "tagpipe")
	if o.gzip {
		w.header.Set("Content-Encoding", "gzip")
	}
	if o.auth != "" {
		w.header.Set("Authorization", o.auth)
	}
	w.eps = w.eps[:0]
	for _, raw := range o.urls {
		u, err := url.Parse(raw)
		if err != nil {
			return err // checked by Init already
		}
		label := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
		w.eps = append(w.eps, &endpoint{
			label: label, base: u, write: u.JoinPath(o.path).String(),
			backoff: resilience.NewBackoff(w.minWait, w.maxWait),
		})
	}
	w.cur, w.maxBody = 0, 0
	w.splitLog = models.ErrorFold{Period: time.Minute}
	w.ser = serializer.NewInflux(o.precision)
	w.stats = models.RegisterStats("internal_influxdb", map[string]string{"output": o.name, "url": w.eps[0].label})
	w.st = writerStats{
		requests: w.stats.Get("requests"), networkErrors: w.stats.Get("network_errors"),
		serverErrors: w.stats.Get("server_errors"), retryAfter: w.stats.Get("retry_after"),
		authErrors: w.stats.Get("auth_errors"), tooLarge: w.stats.Get("too_large"),
		linesRejected: w.stats.Get("lines_rejected"), droppedTooLarge: w.stats.Get("dropped_too_large"),
	}
	return nil
}

func (w *writer) close() {
	if w.stats != nil {
		w.stats.Unregister()
		w.stats = nil
	}
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
}

// begin starts the verdict of a new Write.
func (w *writer) begin() {
	w.accepted, w.rejected = w.accepted[:0], w.rejected[:0]
	w.requests = 0
	w.firstLine, w.firstReason = "", ""
}

// indices returns 0..n-1 in a reused slice.
func (w *writer) indices(n int) []int {
	for len(w.all) < n {
		w.all = append(w.all, len(w.all))
	}
	return w.all[:n]
}

// finish turns the write's verdict into Write's result. err is what kept some metrics, if
// anything did.
func (w *writer) finish(err error) error {
	if n := len(w.rejected); n > 0 {
		w.st.linesRejected.Add(int64(n))
		w.log.Warn("the server refused lines for good; they are dropped", "count", n,
			"first", w.firstLine, "reason", w.firstReason)
	}
	if len(w.rejected) == 0 && (err == nil || len(w.accepted) == 0) {
		return err
	}
	if err == nil {
		err = fmt.Errorf("%d lines refused, the first for: %s", len(w.rejected), w.firstReason)
	}
	// Copies: the transaction may outlive this writer's buffers.
	return &models.PartialWriteError{Err: err, Accepted: slices.Clone(w.accepted), Rejected: slices.Clone(w.rejected)}
}

// writeGroup writes batch[i] for i in idx, all to the same query (database or bucket).
// Metrics that cannot be serialized are rejected. It returns the error that keeps the metrics
// that got no verdict.
func (w *writer) writeGroup(ctx context.Context, batch []*models.Metric, idx []int, query string) error {
	w.body, w.lines = w.body[:0], w.lines[:0]
	for _, i := range idx {
		start := len(w.body)
		var err error
		w.body, err = w.ser.Append(w.body, w.prepare(batch[i]))
		if err != nil {
			w.reject(i, batch[i].Name, err.Error())
			continue
		}
		w.lines = append(w.lines, line{int32(i), int32(start), int32(len(w.body))})
	}
	lines := w.lines
	// held is a single line answered 413 while the URL's limit is unknown: the lines after it
	// are still sent, so that a body the URL accepts gives the evidence to judge it by at the
	// next flush; a second 413 ends the Write.
	var held *unknownLimit
	accepted := len(w.accepted)
	for len(lines) > 0 {
		n := len(lines)
		if w.maxBody > 0 {
			n = w.fit(lines)
		}
		err := w.sendLines(ctx, batch, query, lines[:n])
		lines = lines[n:]
		var ul *unknownLimit
		switch {
		case err == nil:
			continue
		case held == nil && errors.As(err, &ul):
			held = ul
			continue
		case held != nil && errors.Is(err, errTooLarge):
			held.fault(w)
		}
		return err
	}
	if held != nil {
		if len(w.accepted) == accepted {
			held.fault(w) // nothing else was accepted either
		}
		return held
	}
	return nil
}

// errTooLarge is in every error a 413 ends a Write with.
var errTooLarge = errors.New("413 Request Entity Too Large")

// unknownLimit is a single line answered 413 by a URL that accepted no smaller body yet.
type unknownLimit struct {
	e *endpoint
	urlError
}

// fault is called when the URL answered 413 to more than the held line: the 413s are not about
// size (or nothing can be learned from them). The URL backs off, and the split is forgotten so
// that whole batches are tried once it recovers.
func (u *unknownLimit) fault(w *writer) {
	w.maxBody = 0
	w.wait(u.e, 0, u.kind, u.msg)
}

// fit returns how many of lines fit in a body of maxBody bytes (at least one).
func (w *writer) fit(lines []line) int {
	first := lines[0].start
	for i := 1; i < len(lines); i++ {
		if int(lines[i].end-first) > w.maxBody {
			return i
		}
	}
	return len(lines)
}

// prepare returns m as it is to be written: with uint fields turned into integers (InfluxDB 1.x
// has no unsigned type) and dropTag left out. Without either it returns m; otherwise a scratch
// metric that lives until the next call (no allocation).
func (w *writer) prepare(m *models.Metric) *models.Metric {
	dropTag := false
	if w.dropTag != "" {
		_, dropTag = m.Tag(w.dropTag)
	}
	hasUint := false
	if !w.uints {
		for i := range m.Fields {
			if m.Fields[i].Type() == models.TypeUint {
				hasUint = true
				break
			}
		}
	}
	if !dropTag && !hasUint {
		return m
	}
	s := &w.scratch
	*s = models.Metric{Name: m.Name, Tags: m.Tags, Fields: m.Fields, Time: m.Time}
	if dropTag {
		w.tagBuf = w.tagBuf[:0]
		for _, t := range m.Tags {
			if t.Key != w.dropTag {
				w.tagBuf = append(w.tagBuf, t)
			}
		}
		s.Tags = w.tagBuf
	}
	if hasUint {
		w.fieldBuf = append(w.fieldBuf[:0], m.Fields...)
		for i, f := range w.fieldBuf {
			if f.Type() == models.TypeUint {
				w.fieldBuf[i] = models.Int(f.Key, int64(min(f.UintV(), math.MaxInt64)))
			}
		}
		s.Fields = w.fieldBuf
	}
	return s
}

func (w *writer) accept(lines []line) {
	for _, l := range lines {
		w.accepted = append(w.accepted, int(l.idx))
	}
}

func (w *writer) reject(i int, text, reason string) {
	if len(w.rejected) == 0 {
		w.firstLine, w.firstReason = clip(text, 300), clip(reason, 500)
	}
	w.rejected = append(w.rejected, i)
}

// rejectLine rejects a serialized line; its text is kept only for the first (the log line).
func (w *writer) rejectLine(l line, reason string) {
	text := ""
	if len(w.rejected) == 0 {
		text = strings.TrimSuffix(string(w.body[l.start:l.end]), "\n")
	}
	w.reject(int(l.idx), text, reason)
}

// errTooManyRequests ends a Write that needed too many requests (a 400 naming many different
// lines, say); the metrics without a verdict wait for the next flush.
var errTooManyRequests = errors.New("too many requests for one batch; the rest is written at the next flush")

// sendLines writes lines (one request, or more after a 400 or 413) and records the verdicts.
func (w *writer) sendLines(ctx context.Context, batch []*models.Metric, query string, lines []line) error {
	if len(lines) == 0 {
		return nil
	}
	if w.requests >= w.maxRequests {
		return errTooManyRequests
	}
	body := w.assemble(lines)
	res, err := w.post(ctx, query, body)
	if err != nil {
		return err
	}
	switch res.status {
	case http.StatusOK, http.StatusNoContent, http.StatusAccepted, http.StatusCreated:
		w.accept(lines)
		return nil
	case http.StatusRequestEntityTooLarge:
		return w.tooLarge(lines, len(body), res)
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return w.refused(ctx, batch, query, lines, res)
	}
	return res.err()
}

// tooLarge handles a 413 for lines (a body of n bytes, res.size as sent). A 413 alone does not
// prove that the body is too large — a proxy may answer 413 to everything — so nothing is
// dropped on its word alone, and no 413 is followed by another request in the same Write:
//
//   - a body far below (at most half) every body the URL accepted before: a server fault; the
//     URL backs off and the batch is kept;
//   - a single line larger than a body the URL accepted: the limit lies between the two sizes;
//     the line is dropped (dropped_too_large) and the rest of the batch goes on;
//   - a single line with no smaller body accepted yet: the limit is unknown; the line is kept
//     and the rest of the batch is sent (see writeGroup): if the URL accepts some, the line is
//     judged at the next flush; if it answers 413 again, the URL backs off and the split is
//     forgotten (it was not about size), so that whole batches are tried once it recovers;
//   - several lines: bodies are split to half this size from the next flush on, so splitting
//     runs at most one step per flush interval; the batch is kept.
//
// Every 413 is counted (too_large).
func (w *writer) tooLarge(lines []line, n int, res response) error {
	w.st.tooLarge.Incr()
	e, size := res.ep, res.size
	switch {
	case e.okMin > 0 && size*2 <= e.okMin:
		reason := fmt.Sprintf("%v for %d bytes, far below the %d bytes it accepted before: "+
			"a server fault, not the size; metrics kept", errTooLarge, size, e.okMin)
		w.wait(e, 0, "413", reason)
		return &urlError{e.label, "413", reason, errTooLarge}
	case len(lines) == 1 && e.okMin > 0 && e.okMin < size:
		w.st.droppedTooLarge.Incr()
		w.rejectLine(lines[0], fmt.Sprintf("%v: the line alone (%d bytes) is over the server's limit, "+
			"which lies between %d bytes (accepted) and %d", errTooLarge, size, e.okMin, size))
		return nil
	case len(lines) == 1:
		return &unknownLimit{e, urlError{e.label, "413", fmt.Sprintf("%v for a single line of %d bytes, and this URL accepted "+
			"no smaller body yet: the limit is unknown; metrics kept", errTooLarge, size), errTooLarge}}
	}
	if w.maxBody == 0 {
		// Logged when a split starts (at most once a minute): each later 413 halves the size.
		if log, note := w.splitLog.Add("split", time.Now()); log {
			w.log.Info("the server answered 413 Request Entity Too Large; batches are split in halves from the next flush, "+
				"one step a flush, until they pass", "url", e.label, "lines", len(lines), "bytes", n, "note", note)
		}
	}
	if w.maxBody == 0 || n/2 < w.maxBody {
		w.maxBody = max(n/2, 1)
	}
	return &urlError{e.label, "413", fmt.Sprintf("%v for %d lines (%d bytes); metrics kept, "+
		"split into bodies of at most %d bytes from the next flush", errTooLarge, len(lines), n, w.maxBody), errTooLarge}
}

// refused handles a 400 or 422: InfluxDB wrote every point but the ones it names. The named
// lines are rejected and the rest is written again (points are idempotent: the same series and
// time overwrite) to confirm it, because an answer names only some causes — a field type
// conflict hides lines that did not parse. An answer that names no line is bisected.
func (w *writer) refused(ctx context.Context, batch []*models.Metric, query string, lines []line, res response) error {
	if !pointLevel(res.msg) {
		// A 400 about the request, not its points ("database is required", "invalid
		// consistency level"): a setting is wrong, and no line is to blame.
		return res.err()
	}
	r := parseRefusal(res.msg)
	rest := lines[:0]
	n := 0
	for _, l := range lines {
		if r.names(w, batch[l.idx], w.body[l.start:l.end]) {
			w.rejectLine(l, res.msg)
			n++
			continue
		}
		rest = append(rest, l)
	}
	if n > 0 {
		return w.sendLines(ctx, batch, query, rest)
	}
	if len(lines) == 1 {
		w.rejectLine(lines[0], res.msg)
		return nil
	}
	h := len(lines) / 2
	if err := w.sendLines(ctx, batch, query, lines[:h]); err != nil {
		return err
	}
	return w.sendLines(ctx, batch, query, lines[h:])
}

// assemble returns the body for lines: a slice of w.body when they lie next to each other there
// (the usual case), else a copy in w.send.
func (w *writer) assemble(lines []line) []byte {
	contiguous := true
	for i := 1; i < len(lines); i++ {
		if lines[i].start != lines[i-1].end {
			contiguous = false
			break
		}
	}
	if contiguous {
		return w.body[lines[0].start:lines[len(lines)-1].end]
	}
	w.send = w.send[:0]
	for _, l := range lines {
		w.send = append(w.send, w.body[l.start:l.end]...)
	}
	return w.send
}

// response is what a server answered, as far as the writer cares.
type response struct {
	ep         *endpoint
	size       int    // bytes of the body as sent
	url        string // endpoint label
	status     int
	statusText string
	msg        string // the "error" (v1) or "message" (v2) of a JSON body, else the body
	retryAfter string
}

// kind is the status as a kind of failure (urlError).
func (r response) kind() string { return strconv.Itoa(r.status) }

// err is the response as a failure of its URL.
func (r response) err() error { return &urlError{r.url, r.kind(), r.describe(), nil} }

func (r response) describe() string {
	if r.msg == "" {
		return r.statusText
	}
	return r.statusText + ": " + r.msg
}

// post sends body to the first URL that answers with a status the caller has to judge (2xx,
// 4xx but 401/403/429). URLs that fail are marked not to be tried before their backoff or
// Retry-After passes; when none answers, post returns why, and the batch is kept.
func (w *writer) post(ctx context.Context, query string, body []byte) (response, error) {
	payload := body
	if w.gzip {
		payload = w.compress(body)
	}
	var errs []error
	for k := range len(w.eps) {
		i := (w.cur + k) % len(w.eps)
		e := w.eps[i]
		if time.Now().Before(e.notBefore) {
			// No time in the message: the same outage gives the same message, which the agent
			// logs once a minute, not once per flush.
			errs = append(errs, &urlError{e.label, e.kind, "not tried until its backoff passes; last: " + e.reason, nil})
			continue
		}
		res, err := w.do(ctx, e, query, payload)
		if err == nil && res.status == http.StatusNotFound && w.notFound != nil && w.notFound(ctx, e, res.msg) {
			res, err = w.do(ctx, e, query, payload)
		}
		if ctx.Err() != nil {
			return response{}, ctx.Err()
		}
		if err != nil {
			w.st.networkErrors.Incr()
			kind := "network " + resilience.Classify(err).String()
			if resilience.Classify(err) == resilience.KindOther {
				kind = models.ErrorKey(err)
			}
			w.wait(e, 0, kind, err.Error())
			errs = append(errs, &urlError{e.label, kind, err.Error(), err})
			continue
		}
		switch {
		case res.status == http.StatusTooManyRequests || res.status == http.StatusServiceUnavailable:
			w.st.retryAfter.Incr()
			d, ok := parseRetryAfter(res.retryAfter, time.Now())
			if ok {
				d = min(d, w.maxRetryAfter)
				w.wait(e, d, res.kind(), res.describe()+", waiting for Retry-After")
				errs = append(errs, &urlError{e.label, res.kind(), fmt.Sprintf("%s, Retry-After %s", res.describe(), d), nil})
			} else {
				w.wait(e, 0, res.kind(), res.describe())
				errs = append(errs, res.err())
			}
			continue
		case res.status >= 500:
			w.st.serverErrors.Incr()
			w.wait(e, 0, res.kind(), res.describe())
			errs = append(errs, res.err())
			continue
		case res.status == http.StatusUnauthorized || res.status == http.StatusForbidden:
			w.st.authErrors.Incr()
			if e.authCode != res.status {
				e.authCode = res.status
				w.log.Error("the server refused the credentials; metrics are kept until it accepts them",
					"url", e.label, "status", res.statusText, "message", res.msg)
			}
			w.wait(e, 0, res.kind(), res.describe())
			errs = append(errs, res.err())
			continue
		}
		if e.authCode != 0 {
			e.authCode = 0
			w.log.Info("the server accepts the credentials again", "url", e.label)
		}
		res.ep, res.size = e, len(payload)
		if res.status/100 == 2 && (e.okMin == 0 || len(payload) < e.okMin) {
			e.okMin = len(payload)
		}
		if res.status != http.StatusRequestEntityTooLarge { // tooLarge decides whether to back off
			e.backoff.Reset()
		}
		w.cur = i
		return res, nil
	}
	return response{}, errors.Join(errs...)
}

// wait keeps e from being written to for d (0: the next step of its backoff), for why, a failure
// of kind (urlError).
func (w *writer) wait(e *endpoint, d time.Duration, kind, why string) {
	if d == 0 {
		d = e.backoff.Next()
	}
	e.notBefore, e.kind, e.reason = time.Now().Add(d), kind, why
}

// urlError is a failure of one URL. Its key, by which the agent folds repeats of an error in its
// log (models.ErrorFold), is the URL and the kind of failure — a status code, a class of network
// error — so that one outage is one error, whatever the sizes and backoff notes in its text.
type urlError struct {
	label, kind, msg string
	err              error // wrapped, if any
}

func (u *urlError) Error() string    { return u.label + ": " + u.msg }
func (u *urlError) ErrorKey() string { return u.label + ": " + u.kind }
func (u *urlError) Unwrap() error    { return u.err }

func (w *writer) compress(body []byte) []byte {
	w.zbuf.Reset()
	z := gzipPool.Get().(*gzip.Writer)
	z.Reset(&w.zbuf)
	z.Write(body) // a bytes.Buffer does not fail
	z.Close()
	gzipPool.Put(z)
	return w.zbuf.Bytes()
}

// do makes one request. Only transport failures are errors; any status is a response.
func (w *writer) do(ctx context.Context, e *endpoint, query string, payload []byte) (response, error) {
	w.requests++
	w.st.requests.Incr()
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	target := e.write
	if query != "" {
		target += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		return response{}, err
	}
	req.Header = w.header
	resp, err := w.client.Do(req)
	if err != nil {
		return response{}, unwrapURLError(err)
	}
	defer resp.Body.Close()
	res := response{url: e.label, status: resp.StatusCode, statusText: resp.Status, retryAfter: resp.Header.Get("Retry-After")}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		res.msg = errorMessage(b)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	return res, nil
}

// unwrapURLError drops the *url.Error around a client error: the URL (and any credentials in
// it) does not belong in a message; the endpoint's label names it.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorMessage returns the message of an InfluxDB error body: {"error": …} (1.x) or
// {"code": …, "message": …} (2.x); any other body as text.
func errorMessage(b []byte) string {
	var v struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &v) == nil {
		if v.Error != "" {
			return v.Error
		}
		if v.Message != "" {
			return v.Message
		}
	}
	return clip(strings.TrimSpace(string(b)), 500)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, math.MaxInt64/int64(time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// pointLevel reports whether a 400/422 message is about points (InfluxDB wrote the others):
// a partial write, lines it could not parse, or a refused field.
func pointLevel(msg string) bool {
	return strings.Contains(msg, "partial write") || strings.Contains(msg, "unable to parse") ||
		fieldRefused.MatchString(msg)
}

// refusal is what a 400/422 answer says about which lines InfluxDB dropped.
type refusal struct {
	lines  map[string]bool // texts of lines it could not parse
	fields []fieldRef      // fields it refused on a measurement
}

// fieldRef names a refused field; typ is the type it was sent with ("" when any type is
// refused, as for a field named "time").
type fieldRef struct{ measurement, field, typ string }

// InfluxDB 1.x (and 2.x) name refused fields so:
//
//	field type conflict: input field "v" on measurement "m" is type float, already exists as type integer dropped=2
//	invalid field name: input field "time" on measurement "m" is invalid dropped=1
var fieldRefused = regexp.MustCompile(`input field "(.*?)" on measurement "(.*?)" is (?:type (\w+)|invalid)`)

// parseRefusal reads an InfluxDB error message. Lines that did not parse are quoted:
//
//	unable to parse 'bad line': invalid field format\nunable to parse 'other': missing fields
func parseRefusal(msg string) refusal {
	var r refusal
	const marker = "unable to parse '"
	for rest := msg; ; {
		i := strings.Index(rest, marker)
		if i < 0 {
			break
		}
		rest = rest[i+len(marker):]
		seg := rest
		if j := strings.Index(seg, marker); j >= 0 {
			seg = seg[:j]
		}
		if k := strings.LastIndex(seg, "': "); k >= 0 {
			if r.lines == nil {
				r.lines = map[string]bool{}
			}
			r.lines[seg[:k]] = true
		}
	}
	for _, m := range fieldRefused.FindAllStringSubmatch(msg, -1) {
		r.fields = append(r.fields, fieldRef{measurement: m[2], field: m[1], typ: m[3]})
	}
	return r
}

// names reports whether the refusal names m, written as text.
func (r *refusal) names(w *writer, m *models.Metric, text []byte) bool {
	if r.lines[string(bytes.TrimSuffix(text, []byte{'\n'}))] {
		return true
	}
	if len(r.fields) == 0 {
		return false
	}
	m = w.prepare(m)
	for _, ref := range r.fields {
		if m.Name != ref.measurement {
			continue
		}
		if f, ok := m.Field(ref.field); ok && (ref.typ == "" || ref.typ == influxType(f.Type())) {
			return true
		}
	}
	return false
}

// influxType is the name InfluxDB gives a field type in its messages.
func influxType(t models.ValueType) string {
	switch t {
	case models.TypeFloat:
		return "float"
	case models.TypeInt:
		return "integer"
	case models.TypeUint:
		return "unsigned"
	case models.TypeBool:
		return "boolean"
	case models.TypeString:
		return "string"
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
