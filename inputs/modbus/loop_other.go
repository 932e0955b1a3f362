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

func (*eventLoop) attach(*poller, time.Time) (func(), <-chan struct{}, bool) { return nil, nil, false }
