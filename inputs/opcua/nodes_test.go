package opcua

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/configcase"
	"github.com/tagpipe/tagpipe/models"

	"github.com/gopcua/opcua/ua"
)

func TestParseNodeRef(t *testing.T) {
	ns := []string{"http://opcfoundation.org/UA/", "urn:server", "urn:plant:line1"}
	f := func(in string, def nsDefault, idType, want string) {
		t.Helper()
		r, err := parseNodeRef(in, def, idType)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		id, err := r.resolve(ns)
		if err != nil {
			t.Fatalf("%q: resolve: %v", in, err)
		}
		if got := id.String(); got != want {
			t.Fatalf("%q: got %s, want %s", in, got, want)
		}
	}
	f("ns=2;s=Temperature", nsDefault{}, "s", "ns=2;s=Temperature")
	f("i=85", nsDefault{}, "s", "i=85")
	f("ns=1;i=1001", nsDefault{}, "s", "ns=1;i=1001")
	f("ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", nsDefault{}, "s", "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63")
	f("ns=1;b=dGFncGlwZQ==", nsDefault{}, "s", "ns=1;b=dGFncGlwZQ==")
	f("nsu=urn:plant:line1;s=Pump.Speed", nsDefault{}, "s", "ns=2;s=Pump.Speed")
	f("nsu=urn:plant:line1;i=7", nsDefault{}, "s", "ns=2;i=7")
	f("s=Temp", nsDefault{uri: "urn:plant:line1"}, "s", "ns=2;s=Temp")
	f("Temp", nsDefault{idx: 1}, "s", "ns=1;s=Temp")
	f("1001", nsDefault{idx: 1}, "i", "ns=1;i=1001")
	f("ns=0;i=2258", nsDefault{uri: "urn:plant:line1"}, "s", "i=2258") // a full id ignores the group's namespace
	f("s=a;b=c", nsDefault{idx: 3}, "s", "ns=3;s=a;b=c")               // a string identifier may hold ';' and '='

	for _, bad := range []string{"", "ns=x;s=1", "ns=70000;i=1", "ns=2", "nsu=;s=1", "nsu=urn:x", "i=abc", "i=4294967296",
		"g=not-a-guid", "b=!!", "s=", "ns=1;"} {
		if _, err := parseNodeRef(bad, nsDefault{}, "s"); err == nil {
			t.Errorf("%q parsed, want an error", bad)
		}
	}
	r, _ := parseNodeRef("nsu=urn:gone;s=X", nsDefault{}, "s")
	if _, err := r.resolve(ns); err == nil || !strings.Contains(err.Error(), "urn:gone") {
		t.Fatalf("a namespace the server lacks: %v", err)
	}
	// The text form names the URI, not an index that may change.
	if got := r.String(); got != "nsu=urn:gone;s=X" {
		t.Fatalf("String() = %q", got)
	}
}

// TestConfigCases: every bad configuration in testcases/ fails at start with the error kept
// beside it, FILE:LINE included (see internal/testkit/configcase).
func TestConfigCases(t *testing.T) { configcase.Run(t, "testcases") }

func TestConfigDefaults(t *testing.T) {
	o := load(t, `[[inputs.opcua]]
  name = "l1"
  endpoint = "opc.tcp://127.0.0.1:4840"
  [[inputs.opcua.group]]
    namespace_uri = "urn:plant"
    tags = { line = "1" }
    [[inputs.opcua.group.node]]
      id = "Temperature"
      tags = { unit = "C", line = "2" }
    [[inputs.opcua.group.node]]
      name = "p"
      id = "ns=3;i=5"
`)
	if o.Mode != "read" || o.SecurityPolicy != "None" || o.AuthMethod != "Anonymous" || o.Timestamp != "source" {
		t.Fatalf("defaults: %+v", o)
	}
	if len(o.nodes) != 2 {
		t.Fatalf("%d nodes", len(o.nodes))
	}
	n := o.nodes[0]
	if n.field != "Temperature" || n.measurement != "opcua" || n.ref.nsURI != "urn:plant" {
		t.Fatalf("node 0: %+v", n)
	}
	if got := tagString(n.baseTags); got != "line=2,source=l1,unit=C," {
		t.Fatalf("node tags override group tags: %s", got)
	}
	if n.mon.sampling != -1 || !n.mon.discardOldest || n.mon.filter != nil {
		t.Fatalf("monitoring defaults: %+v", n.mon)
	}
	if o.nodes[1].ref.ns != 3 || o.nodes[1].ref.nsURI != "" {
		t.Fatalf("a full id keeps its namespace: %+v", o.nodes[1].ref)
	}
}

