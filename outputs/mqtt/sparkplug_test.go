package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/testkit/mqtttest"
	"github.com/tagpipe/tagpipe/internal/testkit/outputtest"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs/mqtt/sparkplugb"
)

func sparkplugNode(group, edge string, more func(*MQTT)) func(*MQTT) {
	return func(o *MQTT) {
		o.Sparkplug, o.GroupID, o.EdgeNodeID = true, group, edge
		if more != nil {
			more(o)
		}
	}
}

// spValue is one value a host received: where, what, and how.
type spValue struct {
	seqIndex   int // the message's place in arrival order
	kind       string
	device     string
	name       string
	value      string // JSON
	historical bool
	timestamp  string
	quality    string
}

// spView reads decoded messages as a host does: aliases from births, values from data.
type spView struct {
	t       testing.TB
	msgs    []mqtttest.SPMessage
	aliases map[string]string // alias → name
	types   map[string]string // name → datatype
	values  []spValue
}

func newView(t testing.TB, msgs []mqtttest.SPMessage) *spView {
	t.Helper()
	v := &spView{t: t, msgs: msgs, aliases: map[string]string{}, types: map[string]string{}}
	for i, m := range msgs {
		switch m.Kind() {
		case "NBIRTH", "DBIRTH":
			for _, mt := range m.Payload.Metrics {
				if mt.Alias != "" {
					if prev, ok := v.aliases[mt.Alias]; ok && prev != m.Device()+"|"+mt.Name {
						t.Fatalf("alias %s is %s and %s", mt.Alias, prev, m.Device()+"|"+mt.Name)
					}
					v.aliases[mt.Alias] = m.Device() + "|" + mt.Name
				}
				v.types[m.Device()+"|"+mt.Name] = mt.Type
			}
		case "NDATA", "DDATA":
			for _, mt := range m.Payload.Metrics {
				key, ok := v.aliases[mt.Alias]
				if !ok {
					t.Fatalf("message %d (%s): alias %s not in any birth before it", i, m.Topic, mt.Alias)
				}
				dev, name, _ := strings.Cut(key, "|")
				q := ""
				if p, ok := mt.Properties["Quality"]; ok {
					q = p.Type + ":" + string(p.Value)
				}
				v.values = append(v.values, spValue{seqIndex: i, kind: m.Kind(), device: dev, name: name,
					value: string(mt.Value), historical: mt.IsHistorical, timestamp: mt.Timestamp, quality: q})
			}
		}
	}
	return v
}

// seqs returns the n values (name press/n) in arrival order.
func (v *spView) seqs(historical *bool) []int64 {
	var ns []int64
	for _, x := range v.values {
		if x.name != "press/n" || (historical != nil && x.historical != *historical) {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(x.value, `"`), 10, 64)
		if err != nil {
			v.t.Fatalf("press/n = %s", x.value)
		}
		ns = append(ns, n)
	}
	return ns
}

// checkSeq checks the Sparkplug seq of every message but NDEATH: NBIRTH 0, then one more each,
// 255 wrapping to 0; it returns how often it wrapped.
func checkSeq(t testing.TB, msgs []mqtttest.SPMessage) int {
	t.Helper()
	wraps, next := 0, -1
	for i, m := range msgs {
		if m.State != "" || m.Kind() == "NDEATH" || m.Kind() == "NCMD" {
			continue
		}
		if m.Payload.Seq == nil {
			t.Fatalf("message %d (%s) has no seq", i, m.Topic)
		}
		s, _ := strconv.Atoi(*m.Payload.Seq)
		if m.Kind() == "NBIRTH" {
			if s != 0 {
				t.Fatalf("NBIRTH with seq %d", s)
			}
		} else if s != next {
			t.Fatalf("message %d (%s): seq %d, want %d", i, m.Topic, s, next)
		}
		if s == 255 {
			wraps++
		}
		next = (s + 1) % 256
	}
	return wraps
}

func bdSeqOf(t testing.TB, m mqtttest.SPMessage) string {
	t.Helper()
	for _, mt := range m.Payload.Metrics {
		if mt.Name == "bdSeq" {
			if mt.Type != "Int64" {
				t.Fatalf("bdSeq of type %s", mt.Type)
			}
			return strings.Trim(string(mt.Value), `"`)
		}
	}
	t.Fatalf("%s without bdSeq", m.Topic)
	return ""
}

