package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs/mqtt/sparkplugb"
)

// The Sparkplug B edge node.
//
// A session is one MQTT connection: its will is an NDEATH with the connection's bdSeq (0..255,
// one more at every connection), and once the broker accepted it (and, with a primary host,
// once that host's STATE says online) the node publishes NBIRTH (seq 0, the same bdSeq) and a
// DBIRTH for every device it knows alive. Every later message of the session (DBIRTH, NDATA,
// DDATA, DDEATH) takes the next seq, 255 wrapping to 0. The node's own metrics are metrics
// without the device tag (no_device = "node").
//
// Births declare every metric with its alias (unique in the node, kept for the output's
// life), datatype and latest value; data messages carry aliases only. A metric name never
// seen in a device's birth, or NCMD "Node Control/Rebirth", or the end of a replay of
// historical values, makes a full rebirth: NBIRTH and every DBIRTH again, same bdSeq.
//
// A device dies (DDEATH) when its health metric says its breaker opened, or when no metric of
// it came for device_timeout; its next metric (a health metric only with breaker "closed")
// births it again.
//
// Metrics older than the session's NBIRTH (what the buffer kept while the broker or the
// primary host was away) are sent as historical values (is_historical), then a rebirth gives
// the host their latest values as the live ones.
type node struct {
	link      *link
	topics    nodeTopics
	group     string
	edge      string
	deviceTag string
	noDevice  bool // reject metrics without the device tag
	name      *template
	health    string
	timeout   time.Duration // device_timeout
	quality   string
	stale     string
	primary   string
	qos       byte
	ackWait   time.Duration
	maxBytes  int

	st nodeStats

	ev      chan struct{} // wakes the connection's goroutine: rebirth asked, STATE changed
	rebirth atomic.Bool   // NCMD asked for a rebirth

	hostMu     sync.Mutex
	hostOnline bool
	hostTS     int64 // the timestamp of the last STATE taken

	mu        sync.Mutex // everything below; held by write and by the connection's goroutine
	bdSeq     uint64     // of the current connection
	nextBdSeq uint64
	seq       uint64 // of the next message
	born      bool   // NBIRTH published in this connection
	bornAt    time.Time
	needBirth bool // a full rebirth before the next data
	histSent  bool // historical values sent since the last birth
	self      *device
	devices   map[string]*device
	devOrder  []*device
	nextAlias uint64

	// Reused between writes.
	outbox
	gen     int
	active  []*device
	hist    []int32
	live    []int32
	mbuf    []byte
	scratch []byte
}

type nodeTopics struct{ nbirth, ndeath, ndata, ncmd, state string }

type nodeStats struct {
	births, deaths, rebirths, noDevice, badValue, escaped, historical, tooLarge *models.Stat
}

// device is a Sparkplug device, or the node itself (id "").
type device struct {
	id                  string
	births, data, death string // topics
	born, dead          bool
	lastSeen            time.Time
	metrics             []*spMetric // in birth order
	byName              map[string]*spMetric
	fresh               bool // has metrics its last birth did not declare
	gen                 int
	entries             []entry
}

// spMetric is one metric of a device: the name a field maps to.
type spMetric struct {
	name     string
	alias    uint64
	dt       sparkplugb.DataType
	last     value
	lastTime time.Time
	hasLast  bool
	stale    bool
}

// value is a Sparkplug value: bits for numbers and booleans, s for strings.
type value struct {
	bits uint64
	s    string
}

// entry is one value of a write for a device, or (m == nil) the device's death.
type entry struct {
	m      *spMetric
	v      value
	t      time.Time
	stale  bool
	member int32
}

// Names and limits of the specification.
const (
	namespace     = "spBv1.0"
	rebirthMetric = "Node Control/Rebirth"
	bdSeqMetric   = "bdSeq"
	// qualityStale is the Quality property of a stale value, as Ignition and Cirrus Link's
	// modules read it (192 good, 500 stale); the property is not part of Sparkplug 3.0 itself.
	qualityStale = 500
)

