package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/testpeer"
	"github.com/tagpipe/tagpipe/internal/testkit/tlstest"
)

// These tests run members in one process against franz-go's kfake, which serves consumer
// groups on the Kafka wire protocol. A shared table (plant) stands for the devices: each
// member's runner marks the shards it polls, and a shard marked by two runners at once is a
// device polled twice, which must never happen. The process-level proof (three tagpipe
// binaries, SIGKILL, a broker stopped for 30 s) is in tests/cluster.

const testShards = 16

// plant records which member polls each shard.
type plant struct {
	mu       sync.Mutex
	owner    []string
	overlaps []string
}

func newPlant() *plant {
	p := &plant{owner: make([]string, testShards)}
	return p
}

type runner struct {
	p    *plant
	name string
	mu   sync.Mutex
	now  []bool
	runs int
	peak int // the most shards polled at once
}

func (r *runner) RunShards(s []bool) {
	r.p.mu.Lock()
	for i, on := range s {
		if !on && r.p.owner[i] == r.name {
			r.p.owner[i] = ""
		}
	}
	for i, on := range s {
		if !on {
			continue
		}
		if o := r.p.owner[i]; o != "" && o != r.name {
			r.p.overlaps = append(r.p.overlaps, fmt.Sprintf("shard %d started by %s while %s polls it", i, r.name, o))
		}
		r.p.owner[i] = r.name
	}
	r.p.mu.Unlock()
	r.mu.Lock()
	r.now, r.runs, r.peak = s, r.runs+1, max(r.peak, count(s))
	r.mu.Unlock()
}

func (r *runner) polled() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return count(r.now)
}

// owners returns a copy of the table and how many shards nobody polls.
func (p *plant) snapshot() ([]string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]string(nil), p.owner...)
	free := 0
	for _, o := range out {
		if o == "" {
			free++
		}
	}
	return out, free
}

func (p *plant) checkNoOverlap(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.overlaps {
		t.Error(o)
	}
}

