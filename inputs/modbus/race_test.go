//go:build race

package modbus

// raceEnabled: the race detector slows every goroutine down several times.
const raceEnabled = true