func (o *MQTT) newNode(lk *link) (*node, error) {
	if o.PersistentSession {
		return nil, config.KeyErrorf("persistent_session", "Sparkplug B asks every client for a clean session")
	}
	for _, id := range []struct{ key, v string }{{"group_id", o.GroupID}, {"edge_node_id", o.EdgeNodeID}} {
		if id.v == "" {
			return nil, config.KeyErrorf(id.key, "give the Sparkplug %s", id.key)
		}
		if err := checkID(id.v); err != nil {
			return nil, config.KeyErrorf(id.key, "%v", err)
		}
	}
	if o.PrimaryHostID != "" {
		if err := checkID(o.PrimaryHostID); err != nil {
			return nil, config.KeyErrorf("primary_host_id", "%v", err)
		}
	}
	if o.DeviceTag == "" {
		return nil, config.KeyErrorf("device_tag", "give the tag that names the device")
	}
	if o.WillTopic != "" || o.BirthTopic != "" {
		return nil, config.KeyErrorf("will_topic", "a Sparkplug node's will and birth are NDEATH and NBIRTH: leave will_topic and birth_topic out")
	}
	n := &node{
		link: lk, group: o.GroupID, edge: o.EdgeNodeID, deviceTag: o.DeviceTag,
		health: o.HealthMeasurement, timeout: o.DeviceTimeout.D(), quality: o.QualityTag, stale: o.QualityStale,
		primary: o.PrimaryHostID, qos: byte(o.QoS), ackWait: o.Timeout.D(), maxBytes: int(o.MaxMessageBytes),
		ev: make(chan struct{}, 1), devices: map[string]*device{},
	}
	switch o.NoDevice {
	case "node":
	case "reject":
		n.noDevice = true
	default:
		return nil, config.KeyErrorf("no_device", "%q: must be \"node\" or \"reject\"", o.NoDevice)
	}
	var err error
	if n.name, err = parseTemplate(o.MetricName, true); err != nil {
		return nil, config.KeyErrorf("metric_name", "%v", err)
	}
	if !n.name.usesField() {
		return nil, config.KeyErrorf("metric_name", "%q: give {{.Field}}, or the fields of a metric would share a name", o.MetricName)
	}
	if o.DeviceTimeout != 0 && o.DeviceTimeout < config.Duration(time.Second) {
		return nil, config.KeyErrorf("device_timeout", "%s: must be 0 (off) or at least 1s", o.DeviceTimeout)
	}
	base := namespace + "/" + n.group + "/"
	n.topics = nodeTopics{
		nbirth: base + "NBIRTH/" + n.edge, ndeath: base + "NDEATH/" + n.edge,
		ndata: base + "NDATA/" + n.edge, ncmd: base + "NCMD/" + n.edge,
	}
	if n.primary != "" {
		n.topics.state = namespace + "/STATE/" + n.primary
	}
	n.self = &device{births: n.topics.nbirth, data: n.topics.ndata, death: n.topics.ndeath, byName: map[string]*spMetric{}}
	return n, nil
}

// checkID checks a group, edge node or host id: one topic level of UTF-8 without + # /.
func checkID(id string) error {
	if err := checkLiteral(id); err != nil {
		return err
	}
	for i := 0; i < len(id); i++ {
		if id[i] == '/' {
			return fmt.Errorf("%q: a Sparkplug id is one topic level: no /", id)
		}
	}
	return nil
}

// bind implements session.
func (n *node) bind(s *models.Stats) {
	n.st = nodeStats{
		births: s.Get("sparkplug_births"), deaths: s.Get("sparkplug_device_deaths"),
		rebirths: s.Get("sparkplug_rebirths"), noDevice: s.Get("no_device_rejected"),
		badValue: s.Get("values_rejected"), escaped: s.Get("topic_escaped"),
		historical: s.Get("sparkplug_historical"), tooLarge: s.Get("too_large"),
	}
}

