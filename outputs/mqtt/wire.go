package mqtt

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tagpipe/tagpipe/outputs/mqtt/sparkplugb"
)

// Sparkplug payloads are appended with protowire, the wire-format layer of
// google.golang.org/protobuf, rather than built as generated structs and marshalled: a
// generated Metric holds a pointer for every optional field, so a payload of N values cost
// several allocations per value; appending costs none. The field numbers come from the
// descriptors of the compiled schema (sparkplugb), and the tests decode what is appended with
// the generated code and with Eclipse Tahu's decoder.

var (
	payloadFields   = sparkplugb.File_sparkplug_b_proto.Messages().ByName("Payload").Fields()
	metricFields    = sparkplugb.File_sparkplug_b_proto.Messages().ByName("Payload").Messages().ByName("Metric").Fields()
	propSetFields   = sparkplugb.File_sparkplug_b_proto.Messages().ByName("Payload").Messages().ByName("PropertySet").Fields()
	propValFields   = sparkplugb.File_sparkplug_b_proto.Messages().ByName("Payload").Messages().ByName("PropertyValue").Fields()
	fPayloadTime    = num(payloadFields, "timestamp")
	fPayloadMetrics = num(payloadFields, "metrics")
	fPayloadSeq     = num(payloadFields, "seq")
	fName           = num(metricFields, "name")
	fAlias          = num(metricFields, "alias")
	fTime           = num(metricFields, "timestamp")
	fDatatype       = num(metricFields, "datatype")
	fHistorical     = num(metricFields, "is_historical")
	fProperties     = num(metricFields, "properties")
	fLong           = num(metricFields, "long_value")
	fDouble         = num(metricFields, "double_value")
	fBool           = num(metricFields, "boolean_value")
	fString         = num(metricFields, "string_value")
	fPropKeys       = num(propSetFields, "keys")
	fPropValues     = num(propSetFields, "values")
	fPropType       = num(propValFields, "type")
	fPropInt        = num(propValFields, "int_value")

	// qualityProperty is the PropertySet {Quality: Int32 500} of a stale value.
	qualityProperty = func() []byte {
		var v []byte
		v = protowire.AppendTag(v, fPropType, protowire.VarintType)
		v = protowire.AppendVarint(v, uint64(sparkplugb.DataType_Int32))
		v = protowire.AppendTag(v, fPropInt, protowire.VarintType)
		v = protowire.AppendVarint(v, qualityStale)
		var s []byte
		s = protowire.AppendTag(s, fPropKeys, protowire.BytesType)
		s = protowire.AppendString(s, "Quality")
		return appendBytesField(s, fPropValues, v)
	}()
)

func num(fs protoreflect.FieldDescriptors, name protoreflect.Name) protowire.Number {
	return fs.ByName(name).Number()
}

// appendPayloadHeader appends a Payload's timestamp and, when seq ≥ 0, its seq.
func appendPayloadHeader(dst []byte, now time.Time, seq int64) []byte {
	dst = protowire.AppendTag(dst, fPayloadTime, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(now.UnixMilli()))
	if seq >= 0 {
		dst = protowire.AppendTag(dst, fPayloadSeq, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(seq))
	}
	return dst
}

// appendBytesField appends a length-delimited field.
func appendBytesField(dst []byte, n protowire.Number, b []byte) []byte {
	dst = protowire.AppendTag(dst, n, protowire.BytesType)
	return protowire.AppendBytes(dst, b)
}

// appendMetric appends the body of a Payload.Metric: name (births), alias (when not 0),
// timestamp (when t is not zero), datatype, is_historical, the stale Quality property, value.
func appendMetric(dst []byte, name string, alias uint64, t time.Time, dt sparkplugb.DataType, hist, stale bool, v value) []byte {
	if name != "" {
		dst = protowire.AppendTag(dst, fName, protowire.BytesType)
		dst = protowire.AppendString(dst, name)
	}
	if alias != 0 {
		dst = protowire.AppendTag(dst, fAlias, protowire.VarintType)
		dst = protowire.AppendVarint(dst, alias)
	}
	if !t.IsZero() {
		dst = protowire.AppendTag(dst, fTime, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(t.UnixMilli()))
	}
	dst = protowire.AppendTag(dst, fDatatype, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(dt))
	if hist {
		dst = protowire.AppendTag(dst, fHistorical, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	if stale {
		dst = appendBytesField(dst, fProperties, qualityProperty)
	}
	switch dt {
	case sparkplugb.DataType_Int64, sparkplugb.DataType_UInt64:
		dst = protowire.AppendTag(dst, fLong, protowire.VarintType)
		dst = protowire.AppendVarint(dst, v.bits)
	case sparkplugb.DataType_Double:
		dst = protowire.AppendTag(dst, fDouble, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, v.bits)
	case sparkplugb.DataType_Boolean:
		dst = protowire.AppendTag(dst, fBool, protowire.VarintType)
		dst = protowire.AppendVarint(dst, protowire.EncodeBool(v.bits != 0))
	case sparkplugb.DataType_String:
		dst = protowire.AppendTag(dst, fString, protowire.BytesType)
		dst = protowire.AppendString(dst, v.s)
	}
	return dst
}
