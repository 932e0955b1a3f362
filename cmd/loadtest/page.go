package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// pageListen is the [agent] line that serves the device page for -page.
func pageListen(addr string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf("  http_listen = %q\n", addr)
}

// readPage reads the device page's data as an open browser tab does: /api/overview and the
// first 100 devices (failing first) every interval, until the returned func is called; that
// func stops and says how long the requests took.
func readPage(addr string, interval time.Duration) func() string {
	done := make(chan struct{})
	res := make(chan string, 1)
	go func() {
		var took []time.Duration
		failed := 0
		get := func(path string) error {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", path, resp.Status)
			}
			return err
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				slices.Sort(took)
				if len(took) == 0 {
					res <- fmt.Sprintf("device page: no request answered (%d failed)", failed)
					return
				}
				res <- fmt.Sprintf("device page: %d reads (overview + 100 devices), median %v, max %v, %d failed",
					len(took), took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), failed)
				return
			case <-tick.C:
			}
			t0 := time.Now()
			if get("/api/overview") != nil || get("/api/devices?page=1&limit=100") != nil {
				failed++ // the agent may not serve yet
				continue
			}
			took = append(took, time.Since(t0))
		}
	}()
	return func() string { close(done); return <-res }
}
