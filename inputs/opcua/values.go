package opcua

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/tagpipe/tagpipe/models"
)

// Quality is the severity of an OPC UA status code (its two top bits).
const (
	qualityGood = iota
	qualityUncertain
	qualityBad
)

var qualityNames = [3]string{"Good", "Uncertain", "Bad"}

func quality(s ua.StatusCode) int {
	switch uint32(s) >> 30 {
	case 0:
		return qualityGood
	case 1:
		return qualityUncertain
	}
	return qualityBad
}

// statusName returns the symbolic name of a status code without gopcua's "Status" prefix
// ("BadSensorFailure"); the info bits (the low 16) are ignored.
func statusName(s ua.StatusCode) string {
	if s == ua.StatusOK {
		return "Good"
	}
	if d, ok := ua.StatusCodes[s&0xFFFF0000]; ok {
		return strings.TrimPrefix(d.Name, "Status")
	}
	return fmt.Sprintf("0x%08X", uint32(s))
}

// nodeErrors are the status codes that say the node itself is wrong (not its value): they are
// logged and counted as bad input, never turned into metrics.
var nodeErrors = map[ua.StatusCode]bool{
	ua.StatusBadNodeIDUnknown:                  true,
	ua.StatusBadNodeIDInvalid:                  true,
	ua.StatusBadAttributeIDInvalid:             true,
	ua.StatusBadNotReadable:                    true,
	ua.StatusBadUserAccessDenied:               true,
	ua.StatusBadNotSupported:                   true,
	ua.StatusBadIndexRangeInvalid:              true,
	ua.StatusBadDataEncodingInvalid:            true,
	ua.StatusBadDataEncodingUnsupported:        true,
	ua.StatusBadMonitoredItemFilterInvalid:     true,
	ua.StatusBadFilterNotAllowed:               true,
	ua.StatusBadMonitoredItemFilterUnsupported: true,
	ua.StatusBadTooManyMonitoredItems:          true,
}

// nodeState is what the plugin keeps about one node while it runs: the node's spec, its
// prepared tag sets and field keys (so that a value allocates none of them), the timestamp of
// the last value delivered (to drop the initial values a re-created subscription repeats) and
// the last problem logged (so a node that stays broken is logged once, not on every poll).
type nodeState struct {
	spec *nodeSpec
	id   *ua.NodeID // resolved for the current session; nil when it could not be

	tags       [3][]models.Tag // by quality
	statusTags map[ua.StatusCode][]models.Tag
	keys       []string // "field[i]" keys of array elements
	statusKey  string

	lastTS     int64 // unix nanoseconds of the last delivered sample (source, else server time)
	lastStatus ua.StatusCode
	problem    string
}

func (o *OPCUA) newNodeState(spec *nodeSpec) *nodeState {
	st := &nodeState{spec: spec, statusKey: spec.field + "_status"}
	for q := range st.tags {
		st.tags[q] = spec.baseTags
		if o.QualityTag == "always" || (o.QualityTag == "not_good" && q != qualityGood) {
			st.tags[q] = withTag(spec.baseTags, "quality", qualityNames[q])
		}
	}
	return st
}

func withTag(tags []models.Tag, key, value string) []models.Tag {
	out := make([]models.Tag, 0, len(tags)+1)
	out = append(out, tags...)
	out = append(out, models.Tag{Key: key, Value: value})
	return models.SortTags(out)
}

// tagsFor returns the tag set of a value with status s. The sets are made once per node and
// status and then shared by every metric of that node.
func (o *OPCUA) tagsFor(st *nodeState, s ua.StatusCode) []models.Tag {
	tags := st.tags[quality(s)]
	if o.StatusCode != "tag" {
		return tags
	}
	if t, ok := st.statusTags[s]; ok {
		return t
	}
	if st.statusTags == nil {
		st.statusTags = map[ua.StatusCode][]models.Tag{}
	}
	t := withTag(tags, "status", statusName(s))
	if len(st.statusTags) < 64 { // a server inventing codes must not grow this without bound
		st.statusTags[s] = t
	}
	return t
}

func (st *nodeState) key(i int) string {
	for len(st.keys) <= i {
		st.keys = append(st.keys, st.spec.field+"["+strconv.Itoa(len(st.keys))+"]")
	}
	return st.keys[i]
}

// errUnexpectedType says a value has a type the config did not expect or a field cannot hold.
type errUnexpectedType struct{ got, want string }

func (e *errUnexpectedType) Error() string {
	if e.want != "" {
		return "value of type " + e.got + ", the config expects " + e.want
	}
	return "value of type " + e.got + " cannot be a field"
}

