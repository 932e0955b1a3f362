package models

import "time"

// DeviceState is the state of one device (a Modbus device) or session (an OPC UA server) as the
// input that talks to it sees it.
type DeviceState uint8

const (
	// DeviceStarting: not polled yet since the input started.
	DeviceStarting DeviceState = iota
	// DeviceOK: its last poll was answered, and recently.
	DeviceOK
	// DeviceFailing: its last poll got no answer (or the session is down).
	DeviceFailing
	// DeviceBreakerOpen: its circuit breaker is open: it is not polled until the cool-down ends.
	DeviceBreakerOpen
	// DeviceHalfOpen: the cool-down has ended and a probe decides whether it is polled again.
	DeviceHalfOpen
	// DeviceStale: no poll was answered for StaleIntervals intervals, though the last one did not
	// fail (the polls are skipped or late: its connection is overloaded or stuck).
	DeviceStale
	// DeviceRemote: in cluster mode, another agent of the group polls it (DeviceStatus.Owner).
	DeviceRemote
)

// StaleIntervals is how many intervals a device may go without an answered poll before it
// counts as stale (and one never polled after start, as failing).
const StaleIntervals = 3

var deviceStateNames = [...]string{"starting", "ok", "failing", "breaker open", "half-open", "stale", "remote"}

func (s DeviceState) String() string {
	if int(s) < len(deviceStateNames) {
		return deviceStateNames[s]
	}
	return "unknown"
}

// Failing reports whether a device in state s counts against its input's health.
func (s DeviceState) Failing() bool {
	switch s {
	case DeviceFailing, DeviceBreakerOpen, DeviceHalfOpen, DeviceStale:
		return true
	}
	return false
}

// DeviceStatus is what the agent knows of one device at a moment.
type DeviceStatus struct {
	Name       string
	Controller string // the connection in use: "tcp://127.0.0.1:502", a serial port, an endpoint
	State      DeviceState
	LastGood   time.Time // the last answered poll; zero: none since the input started
	LastError  string    // the last poll error, "" when there was none
	ErrorAt    time.Time // when LastError happened
	Owner      string    // cluster mode: the agent (group member) that polls it
	// Detail gives the device page's figures of the device (models/devicepage.go); nil when the
	// input keeps none. Reading it costs nothing until one of its methods is called.
	Detail DeviceDetailer
}

// DeviceReporter is implemented by inputs that talk to many devices (Modbus) or hold sessions
// (OPC UA). The agent's health comes from their devices' state, not from errors it was told of.
type DeviceReporter interface {
	// DeviceStates calls fn with the status of each device at now, in a stable order. It is safe for
	// concurrent use with the input's polls, and cheap: nothing is kept for it between calls.
	DeviceStates(now time.Time, fn func(DeviceStatus))
}

// UnitRunner is implemented by inputs whose work divides into units that can run on their own,
// so that cluster mode can share an inventory between agents. A unit is one connection: a Modbus
// device, a gateway or serial line with every device behind it, or devices tied together by
// backup controllers.
type UnitRunner interface {
	// Units returns the identity of each unit in configuration order: a string that is stable
	// across restarts and reloads and does not depend on the other units (its connection's
	// address), so that adding a device moves no other unit.
	Units() []string
	// RunUnits makes the input poll only the units keep returns true for; a unit is named by
	// its index in Units. Before Start it chooses what Start starts; while running, the units
	// no longer kept stop, and their connections are closed, before it returns, and the newly
	// kept ones start at their usual phase. keep must be safe to call from any goroutine.
	RunUnits(keep func(unit int) bool)
}

// UnitOwners is implemented by UnitRunner inputs that report the devices of units polled by
// another agent of the group (DeviceRemote) with their Owner. owner returns the member that
// polls a unit (its index in Units; "" when unknown); it is safe to call from any goroutine,
// and cheap.
type UnitOwners interface {
	SetUnitOwner(owner func(unit int) string)
}

// Connector is implemented by service inputs that talk to one server (OPC UA): Connection
// names it ("opc.tcp://10.0.0.5:4840"). In cluster mode such an input is one unit, named by its
// plugin id and connection, so that its shard does not depend on the file it is written in.
type Connector interface {
	Connection() string
}
