package agent

import (
	"sync"

	"github.com/tagpipe/tagpipe/models"
)

// pipeline carries metrics from the inputs through the processors to the outputs:
//
//	inputs ──*Metric──▶ batcher ──[]*Metric──▶ processor 1 ──▶ … ──▶ fan-out ──▶ output buffers
//
// Inputs send single metrics; the batcher gathers whatever is waiting (up to maxBatch) into one
// batch, so that every later stage pays one channel operation per batch, not per metric. Each
// stage runs in its own goroutine and closes its outbound channel when its inbound one closes,
// so closing the input channel drains everything downstream.
type pipeline struct {
	in      chan *models.Metric
	batches chan<- *[]*models.Metric // the batcher's output: inputs' own batches join there
	procs   []*models.RunningProcessor
	outputs []*models.RunningOutput
	done    chan struct{}
	// direct: no processors, and every output buffers in memory, so addBatch hands an input's
	// batch to the outputs on the input's goroutine (a disk buffer's Add writes to a file: it
	// must not hold up an input that polls thousands of devices on one goroutine).
	direct bool
}

const (
	maxBatch   = 512
	inCapacity = 8192
	// stageCapacity is how many batches wait between two stages. The input channel absorbs
	// bursts; deeper stage channels only added what a saturated pipeline holds in memory (64
	// batches a stage made BenchmarkPipeline's live heap 62 MiB where 4 make it 13 MiB, and
	// the garbage collector scanned it all every cycle).
	stageCapacity = 4
)

var batchPool = sync.Pool{New: func() any { b := make([]*models.Metric, 0, maxBatch); return &b }}

func getBatch() *[]*models.Metric { return batchPool.Get().(*[]*models.Metric) }

func putBatch(b *[]*models.Metric) {
	clear((*b)[:cap(*b)])
	*b = (*b)[:0]
	batchPool.Put(b)
}

func newPipeline(procs []*models.RunningProcessor, outputs []*models.RunningOutput) *pipeline {
	direct := len(procs) == 0
	for _, o := range outputs {
		if _, mem := o.Buffer.(*models.MemoryBuffer); !mem {
			direct = false
		}
	}
	return &pipeline{
		in:      make(chan *models.Metric, inCapacity),
		procs:   procs,
		outputs: outputs,
		done:    make(chan struct{}),
		direct:  direct,
	}
}

// start starts the stages; close(p.in) and <-p.done end them.
func (p *pipeline) start() {
	next := make(chan *[]*models.Metric, stageCapacity)
	p.batches = next
	go p.batch(next)
	for _, rp := range p.procs {
		out := make(chan *[]*models.Metric, stageCapacity)
		go process(rp, next, out)
		next = out
	}
	go p.fanOut(next)
}

// addBatch sends the metrics of ms (an input's BatchAccumulator.AddMetrics) past the batcher as
// one batch or more of at most maxBatch. Like a send on p.in, it must not follow close(p.in):
// the inputs are stopped first.
func (p *pipeline) addBatch(ms []*models.Metric) {
	if p.direct {
		// Nothing to run between the input and the outputs, and adding to their buffers only
		// copies pointers: the input's goroutine adds the batch itself, and wakes no stage.
		for _, o := range p.outputs {
			o.AddBatch(ms)
		}
		return
	}
	for len(ms) > 0 {
		n := min(len(ms), maxBatch)
		b := getBatch()
		*b = append(*b, ms[:n]...)
		p.batches <- b
		ms = ms[n:]
	}
}

func (p *pipeline) batch(out chan<- *[]*models.Metric) {
	defer close(out)
	for m := range p.in {
		b := getBatch()
		*b = append(*b, m)
	fill:
		for len(*b) < maxBatch {
			select {
			case m, ok := <-p.in:
				if !ok {
					break fill
				}
				*b = append(*b, m)
			default:
				break fill
			}
		}
		out <- b
	}
}

func process(rp *models.RunningProcessor, in <-chan *[]*models.Metric, out chan<- *[]*models.Metric) {
	defer close(out)
	for b := range in {
		res := rp.Apply(*b)
		// The processor's result is only valid until its next call: copy it into the batch we own.
		nb := getBatch()
		*nb = append(*nb, res...)
		putBatch(b)
		if len(*nb) == 0 {
			putBatch(nb)
			continue
		}
		out <- nb
	}
}

func (p *pipeline) fanOut(in <-chan *[]*models.Metric) {
	defer close(p.done)
	for b := range in {
		for _, o := range p.outputs {
			o.AddBatch(*b)
		}
		putBatch(b)
	}
}