// will implements session: an NDEATH with the next bdSeq.
func (n *node) will() (string, []byte, byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.bdSeq = n.nextBdSeq
	n.nextBdSeq = (n.nextBdSeq + 1) % 256
	return n.topics.ndeath, n.deathPayload(), 1, false
}

// deathPayload is NDEATH's payload: a timestamp and the bdSeq metric, no seq.
func (n *node) deathPayload() []byte {
	b := appendPayloadHeader(nil, time.Now(), -1)
	n.mbuf = appendMetric(n.mbuf[:0], bdSeqMetric, 0, time.Time{}, sparkplugb.DataType_Int64, false, false, value{bits: n.bdSeq})
	return appendBytesField(b, fPayloadMetrics, n.mbuf)
}

// up implements session: subscribe to NCMD (and the primary host's STATE), then birth unless
// a primary host must be online first.
func (n *node) up(c paho.Client) error {
	subs := map[string]byte{n.topics.ncmd: 1}
	if n.primary != "" {
		subs[n.topics.state] = 1
	}
	tok := c.SubscribeMultiple(subs, n.onMessage)
	if !tok.WaitTimeout(n.ackWait) {
		return fmt.Errorf("subscribe %v: no acknowledgement within %s", subs, n.ackWait)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %v: %w", subs, err)
	}
	if n.primary != "" {
		return nil // work births once STATE says online
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.birthNow(context.Background(), c)
}

// onMessage takes NCMD and STATE messages. It runs on paho's goroutine, which must not wait
// for the node's lock (a write holding it waits for acknowledgements paho delivers).
func (n *node) onMessage(_ paho.Client, msg paho.Message) {
	switch msg.Topic() {
	case n.topics.ncmd:
		var pl sparkplugb.Payload
		if err := proto.Unmarshal(msg.Payload(), &pl); err != nil {
			n.link.log.Warn("NCMD that is not a Sparkplug B payload ignored", "error", err)
			return
		}
		for _, m := range pl.GetMetrics() {
			if m.GetName() == rebirthMetric && m.GetBooleanValue() {
				n.rebirth.Store(true)
				n.signal()
			}
		}
	case n.topics.state:
		var st struct {
			Online    *bool  `json:"online"`
			Timestamp *int64 `json:"timestamp"`
		}
		if err := json.Unmarshal(msg.Payload(), &st); err != nil || st.Online == nil {
			n.link.log.Warn("STATE of the primary host that is not Sparkplug 3.0's {\"online\":…,\"timestamp\":…} ignored",
				"topic", msg.Topic(), "payload", string(msg.Payload()))
			return
		}
		var ts int64
		if st.Timestamp != nil {
			ts = *st.Timestamp
		}
		n.hostMu.Lock()
		if ts < n.hostTS { // an older state arriving late
			n.hostMu.Unlock()
			return
		}
		changed := n.hostOnline != *st.Online
		n.hostOnline, n.hostTS = *st.Online, ts
		n.hostMu.Unlock()
		if changed {
			n.link.log.Info("primary host state", "host", n.primary, "online", *st.Online)
		}
		n.signal()
	}
}

func (n *node) signal() {
	select {
	case n.ev <- struct{}{}:
	default:
	}
}

func (n *node) hostIsOnline() bool {
	if n.primary == "" {
		return true
	}
	n.hostMu.Lock()
	defer n.hostMu.Unlock()
	return n.hostOnline
}

// wake implements session.
func (n *node) wake() <-chan struct{} { return n.ev }

// tick implements session: how often devices are checked for device_timeout.
func (n *node) tick() time.Duration {
	if n.timeout == 0 {
		return 0
	}
	return max(n.timeout/4, 250*time.Millisecond)
}

// work implements session: births when the primary host comes online, NDEATH and the next
// server when it goes offline, rebirth on NCMD, DDEATH for devices silent too long.
func (n *node) work(c paho.Client) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx := context.Background()
	online := n.hostIsOnline()
	switch {
	case !online && n.born:
		tok := c.Publish(n.topics.ndeath, 1, false, n.deathPayload())
		tok.WaitTimeout(n.ackWait)
		n.born = false
		return errWalk
	case online && !n.born:
		return n.birthNow(ctx, c)
	}
	if !n.born {
		return nil
	}
	if n.rebirth.Swap(false) {
		n.st.rebirths.Incr()
		n.link.log.Info("rebirth asked by NCMD", "node", n.edge)
		n.resetMsgs()
		n.planBirths()
		return n.flush(ctx, c)
	}
	if n.timeout > 0 {
		n.resetMsgs()
		limit := time.Now().Add(-n.timeout)
		for _, d := range n.devOrder {
			if d.born && d.lastSeen.Before(limit) {
				n.planDeath(d)
			}
		}
		if len(n.msgs) > 0 {
			return n.flush(ctx, c)
		}
	}
	return nil
}

