// Package lptest reads line protocol back into metrics for tests, with the line-protocol
// library's own decoder: what tagpipe writes is checked by code it did not write.
package lptest

import (
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/tagpipe/tagpipe/models"
)

// Parse decodes data (timestamps in units of precision) and fails the test on any error.
func Parse(t testing.TB, data []byte, precision lineprotocol.Precision) []*models.Metric {
	t.Helper()
	dec := lineprotocol.NewDecoderWithBytes(data)
	var ms []*models.Metric
	for dec.Next() {
		name, err := dec.Measurement()
		if err != nil {
			t.Fatalf("line protocol: %v\n%s", err, data)
		}
		var tags []models.Tag
		var fields []models.Field
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				t.Fatalf("line protocol: %v\n%s", err, data)
			}
			if k == nil {
				break
			}
			tags = append(tags, models.Tag{Key: string(k), Value: string(v)})
		}
		for {
			k, v, err := dec.NextField()
			if err != nil {
				t.Fatalf("line protocol: %v\n%s", err, data)
			}
			if k == nil {
				break
			}
			f, ok := models.FieldOf(string(k), v.Interface())
			if !ok {
				t.Fatalf("line protocol: field %s=%v", k, v)
			}
			fields = append(fields, f)
		}
		ts, err := dec.Time(precision, time.Time{})
		if err != nil {
			t.Fatalf("line protocol: %v\n%s", err, data)
		}
		ms = append(ms, models.New(string(name), tags, fields, ts)) // sorts the tags
	}
	return ms
}