func kinds(msgs []mqtttest.SPMessage) []string {
	var ks []string
	for _, m := range msgs {
		k := m.Kind()
		if d := m.Device(); d != "" {
			k += ":" + d
		}
		ks = append(ks, k)
	}
	return ks
}

// The edge node's session, decoded by Eclipse Tahu's decoder: NBIRTH with bdSeq and the rebirth
// metric, a DBIRTH per device declaring names, aliases and datatypes, every value once in
// DDATA (NDATA for metrics without a device), seq 0..255 wrapping, stale quality, DDEATH when a
// breaker opens and DBIRTH when the device answers again, a rebirth on NCMD, and NDEATH with
// the NBIRTH's bdSeq at the end.
func TestSparkplugSession(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"spBv1.0/plant/#"}})
	o, _ := newMQTT(t, b, sparkplugNode("plant", "edge-1", nil))
	ro := outputtest.RunningOutput(t, o, "mqtt", 20) // 150 writes of 5 DDATA: seq wraps twice
	const n = 3000
	base := time.Now()
	ms := lineMetrics(n, base)
	ms = append(ms,
		models.New("agent", nil, []models.Field{models.Float("cpu", 1.5)}, base),
		models.New("press", []models.Tag{{Key: "device", Value: "press-1"}, {Key: "quality", Value: "stale"}},
			[]models.Field{models.Int("n", n)}, base.Add(time.Hour)))
	ro.AddBatch(ms)
	flushAll(t, ro)
	sub.WaitFor("the data", 20*time.Second, func(ms []mqtttest.Message) bool {
		return len(newView(t, mqtttest.DecodeSparkplug(t, ms)).seqs(nil)) >= n+1
	})

	// A breaker opens on press-2: DDEATH; the device answers again: DBIRTH, then DDATA.
	ro.AddBatch([]*models.Metric{
		models.New("modbus_health", []models.Tag{{Key: "device", Value: "press-2"}},
			[]models.Field{models.Float("rtt_ms", 3), models.String("breaker", "open")}, time.Now()),
	})
	flushAll(t, ro)
	ro.AddBatch([]*models.Metric{
		models.New("modbus_health", []models.Tag{{Key: "device", Value: "press-2"}},
			[]models.Field{models.Float("rtt_ms", 4), models.String("breaker", "half-open")}, time.Now()),
	})
	flushAll(t, ro)
	ro.AddBatch([]*models.Metric{
		models.New("press", []models.Tag{{Key: "device", Value: "press-2"}}, []models.Field{models.Int("n", n+1)}, time.Now()),
	})
	flushAll(t, ro)

	// NCMD "Node Control/Rebirth", as Tahu encodes it.
	mqtttest.Publish(t, b, "spBv1.0/plant/NCMD/edge-1", 1, false, mqtttest.RebirthRequest(t))
	sub.WaitFor("the rebirth", 10*time.Second, func(ms []mqtttest.Message) bool {
		births := 0
		for _, m := range ms {
			if strings.Contains(m.Topic, "/NBIRTH/") {
				births++
			}
		}
		return births >= 2
	})
	ro.AddBatch([]*models.Metric{
		models.New("press", []models.Tag{{Key: "device", Value: "press-3"}}, []models.Field{models.Int("n", n+2)}, time.Now()),
	})
	flushAll(t, ro)
	o.Close() // NDEATH, then DISCONNECT
	all := sub.WaitFor("NDEATH", 10*time.Second, func(ms []mqtttest.Message) bool {
		return len(ms) > 0 && strings.Contains(ms[len(ms)-1].Topic, "/NDEATH/")
	})
	msgs := mqtttest.DecodeSparkplug(t, all)
	v := newView(t, msgs)
	ks := kinds(msgs)

	// The births.
	if ks[0] != "NBIRTH" {
		t.Fatalf("first message %s", ks[0])
	}
	nb := msgs[0].Payload.Metrics
	bd := bdSeqOf(t, msgs[0])
	rebirthOK := false
	for _, mt := range nb {
		if mt.Name == "Node Control/Rebirth" && mt.Type == "Boolean" && string(mt.Value) == "false" {
			rebirthOK = true
		}
	}
	if !rebirthOK {
		t.Fatalf("NBIRTH without Node Control/Rebirth = false: %+v", nb)
	}
	for dev := range 5 {
		d := "press-" + strconv.Itoa(dev)
		for name, typ := range map[string]string{"press/n": "Int64", "press/force_kn": "Double", "press/running": "Boolean", "press/recipe": "String"} {
			if got := v.types[d+"|"+name]; got != typ {
				t.Errorf("%s %s: datatype %q in its DBIRTH, want %s", d, name, got, typ)
			}
		}
	}
	if v.types["|agent/cpu"] != "Double" {
		t.Errorf("node metric agent/cpu: %q", v.types["|agent/cpu"])
	}

	// Every value once, with its device, in order per device, with its timestamp.
	got := map[int64]int{}
	last := map[string]int64{}
	for _, x := range v.values {
		if x.name != "press/n" {
			continue
		}
		i, _ := strconv.ParseInt(strings.Trim(x.value, `"`), 10, 64)
		got[i]++
		if i < n {
			if want := "press-" + strconv.FormatInt(i%5, 10); x.device != want {
				t.Fatalf("n=%d from %s, want %s", i, x.device, want)
			}
			if x.timestamp != strconv.FormatInt(base.Add(time.Duration(i)*time.Millisecond).UnixMilli(), 10) {
				t.Fatalf("n=%d with timestamp %s", i, x.timestamp)
			}
			if p, ok := last[x.device]; ok && i < p {
				t.Fatalf("%s: n=%d after %d", x.device, i, p)
			}
			last[x.device] = i
		}
		if (i == n) != (x.quality == "Int32:500") || x.historical {
			t.Fatalf("n=%d: quality %q, historical %v", i, x.quality, x.historical)
		}
	}
	exactlyOnce(t, got, n+3)
	var cpu []spValue
	for _, x := range v.values {
		if x.name == "agent/cpu" {
			cpu = append(cpu, x)
		}
	}
	if len(cpu) != 1 || cpu[0].kind != "NDATA" || cpu[0].value != "1.5" {
		t.Fatalf("node metric: %+v", cpu)
	}

	// seq continuity with wraps.
	if wraps := checkSeq(t, msgs); wraps < 2 {
		t.Fatalf("seq wrapped %d times, want the test to wrap it twice", wraps)
	}

	// press-2: DDEATH after the open breaker, nothing on half-open, DBIRTH before its next DDATA.
	joined := strings.Join(ks, " ")
	i := strings.Index(joined, "DDEATH:press-2")
	if i < 0 {
		t.Fatalf("no DDEATH for press-2: %s", tail(ks))
	}
	if !strings.HasPrefix(joined[i:], "DDEATH:press-2 DBIRTH:press-2 DDATA:press-2") {
		t.Fatalf("after DDEATH: %s", joined[i:min(len(joined), i+200)])
	}
	// The rebirth: NBIRTH (same bdSeq) and every device's DBIRTH.
	second := strings.Index(joined[1:], "NBIRTH") + 1
	if !strings.HasPrefix(joined[second:], "NBIRTH DBIRTH:press-0 DBIRTH:press-1 DBIRTH:press-2 DBIRTH:press-3 DBIRTH:press-4") {
		t.Fatalf("rebirth: %s", joined[second:])
	}
	var last2 mqtttest.SPMessage
	for _, m := range msgs {
		if m.Kind() == "NBIRTH" {
			last2 = m
		}
	}
	if got := bdSeqOf(t, last2); got != bd {
		t.Fatalf("rebirth bdSeq %s, first %s", got, bd)
	}
	// NDEATH carries the same bdSeq.
	if end := msgs[len(msgs)-1]; end.Kind() != "NDEATH" || bdSeqOf(t, end) != bd || end.Payload.Seq != nil {
		t.Fatalf("last message %s: bdSeq %s (NBIRTH %s), seq %v", end.Topic, bdSeqOf(t, end), bd, end.Payload.Seq)
	}
	// The generated code reads the same payloads.
	for _, m := range all[:3] {
		var pl sparkplugb.Payload
		if err := proto.Unmarshal(m.Payload, &pl); err != nil || pl.Timestamp == nil {
			t.Fatalf("%s: %v", m.Topic, err)
		}
	}
}

