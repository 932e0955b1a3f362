// Package cluster shares one device inventory between the agents of a group, over Kafka. The
// agents load the same configuration; each joins a Kafka consumer group on a membership topic
// of `shards` partitions and polls only the units (connections) of the shards it is assigned. A
// unit's shard is a stable hash of its identity (Shard). There is no cluster code of our own:
// membership, failure detection (the session timeout) and assignment are the group
// coordinator's; this package turns its callbacks into "run these shards" for the agent.
//
// docs/cluster.md describes the design, the failure modes and how to run it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// Runner is what a Member drives: the agent's inputs.
type Runner interface {
	// RunShards makes the agent poll the units of exactly the shards s[i] is true for. The
	// units of shards no longer in s stop, and their connections are closed, before it
	// returns: the member acknowledges a revoke to the group only after that. s is the
	// caller's copy to keep.
	RunShards(s []bool)
}

// Member is this agent in the group. The library is franz-go's kgo rather than segmentio's
// kafka-go ConsumerGroup, which the Kafka output uses for writing: kafka-go's group supports
// only eager balancers (range, round robin), so every rebalance would revoke every shard of
// every agent and stop all polling for a moment, and it has no callback that runs between a
// partition's revoke and the acknowledgement of it. kgo has the cooperative-sticky balancer
// (a rebalance moves only the shards it must) and OnPartitionsAssigned/Revoked/Lost callbacks
// that run before the member rejoins, which is where the devices are stopped.
type Member struct {
	cfg    *config.Cluster
	topic  string
	log    *slog.Logger
	runner Runner
	// base are the options of every client (brokers, TLS, SASL); group those of the member.
	base, group []kgo.Opt

	// mu serializes every change of the shards polled: the group's callbacks, the end of a
	// takeover wait and Close. It is held while the runner starts and stops units.
	mu        sync.Mutex
	running   []bool // shards polled now
	assigned  []bool // shards the group assigned us (what kgo thinks it owns)
	waiting   []bool // assigned, not started yet: the takeover wait after a coordinator loss
	lost      bool   // the coordinator was lost; cleared by the next assignment
	afterLoss bool   // keep mode: the next assignment is the first after a loss
	waitSeq   int    // identifies the takeover wait in force
	loggedGen int32  // the generation last logged
	settled   bool   // the first assignment since Start has come
	waitOver  bool   // the wait has ended: the next assignment starts the shards waiting
	closing   bool

	// st is what Status reports, under its own lock so that /healthz never waits for a
	// rebalance.
	stMu      sync.Mutex
	st        Status
	polledNow []bool // a copy of running, for Owner

	stats                                            *models.Stats
	sGen, sShards, sAssigned, sLast, sLost, sMembers *models.Stat
	sRebalances, sRevoked, sLostN, sDevices          *models.Stat

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	describe  chan struct{}
	closeOnce sync.Once
	clMu      sync.Mutex
	cl        *kgo.Client
	admin     *kgo.Client
}

// Status is the member's view of the group, for /healthz and /metrics.
type Status struct {
	Group    string
	Member   string // this agent's name (its client id)
	MemberID string // the id the coordinator gave it; "" while it is not in the group
	// Generation is the group's generation at the last assignment (-1: none yet).
	Generation int32
	Shards     int // of the group
	// Polled are the shards polled here, Assigned those the group assigned here (they differ
	// while a takeover waits, and after a coordinator loss in keep mode).
	Polled, Assigned int
	LastRebalance    time.Time // the last assignment or revoke; zero: none yet
	// LostSince is when the coordinator was lost (zero while in the group), and Keep whether
	// the shards last assigned are still polled meanwhile.
	LostSince time.Time
	Keep      bool
	Members   int      // members the last description of the group listed
	Devices   int      // devices of the shards polled here (SetDevices)
	owners    []string // member polling each shard, from the last description
	Err       string   // the last error talking to Kafka, "" after a success
}

// StartSettle is how long the first member of a new group waits before it starts its shards,
// for the agents started with it to join: three heartbeats.
const StartSettle = 3 * time.Second

