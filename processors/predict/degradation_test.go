package predict

import (
	"testing"
	"time"

	"github.com/tagpipe/tagpipe/internal/testkit/seriestest"
	"github.com/tagpipe/tagpipe/models"
)

// errorSum is the sum of a health metric's cumulative error counters.
func errorSum(m *models.Metric) (n uint64) {
	for _, f := range m.Fields {
		if len(f.Key) > 7 && f.Key[:7] == "errors_" {
			n += f.UintV()
		}
	}
	return n
}

// TestRecordedDegradation replays testdata/degradation.lp: a real Modbus exchange with
// Debian's pymodbus server through a link that is healthy for 30 s, then slows down with growing
// jitter for 25 s, then answers nothing and finally refuses connections (see testdata/record).
// With the default settings (window 20, 80 ms, 15 ms/s), disconnect_predicted must turn true
// before the first failed request, and by a margin worth an alarm; and not once while the link
// is healthy.
func TestRecordedDegradation(t *testing.T) {
	ms := seriestest.ReadLP(t, "testdata/degradation.lp")
	p := seriestest.Load[*Predict](t, "[[processors.predict]]\n")
	start := ms[0].Time
	var firstPrediction, firstFailure time.Time
	var riskBefore float64
	for i, m := range ms {
		before := errorSum(m)
		p.Apply(m)
		pred, hasPred := m.Field(fieldPredicted)
		risk, _ := m.Field(fieldRisk)
		failed := i > 0 && before > errorSum(ms[i-1])
		if failed && firstFailure.IsZero() {
			firstFailure = m.Time
		}
		if !hasPred {
			if i >= 19 {
				t.Fatalf("metric %d (window full): no %s", i, fieldPredicted)
			}
			continue
		}
		if m.Time.Sub(start) < 30*time.Second && (pred.BoolV() || risk.FloatV() > 0.1) {
			t.Errorf("at %v, while the link was healthy: predicted %v, risk %.2f (want false, ≤ 0.1)",
				m.Time.Sub(start), pred.BoolV(), risk.FloatV())
		}
		if pred.BoolV() && firstPrediction.IsZero() {
			firstPrediction = m.Time
			riskBefore = risk.FloatV()
			sd, _ := m.Field(fieldStddev)
			slope, _ := m.Field(fieldSlope)
			t.Logf("first prediction at %v: rtt %.1f ms, stddev %.1f ms, slope %.1f ms/s", m.Time.Sub(start),
				m.Fields[0].FloatV(), sd.FloatV(), slope.FloatV())
		}
		if !firstFailure.IsZero() && !pred.BoolV() {
			t.Errorf("at %v, after the first failure: not predicted", m.Time.Sub(start))
		}
	}
	if firstFailure.IsZero() {
		t.Fatal("the recording holds no failed request")
	}
	if firstPrediction.IsZero() {
		t.Fatal("no disconnect was predicted")
	}
	lead := firstFailure.Sub(firstPrediction)
	t.Logf("first failure at %v: predicted %v before", firstFailure.Sub(start), lead)
	if lead < 5*time.Second {
		t.Errorf("prediction %v before the first failure, want at least 5 s", lead)
	}
	if riskBefore != 1 {
		t.Errorf("disconnect_risk %v when first predicted, want 1", riskBefore)
	}
}
