//go:build race

package config_test

// raceEnabled: the race detector takes several times the memory.
const raceEnabled = true