// Owner returns the member polling shard, "" when unknown.
func (s *Status) Owner(shard int) string {
	if shard < len(s.owners) {
		return s.owners[shard]
	}
	return ""
}

// New returns a member of cfg's group that drives runner. It checks the TLS and SASL options
// but does not dial: Start does, in the background.
func New(cfg *config.Cluster, runner Runner, log *slog.Logger) (*Member, error) {
	if log == nil {
		log = slog.Default()
	}
	m := &Member{
		cfg: cfg, topic: Topic(cfg.Group), log: log.With("plugin", "cluster"), runner: runner,
		running: make([]bool, cfg.Shards), assigned: make([]bool, cfg.Shards), waiting: make([]bool, cfg.Shards),
		done: make(chan struct{}), describe: make(chan struct{}, 1),
	}
	m.st = Status{Group: cfg.Group, Member: cfg.Member, Generation: -1, Shards: cfg.Shards, Keep: cfg.OnCoordinatorLoss == "keep"}
	var err error
	if m.base, err = clientOpts(cfg, m.log); err != nil {
		return nil, err
	}
	session := cfg.SessionTimeout.D()
	m.group = append(slices.Clip(m.base),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(m.topic),
		kgo.Balancers(&claimBalancer{GroupBalancer: kgo.CooperativeStickyBalancer(), m: m}),
		kgo.SessionTimeout(session),
		// A heartbeat is how a member learns that the group rebalances: once a second (or a
		// third of the session), so that a graceful leave moves its shards within a second or
		// two. 100 agents heartbeating every second is nothing for a coordinator.
		kgo.HeartbeatInterval(min(time.Second, session/3)),
		// How long the coordinator waits for the members to rejoin in a rebalance; a member's
		// rejoin waits for its revoked units to stop, which takes at most one poll's timeout.
		kgo.RebalanceTimeout(max(session, 10*time.Second)),
		kgo.DisableAutoCommit(), // nothing is consumed: the partitions only carry the assignment
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
	)
	tags := map[string]string{"group": cfg.Group, "member": cfg.Member}
	m.stats = models.RegisterStats("internal_cluster", tags)
	m.sGen, m.sShards, m.sAssigned = m.stats.Gauge("generation"), m.stats.Gauge("shards_polled"), m.stats.Gauge("shards_assigned")
	m.sLast, m.sLost, m.sMembers = m.stats.Gauge("last_rebalance_unix"), m.stats.Gauge("coordinator_lost"), m.stats.Gauge("members")
	m.sRebalances, m.sRevoked, m.sLostN = m.stats.Get("rebalances"), m.stats.Get("shards_revoked"), m.stats.Get("coordinator_losses")
	m.sDevices = m.stats.Gauge("devices_polled")
	m.sGen.Set(-1)
	return m, nil
}

