package config

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of what a failed load reports: a hostile file (a key nested 3,000 deep, 100,000 bad
// tables) must not become a log line of megabytes.
const (
	maxErrors   = 100 // errors listed; the rest are counted
	maxErrorLen = 512 // bytes of one message; the rest are counted
)

// textPasswords adds to set the password of every URL with one (scheme://user:password@host)
// written in a string of text. Where the URL does not parse, the password is what lies between
// the first ':' after "://" and the last '@'.
func textPasswords(text string, set map[string]bool) {
	for t := range tokens(text) {
		if t.kind == tokBare || t.kind == tokNewline || t.kind == tokComment || t.kind == tokOpen {
			continue
		}
		for rest := t.body; ; {
			_, after, ok := strings.Cut(rest, "://")
			if !ok {
				break
			}
			rest = after
			url := after
			if end := strings.Index(url, "://"); end >= 0 { // the next URL of the string
				url = url[:end]
			}
			at := strings.LastIndexByte(url, '@')
			if at < 0 {
				continue
			}
			if _, pw, ok := strings.Cut(url[:at], ":"); ok && pw != "" {
				set[pw] = true
				if t.kind == tokBasic || t.kind == tokMLBasic { // as written and as read
					if v, err := strconv.Unquote(`"` + pw + `"`); err == nil {
						set[v] = true
					}
				}
			}
		}
	}
}

// redactURLPasswords replaces each password of pws that stands in msg as the password of a URL
// (":password@", as written or quoted as %q quotes) with xxxxx, as url.URL.Redacted does.
func redactURLPasswords(msg string, pws map[string]bool) string {
	for pw := range pws {
		raw := ":" + pw + "@"
		q := strconv.Quote(raw)
		msg = strings.ReplaceAll(msg, raw, ":xxxxx@")
		msg = strings.ReplaceAll(msg, q[1:len(q)-1], ":xxxxx@")
	}
	return msg
}

// clip shortens a message to maxErrorLen bytes, saying how much was cut.
func clip(msg string) string {
	if len(msg) <= maxErrorLen {
		return msg
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes more)", msg[:cut], len(msg)-cut)
}

// report prepares the errors and warnings of a load for the log: URL passwords redacted, each
// message clipped, at most maxErrors errors.
func (l *loader) report() {
	for _, err := range l.errs {
		if e, ok := err.(*Error); ok {
			e.Plugin = clip(redactURLPasswords(e.Plugin, l.passwords))
			e.Msg = clip(redactURLPasswords(e.Msg, l.passwords))
		}
	}
	if len(l.errs) > maxErrors {
		more := len(l.errs) - maxErrors
		l.errs = append(l.errs[:maxErrors:maxErrors], fmt.Errorf("… and %d more errors", more))
	}
	for i, w := range l.cfg.Warnings {
		l.cfg.Warnings[i] = clip(redactURLPasswords(w, l.passwords))
	}
}