func tail(ks []string) string {
	if len(ks) > 20 {
		ks = ks[len(ks)-20:]
	}
	return strings.Join(ks, " ")
}

// A device from which nothing came for device_timeout dies; its next metric births it again.
func TestSparkplugDeviceTimeout(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"spBv1.0/#"}})
	o, _ := newMQTT(t, b, sparkplugNode("g", "n", func(o *MQTT) { o.DeviceTimeout = config.Duration(time.Second) }))
	ro := outputtest.RunningOutput(t, o, "mqtt", 100)
	one := func(dev string, i int) *models.Metric {
		return models.New("press", []models.Tag{{Key: "device", Value: dev}}, []models.Field{models.Int("n", int64(i))}, time.Now())
	}
	ro.AddBatch([]*models.Metric{one("quiet", 0), one("busy", 1)})
	flushAll(t, ro)
	// busy keeps sending, quiet does not.
	deadline := time.Now().Add(10 * time.Second)
	for i := 2; ; i++ {
		ro.AddBatch([]*models.Metric{one("busy", i)})
		flushAll(t, ro)
		dead := false
		for _, m := range sub.Messages() {
			dead = dead || strings.Contains(m.Topic, "DDEATH")
		}
		if dead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DDEATH: %v", kinds(mqtttest.DecodeSparkplug(t, sub.Messages())))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ro.AddBatch([]*models.Metric{one("quiet", 1000)})
	flushAll(t, ro)
	msgs := mqtttest.DecodeSparkplug(t, sub.WaitFor("quiet's rebirth", 5*time.Second, func(ms []mqtttest.Message) bool {
		return strings.Contains(ms[len(ms)-1].Topic, "DDATA/n/quiet")
	}))
	ks := strings.Join(kinds(msgs), " ")
	if strings.Count(ks, "DDEATH") != 1 || !strings.HasSuffix(ks, "DBIRTH:quiet DDATA:quiet") || strings.Index(ks, "DDEATH:quiet") > strings.LastIndex(ks, "DBIRTH:quiet DDATA:quiet") || strings.Contains(ks, "DDEATH:busy") {
		t.Fatalf("messages: %s", ks)
	}
	checkSeq(t, msgs)
}