// clientOpts are the options of every client of the group: brokers, client id, TLS, SASL.
func clientOpts(cfg *config.Cluster, log *slog.Logger) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.Member),
		kgo.WithLogger(kgoLogger{log, new(atomic.Int64)}),
		// A dial to a broker that is down fails at once on loopback, but may hang on a real
		// network; the session timeout bounds how long a member may be unsure of the group.
		kgo.DialTimeout(min(cfg.SessionTimeout.D(), 10*time.Second)),
		// No client metrics (KIP-714) pushed to a broker that asks for them. Each push takes a
		// compressor from a pool; kgo's lz4 writer holds two 4 MiB blocks, and the pool keeps
		// it across a collection or two. On an agent polling 2,500 devices that was 8 MiB of
		// live heap, a sixth of its memory, for metrics no plant reads: the group's state is
		// on the agent's own /metrics.
		kgo.DisableClientMetrics(),
	}
	if cfg.TLS() {
		tc, err := cfg.Client.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	mech, err := cfg.SASL.Franz()
	if err != nil {
		return nil, err
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, nil
}

// Start joins the group in the background: it makes sure the membership topic exists (creating
// it with `shards` partitions), then consumes it in a group until Close. Until the group
// assigns shards nothing is polled; while Kafka cannot be reached, Start's goroutine retries.
func (m *Member) Start() {
	m.ctx, m.cancel = context.WithCancel(context.Background())
	go m.run()
}

func (m *Member) run() {
	defer close(m.done)
	admin, err := kgo.NewClient(m.base...)
	if err != nil {
		m.fail(err)
		return
	}
	m.clMu.Lock()
	m.admin = admin
	m.clMu.Unlock()
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := m.ensureTopic(m.ctx, kadm.NewClient(admin))
		if err == nil {
			break
		}
		m.fail(fmt.Errorf("membership topic %s: %w", m.topic, err))
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	cl, err := kgo.NewClient(m.group...)
	if err != nil {
		m.fail(err)
		return
	}
	m.clMu.Lock()
	m.cl = cl
	m.clMu.Unlock()
	go m.describeLoop(kadm.NewClient(admin))
	m.log.Info("joining the group", "group", m.cfg.Group, "member", m.cfg.Member, "topic", m.topic, "shards", m.cfg.Shards)
	// The client must keep polling for the group to progress: kgo delivers the group's errors
	// through PollFetches, and a member that does not poll is not one kgo keeps in the group.
	for {
		fs := cl.PollFetches(m.ctx)
		if fs.IsClientClosed() || m.ctx.Err() != nil {
			return
		}
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				m.fail(err)
			}
		})
	}
}

// ensureTopic creates the membership topic when it is missing, and checks its partitions: a
// topic with another number of partitions than shards would assign shards that no unit has, or
// leave some unpolled.
func (m *Member) ensureTopic(ctx context.Context, adm *kadm.Client) error {
	limit := max(5*time.Second, m.cfg.SessionTimeout.D())
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(m.cfg.Shards), -1, nil, m.topic)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		// kgo retries a refused login or a TLS mismatch as it retries a broker that is down.
		return fmt.Errorf("no answer from the brokers %s within %s (are they up? check the TLS and SASL settings): %w",
			strings.Join(m.cfg.Brokers, ", "), limit, err)
	case err == nil:
		m.log.Info("membership topic created", "topic", resp.Topic, "partitions", m.cfg.Shards)
		return nil
	case !errors.Is(err, kerr.TopicAlreadyExists):
		return err
	}
	topics, err := adm.ListTopics(ctx, m.topic)
	if err != nil {
		return err
	}
	td, ok := topics[m.topic]
	if !ok || td.Err != nil {
		return fmt.Errorf("exists but cannot be described: %v", td.Err)
	}
	if n := len(td.Partitions); n != m.cfg.Shards {
		return fmt.Errorf("has %d partitions, [cluster] shards = %d: every agent of the group must use the topic's number (or give the group another name)", n, m.cfg.Shards)
	}
	return nil
}

