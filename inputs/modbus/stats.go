package modbus

import "github.com/tagpipe/tagpipe/models"

// stats are the plugin's counters, reported by inputs.internal as internal_modbus.
type stats struct {
	set *models.Stats

	polls, pollErrors, requests, retries, busyRetries, exceptions, timeouts *models.Stat
	// dropped frames, by what was wrong with them
	wrongTID, wrongUnit, wrongFunc, shortFrames, badChecksums, streamLost *models.Stat
	connects, reconnects, connectErrors                                   *models.Stat
	breakerSkips, overruns                                                *models.Stat
	backupPolls, readsSplit, staleMetrics, idleCloses                     *models.Stat
}

// newStats registers the stats of the input named input (its alias, else "modbus"): they are
// the whole input's, across its devices.
func newStats(input string) *stats {
	return statsOf(models.RegisterStats("internal_modbus", map[string]string{"input": input}))
}

func statsOf(s *models.Stats) *stats {
	return &stats{
		set:           s,
		polls:         s.Get("polls"),
		pollErrors:    s.Get("polls_failed"),
		requests:      s.Get("requests"),
		retries:       s.Get("retries"),
		busyRetries:   s.Get("busy_retries"),
		exceptions:    s.Get("exceptions"),
		timeouts:      s.Get("timeouts"),
		wrongTID:      s.Get("frames_wrong_tid"),
		wrongUnit:     s.Get("frames_wrong_unit"),
		wrongFunc:     s.Get("frames_wrong_function"),
		shortFrames:   s.Get("frames_short"),
		badChecksums:  s.Get("frames_bad_checksum"),
		streamLost:    s.Get("frames_unframeable"),
		connects:      s.Get("connects"),
		reconnects:    s.Get("reconnects"),
		connectErrors: s.Get("connect_errors"),
		breakerSkips:  s.Get("breaker_skips"),
		overruns:      s.Get("polls_skipped_overrun"),
		backupPolls:   s.Get("polls_via_backup"),
		readsSplit:    s.Get("reads_split"),
		staleMetrics:  s.Get("stale_metrics"),
		idleCloses:    s.Get("idle_closes"),
	}
}
