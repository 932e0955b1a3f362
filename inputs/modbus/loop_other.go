//go:build !linux

package modbus

import (
	"context"
	"errors"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

// eventLoop is Linux's (epoll): elsewhere every connection is polled on a goroutine.
type eventLoop struct{}

func newEventLoop(*Modbus, models.Accumulator, []*poller) (*eventLoop, error) {
	return nil, errors.New("the event loop needs Linux's epoll")
}

func (*eventLoop) run(context.Context, time.Time) {}

// loopDev is a device of the loop: there is none here.
type loopDev struct{}

func (*eventLoop) attach(*poller, time.Time) *loopDev { return nil }
func (*eventLoop) detach(*loopDev)                    {}
func (*loopDev) wait()                                {}
