package diskbuffer

import (
	"slices"
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/models"
)

func TestDecodeRejectsGarbage(t *testing.T) {
	var d Decoder
	good := AppendMetric(nil, models.New("m", []models.Tag{{Key: "a", Value: "b"}}, []models.Field{models.Int("v", 1), models.String("s", "x")}, time.Unix(1, 0)))
	for i := range good {
		if _, _, err := d.Decode(good[:i]); err == nil {
			t.Fatalf("a metric cut at %d of %d bytes decoded", i, len(good))
		}
	}
	bad := slices.Clone(good)
	bad[len(bad)-5] = 0x7f // an unknown value type... or a changed byte
	d.Decode(bad)          // must not panic
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendMetric(nil, models.New("m", []models.Tag{{Key: "a", Value: "b"}}, []models.Field{models.Float("v", 1.5), models.String("s", "x")}, time.Unix(1, 0))))
	f.Add([]byte{1, 'm', 0, 1, 1, 'v', 9, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Decoder
		m, rest, err := d.Decode(data)
		if err != nil {
			return
		}
		if len(rest) > len(data) {
			t.Fatal("rest longer than the input")
		}
		// Whatever decodes encodes to the bytes it came from.
		again := AppendMetric(nil, m)
		if string(again) != string(data[:len(data)-len(rest)]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, data[:len(data)-len(rest)])
		}
	})
}