// onAssigned is called after every sync of the group, with the partitions new to this member
// (kgo calls it even when there are none).
func (m *Member) onAssigned(_ context.Context, cl *kgo.Client, added map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return
	}
	now := time.Now()
	for _, p := range added[m.topic] {
		if int(p) < len(m.assigned) {
			m.assigned[p] = true
		}
	}
	wasLost := m.lost
	if m.lost {
		m.lost = false
		m.log.Info("back in the group", "after", now.Sub(m.lostSince()).Round(time.Millisecond))
	}
	// Shards polled here that the group gave to no one here: kept through a coordinator loss.
	// They stop now, and the member rejoins so that the group may give them to their new
	// owner: kgo does not know it polled them, so it would not rejoin for them itself.
	stopped := 0
	for i := range m.running {
		if m.running[i] && !m.assigned[i] {
			m.running[i] = false
			stopped++
		}
	}
	// The takeover wait: after a coordinator loss in keep mode, other agents may still poll
	// shards they kept and have not claimed yet (they rejoin one by one). A shard new to this
	// agent waits one session timeout, in which any live member rejoins and claims what it
	// polls; claimed shards are revoked from here before they start.
	// The first member of a new group (generation 1: every agent starting together, as after a
	// deploy) would be assigned every shard and dial every device, only to give most of them up
	// a moment later as the others join. It waits StartSettle first; the others, joining a
	// group already formed, take their shards as they are assigned.
	_, gen := cl.GroupMetadata()
	settle := !m.settled && gen == 1
	m.settled = true
	if m.afterLoss || settle {
		wait, why := StartSettle, "the first member of a new group waits for the others to join"
		if m.afterLoss {
			wait, why = m.cfg.SessionTimeout.D(), "shards new to this agent after a coordinator loss wait before they start"
		}
		m.afterLoss, m.waitOver = false, false
		m.waitSeq++
		seq := m.waitSeq
		time.AfterFunc(wait, func() { m.endWait(seq) })
		for i := range m.waiting {
			m.waiting[i] = m.assigned[i] && !m.running[i]
		}
		if n := count(m.waiting); n > 0 {
			m.log.Info(why, "shards", n, "wait", wait)
		}
	}
	if m.waitOver {
		m.waitOver = false
		clear(m.waiting)
	}
	started := 0
	for i := range m.running {
		if m.assigned[i] && !m.running[i] && !m.waiting[i] {
			m.running[i] = true
			started++
		}
	}
	if started > 0 || stopped > 0 || wasLost {
		m.apply()
	}
	if stopped > 0 {
		m.log.Info("stopped shards kept through the coordinator loss that the group gave elsewhere; rejoining", "shards", stopped)
		cl.ForceRebalance()
	}
	m.rebalanced(cl, now, started, stopped)
}

// onRevoked is called when the group takes shards away (a cooperative rebalance, or Close).
// The units stop before it returns; kgo rejoins, which acknowledges the revoke, only then.
func (m *Member) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	stopped := 0
	for _, p := range revoked[m.topic] {
		if int(p) >= len(m.assigned) {
			continue
		}
		m.assigned[p], m.waiting[p] = false, false
		if m.running[p] {
			m.running[p] = false
			stopped++
		}
	}
	m.sRevoked.Add(int64(len(revoked[m.topic])))
	if m.closing {
		return
	}
	if stopped > 0 {
		m.apply()
	}
	m.rebalanced(cl, time.Now(), 0, stopped)
}

// onLost is called when the member is out of the group without a revoke: the coordinator
// cannot be reached, or it expired our session. In keep mode the shards polled go on being
// polled; in stop mode they stop.
func (m *Member) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.assigned)
	clear(m.waiting)
	if m.closing {
		return
	}
	// kgo calls it again after each failed attempt to rejoin; the first call tells.
	now := time.Now()
	first := !m.lost
	if first {
		m.lost = true
		m.sLostN.Incr()
		m.setStatus(func(s *Status) { s.LostSince, s.MemberID, s.Assigned = now, "", 0 })
	}
	m.sLost.Set(1)
	m.sAssigned.Set(0)
	n := count(m.running)
	if m.cfg.OnCoordinatorLoss == "stop" {
		if n > 0 {
			clear(m.running)
			m.apply()
		}
		if first {
			m.log.Warn("lost the group coordinator; on_coordinator_loss = \"stop\": polling nothing until the group is rejoined", "shards_stopped", n)
		}
		return
	}
	m.afterLoss = true
	if first {
		m.log.Warn("lost the group coordinator; on_coordinator_loss = \"keep\": polling the shards last assigned until the group is rejoined", "shards", n)
	}
}

// endWait starts the shards that waited out the takeover wait and are still assigned here.
func (m *Member) endWait(seq int) {
	m.mu.Lock()
	if m.closing || seq != m.waitSeq {
		m.mu.Unlock()
		return
	}
	// The shards waiting are not claimed, so the group may have given them to another member
	// in a rebalance whose news has not reached this one yet: starting them here could start a
	// shard another agent starts too. They start in the next assignment instead, which is the
	// group's word for the current generation: the member rejoins to get it.
	m.waitOver = true
	n := count(m.waiting)
	m.mu.Unlock()
	m.clMu.Lock()
	cl := m.cl
	m.clMu.Unlock()
	if n > 0 && cl != nil {
		m.log.Info("wait over: rejoining to start the shards still assigned here", "shards", n)
		cl.ForceRebalance()
	}
}

