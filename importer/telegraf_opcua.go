package importer

import (
	"fmt"
	"strings"
)

// uaNode is one node of a tagpipe OPC UA group.
type uaNode struct {
	kvs []kv
}

// uaGroup is one [[inputs.opcua.group]]; nodes with other queue, discard or trigger settings
// go to groups of their own.
type uaGroup struct {
	key   string
	kvs   []kv
	nodes []uaNode
}

// opcua imports [[inputs.opcua]] (polled reads) or [[inputs.opcua_listener]] (subscriptions)
// as one tagpipe [[inputs.opcua]] in read or subscribe mode.
func (im *telegrafImport) opcua(order int, t *table, listener bool) {
	plugin := commonInput(t, true)
	metric := "opcua"
	if listener {
		metric = "opcua_listener"
	}
	if n, ok := t.str("name"); ok && n != "" {
		metric = n
	}
	endpoint := "opc.tcp://localhost:4840"
	if s, ok := t.str("endpoint"); ok {
		endpoint = s
	}
	mode := "read"
	if listener {
		mode = "subscribe"
	}
	head := []kv{{key: "name", val: metric, comment: "the source tag of every metric"}, {key: "endpoint", val: endpoint}, {key: "mode", val: mode}}
	t.report("", Note, "tagpipe adds the tag source = %q to every metric; Telegraf's field Quality is not written (status_code = \"field\" writes the status code as a number)", metric)

	// Security: Telegraf's defaults are auto and does not check the server's certificate.
	policy, mode2, auth := "auto", "auto", "Anonymous"
	if s, ok := t.str("security_policy"); ok {
		policy = s
	}
	if s, ok := t.str("security_mode"); ok {
		mode2 = s
	}
	if s, ok := t.str("auth_method"); ok {
		auth = s
	}
	head = append(head, kv{key: "security_policy", val: policy}, kv{key: "security_mode", val: mode2}, kv{key: "auth_method", val: auth})
	for _, k := range []string{"username", "password", "certificate", "private_key"} {
		if s, ok := t.str(k); ok && s != "" {
			head = append(head, kv{key: k, val: s})
		}
	}
	if policy != "None" || auth != "Anonymous" {
		head = append(head, kv{key: "insecure_skip_verify", val: true})
		t.report("security_policy", Approximate, "Telegraf does not check the server's certificate: written as insecure_skip_verify = true; "+
			"set trusted_certificates or server_fingerprint instead")
	}
	t.skip("remote_certificate", Approximate, "tagpipe checks the server against trusted_certificates (a folder) or server_fingerprint")
	for _, k := range []string{"connect_timeout", "request_timeout", "session_timeout"} {
		if d, ok := t.duration(k); ok && d > 0 {
			head = append(head, kv{key: k, val: d})
		}
	}
	if listener {
		d, ok := t.duration("subscription_interval")
		if !ok {
			d = 100e6 // Telegraf's default
		}
		head = append(head, kv{key: "publishing_interval", val: d})
	}
	ts := "gather" // Telegraf's default; tagpipe's is source
	if s, ok := t.str("timestamp"); ok && s != "" {
		ts = s
	}
	head = append(head, kv{key: "timestamp", val: ts})
	t.skip("timestamp_format", Unmapped, "tagpipe writes a DateTime value as RFC 3339 text")
	t.skip("connect_fail_behavior", Approximate, "tagpipe starts without the server and keeps reconnecting with backoff")
	t.skip("client_trace", Unmapped, "tagpipe logs the session at debug level (--debug)")
	t.skip("optional_fields", Unmapped, "tagpipe has no DataType field")
	t.skip("events", Unmapped, "tagpipe does not subscribe to OPC UA events")
	if w := t.sub("workarounds"); w != nil {
		w.skip("additional_valid_status_codes", Approximate, "tagpipe keeps uncertain values and drops bad ones (uncertain_quality, bad_quality)")
		w.rest()
	}
	if w := t.sub("request_workarounds"); w != nil {
		w.skip("use_unregistered_reads", Unmapped, "tagpipe reads without registering nodes")
		w.rest()
	}

	var groups []*uaGroup
	seen := map[string]string{}
	addNodes := func(gt *table, measurement, ns, nsURI, idType string, sampling any, gtags map[string]string, nodes []*table) {
		for _, n := range nodes {
			n.where = t.where
			node, key, ok := uaNodeOf(n, ns, nsURI, idType, sampling, gtags)
			if !ok {
				continue
			}
			id := measurement + "\x00" + node.kvs[0].val.(string) + "\x00" + node.kvs[1].val.(string)
			if prev, dup := seen[id]; dup {
				n.report("name", Bad, "%q with the same id is at %s already; left out", node.kvs[0].val, prev)
				continue
			}
			seen[id] = fmt.Sprintf("%s:%d", n.src.file, n.line)
			gkey := measurement + "\x00" + key
			var g *uaGroup
			for _, x := range groups {
				if x.key == gkey {
					g = x
				}
			}
			if g == nil {
				g = &uaGroup{key: gkey, kvs: append([]kv{{key: "measurement", val: measurement}}, groupKVs(key)...)}
				groups = append(groups, g)
			}
			g.nodes = append(g.nodes, node)
		}
	}
	addNodes(t, metric, "", "", "", nil, nil, t.tables("nodes"))
	for _, g := range t.tables("group") {
		g.where = t.where
		measurement := metric
		if s, ok := g.str("name"); ok && s != "" {
			measurement = s
		}
		ns, _ := g.str("namespace")
		nsURI, _ := g.str("namespace_uri")
		idType, _ := g.str("identifier_type")
		var sampling any
		if d, ok := g.duration("sampling_interval"); ok && d > 0 {
			sampling = d
		}
		gtags := uaTags(g)
		addNodes(g, measurement, ns, nsURI, idType, sampling, gtags, g.tables("nodes"))
		g.rest()
	}
	t.rest()
	if len(groups) == 0 {
		t.report("", Bad, "no node could be imported: the input is left out")
		return
	}
	from := fmt.Sprintf("%s:%d", t.src.file, t.line)
	kind := map[bool]string{false: "inputs.opcua", true: "inputs.opcua_listener"}[listener]
	im.parts = append(im.parts, part{order: order, inputs: true, write: func(e *emitter) {
		e.comment(0, fmt.Sprintf("From [[%s]] %q at %s.", kind, metric, from))
		e.header(0, "[[inputs.opcua]]")
		e.kvs(1, append(head, plugin...))
		for _, g := range groups {
			e.blank()
			e.header(1, "[[inputs.opcua.group]]")
			e.kvs(2, g.kvs)
			for _, n := range g.nodes {
				e.header(2, "[[inputs.opcua.group.node]]")
				e.kvs(3, n.kvs)
			}
		}
	}})
}