// With a primary host: nothing before its STATE is online; when it goes offline the node
// says NDEATH and leaves, metrics stay buffered; when it is back the node is born again, the
// buffered values arrive as historical, in order, none missing, then a rebirth and the live
// values.
func TestSparkplugPrimaryHost(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	sub := mqtttest.Subscribe(t, b, mqtttest.SubOptions{Topics: []string{"spBv1.0/#"}})
	state := func(online bool) {
		js, _ := json.Marshal(map[string]any{"online": online, "timestamp": time.Now().UnixMilli()})
		mqtttest.Publish(t, b, "spBv1.0/STATE/scada", 1, true, js)
	}
	state(false)
	o, lb := newMQTT(t, b, sparkplugNode("g", "edge", func(o *MQTT) { o.PrimaryHostID = "scada" }))
	ro := outputtest.RunningOutput(t, o, "mqtt", 1000)
	i := 0
	produce := func(k int) {
		for range k {
			ro.AddBatch([]*models.Metric{models.New("press", []models.Tag{{Key: "device", Value: "p" + strconv.Itoa(i%2)}},
				[]models.Field{models.Int("n", int64(i))}, time.Now())})
			i++
			time.Sleep(time.Millisecond)
		}
	}
	flush := func() error { return ro.Flush(context.Background(), true) }

	produce(20)
	if err := flush(); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("write before the host is online: %v", err)
	}
	state(true)
	waitTrue(t, "the birth", func() bool { return flush() == nil })
	produce(30)
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	liveBefore := i

	state(false)
	waitTrue(t, "NDEATH", func() bool {
		ms := sub.Messages()
		return strings.Contains(ms[len(ms)-1].Topic, "NDEATH")
	})
	produce(200) // buffered: the host is away
	if err := flush(); err == nil {
		t.Fatal("a write succeeded while the host was offline")
	}
	offlineEnd := i
	state(true)
	waitTrue(t, "the second birth", func() bool { return lb.Count("Sparkplug B node born") >= 2 })
	produce(30)
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	msgs := mqtttest.DecodeSparkplug(t, sub.WaitFor("every value", 10*time.Second, func(ms []mqtttest.Message) bool {
		return len(newView(t, mqtttest.DecodeSparkplug(t, ms)).seqs(nil)) >= i
	}))
	v := newView(t, msgs)
	all := v.seqs(nil)
	got := map[int64]int{}
	for _, x := range all {
		got[x]++
	}
	exactlyOnce(t, got, i)
	// Historical: the first 20 (produced before the first birth) and what was produced while
	// the host was offline, each device's in order.
	perDevice := map[string][]int64{}
	for _, x := range v.values {
		if x.historical {
			n, _ := strconv.ParseInt(strings.Trim(x.value, `"`), 10, 64)
			perDevice[x.device] = append(perDevice[x.device], n)
		}
	}
	for dev, k := range map[string]int64{"p0": 0, "p1": 1} {
		var want []int64
		for ; k < int64(offlineEnd); k += 2 {
			if k < 20 || k >= int64(liveBefore) {
				want = append(want, k)
			}
		}
		if fmt.Sprint(perDevice[dev]) != fmt.Sprint(want) {
			t.Fatalf("historical values of %s %v\nwant %v", dev, perDevice[dev], want)
		}
	}
	// After the replay a rebirth, then the live values.
	ks := kinds(msgs)
	lastHist, firstLiveAfter := -1, -1
	for _, x := range v.values {
		n, _ := strconv.Atoi(strings.Trim(x.value, `"`))
		if x.historical && n >= liveBefore {
			lastHist = x.seqIndex
		}
		if n == offlineEnd && firstLiveAfter < 0 {
			firstLiveAfter = x.seqIndex
		}
	}
	between := strings.Join(ks[lastHist+1:firstLiveAfter], " ")
	if !strings.HasPrefix(between, "NBIRTH DBIRTH:p0 DBIRTH:p1") {
		t.Fatalf("between the replay and the live values: %q", between)
	}
	checkSeq(t, msgs)
	if n := strings.Count(strings.Join(ks, " "), "NDEATH"); n != 1 {
		t.Fatalf("%d NDEATH, want 1: %v", n, ks)
	}
}

