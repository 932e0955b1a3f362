package models

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what the device page (package web) reads of a device beyond its DeviceStatus.
// Nothing here is computed while nobody looks: the input keeps its counters and small rings
// (resilience.Health) as it polls, and fills these types only when the page asks.

// DeviceDetailer is implemented by the devices of an input that keeps figures for the device
// page (DeviceStatus.Detail). Its methods are safe for concurrent use with the device's polls.
type DeviceDetailer interface {
	// Figures fills f with the device's figures now. It reuses f's slices and allocates nothing
	// once they have grown.
	Figures(f *DeviceFigures)
	// RTTs appends the device's last round trips (at most RTTRing), oldest first, to dst. A
	// request that got no answer is -1.
	RTTs(dst []time.Duration) []time.Duration
	// Detail fills d with the device's detail view, and keeps the device watched for
	// DetailWatch: while it is, each poll copies its values and request plan for the next call.
	// Until the first poll after the first call, d.ValuesAt is zero.
	Detail(now time.Time, d *DeviceDetail)
}

// RTTRing is how many round trips a device keeps for the page's sparkline.
const RTTRing = 60

// ErrorLog is how many errors a device keeps for the page's detail view (repeats of the same
// error, one after the other, are counted in one entry).
const ErrorLog = 20

// BreakerLog is how many changes of its circuit breakers a device keeps.
const BreakerLog = 8

// DetailWatch is how long a device stays watched after its detail was asked for.
const DetailWatch = 30 * time.Second

// DeviceFigures are the device page's columns of one device beyond DeviceStatus.
type DeviceFigures struct {
	// Backup is the controller in use: 0 the primary, n the nth backup controller.
	Backup      int
	Tags        []Tag         // the device's own tags (not shared with other devices' metrics)
	RTT         time.Duration // the round trip's moving average (EWMA); 0: none answered yet
	Timeout     time.Duration // the timeout in force (without its jitter)
	Polls       uint64        // polls (OPC UA: reads, or publish rounds) since the input started
	PollsFailed uint64        // polls that returned an error
	Requests    uint64
	Retries     uint64
	Errors      []KindCount // errors by kind, every kind listed
}

// KindCount is a count of errors of one kind ("timeout", "refused", "reset", "exception", ...).
type KindCount struct {
	Kind  string
	Count uint64
}

// DeviceDetail is the device page's detail view of one device.
type DeviceDetail struct {
	ValuesAt time.Time    // when the values were copied by a poll; zero: not yet
	Values   []FieldValue // the latest value of each field, in the order of the profile
	Plan     []PlannedRead
	Errors   []DeviceError   // the last ErrorLog errors, newest first
	Breaker  []BreakerChange // the last BreakerLog changes of the device's breakers, newest first
}

// FieldValue is the latest value of one field of a device.
type FieldValue struct {
	Measurement string
	Name        string // the field's name
	Field       Field  // the latest value read; Key is "" when none was read yet
	Quality     string // "good", or why not: "not read in the last poll", "stale", an OPC UA status
	At          time.Time
}

// PlannedRead is one request of a device's poll.
type PlannedRead struct {
	Read   string   // "holding 0..18"
	Fields []string // the fields it gives
	// Note says why the read is as it is when it is not as planned: "split from holding 0..124
	// at 12:00:03Z: exception 2 (illegal data address)".
	Note string
}

// DeviceError is an error of a device, or the same error repeated.
type DeviceError struct {
	At      time.Time // the last time it happened
	Text    string
	Repeats int // how many times it happened in a row (1: once)
}

// BreakerChange is a state change of a device's circuit breaker on one controller.
type BreakerChange struct {
	At         time.Time
	Controller string
	To         string // "closed", "open", "half-open"
}

// Link risks: processors.predict computes disconnect_risk per health series (a device on one
// controller); it publishes the latest here, and the device page reads it. Plugins do not import
// one another: this small board is the meeting point.

// LinkKey names a link: a device on one controller (the tags "device" and "controller" of its
// health metric).
type LinkKey struct{ Device, Controller string }

var linkRisks sync.Map // LinkKey → *LinkRisk

// LinkRisk holds a link's latest disconnect_risk. Set and Get are safe for concurrent use.
type LinkRisk struct{ v atomic.Uint64 }

// Set stores the risk (0..1).
func (r *LinkRisk) Set(risk float64) { r.v.Store(math.Float64bits(risk) + 1) }

// Get returns the risk and whether one was set.
func (r *LinkRisk) Get() (float64, bool) {
	v := r.v.Load()
	if v == 0 {
		return 0, false
	}
	return math.Float64frombits(v - 1), true
}

// PublishLinkRisk returns the board entry of link k, making it if needed, for a publisher to
// keep and Set on every new risk (a map look-up per link, not per metric).
func PublishLinkRisk(k LinkKey) *LinkRisk {
	if r, ok := linkRisks.Load(k); ok {
		return r.(*LinkRisk)
	}
	r, _ := linkRisks.LoadOrStore(k, new(LinkRisk))
	return r.(*LinkRisk)
}

// ForgetLinkRisk removes link k from the board (its publisher forgot the series, or stopped).
func ForgetLinkRisk(k LinkKey) { linkRisks.Delete(k) }

// LinkRiskOf returns the latest disconnect_risk of link k, and false when none was published.
func LinkRiskOf(k LinkKey) (float64, bool) {
	r, ok := linkRisks.Load(k)
	if !ok {
		return 0, false
	}
	return r.(*LinkRisk).Get()
}