// uaTags reads default_tags, or the older tags = [["k", "v"], ...].
func uaTags(t *table) map[string]string {
	tags, _ := t.stringMap("default_tags")
	v, ok := t.get("tags")
	if !ok {
		return tags
	}
	pairs, isList := v.([]any)
	if tags == nil {
		tags = map[string]string{}
	}
	for _, p := range pairs {
		kv, isPair := p.([]any)
		if !isPair || len(kv) != 2 {
			t.report("tags", Bad, "want pairs like [[\"line\", \"1\"]]; left out")
			return tags
		}
		k, _ := kv[0].(string)
		val, _ := kv[1].(string)
		if _, set := tags[k]; !set {
			tags[k] = val
		}
	}
	if !isList {
		t.wrong("tags", v, "pairs of strings")
	}
	return tags
}

// uaNodeOf maps a Telegraf node; key says which group settings it needs.
func uaNodeOf(n *table, ns, nsURI, idType string, sampling any, gtags map[string]string) (uaNode, string, bool) {
	name, _ := n.str("name")
	ident, _ := n.str("identifier")
	if s, ok := n.str("namespace"); ok && s != "" {
		ns = s
	}
	if s, ok := n.str("namespace_uri"); ok && s != "" {
		nsURI = s
	}
	if s, ok := n.str("identifier_type"); ok && s != "" {
		idType = s
	}
	if name == "" || ident == "" || ns == "" && nsURI == "" || !strings.Contains("sigb", idType) || idType == "" {
		n.report("", Bad, "a node needs name, namespace (or namespace_uri), identifier_type (s, i, g or b) and identifier; left out")
		n.rest()
		return uaNode{}, "", false
	}
	id := "ns=" + ns + ";" + idType + "=" + ident
	if nsURI != "" {
		id = "nsu=" + nsURI + ";" + idType + "=" + ident
	}
	tags := map[string]string{}
	for k, v := range gtags {
		tags[k] = v
	}
	for k, v := range uaTags(n) {
		tags[k] = v
	}
	tags["id"] = id // Telegraf's tag: the node id
	node := uaNode{kvs: []kv{{key: "name", val: name, comment: fmt.Sprintf("%s:%d", n.src.file, n.line)}, {key: "id", val: id}}}
	n.skip("data_type", Note, "ignored by Telegraf since 1.17; tagpipe takes any type")
	n.skip("description", Note, "ignored by Telegraf since 1.17")
	key := ""
	if mp := n.sub("monitoring_params"); mp != nil {
		if d, ok := mp.duration("sampling_interval"); ok && d > 0 {
			sampling = d
		}
		var qs, disc, trig string
		if q, ok := mp.integer("queue_size"); ok {
			qs = fmt.Sprint(q)
		}
		if b, ok := mp.boolean("discard_oldest"); ok {
			disc = fmt.Sprint(b)
		}
		if f := mp.sub("data_change_filter"); f != nil {
			if s, ok := f.str("trigger"); ok {
				trig = map[string]string{"Status": "status", "StatusValue": "status_value", "StatusValueTimestamp": "status_value_timestamp"}[s]
				if trig == "" {
					f.report("trigger", Bad, "%q: want Status, StatusValue or StatusValueTimestamp; left out", s)
				}
			}
			dt, hasType := f.str("deadband_type")
			dv, hasValue := f.number("deadband_value")
			if hasType || hasValue {
				typ := map[string]string{"Absolute": "absolute", "Percent": "percent"}[dt]
				if typ == "" || !hasValue {
					f.report("deadband_type", Bad, "a deadband needs deadband_type Absolute or Percent and deadband_value; left out")
				} else {
					node.kvs = append(node.kvs, kv{key: "deadband", val: raw(fmt.Sprintf("{ type = %q, value = %s }", typ, tomlFloat(dv)))})
				}
			}
			f.rest()
		}
		key = qs + "\x00" + disc + "\x00" + trig
		mp.rest()
	}
	if sampling != nil {
		node.kvs = append(node.kvs, kv{key: "sampling_interval", val: sampling})
	}
	node.kvs = append(node.kvs, kv{key: "tags", val: tags})
	n.rest()
	return node, key, true
}

// groupKVs returns the group settings a node key asks for.
func groupKVs(key string) []kv {
	parts := strings.Split(key, "\x00")
	if len(parts) != 3 {
		return nil
	}
	var out []kv
	if parts[0] != "" {
		out = append(out, kv{key: "queue_size", val: raw(parts[0])})
	}
	if parts[1] != "" {
		out = append(out, kv{key: "discard_oldest", val: raw(parts[1])})
	}
	if parts[2] != "" {
		out = append(out, kv{key: "trigger", val: parts[2]})
	}
	return out
}
