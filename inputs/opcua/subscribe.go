package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// keepAlive is how often a quiet subscription still answers a publish request; the server
// deletes a subscription that saw no publish request for lifetimeFactor keep-alives.
const (
	keepAlive      = 10 * time.Second
	lifetimeFactor = 6
)

// subscription is the session's subscription and the goroutine that publishes for it.
//
// The publisher is ours, not gopcua's: gopcua v0.9.1 pauses its publish loop for good when the
// server answers BadNoSubscription (the server dropped the subscription) and tells nobody —
// Telegraf's "connected but no data". Ours hands every answer and every error to run, which
// re-creates the subscription or reconnects.
type subscription struct {
	id     uint32
	out    chan publishResult
	cancel context.CancelFunc
	done   chan struct{}
}

type publishResult struct {
	res *ua.PublishResponse
	err error
}

// published returns the channel of the running publisher, or nil.
func (s *session) published() <-chan publishResult {
	if s.subn == nil {
		return nil
	}
	return s.subn.out
}

// call sends req and returns the response of type T, within request_timeout.
func call[T ua.Response](ctx context.Context, s *session, req ua.Request) (T, error) {
	var out T
	ctx, cancel := context.WithTimeout(ctx, s.o.RequestTimeout.D())
	defer cancel()
	t0 := time.Now()
	s.health.Request()
	err := s.client.Send(ctx, req, func(r ua.Response) error {
		v, ok := r.(T)
		if !ok {
			return fmt.Errorf("unexpected answer %T", r)
		}
		out = v
		return nil
	})
	if err == nil {
		s.health.Answered(time.Since(t0))
	}
	return out, err
}

// subscribe creates the subscription, starts its publisher and creates the monitored items, in
// calls of at most MaxMonitoredItemsPerCall items, halving a call the server answers with
// BadTooManyOperations. Items the server refuses are logged and counted; the others go on. It
// returns an error only when the session is broken; a subscription that could not be created
// is tried again on the next tick.
func (s *session) subscribe(ctx context.Context) error {
	o := s.o
	pub := o.PublishingInterval.D()
	ka := uint32(max(1, math.Ceil(float64(keepAlive)/float64(pub))))
	res, err := call[*ua.CreateSubscriptionResponse](ctx, s, &ua.CreateSubscriptionRequest{
		RequestedPublishingInterval: float64(pub) / float64(time.Millisecond),
		RequestedLifetimeCount:      ka * lifetimeFactor,
		RequestedMaxKeepAliveCount:  ka,
		PublishingEnabled:           true,
	})
	if err != nil {
		if isConnError(err) {
			return fmt.Errorf("create subscription: %w", err)
		}
		s.log.Warn("cannot create the subscription; trying again on the next tick", "error", err)
		return nil
	}
	s.monitored, s.monFailed = 0, 0
	s.startPublisher(res.SubscriptionID)

	reqs := make([]*ua.MonitoredItemCreateRequest, len(s.items))
	for i, st := range s.items {
		reqs[i] = s.itemRequest(uint32(i), st, true)
	}
	var retry []*ua.MonitoredItemCreateRequest // refused with a filter: again without
	for i := 0; i < len(reqs); {
		n := min(s.monChunk, len(reqs)-i)
		res, err := s.monitor(ctx, reqs[i:i+n])
		if errors.Is(err, ua.StatusBadTooManyOperations) && n > 1 {
			s.split(&s.monChunk, n, "CreateMonitoredItems")
			continue
		}
		if err != nil {
			if isConnError(err) {
				return fmt.Errorf("create monitored items: %w", err)
			}
			// the call failed as a whole: every item in it is a problem of its own
			for _, r := range reqs[i : i+n] {
				s.monFailed++
				s.nodeProblem(s.items[r.RequestedParameters.ClientHandle], err)
			}
			i += n
			continue
		}
		for k, r := range res.Results {
			h := reqs[i+k].RequestedParameters.ClientHandle
			st := s.items[h]
			switch {
			case r.StatusCode == ua.StatusOK:
				s.monitored++
			case filterRefused(r.StatusCode) && reqs[i+k].RequestedParameters.Filter != nil:
				s.log.Warn("the server refuses the deadband or trigger of this node; monitoring it without",
					"node", st.spec.ref.String(), "field", st.spec.field, "status", statusName(r.StatusCode))
				retry = append(retry, s.itemRequest(h, st, false))
			default:
				s.monFailed++
				s.nodeProblem(st, r.StatusCode)
			}
		}
		i += n
	}
	for _, r := range retry {
		res, err := s.monitor(ctx, []*ua.MonitoredItemCreateRequest{r})
		if err != nil && isConnError(err) {
			return fmt.Errorf("create monitored items: %w", err)
		}
		st := s.items[r.RequestedParameters.ClientHandle]
		switch {
		case err != nil:
			s.monFailed++
			s.nodeProblem(st, err)
		case res.Results[0].StatusCode != ua.StatusOK:
			s.monFailed++
			s.nodeProblem(st, res.Results[0].StatusCode)
		default:
			s.monitored++
		}
	}
	return nil
}

func (s *session) monitor(ctx context.Context, reqs []*ua.MonitoredItemCreateRequest) (*ua.CreateMonitoredItemsResponse, error) {
	res, err := call[*ua.CreateMonitoredItemsResponse](ctx, s, &ua.CreateMonitoredItemsRequest{
		SubscriptionID:     s.subn.id,
		TimestampsToReturn: ua.TimestampsToReturnBoth,
		ItemsToCreate:      reqs,
	})
	if err == nil && len(res.Results) != len(reqs) {
		return nil, fmt.Errorf("%d results for %d monitored items", len(res.Results), len(reqs))
	}
	return res, err
}

