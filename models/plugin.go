package models

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Accumulator receives what an input gathers. Implementations are safe for concurrent use: a
// service input may call them from one goroutine per device.
type Accumulator interface {
	// AddMetric hands m to the agent, which owns it from now on.
	AddMetric(m *Metric)
	// AddError reports a gather error; it is logged (naming the plugin) and counted.
	AddError(err error)
}

// BatchAccumulator is an Accumulator that also takes many metrics in one step: an input that
// polls many devices on one goroutine (the Modbus event loop) hands over what one round of its
// loop read together, so that the agent's pipeline is woken once a round, not once a metric.
type BatchAccumulator interface {
	Accumulator
	// AddMetrics hands every metric of ms to the agent, as AddMetric does each. The agent owns
	// the metrics from now on, but not ms: its caller may reuse it once AddMetrics returns.
	AddMetrics(ms []*Metric)
}

// Input is a polled input: Gather is called on every interval.
type Input interface {
	SampleConfig() string
	Gather(ctx context.Context, acc Accumulator) error
}

// ServiceInput runs on its own from Start until Stop: it schedules its own work (Modbus, with a
// goroutine per device) or is pushed data (OPC UA subscriptions). Gather still gathers once, for
// --test and --once.
type ServiceInput interface {
	Input
	// Start must not block; ctx is cancelled when the input is stopped.
	Start(ctx context.Context, acc Accumulator) error
	// Stop returns once every goroutine the input started has ended.
	Stop()
}

// IntervalSetter is implemented by service inputs that poll or report on their own schedule
// (Modbus devices, OPC UA read mode and health): before Start, the agent passes the interval the input would be
// gathered on — its own `interval`, else the agent's.
type IntervalSetter interface {
	SetInterval(d time.Duration)
}

// Processor sees every metric once and returns what goes on: the same metrics (changed or not),
// fewer, or more.
type Processor interface {
	SampleConfig() string
	Apply(in ...*Metric) []*Metric
}

// ServiceProcessor is a processor with a lifetime (a state file saved on an interval).
type ServiceProcessor interface {
	Processor
	Start(ctx context.Context) error
	// Stop is called after the last Apply.
	Stop()
}

// Output ships batches of metrics. Write is a transaction: nil means every metric was accepted;
// a *PartialWriteError says which were accepted and which were refused for good; any other error
// keeps the whole batch for the next try. Write is never called concurrently with itself.
type Output interface {
	SampleConfig() string
	Connect(ctx context.Context) error
	Write(ctx context.Context, batch []*Metric) error
	Close() error
}

// Initializer is implemented by plugins that check their configuration after it is loaded.
// Init must not dial or start goroutines.
type Initializer interface {
	Init() error
}

// PartialWriteError is returned by Output.Write when only part of a batch was handled. Indices
// refer to the batch passed to Write. Metrics in neither list stay in the buffer for the next try.
type PartialWriteError struct {
	Err      error
	Accepted []int // delivered
	Rejected []int // refused for good (a bad line, an oversized message): dropped and counted
}

func (e *PartialWriteError) Error() string {
	msg := fmt.Sprintf("partial write: %d accepted, %d rejected", len(e.Accepted), len(e.Rejected))
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *PartialWriteError) Unwrap() error { return e.Err }

// AsPartialWrite returns err as a *PartialWriteError, if it is one.
func AsPartialWrite(err error) (*PartialWriteError, bool) {
	var p *PartialWriteError
	ok := errors.As(err, &p)
	return p, ok
}
