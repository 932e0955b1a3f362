package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/tagpipe/tagpipe/models"
)

// Access says who may see the page: with a Username, every request must carry HTTP basic
// auth with it and a password that matches PasswordHash (bcrypt, "$2a$…", "$2b$…", "$2y$…").
type Access struct {
	Username     string
	PasswordHash string
	// Failures counts requests refused for wrong or missing credentials (may be nil).
	Failures *models.Stat
}

// CheckHash reports whether hash is a bcrypt hash (for the config's validation).
func CheckHash(hash string) error {
	_, err := bcrypt.Cost([]byte(hash))
	return err
}

// Headers sets the headers every answer carries against clickjacking, sniffing and injected
// scripts: the page loads its own script and style only, and may not be framed.
func Headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// Guard lets a request through to h only with the credentials a asks for (none: every request).
//
// A bcrypt check costs tens of milliseconds by design; the page refreshes every few seconds,
// so the digest of credentials that passed is remembered (a few, compared in constant time)
// and a request that repeats them is not checked again. Wrong credentials are checked every
// time, one at a time, and answered 401 without saying what was wrong.
func Guard(h http.Handler, a Access) http.Handler {
	if a.Username == "" {
		return h
	}
	g := &guard{next: h, a: a, hash: []byte(a.PasswordHash), slow: make(chan struct{}, 1)}
	return g
}

type guard struct {
	next http.Handler
	a    Access
	hash []byte
	slow chan struct{} // one bcrypt check at a time: wrong guesses cost one core at most

	mu   sync.Mutex
	good [4][sha256.Size]byte // digests of credentials that passed
	n    int
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if ok && g.allowed(user, pass) {
		g.next.ServeHTTP(w, r)
		return
	}
	if g.a.Failures != nil {
		g.a.Failures.Incr()
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="tagpipe", charset="UTF-8"`)
	http.Error(w, "unauthorized", http.StatusUnauthorized)
}

func (g *guard) allowed(user, pass string) bool {
	sum := sha256.Sum256([]byte(user + "\x00" + pass))
	g.mu.Lock()
	for i := range min(g.n, len(g.good)) {
		if subtle.ConstantTimeCompare(sum[:], g.good[i][:]) == 1 {
			g.mu.Unlock()
			return true
		}
	}
	g.mu.Unlock()
	g.slow <- struct{}{}
	// The hash is checked whatever the user name, so that a wrong name takes as long.
	okPass := bcrypt.CompareHashAndPassword(g.hash, []byte(pass)) == nil
	<-g.slow
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(g.a.Username)) == 1
	if !okPass || !okUser {
		return false
	}
	g.mu.Lock()
	g.good[g.n%len(g.good)] = sum
	g.n++
	g.mu.Unlock()
	return true
}
