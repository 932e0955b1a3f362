package influxdb

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

//go:embed sample_v2.conf
var sampleConfigV2 string

// InfluxDBv2 writes to InfluxDB 2.x's /api/v2/write (also served by InfluxDB 1.8+ with
// bucket = "db/rp" and token = "user:password", and by VictoriaMetrics).
type InfluxDBv2 struct {
	HTTPOptions
	Token        config.Secret `toml:"token"`
	Organization string        `toml:"organization"`
	// Bucket is where metrics go, and the fallback for metrics without BucketTag.
	Bucket string `toml:"bucket"`
	// BucketTag names a tag whose value is the bucket of the metric.
	BucketTag string `toml:"bucket_tag"`
	// ExcludeBucketTag leaves BucketTag out of the written lines.
	ExcludeBucketTag bool         `toml:"exclude_bucket_tag"`
	Log              *slog.Logger `toml:"-"`

	query   string
	groups  []bucketGroup
	groupOf map[string]int    // bucket → index in groups, for the write in progress
	queries map[string]string // bucket → query
}

type bucketGroup struct {
	bucket string
	idx    []int
}

// maxBucketQueries bounds the cache of query strings per bucket (bucket_tag values).
const maxBucketQueries = 1000

func init() {
	outputs.Add("influxdb_v2", func() models.Output {
		h := defaultHTTP()
		h.UintSupport = true // InfluxDB 2.x has unsigned fields
		return &InfluxDBv2{HTTPOptions: h}
	})
}

// SampleConfig implements models.Output.
func (*InfluxDBv2) SampleConfig() string { return sampleConfigV2 }

// Init implements models.Initializer.
func (o *InfluxDBv2) Init() error {
	if err := o.check(); err != nil {
		return err
	}
	if o.Bucket == "" {
		return config.KeyErrorf("bucket", "give the bucket to write to (with bucket_tag: for metrics without that tag)")
	}
	if o.ExcludeBucketTag && o.BucketTag == "" {
		return config.KeyErrorf("exclude_bucket_tag", "needs bucket_tag")
	}
	o.query = o.queryFor(o.Bucket)
	return nil
}

func (o *InfluxDBv2) queryFor(bucket string) string {
	q := url.Values{"bucket": {bucket}, "precision": {precisions[o.Precision.D()][1]}}
	if o.Organization != "" {
		q.Set("org", o.Organization)
	}
	return q.Encode()
}

// Connect implements models.Output: it sets up the HTTP client; nothing is dialled yet.
func (o *InfluxDBv2) Connect(context.Context) error {
	auth := ""
	if o.Token != "" {
		auth = "Token " + o.Token.Reveal()
	}
	opts := o.transport("influxdb_v2", "api/v2/write", auth)
	if o.ExcludeBucketTag {
		opts.dropTag = o.BucketTag
	}
	return o.w.setup(opts, o.Log)
}

// Write implements models.Output. With bucket_tag, the batch is written in one request (or
// more) per bucket; a bucket that fails keeps its metrics without holding back the others.
func (o *InfluxDBv2) Write(ctx context.Context, batch []*models.Metric) error {
	w := o.w
	w.begin()
	if o.BucketTag == "" {
		return w.finish(w.writeGroup(ctx, batch, w.indices(len(batch)), o.query))
	}
	if o.groupOf == nil {
		o.groupOf, o.queries = map[string]int{}, map[string]string{}
	}
	clear(o.groupOf)
	o.groups = o.groups[:0]
	for i, m := range batch {
		b := o.Bucket
		if v, ok := m.Tag(o.BucketTag); ok && v != "" {
			b = v
		}
		g, ok := o.groupOf[b]
		if !ok {
			g = len(o.groups)
			o.groupOf[b] = g
			if g < cap(o.groups) {
				o.groups = o.groups[:g+1]
				o.groups[g].bucket, o.groups[g].idx = b, o.groups[g].idx[:0]
			} else {
				o.groups = append(o.groups, bucketGroup{bucket: b})
			}
		}
		o.groups[g].idx = append(o.groups[g].idx, i)
	}
	var errs []error
	for _, g := range o.groups {
		q, ok := o.queries[g.bucket]
		if !ok {
			if len(o.queries) >= maxBucketQueries {
				clear(o.queries)
			}
			q = o.queryFor(g.bucket)
			o.queries[g.bucket] = q
		}
		if err := w.writeGroup(ctx, batch, g.idx, q); err != nil {
			errs = append(errs, fmt.Errorf("bucket %q: %w", g.bucket, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return w.finish(errors.Join(errs...))
}

// Close implements models.Output.
func (o *InfluxDBv2) Close() error {
	o.w.close()
	return nil
}