// The embedded sample config loads, passes Init and keeps the config shape.
func TestSampleConfig(t *testing.T) {
	o := load(t, sampleConfig)
	if o.Name != "line1" || o.Mode != "subscribe" || o.SecurityPolicy != "Basic256Sha256" ||
		o.SecurityMode != "SignAndEncrypt" || o.AuthMethod != "UserName" || o.Timestamp != "source" {
		t.Fatalf("sample: %+v", o)
	}
	g := o.Groups[0]
	if g.Measurement != "line1" || g.NamespaceURI != "urn:plant:line1" || g.Deadband == nil || g.Deadband.Value != 0.5 {
		t.Fatalf("sample group: %+v", g)
	}
	if f := o.nodes[0].mon.filter; f == nil || f.DeadbandType != uint32(ua.DeadbandTypeAbsolute) || f.DeadbandValue != 0.5 {
		t.Fatalf("sample deadband: %+v", f)
	}
	if o.nodes[0].mon.sampling != 100 {
		t.Fatalf("sample sampling interval: %v", o.nodes[0].mon.sampling)
	}
}

func TestQueueSize(t *testing.T) {
	o := load(t, "[[inputs.opcua]]\n  name = \"q\"\n  endpoint = \"opc.tcp://127.0.0.1:1\"\n  publishing_interval = \"1s\"\n  [[inputs.opcua.group]]\n    browse = \"i=85\"\n")
	s := newSession(o, newAcc(), true)
	for _, c := range []struct {
		mon  monitorParams
		want uint32
	}{
		{monitorParams{sampling: -1}, 1},     // samples at the publishing interval
		{monitorParams{sampling: 100}, 11},   // ten samples per publish, and one spare
		{monitorParams{sampling: 1000}, 2},   // one per publish, and one spare
		{monitorParams{sampling: 0.5}, 1000}, // capped
		{monitorParams{sampling: 100, queueSize: 3}, 3},
	} {
		if got := s.queueSize(c.mon); got != c.want {
			t.Errorf("%+v: queue %d, want %d", c.mon, got, c.want)
		}
	}
}

func TestDialURLs(t *testing.T) {
	f := func(configured, advertised string, want ...string) {
		t.Helper()
		got := dialURLs(configured, advertised)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("dialURLs(%s, %s) = %v, want %v", configured, advertised, got, want)
		}
	}
	f("opc.tcp://127.0.0.1:4840", "opc.tcp://127.0.0.1:4840", "opc.tcp://127.0.0.1:4840")
	f("opc.tcp://localhost:4840", "opc.tcp://127.0.0.1:4840", "opc.tcp://127.0.0.1:4840", "opc.tcp://localhost:4840")
	f("opc.tcp://10.0.0.1:4840", "", "opc.tcp://10.0.0.1:4840")
	f("opc.tcp://10.0.0.1:4840", "http://x", "opc.tcp://10.0.0.1:4840")
}