func typeName(t ua.TypeID) string {
	for n, id := range dataTypes {
		if id == t {
			return n
		}
	}
	return strings.TrimPrefix(t.String(), "TypeID")
}

// appendFields appends the fields of value v: one for a scalar, one per element (field[i],
// field[i][j]) for an array. Built-in scalars and their arrays allocate nothing here.
func appendFields(dst []models.Field, st *nodeState, v *ua.Variant) ([]models.Field, error) {
	if st.spec.dataType != 0 && v.Type() != st.spec.dataType {
		return dst, &errUnexpectedType{got: typeName(v.Type()), want: typeName(st.spec.dataType)}
	}
	val := v.Value()
	if f, ok := scalarField(st.spec.field, val); ok {
		return append(dst, f), nil
	}
	switch x := val.(type) {
	case []float64:
		for i, e := range x {
			dst = append(dst, models.Float(st.key(i), e))
		}
	case []float32:
		for i, e := range x {
			dst = append(dst, models.Float(st.key(i), float64(e)))
		}
	case []int32:
		for i, e := range x {
			dst = append(dst, models.Int(st.key(i), int64(e)))
		}
	case []int64:
		for i, e := range x {
			dst = append(dst, models.Int(st.key(i), e))
		}
	case []uint32:
		for i, e := range x {
			dst = append(dst, models.Uint(st.key(i), uint64(e)))
		}
	case []bool:
		for i, e := range x {
			dst = append(dst, models.Bool(st.key(i), e))
		}
	case []string:
		for i, e := range x {
			dst = append(dst, models.String(st.key(i), e))
		}
	case ua.ByteArray: // an array of Byte
		for i, e := range x {
			dst = append(dst, models.Uint(st.key(i), uint64(e)))
		}
	default:
		return appendReflect(dst, st, st.spec.field, reflect.ValueOf(val), v.Type())
	}
	return dst, nil
}