func (m *Member) lostSince() time.Time {
	m.stMu.Lock()
	defer m.stMu.Unlock()
	return m.st.LostSince
}

// apply hands the shards to poll to the runner. m.mu is held.
func (m *Member) apply() {
	m.runner.RunShards(slices.Clone(m.running))
	m.sShards.Set(int64(count(m.running)))
	polled := slices.Clone(m.running)
	m.setStatus(func(s *Status) { s.Polled = count(polled) })
	m.stMu.Lock()
	m.polledNow = polled
	m.stMu.Unlock()
}

// rebalanced records a rebalance in the status and asks for a new description of the group.
func (m *Member) rebalanced(cl *kgo.Client, now time.Time, started, stopped int) {
	id, gen := cl.GroupMetadata()
	assigned := count(m.assigned)
	m.sRebalances.Incr()
	m.sGen.Set(int64(gen))
	m.sAssigned.Set(int64(assigned))
	m.sLast.Set(now.Unix())
	m.sLost.Set(0)
	m.setStatus(func(s *Status) {
		s.MemberID, s.Generation, s.Assigned, s.LastRebalance, s.LostSince = id, gen, assigned, now, time.Time{}
	})
	if started > 0 || stopped > 0 || gen != m.loggedGen {
		m.loggedGen = gen
		m.log.Info("rebalanced", "generation", gen, "shards_polled", count(m.running), "shards_assigned", assigned, "started", started, "stopped", stopped)
	}
	select {
	case m.describe <- struct{}{}:
	default:
	}
}

// describeLoop keeps the owners of every shard: after each rebalance (once the group has
// settled) and every 30 s, it describes the group. The device page and DeviceStates show them.
func (m *Member) describeLoop(adm *kadm.Client) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.describe:
			// A cooperative rebalance takes two rounds; describe after the second.
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		case <-tick.C:
		}
		m.describeGroup(adm)
	}
}

func (m *Member) describeGroup(adm *kadm.Client) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	gs, err := adm.DescribeGroups(ctx, m.cfg.Group)
	if err == nil {
		err = gs.Error()
	}
	if err != nil {
		if m.ctx.Err() == nil {
			m.fail(fmt.Errorf("describe group: %w", err))
		}
		return
	}
	g := gs[m.cfg.Group]
	owners := make([]string, m.cfg.Shards)
	names := map[string]int{}
	for _, mem := range g.Members {
		names[mem.ClientID]++
		c, ok := mem.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range c.Topics {
			if t.Topic != m.topic {
				continue
			}
			for _, p := range t.Partitions {
				if int(p) < len(owners) {
					owners[p] = mem.ClientID
				}
			}
		}
	}
	for name, n := range names {
		if n > 1 {
			m.log.Warn("two members of the group have the same name; give each agent its own [cluster] member", "member", name, "count", n)
		}
	}
	m.sMembers.Set(int64(len(g.Members)))
	m.setStatus(func(s *Status) { s.owners, s.Members, s.Err = owners, len(g.Members), "" })
	if g.State != "Stable" {
		select { // describe again once it settles
		case m.describe <- struct{}{}:
		default:
		}
	}
}

// Owner returns the member polling shard: this one for the shards polled here, else the one
// the last description of the group named ("" when unknown). It is cheap: the device page and
// /healthz call it for every device.
func (m *Member) Owner(shard int) string {
	m.stMu.Lock()
	defer m.stMu.Unlock()
	if shard < len(m.polledNow) && m.polledNow[shard] {
		return m.cfg.Member
	}
	if shard < len(m.st.owners) {
		return m.st.owners[shard]
	}
	return ""
}

