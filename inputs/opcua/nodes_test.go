package opcua

import (
	"strings"
	"testing"

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

func TestConfigErrors(t *testing.T) {
	const head = "[[inputs.opcua]]\n  name = \"l1\"\n  endpoint = \"opc.tcp://127.0.0.1:4840\"\n"
	const node = "  [[inputs.opcua.group]]\n    namespace = 1\n    [[inputs.opcua.group.node]]\n      name = \"t\"\n      id = \"s=T\"\n"
	f := func(table, want string) {
		t.Helper()
		got := loadErr(t, table)
		if !strings.Contains(got, want) {
			t.Fatalf("config:\n%s\nerror %q, want it to contain %q", table, got, want)
		}
		if !strings.Contains(got, "test.conf:") {
			t.Fatalf("error %q does not name the file and line", got)
		}
	}
	f("[[inputs.opcua]]\n  endpoint = \"opc.tcp://127.0.0.1:4840\"\n"+node, "name")
	f(head+"  mode = \"poll\"\n"+node, `mode: "poll": must be one of read, subscribe`)
	f("[[inputs.opcua]]\n  name = \"l1\"\n  endpoint = \"http://x:1\"\n"+node, "only opc.tcp://")
	f(head+"  security_mode = \"Sign\"\n"+node, "needs a security_policy other than None")
	f(head+"  security_policy = \"Basic256Sha256\"\n  security_mode = \"Sign\"\n"+node, "trusted_certificates")
	f(head+"  security_policy = \"Basic256Sha256\"\n"+node, "needs security_mode Sign or SignAndEncrypt")
	f(head+"  auth_method = \"UserName\"\n  insecure_skip_verify = true\n"+node, "needs a username")
	f(head+"  password = \"x\"\n"+node, `set auth_method = "UserName"`)
	f(head+"  server_fingerprint = \"md5:00\"\n"+node, "sha256:")
	f(head+"  server_fingerprint = \"sha256:abcd\"\n"+node, "not a sha256 fingerprint")
	f(head+"  insecure_skip_verify = true\n  trusted_certificates = \"/tmp\"\n"+node, "choose one")
	f(head+"  certificate = \"/tmp/c.pem\"\n"+node, "together")
	f(head+"  max_nodes_per_read = 0\n"+node, "max_nodes_per_read: 0: must be 1..100000")
	f(head, "at least one [[inputs.opcua.group]]")
	f(head+"  [[inputs.opcua.group]]\n    namespace = 1\n    namespace_uri = \"urn:x\"\n    browse = \"s=F\"\n", "not both")
	f(head+"  [[inputs.opcua.group]]\n    namespace = 1\n", "browse")
	f(head+"  [[inputs.opcua.group]]\n    namespace = 1\n    browse_depth = 2\n    [[inputs.opcua.group.node]]\n      id = \"s=T\"\n", "browse_depth needs browse")
	f(head+"  [[inputs.opcua.group]]\n    browse = \"s=F\"\n    browse_depth = 11\n", "must be 1..10")
	f(head+"  [[inputs.opcua.group]]\n    [[inputs.opcua.group.node]]\n      id = \"i=7\"\n", "give a field name")
	f(head+"  [[inputs.opcua.group]]\n    [[inputs.opcua.group.node]]\n      id = \"ns=x;s=1\"\n", "namespace index")
	f(head+"  [[inputs.opcua.group]]\n    deadband = { type = \"relative\", value = 1.0 }\n    browse = \"s=F\"\n", `"absolute" or "percent"`)
	f(head+"  [[inputs.opcua.group]]\n    deadband = { type = \"percent\", value = 120.0 }\n    browse = \"s=F\"\n", "0..100")
	f(head+"  [[inputs.opcua.group]]\n    trigger = \"always\"\n    browse = \"s=F\"\n", "status_value_timestamp")
	f(head+"  [[inputs.opcua.group]]\n    [[inputs.opcua.group.node]]\n      id = \"s=T\"\n      data_type = \"Real\"\n", "must be one of Boolean")
	f(head+node+"    [[inputs.opcua.group.node]]\n      name = \"t\"\n      id = \"s=U\"\n", `already writes field "t"`)
	f(head+node+"    [[inputs.opcua.group.node]]\n      name = \"u\"\n", "give the node id")
}

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