func waitTrue(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Values Sparkplug cannot carry with the type declared at birth are dropped and counted; a
// metric without any is rejected; a metric without the device tag is rejected with
// no_device = "reject".
func TestSparkplugBadValues(t *testing.T) {
	b := mqtttest.StartBroker(t, mqtttest.Options{})
	o, _ := newMQTT(t, b, sparkplugNode("g", "bad", func(o *MQTT) { o.NoDevice = "reject" }))
	now := time.Now()
	d := []models.Tag{{Key: "device", Value: "d"}}
	batch := []*models.Metric{
		models.New("m", d, []models.Field{models.Int("x", 1), models.Bool("b", true)}, now),
		models.New("m", d, []models.Field{models.Float("x", 2.0), models.String("b", "no")}, now), // 2.0 converts
		models.New("m", d, []models.Field{models.Float("x", 2.5)}, now),                           // cannot
		models.New("m", nil, []models.Field{models.Int("x", 3)}, now),                             // no device
	}
	err := o.Write(context.Background(), batch)
	p, ok := models.AsPartialWrite(err)
	if !ok || fmt.Sprint(p.Accepted) != "[0 1]" || fmt.Sprint(p.Rejected) != "[2 3]" {
		t.Fatalf("write: %v", err)
	}
	st := o.w.(*node).st
	if st.badValue.Get() != 2 || st.noDevice.Get() != 1 {
		t.Fatalf("values_rejected %d, no_device_rejected %d", st.badValue.Get(), st.noDevice.Get())
	}
}