// down implements session: every birth is void with the connection.
func (n *node) down() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.born, n.histSent, n.needBirth = false, false, false
	for _, d := range n.devOrder {
		d.born = false
	}
	n.rebirth.Store(false)
}

// goodbye implements session: NDEATH before DISCONNECT, as the specification asks.
func (n *node) goodbye(c paho.Client) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.born {
		c.Publish(n.topics.ndeath, 1, false, n.deathPayload()).WaitTimeout(n.ackWait)
		n.born = false
	}
}

// birthNow publishes NBIRTH and the DBIRTHs of a new session and waits for them.
func (n *node) birthNow(ctx context.Context, c paho.Client) error {
	n.resetMsgs()
	n.bornAt = time.Now()
	n.planBirths()
	if err := n.flush(ctx, c); err != nil {
		return err
	}
	n.link.log.Info("Sparkplug B node born", "group", n.group, "node", n.edge, "bdSeq", n.bdSeq, "devices", len(n.devOrder))
	return nil
}

// flush publishes the planned messages (births and deaths only) and waits for them.
func (n *node) flush(ctx context.Context, c paho.Client) error {
	_, lost, err := n.link.current()
	if err != nil {
		lost = nil // the connection is being made: up waits on its own
	}
	ok, err := n.publish(ctx, c, lost)
	if ok < len(n.msgs) {
		n.needBirth = true
		return err
	}
	return nil
}

// publish publishes n.msgs in order and waits for them; it returns how many were acknowledged.
func (n *node) publish(ctx context.Context, c paho.Client, lost <-chan struct{}) (int, error) {
	return n.send(ctx, n.link, c, lost, n.qos, false, n.ackWait)
}

func (n *node) resetMsgs() {
	n.buf, n.msgs, n.members = n.buf[:0], n.msgs[:0], n.members[:0]
}

// write implements writer.
func (n *node) write(ctx context.Context, batch []*models.Metric) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, lost, err := n.link.current()
	if err != nil {
		return err
	}
	if !n.hostIsOnline() {
		return fmt.Errorf("primary host %q is offline: metrics stay buffered", n.primary)
	}
	if !n.born {
		return errors.New("the Sparkplug node is not born yet on this connection")
	}
	n.verdict.reset()
	n.resetMsgs()
	if n.needBirth || n.rebirth.Swap(false) {
		n.planBirths()
	}
	now := time.Now()
	n.hist, n.live = n.hist[:0], n.live[:0]
	for i, m := range batch {
		if m.Time.Before(n.bornAt) {
			n.hist = append(n.hist, int32(i))
		} else {
			n.live = append(n.live, int32(i))
		}
	}
	if len(n.hist) > 0 {
		n.plan(batch, n.hist, true, now)
		n.histSent = true
		n.st.historical.Add(int64(len(n.hist)))
	}
	if len(n.live) > 0 {
		if n.histSent {
			// The replay is over: the latest values as live ones.
			n.planBirths()
			n.histSent = false
		}
		n.plan(batch, n.live, false, now)
	}
	ok, werr := n.publish(ctx, c, lost)
	if ok < len(n.msgs) {
		// Births may not have arrived: declare everything again before the next data.
		n.needBirth = true
	}
	// A metric in no message was taken in (a health metric of a dead device): it is done.
	n.status = n.verdict.settle(n.status, len(batch), n.msgs, n.members, n.done, true)
	if len(n.verdict.rejected) > 0 {
		n.link.log.Warn("metrics dropped: they can never be written", "count", len(n.verdict.rejected),
			"first", n.verdict.firstWhat, "reason", n.verdict.firstWhy)
	}
	return n.verdict.result(len(batch), werr)
}