func filterRefused(c ua.StatusCode) bool {
	return c == ua.StatusBadFilterNotAllowed || c == ua.StatusBadMonitoredItemFilterUnsupported ||
		c == ua.StatusBadMonitoredItemFilterInvalid || c == ua.StatusBadDeadbandFilterInvalid
}

// itemRequest builds the monitored item of st; the client handle is st's index in s.items.
func (s *session) itemRequest(handle uint32, st *nodeState, withFilter bool) *ua.MonitoredItemCreateRequest {
	mon := st.spec.mon
	p := &ua.MonitoringParameters{
		ClientHandle:     handle,
		SamplingInterval: mon.sampling,
		QueueSize:        s.queueSize(mon),
		DiscardOldest:    mon.discardOldest,
	}
	if withFilter && mon.filter != nil {
		p.Filter = ua.NewExtensionObject(mon.filter)
	}
	return &ua.MonitoredItemCreateRequest{
		ItemToMonitor:       &ua.ReadValueID{NodeID: st.id, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode:      ua.MonitoringModeReporting,
		RequestedParameters: p,
	}
}

// queueSize is the configured queue size, or enough for every sample of one publishing
// interval (plus one for jitter), so that sampling faster than publishing loses nothing.
func (s *session) queueSize(mon monitorParams) uint32 {
	if mon.queueSize > 0 {
		return mon.queueSize
	}
	if mon.sampling <= 0 {
		return 1
	}
	pub := float64(s.o.PublishingInterval.D()) / float64(time.Millisecond)
	return uint32(min(1000, math.Ceil(pub/mon.sampling)+1))
}

// startPublisher starts the goroutine that keeps a Publish request outstanding for
// subscription id and hands each answer to run.
func (s *session) startPublisher(id uint32) {
	ctx, cancel := context.WithCancel(context.Background())
	sub := &subscription{id: id, out: make(chan publishResult, 4), cancel: cancel, done: make(chan struct{})}
	s.subn = sub
	go publish(ctx, s.client, sub)
}

// stopPublisher ends the publisher and waits for it; with deleteOnServer the subscription is
// deleted on the server too (closing the session deletes it anyway).
func (s *session) stopPublisher(deleteOnServer bool) {
	sub := s.subn
	if sub == nil {
		return
	}
	s.subn = nil
	sub.cancel()
	<-sub.done
	if deleteOnServer && s.client != nil {
		call[*ua.DeleteSubscriptionsResponse](context.Background(), s, &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{sub.id}})
	}
}

// publish sends Publish requests one after the other, acknowledging each notification message
// in the next request, and hands every answer with data (keep-alives are not handed on) and
// the first error to out. It ends on that error or when ctx is cancelled.
func publish(ctx context.Context, c *opcua.Client, sub *subscription) {
	defer close(sub.done)
	var acks []*ua.SubscriptionAcknowledgement
	for {
		var res *ua.PublishResponse
		err := c.Send(ctx, &ua.PublishRequest{SubscriptionAcknowledgements: acks}, func(r ua.Response) error {
			var ok bool
			if res, ok = r.(*ua.PublishResponse); !ok {
				return fmt.Errorf("unexpected answer %T to Publish", r)
			}
			return nil
		})
		acks = nil
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ua.StatusBadTooManyPublishRequests) {
			select { // the server has enough requests queued: wait for them to be answered
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err == nil && (res.NotificationMessage == nil || len(res.NotificationMessage.NotificationData) == 0) {
			continue // a keep-alive
		}
		if err == nil {
			acks = []*ua.SubscriptionAcknowledgement{{SubscriptionID: res.SubscriptionID, SequenceNumber: res.NotificationMessage.SequenceNumber}}
		}
		select {
		case sub.out <- publishResult{res: res, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// handlePublish turns an answer of the publisher into metrics. A subscription the server no
// longer has is re-created on the same session; any other error means the session is broken
// and is returned.
func (s *session) handlePublish(ctx context.Context, r publishResult) error {
	if r.err != nil {
		if errors.Is(r.err, ua.StatusBadNoSubscription) || errors.Is(r.err, ua.StatusBadSubscriptionIDInvalid) {
			s.log.Warn("the server no longer has the subscription; re-creating it", "status", r.err)
			return s.resubscribe(ctx)
		}
		return fmt.Errorf("publish: %w", r.err)
	}
	if s.subn == nil || r.res.SubscriptionID != s.subn.id {
		return nil // from a subscription that was replaced
	}
	now := time.Now()
	for _, eo := range r.res.NotificationMessage.NotificationData {
		if eo == nil {
			continue
		}
		switch v := eo.Value.(type) {
		case *ua.DataChangeNotification:
			a := newSlab(len(v.MonitoredItems))
			for _, it := range v.MonitoredItems {
				if it == nil || int(it.ClientHandle) >= len(s.items) {
					continue
				}
				s.deliver(a, s.items[it.ClientHandle], it.Value, now, true)
			}
		case *ua.StatusChangeNotification:
			s.log.Warn("the server changed the subscription's status; re-creating it", "status", statusName(v.Status))
			return s.resubscribe(ctx)
		}
	}
	return nil
}

// resubscribe replaces a subscription the server lost, on the same session. The values the
// new subscription sends first repeat the last ones delivered and are dropped (nodeState).
func (s *session) resubscribe(ctx context.Context) error {
	s.stopPublisher(true)
	return s.subscribe(ctx)
}
