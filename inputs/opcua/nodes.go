package opcua

import (
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
)

// nodeRef is a parsed node id whose namespace may still be a URI: "nsu=URI;s=X" is resolved
// through the server's namespace array on every connect, because a server may number its
// namespaces differently after a restart (Telegraf users got BadNodeIdUnknown forever).
type nodeRef struct {
	nsURI string // "" when ns is the index
	ns    uint16
	kind  byte // 'i', 's', 'g', 'b'
	num   uint32
	str   string // s= identifier, or the GUID text
	bytes []byte
	text  string // how a node found by browsing is shown in logs
}

var guidRE = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// nsDefault is the namespace a group gives to ids that name none.
type nsDefault struct {
	uri string
	idx uint16
}

// parseNodeRef parses every standard form: "ns=2;s=X", "nsu=URI;i=5", "i=85", "g=GUID",
// "b=BASE64", "s=X"; and a bare identifier ("Temperature", "1001"), whose type is idType.
// Ids without a namespace get def.
func parseNodeRef(s string, def nsDefault, idType string) (nodeRef, error) {
	var r nodeRef
	rest := s
	switch {
	case strings.HasPrefix(s, "nsu="):
		uri, id, ok := strings.Cut(s[4:], ";")
		if !ok || uri == "" {
			return r, fmt.Errorf("%q: nsu= needs a URI and an identifier, e.g. \"nsu=urn:plant;s=Temp\"", s)
		}
		r.nsURI, rest = uri, id
	case strings.HasPrefix(s, "ns="):
		n, id, ok := strings.Cut(s[3:], ";")
		if !ok {
			return r, fmt.Errorf("%q: ns= needs an identifier, e.g. \"ns=2;s=Temp\"", s)
		}
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return r, fmt.Errorf("%q: namespace index must be 0..65535", s)
		}
		r.ns, rest = uint16(v), id
	default:
		r.nsURI, r.ns = def.uri, def.idx
	}
	if len(rest) < 2 || rest[1] != '=' || !strings.ContainsRune("isgb", rune(rest[0])) {
		if rest == "" {
			return r, fmt.Errorf("%q: empty identifier", s)
		}
		// a bare identifier: the group's identifier type says what it is
		rest = idType + "=" + rest
	}
	r.kind = rest[0]
	id := rest[2:]
	switch r.kind {
	case 'i':
		v, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return r, fmt.Errorf("%q: a numeric identifier must be 0..%d", s, uint32(math.MaxUint32))
		}
		r.num = uint32(v)
	case 's':
		if id == "" {
			return r, fmt.Errorf("%q: empty string identifier", s)
		}
		r.str = id
	case 'g':
		if !guidRE.MatchString(id) {
			return r, fmt.Errorf("%q: a GUID looks like 72962B91-FA75-4AE6-8D28-B404DC7DAF63", s)
		}
		r.str = strings.ToUpper(id)
	case 'b':
		b, err := base64.StdEncoding.DecodeString(id)
		if err != nil || len(b) == 0 {
			return r, fmt.Errorf("%q: an opaque identifier is standard base64", s)
		}
		r.bytes = b
	}
	return r, nil
}

// resolve returns the node id, looking the namespace URI up in the server's namespace array.
func (r *nodeRef) resolve(namespaces []string) (*ua.NodeID, error) {
	ns := r.ns
	if r.nsURI != "" {
		i := indexOf(namespaces, r.nsURI)
		if i < 0 {
			return nil, fmt.Errorf("namespace %q is not in the server's namespace array", r.nsURI)
		}
		ns = uint16(i)
	}
	return r.nodeID(ns), nil
}

func (r *nodeRef) nodeID(ns uint16) *ua.NodeID {
	switch r.kind {
	case 'i':
		return ua.NewNumericNodeID(ns, r.num)
	case 'g':
		return ua.NewGUIDNodeID(ns, r.str)
	case 'b':
		return ua.NewByteStringNodeID(ns, r.bytes)
	}
	return ua.NewStringNodeID(ns, r.str)
}