func TestSelectEndpoint(t *testing.T) {
	ep := func(policy string, mode ua.MessageSecurityMode, level uint8, toks ...ua.UserTokenType) *ua.EndpointDescription {
		e := &ua.EndpointDescription{SecurityPolicyURI: ua.SecurityPolicyURIPrefix + policy, SecurityMode: mode, SecurityLevel: level}
		for _, tt := range toks {
			e.UserIdentityTokens = append(e.UserIdentityTokens, &ua.UserTokenPolicy{TokenType: tt})
		}
		return e
	}
	anon, user := ua.UserTokenTypeAnonymous, ua.UserTokenTypeUserName
	eps := []*ua.EndpointDescription{
		ep("None", ua.MessageSecurityModeNone, 0, anon),
		ep("Basic256", ua.MessageSecurityModeSignAndEncrypt, 200, anon, user), // deprecated, and the server rates it highest
		ep("Basic256Sha256", ua.MessageSecurityModeSign, 10, anon, user),
		ep("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt, 10, anon),
		ep("Aes128_Sha256_RsaOaep", ua.MessageSecurityModeSignAndEncrypt, 10, anon, user),
	}
	f := func(policy, mode, auth, want string) {
		t.Helper()
		o := &OPCUA{Endpoint: "opc.tcp://x:1", SecurityPolicy: policy, SecurityMode: mode, AuthMethod: auth}
		got, err := o.selectEndpoint(eps)
		if want == "" {
			if err == nil {
				t.Fatalf("%s/%s/%s chose %s, want none", policy, mode, auth, shortPolicy(got.SecurityPolicyURI))
			}
			return
		}
		if err != nil {
			t.Fatalf("%s/%s/%s: %v", policy, mode, auth, err)
		}
		if g := shortPolicy(got.SecurityPolicyURI) + "/" + shortMode(got.SecurityMode); g != want {
			t.Fatalf("%s/%s/%s chose %s, want %s", policy, mode, auth, g, want)
		}
	}
	f("auto", "auto", "Anonymous", "Aes128_Sha256_RsaOaep/SignAndEncrypt")  // never the deprecated one
	f("Basic256", "SignAndEncrypt", "Anonymous", "Basic256/SignAndEncrypt") // unless named
	f("auto", "Sign", "UserName", "Basic256Sha256/Sign")
	f("Basic256Sha256", "auto", "UserName", "Basic256Sha256/Sign") // SignAndEncrypt offers no user name
	f("Basic256Sha256", "SignAndEncrypt", "Anonymous", "Basic256Sha256/SignAndEncrypt")
	f("None", "None", "Anonymous", "None/None")
	f("None", "None", "UserName", "")
	f("Aes256_Sha256_RsaPss", "Sign", "Anonymous", "")
}

// TestMetricsLeaveFieldRoom: the metrics of a batch leave the room processors reserved
// (models.ReserveFieldRoom) after their fields, so that processors.predict appends in place, and
// what one metric appends there never reaches the fields of the next.
func TestMetricsLeaveFieldRoom(t *testing.T) {
	models.ReserveFieldRoom(3) // for the life of the test binary: other tests only get the room too
	o := loadUnreachable(t, "room")
	const n = 100
	a := newSlab(n)
	t0 := time.Now()
	var ms []*models.Metric
	for i := range n {
		st := o.newNodeState(&nodeSpec{field: fmt.Sprintf("Tag.%d", i), measurement: "sim", baseTags: o.tags(nil, nil)})
		dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(float64(i)), SourceTimestamp: t0}
		m, oc, err := o.makeMetric(a, st, dv, t0, true)
		if oc != emitted || err != nil {
			t.Fatalf("value %d: %v %v", i, oc, err)
		}
		ms = append(ms, m)
	}
	for i, m := range ms {
		if room := cap(m.Fields) - len(m.Fields); room < 3 {
			t.Fatalf("metric %d has room for %d more fields, want 3", i, room)
		}
		before := &m.Fields[:cap(m.Fields)][0]
		m.Fields = append(m.Fields, models.Int("a", 1), models.Int("b", 2), models.Int("c", 3))
		if &m.Fields[0] != before {
			t.Fatalf("metric %d: appending 3 fields moved them", i)
		}
	}
	for i, m := range ms {
		if len(m.Fields) != 4 || m.Fields[0].FloatV() != float64(i) {
			t.Fatalf("metric %d: fields %v, want its value and the 3 appended", i, m.Fields)
		}
	}
}