// SetDevices records how many devices the shards polled here hold, for Status and /metrics.
func (m *Member) SetDevices(n int) {
	m.sDevices.Set(int64(n))
	m.setStatus(func(s *Status) { s.Devices = n })
}

// Status returns the member's view of the group. Owner(shard) of the result is this member for
// the shards polled here, and otherwise the member the last description of the group named.
func (m *Member) Status() Status {
	m.stMu.Lock()
	st := m.st
	st.owners = slices.Clone(m.st.owners)
	m.stMu.Unlock()
	return st
}

func (m *Member) setStatus(f func(*Status)) {
	m.stMu.Lock()
	f(&m.st)
	m.stMu.Unlock()
}

// fail records an error talking to Kafka (logged at most once a minute per message by kgo's
// own retries; here it is kept for /healthz).
func (m *Member) fail(err error) {
	m.setStatus(func(s *Status) { s.Err = err.Error() })
	m.log.Debug("kafka", "error", err)
}

// Close stops every unit polled here, then leaves the group (a LeaveGroup, so that the others
// take the shards over at once) and unregisters the stats. It may be called more than once, and
// without Start. The units stop first: the group
// hands a shard to another agent only once this one has closed its connections.
func (m *Member) Close() { m.closeOnce.Do(m.close) }

func (m *Member) close() {
	m.mu.Lock()
	m.closing = true
	if count(m.running) > 0 {
		clear(m.running)
		m.apply()
	}
	m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
	}
	m.clMu.Lock()
	cl := m.cl
	m.clMu.Unlock()
	if cl != nil {
		start := time.Now()
		cl.Close() // leaves the group
		m.log.Info("left the group", "took", time.Since(start).Round(time.Millisecond))
	}
	if m.cancel != nil {
		<-m.done
	}
	m.clMu.Lock()
	admin := m.admin
	m.clMu.Unlock()
	if admin != nil {
		admin.Close()
	}
	m.stats.Unregister()
}

// claimBalancer is kgo's cooperative-sticky balancer, except that a member claims, in its join
// metadata, the shards it polls rather than those kgo last assigned it. The two differ after a
// coordinator loss in keep mode: kgo forgets the partitions it lost, but the agent still polls
// them, and the sticky assignment must leave each with the agent that polls it so that no
// device gets a second poller when the group reforms. They also differ while a takeover waits:
// a shard assigned but not started is not claimed, so the group may give it to the member that
// really polls it.
type claimBalancer struct {
	kgo.GroupBalancer
	m *Member
}

func (b *claimBalancer) JoinGroupMetadata(topics []string, current map[string][]int32, generation int32) []byte {
	claims := b.m.claims()
	cur := make(map[string][]int32, len(current)+1)
	for t, ps := range current {
		if t != b.m.topic {
			cur[t] = ps
		}
	}
	if len(claims) > 0 {
		cur[b.m.topic] = claims
	}
	return b.GroupBalancer.JoinGroupMetadata(topics, cur, generation)
}

// claims returns the shards polled, sorted.
func (m *Member) claims() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for i, r := range m.running {
		if r {
			out = append(out, int32(i))
		}
	}
	return out
}

func count(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}

// kgoLogger sends kgo's log to slog. kgo's errors become warnings (a broker that is down is what
// on_coordinator_loss is for, not a failure of the agent), at most one every 30 s: kgo logs
// each retry, once a second while Kafka is down. The rest, and all of its info, go to debug.
// The member logs the transitions itself (lost, back, rebalanced).
type kgoLogger struct {
	log  *slog.Logger
	last *atomic.Int64 // unix ns of the last warning
}

func (l kgoLogger) Level() kgo.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	if now := time.Now().UnixNano(); level <= kgo.LogLevelWarn && now-l.last.Load() >= int64(30*time.Second) {
		l.last.Store(now)
		lv = slog.LevelWarn
	}
	l.log.Log(context.Background(), lv, "kafka: "+strings.TrimSpace(msg), keyvals...)
}