// deviceOf returns m's device (the node itself without the device tag), or nil when m must
// be rejected.
func (n *node) deviceOf(m *models.Metric) *device {
	id, ok := m.Tag(n.deviceTag)
	if !ok || id == "" {
		if n.noDevice {
			return nil
		}
		return n.self
	}
	if d := n.devices[id]; d != nil {
		return d
	}
	var k int
	n.scratch, k = escapeLevel(n.scratch[:0], id)
	if k > 0 {
		n.st.escaped.Add(int64(k))
	}
	esc := string(n.scratch)
	base := namespace + "/" + n.group + "/"
	d := &device{
		id: esc, byName: map[string]*spMetric{},
		births: base + "DBIRTH/" + n.edge + "/" + esc, data: base + "DDATA/" + n.edge + "/" + esc,
		death: base + "DDEATH/" + n.edge + "/" + esc,
	}
	n.devices[id] = d
	n.devOrder = append(n.devOrder, d)
	return d
}

// metricOf returns d's metric named by the name in n.scratch, declaring it when new.
func (n *node) metricOf(d *device, f models.Field) (*spMetric, bool) {
	if sm, ok := d.byName[string(n.scratch)]; ok {
		return sm, true
	}
	var dt sparkplugb.DataType
	switch f.Type() {
	case models.TypeFloat:
		dt = sparkplugb.DataType_Double
	case models.TypeInt:
		dt = sparkplugb.DataType_Int64
	case models.TypeUint:
		dt = sparkplugb.DataType_UInt64
	case models.TypeBool:
		dt = sparkplugb.DataType_Boolean
	case models.TypeString:
		dt = sparkplugb.DataType_String
	default:
		return nil, false
	}
	n.nextAlias++
	sm := &spMetric{name: string(n.scratch), alias: n.nextAlias, dt: dt}
	d.byName[sm.name] = sm
	d.metrics = append(d.metrics, sm)
	d.fresh = true
	return sm, true
}

// convert returns f as a value of type dt: numbers convert when nothing is lost, booleans and
// strings only to themselves.
func convert(f models.Field, dt sparkplugb.DataType) (value, bool) {
	switch dt {
	case sparkplugb.DataType_Double:
		if v, ok := f.Number(); ok && f.Type() != models.TypeBool {
			return value{bits: math.Float64bits(v)}, true
		}
	case sparkplugb.DataType_Int64:
		switch f.Type() {
		case models.TypeInt:
			return value{bits: uint64(f.IntV())}, true
		case models.TypeUint:
			if f.UintV() <= math.MaxInt64 {
				return value{bits: f.UintV()}, true
			}
		case models.TypeFloat:
			if v := f.FloatV(); v == math.Trunc(v) && v >= math.MinInt64 && v < math.MaxInt64 {
				return value{bits: uint64(int64(v))}, true
			}
		}
	case sparkplugb.DataType_UInt64:
		switch f.Type() {
		case models.TypeUint:
			return value{bits: f.UintV()}, true
		case models.TypeInt:
			if f.IntV() >= 0 {
				return value{bits: uint64(f.IntV())}, true
			}
		case models.TypeFloat:
			if v := f.FloatV(); v == math.Trunc(v) && v >= 0 && v < math.MaxUint64 {
				return value{bits: uint64(v)}, true
			}
		}
	case sparkplugb.DataType_Boolean:
		if f.Type() == models.TypeBool {
			return value{bits: f.UintV()}, true
		}
	case sparkplugb.DataType_String:
		if f.Type() == models.TypeString {
			return value{s: f.StringV()}, true
		}
	}
	return value{}, false
}