// String returns the id in its standard text form, with the URI when there is one.
func (r *nodeRef) String() string {
	if r.text != "" {
		return r.text
	}
	var b strings.Builder
	if r.nsURI != "" {
		b.WriteString("nsu=" + r.nsURI + ";")
	} else if r.ns != 0 {
		b.WriteString("ns=" + strconv.Itoa(int(r.ns)) + ";")
	}
	b.WriteByte(r.kind)
	b.WriteByte('=')
	switch r.kind {
	case 'i':
		b.WriteString(strconv.FormatUint(uint64(r.num), 10))
	case 'b':
		b.WriteString(base64.StdEncoding.EncodeToString(r.bytes))
	default:
		b.WriteString(r.str)
	}
	return b.String()
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// nodeSpec is one value to read or monitor, compiled from the config (or found by browsing).
type nodeSpec struct {
	ref         nodeRef
	field       string
	measurement string
	dataType    ua.TypeID // 0: any type the plugin can turn into a field
	baseTags    []models.Tag
	mon         monitorParams
	key         string // "group[0].node[1]", for config errors and logs
}

// monitorParams are a monitored item's requested parameters.
type monitorParams struct {
	sampling      float64 // ms; -1: the publishing interval
	queueSize     uint32  // 0: computed from sampling and publishing interval
	discardOldest bool
	filter        *ua.DataChangeFilter
}

// browseSpec is a folder whose variables are added on every connect.
type browseSpec struct {
	ref   nodeRef
	depth int
	tmpl  nodeSpec // measurement, tags, monitoring parameters for what is found
	key   string
}

var dataTypes = map[string]ua.TypeID{
	"Boolean": ua.TypeIDBoolean, "SByte": ua.TypeIDSByte, "Byte": ua.TypeIDByte,
	"Int16": ua.TypeIDInt16, "UInt16": ua.TypeIDUint16, "Int32": ua.TypeIDInt32,
	"UInt32": ua.TypeIDUint32, "Int64": ua.TypeIDInt64, "UInt64": ua.TypeIDUint64,
	"Float": ua.TypeIDFloat, "Double": ua.TypeIDDouble, "String": ua.TypeIDString,
	"DateTime": ua.TypeIDDateTime, "Guid": ua.TypeIDGUID, "ByteString": ua.TypeIDByteString,
	"XmlElement": ua.TypeIDXMLElement, "NodeId": ua.TypeIDNodeID,
	"ExpandedNodeId": ua.TypeIDExpandedNodeID, "StatusCode": ua.TypeIDStatusCode,
	"QualifiedName": ua.TypeIDQualifiedName, "LocalizedText": ua.TypeIDLocalizedText,
}

func dataTypeNames() string {
	names := make([]string, 0, len(dataTypes))
	for n := range dataTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// compile checks the groups and builds o.nodes and o.browses.
func (o *OPCUA) compile() error {
	type seriesKey struct{ measurement, field, tags string }
	seen := map[seriesKey]string{}
	o.nodes, o.browses = nil, nil
	for gi := range o.Groups {
		g := &o.Groups[gi]
		gkey := fmt.Sprintf("group[%d]", gi)
		def := nsDefault{uri: g.NamespaceURI}
		if g.Namespace != nil {
			if g.NamespaceURI != "" {
				return config.KeyErrorf(gkey+".namespace", "give namespace or namespace_uri, not both")
			}
			if *g.Namespace < 0 || *g.Namespace > math.MaxUint16 {
				return config.KeyErrorf(gkey+".namespace", "%d: must be 0..65535", *g.Namespace)
			}
			def.idx = uint16(*g.Namespace)
		}
		if g.IdentifierType == "" {
			g.IdentifierType = "s"
		}
		if !contains([]string{"s", "i", "g", "b"}, g.IdentifierType) {
			return config.KeyErrorf(gkey+".identifier_type", "%q: must be s, i, g or b", g.IdentifierType)
		}
		if g.Measurement == "" {
			g.Measurement = "opcua"
		}
		if g.QueueSize < 0 || g.QueueSize > math.MaxInt32 {
			return config.KeyErrorf(gkey+".queue_size", "%d: must be 0 (automatic) or more", g.QueueSize)
		}
		trigger := ua.DataChangeTriggerStatusValue
		switch g.Trigger {
		case "", "status_value":
		case "status":
			trigger = ua.DataChangeTriggerStatus
		case "status_value_timestamp":
			trigger = ua.DataChangeTriggerStatusValueTimestamp
		default:
			return config.KeyErrorf(gkey+".trigger", "%q: must be status, status_value or status_value_timestamp", g.Trigger)
		}
		gfilter, err := makeFilter(g.Deadband, trigger, g.Trigger != "")
		if err != nil {
			return config.KeyErrorf(gkey+".deadband", "%v", err)
		}
		discard := true
		if g.DiscardOldest != nil {
			discard = *g.DiscardOldest
		}
		gmon := monitorParams{sampling: -1, queueSize: uint32(g.QueueSize), discardOldest: discard, filter: gfilter}
		if g.SamplingInterval > 0 {
			gmon.sampling = float64(g.SamplingInterval.D()) / float64(time.Millisecond)
		}
		if len(g.Nodes) == 0 && g.Browse == "" {
			return config.KeyErrorf(gkey, "give [[inputs.opcua.group.node]] tables or browse = \"FOLDER ID\"")
		}
		if g.Browse != "" {
			ref, err := parseNodeRef(g.Browse, def, g.IdentifierType)
			if err != nil {
				return config.KeyErrorf(gkey+".browse", "%v", err)
			}
			if g.BrowseDepth == 0 {
				g.BrowseDepth = 1
			}
			if g.BrowseDepth < 1 || g.BrowseDepth > 10 {
				return config.KeyErrorf(gkey+".browse_depth", "%d: must be 1..10", g.BrowseDepth)
			}
			o.browses = append(o.browses, &browseSpec{
				ref: ref, depth: g.BrowseDepth, key: gkey + ".browse",
				tmpl: nodeSpec{measurement: g.Measurement, baseTags: o.tags(g.Tags, nil), mon: gmon},
			})
		} else if g.BrowseDepth != 0 {
			return config.KeyErrorf(gkey+".browse_depth", "browse_depth needs browse")
		}
		for ni := range g.Nodes {
			n := &g.Nodes[ni]
			nkey := fmt.Sprintf("%s.node[%d]", gkey, ni)
			if n.ID == "" {
				return config.KeyErrorf(nkey+".id", "give the node id, e.g. \"ns=2;s=Temperature\"")
			}
			ref, err := parseNodeRef(n.ID, def, g.IdentifierType)
			if err != nil {
				return config.KeyErrorf(nkey+".id", "%v", err)
			}
			name := n.Name
			if name == "" {
				if ref.kind != 's' {
					return config.KeyErrorf(nkey+".name", "give a field name for %s", n.ID)
				}
				name = ref.str
			}
			spec := &nodeSpec{ref: ref, field: name, measurement: g.Measurement, mon: gmon, key: nkey}
			if n.DataType != "" {
				t, ok := dataTypes[n.DataType]
				if !ok {
					return config.KeyErrorf(nkey+".data_type", "%q: must be one of %s", n.DataType, dataTypeNames())
				}
				spec.dataType = t
			}
			if n.SamplingInterval > 0 {
				spec.mon.sampling = float64(n.SamplingInterval.D()) / float64(time.Millisecond)
			}
			if n.Deadband != nil {
				f, err := makeFilter(n.Deadband, trigger, true)
				if err != nil {
					return config.KeyErrorf(nkey+".deadband", "%v", err)
				}
				spec.mon.filter = f
			}
			spec.baseTags = o.tags(g.Tags, n.Tags)
			sk := seriesKey{g.Measurement, name, tagString(spec.baseTags)}
			if prev, dup := seen[sk]; dup {
				return config.KeyErrorf(nkey+".name", "%q: %s already writes field %q of %q with the same tags",
					name, prev, name, g.Measurement)
			}
			seen[sk] = nkey
			o.nodes = append(o.nodes, spec)
		}
	}
	return nil
}

func makeFilter(d *Deadband, trigger ua.DataChangeTrigger, triggerSet bool) (*ua.DataChangeFilter, error) {
	if d == nil {
		if !triggerSet {
			return nil, nil
		}
		return &ua.DataChangeFilter{Trigger: trigger}, nil
	}
	f := &ua.DataChangeFilter{Trigger: trigger, DeadbandValue: d.Value}
	switch d.Type {
	case "absolute":
		f.DeadbandType = uint32(ua.DeadbandTypeAbsolute)
	case "percent":
		f.DeadbandType = uint32(ua.DeadbandTypePercent)
		if d.Value > 100 {
			return nil, fmt.Errorf("percent deadband %v: must be 0..100", d.Value)
		}
	default:
		return nil, fmt.Errorf("type %q: must be \"absolute\" or \"percent\"", d.Type)
	}
	if d.Value < 0 || math.IsNaN(d.Value) || math.IsInf(d.Value, 0) {
		return nil, fmt.Errorf("value %v: must be 0 or more", d.Value)
	}
	return f, nil
}

// tags returns the sorted base tags of a node: source, then the group's, then the node's.
func (o *OPCUA) tags(group, node map[string]string) []models.Tag {
	t := []models.Tag{{Key: "source", Value: o.Name}}
	for _, m := range []map[string]string{group, node} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t = append(t, models.Tag{Key: k, Value: m[k]})
		}
	}
	return models.SortTags(t)
}

func tagString(tags []models.Tag) string {
	var b strings.Builder
	for _, t := range tags {
		b.WriteString(t.Key + "=" + t.Value + ",")
	}
	return b.String()
}