// appendReflect handles the rarer arrays (Int16, Guid, LocalizedText, ...) and matrices, which
// gopcua decodes into nested slices: element [i][j] becomes field "name[i][j]".
func appendReflect(dst []models.Field, st *nodeState, name string, rv reflect.Value, t ua.TypeID) ([]models.Field, error) {
	if !rv.IsValid() || rv.Kind() != reflect.Slice || rv.Type() == reflect.TypeOf([]byte(nil)) {
		return dst, &errUnexpectedType{got: typeName(t)}
	}
	for i := 0; i < rv.Len(); i++ {
		key := name + "[" + strconv.Itoa(i) + "]"
		if name == st.spec.field {
			key = st.key(i)
		}
		e := rv.Index(i)
		if f, ok := scalarField(key, e.Interface()); ok {
			dst = append(dst, f)
			continue
		}
		var err error
		if dst, err = appendReflect(dst, st, key, e, t); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// scalarField converts one value of a built-in type. Numbers, booleans and strings keep their
// type; DateTime becomes RFC 3339 text, ByteString base64, Guid, NodeId, QualifiedName and
// LocalizedText their text forms, StatusCode its number.
func scalarField(key string, v any) (models.Field, bool) {
	switch x := v.(type) {
	case float64:
		return models.Float(key, x), true
	case float32:
		return models.Float(key, float64(x)), true
	case int32:
		return models.Int(key, int64(x)), true
	case int64:
		return models.Int(key, x), true
	case int16:
		return models.Int(key, int64(x)), true
	case int8:
		return models.Int(key, int64(x)), true
	case uint32:
		return models.Uint(key, uint64(x)), true
	case uint64:
		return models.Uint(key, x), true
	case uint16:
		return models.Uint(key, uint64(x)), true
	case uint8:
		return models.Uint(key, uint64(x)), true
	case bool:
		return models.Bool(key, x), true
	case string:
		return models.String(key, x), true
	case time.Time:
		return models.String(key, x.UTC().Format(time.RFC3339Nano)), true
	case []byte:
		return models.String(key, base64.StdEncoding.EncodeToString(x)), true
	case ua.XMLElement:
		return models.String(key, string(x)), true
	case ua.StatusCode:
		return models.Uint(key, uint64(x)), true
	case *ua.GUID:
		if x == nil {
			return models.Field{}, false
		}
		return models.String(key, x.String()), true
	case *ua.NodeID:
		if x == nil {
			return models.Field{}, false
		}
		return models.String(key, x.String()), true
	case *ua.ExpandedNodeID:
		if x == nil {
			return models.Field{}, false
		}
		return models.String(key, x.String()), true
	case *ua.QualifiedName:
		if x == nil {
			return models.Field{}, false
		}
		return models.String(key, strconv.Itoa(int(x.NamespaceIndex))+":"+x.Name), true
	case *ua.LocalizedText:
		if x == nil {
			return models.Field{}, false
		}
		return models.String(key, x.Text), true
	}
	return models.Field{}, false
}

// slab hands out metrics and field slices carved from shared arrays: a batch of N values costs
// two allocations, not 2N. Each metric's fields are capped, so an append by a processor copies
// instead of writing into the next metric's fields.
type slab struct {
	ms []models.Metric
	fs []models.Field
}

func newSlab(n int) *slab {
	return &slab{ms: make([]models.Metric, 0, n), fs: make([]models.Field, 0, n+n/2)}
}

func (a *slab) metric() *models.Metric {
	if len(a.ms) == cap(a.ms) {
		a.ms = make([]models.Metric, 0, max(16, cap(a.ms)))
	}
	a.ms = a.ms[:len(a.ms)+1]
	return &a.ms[len(a.ms)-1]
}

// fieldBuf returns the free part of the field array with room for at least n fields.
func (a *slab) fieldBuf(n int) []models.Field {
	if cap(a.fs)-len(a.fs) < n {
		a.fs = make([]models.Field, 0, max(n, 64, cap(a.fs)))
	}
	return a.fs[len(a.fs):len(a.fs)]
}

// take marks the first len(f) fields of the free part as used, with room for up to room more
// after them (the fields processors add: models.FieldRoom), and returns them capped there.
func (a *slab) take(f []models.Field, room int) []models.Field {
	n := len(a.fs)
	if len(f) == 0 || n+len(f) > cap(a.fs) || &a.fs[:n+1][n] != &f[0] {
		return f[:len(f):len(f)] // appended past the estimate: it has an array of its own
	}
	end := min(n+len(f)+room, cap(a.fs))
	a.fs = a.fs[:end]
	return a.fs[n : n+len(f) : end]
}

// outcome says what became of one value.
type outcome uint8

const (
	emitted outcome = iota
	droppedQuality
	droppedDuplicate
	nodeError
	typeError
)

// makeMetric turns one DataValue of node st into a metric from a (nil when it is not emitted,
// with the reason). dedupe drops a sample that repeats the last one delivered (same
// timestamp and status): the initial values of a re-created subscription.
func (o *OPCUA) makeMetric(a *slab, st *nodeState, dv *ua.DataValue, gathered time.Time, dedupe bool) (*models.Metric, outcome, error) {
	if dv == nil {
		return nil, nodeError, errors.New("no value in the answer")
	}
	status := dv.Status
	q := quality(status)
	if q == qualityBad && nodeErrors[status&0xFFFF0000] {
		return nil, nodeError, status
	}
	if (q == qualityBad && o.BadQuality == "drop") || (q == qualityUncertain && o.UncertainQuality == "drop") {
		return nil, droppedQuality, nil
	}
	sampleTS := dv.SourceTimestamp
	if sampleTS.IsZero() {
		sampleTS = dv.ServerTimestamp
	}
	if dedupe && !sampleTS.IsZero() {
		ns := sampleTS.UnixNano()
		if ns == st.lastTS && status == st.lastStatus {
			return nil, droppedDuplicate, nil
		}
		st.lastTS, st.lastStatus = ns, status
	}
	n := 2
	if dv.Value != nil && dv.Value.ArrayLength() > 0 {
		n += int(dv.Value.ArrayLength())
	}
	room := models.FieldRoom()
	fields := a.fieldBuf(n + room)
	if dv.Value != nil && dv.Value.Type() != ua.TypeIDNull && dv.Value.Value() != nil {
		var err error
		if fields, err = appendFields(fields, st, dv.Value); err != nil {
			return nil, typeError, err
		}
	} else if q == qualityGood {
		return nil, typeError, &errUnexpectedType{got: "Null"}
	}
	if o.StatusCode == "field" {
		fields = append(fields, models.Uint(st.statusKey, uint64(status)))
	}
	if len(fields) == 0 { // a bad value without a value, and no status field to carry it
		return nil, droppedQuality, nil
	}
	m := a.metric()
	m.Name = st.spec.measurement
	m.Tags = o.tagsFor(st, status)
	m.Fields = a.take(fields, room)
	switch o.Timestamp {
	case "source":
		m.Time = firstTime(dv.SourceTimestamp, dv.ServerTimestamp, gathered)
	case "server":
		m.Time = firstTime(dv.ServerTimestamp, dv.SourceTimestamp, gathered)
	default:
		m.Time = gathered
	}
	return m, emitted, nil
}

func firstTime(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}