// plan adds the messages for the metrics batch[idx] (historical or live): a full rebirth first
// when a born device got a metric its birth did not declare, then per device (in order of
// appearance) its DBIRTH when it is not born, its values (DDATA, NDATA for the node), and its
// DDEATH where its breaker opened.
func (n *node) plan(batch []*models.Metric, idx []int32, hist bool, now time.Time) {
	n.gen++
	n.active = n.active[:0]
	for _, i := range idx {
		m := batch[i]
		d := n.deviceOf(m)
		if d == nil {
			n.st.noDevice.Incr()
			n.verdict.reject(int(i), m.Name, fmt.Sprintf("no %s tag (no_device = \"reject\")", n.deviceTag))
			continue
		}
		if d.gen != n.gen {
			d.gen, d.entries = n.gen, d.entries[:0]
			n.active = append(n.active, d)
		}
		d.lastSeen = now
		isHealth := n.health != "" && m.Name == n.health && d != n.self
		breaker := ""
		if isHealth {
			if f, ok := m.Field("breaker"); ok {
				breaker = f.StringV()
			}
			// The health of a dead device stays out until its breaker closes.
			if d.dead && breaker != "closed" && !d.pendingLife() {
				continue
			}
		}
		stale := false
		if n.quality != "" {
			if q, ok := m.Tag(n.quality); ok && q == n.stale {
				stale = true
			}
		}
		added := 0
		for _, f := range m.Fields {
			n.scratch, _ = n.name.appendTo(n.scratch[:0], m, f.Key, escapeNone)
			sm, ok := n.metricOf(d, f)
			if !ok {
				n.st.badValue.Incr()
				continue
			}
			v, ok := convert(f, sm.dt)
			if !ok {
				n.st.badValue.Incr()
				continue
			}
			if !sm.hasLast {
				sm.last, sm.lastTime, sm.hasLast, sm.stale = v, m.Time, true, stale
			}
			d.entries = append(d.entries, entry{m: sm, v: v, t: m.Time, stale: stale, member: i})
			added++
		}
		if added == 0 && len(m.Fields) > 0 {
			n.verdict.reject(int(i), m.Name, "no field Sparkplug can carry with the datatype its birth declared")
			continue
		}
		if breaker == "open" {
			d.entries = append(d.entries, entry{member: -1})
		}
	}
	rebirth := n.self.fresh
	for _, d := range n.active {
		rebirth = rebirth || (d.born && d.fresh)
	}
	if rebirth {
		n.planBirths()
	}
	for _, d := range n.active {
		n.planDevice(d, hist)
	}
}

// pendingLife reports whether the device has values waiting in this write (it comes back).
func (d *device) pendingLife() bool {
	for _, e := range d.entries {
		if e.m != nil {
			return true
		}
	}
	return false
}