func startBroker(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testConfig(brokers []string, name, onLoss string) *config.Cluster {
	c := config.DefaultCluster()
	c.Brokers, c.Group, c.Member, c.Shards = brokers, "plant", name, testShards
	c.SessionTimeout = config.Duration(1500 * time.Millisecond)
	c.OnCoordinatorLoss = onLoss
	return &c
}

func startMember(t *testing.T, p *plant, brokers []string, name, onLoss string) (*Member, *runner) {
	t.Helper()
	r := &runner{p: p, name: name}
	m, err := New(testConfig(brokers, name, onLoss), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	return m, r
}

// waitFor polls cond until it holds; the limit only ends a test that is stuck.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled: every shard polled by exactly one of the members, and each member polls what the
// group assigned it.
func settled(p *plant, ms ...*Member) bool {
	if _, free := p.snapshot(); free > 0 {
		return false
	}
	for _, m := range ms {
		st := m.Status()
		if !st.LostSince.IsZero() || st.Polled != st.Assigned {
			return false
		}
	}
	return true
}

// TestGroupSharesShards: three members split the shards evenly, never two on one shard; when
// one leaves (Close), the other two take its shards; the owners are described.
func TestGroupSharesShards(t *testing.T) {
	c := startBroker(t)
	defer c.Close()
	p := newPlant()
	var ms []*Member
	var rs []*runner
	start := func(i int) {
		m, r := startMember(t, p, c.ListenAddrs(), fmt.Sprintf("agent-%d", i), "keep")
		t.Cleanup(m.Close)
		ms, rs = append(ms, m), append(rs, r)
	}
	// agent-0 forms the group; the other two join it a moment later, as after a deploy. (Which
	// of three started in the same instant forms the group, and whether the other two join in
	// one generation or two, is the broker's race: the test fixes the first.)
	start(0)
	waitFor(t, "agent-0 forms the group", func() bool { return ms[0].Status().Assigned == testShards })
	start(1)
	start(2)
	waitFor(t, "three members share the shards", func() bool {
		return settled(p, ms...) && rs[0].polled() > 0 && rs[1].polled() > 0 && rs[2].polled() > 0
	})
	for i, r := range rs {
		if n := r.polled(); n < testShards/3 || n > testShards/3+1 {
			t.Errorf("agent-%d polls %d shards, want %d or %d", i, n, testShards/3, testShards/3+1)
		}
	}
	// The first member of the new group waited (StartSettle) for the others, and never polled
	// more than its share. The others take what they are assigned as they join: half each at
	// most (two in the group), never every shard.
	if rs[0].peak > testShards/3+1 {
		t.Errorf("agent-0, first in the group, polled %d shards at one time", rs[0].peak)
	}
	for i, r := range rs[1:] {
		if r.peak > testShards/2 {
			t.Errorf("agent-%d polled %d shards at one time", i+1, r.peak)
		}
	}
	waitFor(t, "the owners are described", func() bool {
		owners, _ := p.snapshot()
		for _, m := range ms {
			st := m.Status()
			if st.Members != 3 {
				return false
			}
			for s, o := range owners {
				if st.Owner(s) != o {
					return false
				}
			}
		}
		return true
	})
	st := ms[0].Status()
	if st.Generation < 1 || st.MemberID == "" || st.LastRebalance.IsZero() || st.Group != "plant" || st.Member != "agent-0" {
		t.Errorf("status %+v", st)
	}

	ms[0].Close()
	if n := rs[0].polled(); n != 0 {
		t.Errorf("agent-0 polls %d shards after Close", n)
	}
	waitFor(t, "the other two take agent-0's shards", func() bool {
		return settled(p, ms[1:]...) && rs[1].polled()+rs[2].polled() == testShards
	})
	p.checkNoOverlap(t)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	_, port, _ := net.SplitHostPort(testpeer.FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// outage runs three members, stops the broker until every member has lost the coordinator,
// checks what they poll meanwhile, and starts the broker again on the same port.
func outage(t *testing.T, onLoss string, during func(p *plant, before []string, rs []*runner)) (*plant, []string, []*Member) {
	port := freePort(t)
	c := startBroker(t, kfake.Ports(port))
	p := newPlant()
	var ms []*Member
	var rs []*runner
	for i := range 3 {
		m, r := startMember(t, p, c.ListenAddrs(), fmt.Sprintf("agent-%d", i), onLoss)
		t.Cleanup(m.Close)
		ms, rs = append(ms, m), append(rs, r)
	}
	waitFor(t, "three members share the shards", func() bool {
		return settled(p, ms...) && rs[0].polled() > 0 && rs[1].polled() > 0 && rs[2].polled() > 0
	})
	before, _ := p.snapshot()
	c.Close()
	waitFor(t, "every member loses the coordinator", func() bool {
		for _, m := range ms {
			if m.Status().LostSince.IsZero() {
				return false
			}
		}
		return true
	})
	during(p, before, rs)
	c = startBroker(t, kfake.Ports(port))
	t.Cleanup(c.Close)
	waitFor(t, "the group reforms", func() bool { return settled(p, ms...) })
	p.checkNoOverlap(t)
	return p, before, ms
}

// TestCoordinatorLossKeep: with on_coordinator_loss = "keep", every member polls its shards
// through the outage, and when the broker is back (with no memory of the group) the group
// reforms with each shard on the member that kept polling it: the members claim what they poll.
func TestCoordinatorLossKeep(t *testing.T) {
	p, before, _ := outage(t, "keep", func(p *plant, before []string, _ []*runner) {
		if now, _ := p.snapshot(); strings.Join(now, ",") != strings.Join(before, ",") {
			t.Errorf("polled during the outage:\n%v\nbefore:\n%v", now, before)
		}
	})
	if now, _ := p.snapshot(); strings.Join(now, ",") != strings.Join(before, ",") {
		t.Errorf("after the outage:\n%v\nbefore:\n%v", now, before)
	}
}

// TestCoordinatorLossStop: with on_coordinator_loss = "stop", nothing is polled during the
// outage, and the group reforms afterwards.
func TestCoordinatorLossStop(t *testing.T) {
	outage(t, "stop", func(p *plant, _ []string, rs []*runner) {
		if _, free := p.snapshot(); free != testShards {
			t.Errorf("%d shards polled during the outage", testShards-free)
		}
		for _, r := range rs {
			if r.polled() != 0 {
				t.Errorf("%s polls %d shards", r.name, r.polled())
			}
		}
	})
}

// TestTopicWithOtherPartitions: a membership topic whose partitions differ from shards is an
// error the status shows, and nothing is polled.
func TestTopicWithOtherPartitions(t *testing.T) {
	c := startBroker(t, kfake.SeedTopics(8, Topic("plant")))
	defer c.Close()
	p := newPlant()
	m, r := startMember(t, p, c.ListenAddrs(), "agent-0", "keep")
	defer m.Close()
	waitFor(t, "the error shows", func() bool { return strings.Contains(m.Status().Err, "has 8 partitions, [cluster] shards = 16") })
	if r.polled() != 0 {
		t.Errorf("polls %d shards", r.polled())
	}
}

// TestSASLAndTLS: a member logs in with SASL (the keys of outputs.kafka) over TLS to brokers that
// require both, and polls; with a wrong password it polls nothing and its status says why.
func TestSASLAndTLS(t *testing.T) {
	f := tlstest.New(t)
	c := startBroker(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "tagpipe", "s3cret"), kfake.TLS(f.ServerConfig(t, false)))
	defer c.Close()
	p := newPlant()
	cfg := testConfig(c.ListenAddrs(), "agent-0", "keep")
	cfg.SASLMechanism, cfg.SASLUsername, cfg.SASLPassword = "SCRAM-SHA-512", "tagpipe", "s3cret"
	cfg.CA = f.CA
	r := &runner{p: p, name: "agent-0"}
	m, err := New(cfg, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()
	waitFor(t, "the member polls every shard", func() bool { return r.polled() == testShards })

	bad := testConfig(c.ListenAddrs(), "agent-1", "keep")
	bad.SASLMechanism, bad.SASLUsername, bad.SASLPassword = "SCRAM-SHA-512", "tagpipe", "wrong"
	bad.CA = f.CA
	r2 := &runner{p: newPlant(), name: "agent-1"}
	m2, err := New(bad, r2, nil)
	if err != nil {
		t.Fatal(err)
	}
	m2.Start()
	defer m2.Close()
	waitFor(t, "the error shows", func() bool { return m2.Status().Err != "" })
	if r2.polled() != 0 || r.polled() != testShards {
		t.Errorf("with a wrong password: polls %d; the other %d", r2.polled(), r.polled())
	}
	t.Logf("wrong password: %s", m2.Status().Err)
}

// TestNoClientMetrics: a member's clients never ask the broker which client metrics (KIP-714) to
// push. Pushing them compresses with a pooled lz4 writer that holds 8 MiB. A plain kgo consumer
// (kgo asks once a client has fetched or produced), started once the member is in the group,
// asks the same broker: the count can see it.
func TestNoClientMetrics(t *testing.T) {
	c := startBroker(t)
	defer c.Close()
	var asked atomic.Int32
	c.ControlKey(int16(kmsg.GetTelemetrySubscriptions), func(kmsg.Request) (kmsg.Response, error, bool) {
		asked.Add(1)
		return nil, nil, false // counted, then served by the broker as usual
	})
	p := newPlant()
	m, _ := startMember(t, p, c.ListenAddrs(), "agent-0", "keep")
	defer m.Close()
	waitFor(t, "the member polls its shards", func() bool { return settled(p, m) && m.Status().Polled == testShards })
	if n := asked.Load(); n != 0 {
		t.Fatalf("the member's clients asked for client metrics %d times", n)
	}
	ref, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(Topic("plant")))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	waitFor(t, "a default consumer asks for client metrics", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		ref.PollFetches(ctx)
		return asked.Load() > 0
	})
}