// planDevice adds d's messages for its entries.
func (n *node) planDevice(d *device, hist bool) {
	open := false
	var cur message
	end := func() {
		if open {
			cur.to, cur.memTo = int32(len(n.buf)), int32(len(n.members))
			n.msgs = append(n.msgs, cur)
			open = false
		}
	}
	for _, e := range d.entries {
		if e.m == nil { // the breaker opened
			end()
			if d.born {
				n.planDeath(d)
			}
			d.dead = true
			continue
		}
		if !d.born && d != n.self {
			end()
			n.planDeviceBirth(d)
		}
		n.mbuf = appendMetric(n.mbuf[:0], "", e.m.alias, e.t, e.m.dt, hist, e.stale, e.v)
		if open && len(n.buf)-int(cur.from)+len(n.mbuf)+8 > n.maxBytes {
			end()
		}
		if !open {
			cur = message{topic: d.data, from: int32(len(n.buf)), memFrom: int32(len(n.members))}
			n.buf = appendPayloadHeader(n.buf, time.Now(), int64(n.nextSeq()))
			open = true
		}
		n.buf = appendBytesField(n.buf, fPayloadMetrics, n.mbuf)
		n.members = append(n.members, e.member)
		if !e.t.Before(e.m.lastTime) {
			e.m.last, e.m.lastTime, e.m.stale = e.v, e.t, e.stale
		}
	}
	end()
}

func (n *node) nextSeq() uint64 {
	s := n.seq
	n.seq = (n.seq + 1) % 256
	return s
}

// planBirths adds NBIRTH (seq 0) and a DBIRTH for every device that is not dead.
func (n *node) planBirths() {
	n.seq = 0
	from := len(n.buf)
	n.buf = appendPayloadHeader(n.buf, time.Now(), int64(n.nextSeq()))
	n.mbuf = appendMetric(n.mbuf[:0], bdSeqMetric, 0, time.Time{}, sparkplugb.DataType_Int64, false, false, value{bits: n.bdSeq})
	n.buf = appendBytesField(n.buf, fPayloadMetrics, n.mbuf)
	n.mbuf = appendMetric(n.mbuf[:0], rebirthMetric, 0, time.Time{}, sparkplugb.DataType_Boolean, false, false, value{})
	n.buf = appendBytesField(n.buf, fPayloadMetrics, n.mbuf)
	n.buf = n.appendBirthMetrics(n.buf, n.self)
	n.msgs = append(n.msgs, message{topic: n.topics.nbirth, from: int32(from), to: int32(len(n.buf)),
		memFrom: int32(len(n.members)), memTo: int32(len(n.members))})
	n.self.fresh, n.self.born = false, true
	n.born, n.needBirth = true, false
	n.st.births.Incr()
	for _, d := range n.devOrder {
		d.born = false
		if !d.dead {
			n.planDeviceBirth(d)
		}
	}
}

// planDeviceBirth adds d's DBIRTH with every metric it has.
func (n *node) planDeviceBirth(d *device) {
	from := len(n.buf)
	n.buf = appendPayloadHeader(n.buf, time.Now(), int64(n.nextSeq()))
	n.buf = n.appendBirthMetrics(n.buf, d)
	n.msgs = append(n.msgs, message{topic: d.births, from: int32(from), to: int32(len(n.buf)),
		memFrom: int32(len(n.members)), memTo: int32(len(n.members))})
	d.born, d.dead, d.fresh = true, false, false
	n.st.births.Incr()
}

// planDeath adds d's DDEATH.
func (n *node) planDeath(d *device) {
	from := len(n.buf)
	n.buf = appendPayloadHeader(n.buf, time.Now(), int64(n.nextSeq()))
	n.msgs = append(n.msgs, message{topic: d.death, from: int32(from), to: int32(len(n.buf)),
		memFrom: int32(len(n.members)), memTo: int32(len(n.members))})
	d.born = false
	n.st.deaths.Incr()
	n.link.log.Info("Sparkplug device dead", "device", d.id)
}

// appendBirthMetrics appends every metric of d with name, alias, datatype and latest value.
func (n *node) appendBirthMetrics(dst []byte, d *device) []byte {
	for _, sm := range d.metrics {
		n.mbuf = appendMetric(n.mbuf[:0], sm.name, sm.alias, sm.lastTime, sm.dt, false, sm.stale, sm.last)
		dst = appendBytesField(dst, fPayloadMetrics, n.mbuf)
	}
	return dst
}
