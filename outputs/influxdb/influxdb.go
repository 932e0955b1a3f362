// Package influxdb holds two outputs on one HTTP write path: outputs.influxdb writes to
// InfluxDB 1.x's /write (database, retention policy, user and password) and
// outputs.influxdb_v2 to /api/v2/write (organization, bucket, token). Both send line
// protocol, gzip'd if asked, fail over between URLs, honour Retry-After, split on 413 and drop
// only the lines a 400 names; see writer for how each answer is handled.
package influxdb

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/models"
	"github.com/tagpipe/tagpipe/outputs"
)

//go:embed sample.conf
var sampleConfig string

// InfluxDB writes to InfluxDB 1.x (or anything that speaks its /write: VictoriaMetrics, a
// relay).
type InfluxDB struct {
	HTTPOptions
	Database        string `toml:"database"`
	RetentionPolicy string `toml:"retention_policy"`
	// WriteConsistency is "any", "one", "quorum" or "all" (InfluxDB Enterprise clusters).
	WriteConsistency     string        `toml:"write_consistency"`
	SkipDatabaseCreation bool          `toml:"skip_database_creation"`
	Username             string        `toml:"username"`
	Password             config.Secret `toml:"password"`
	Log                  *slog.Logger  `toml:"-"`

	query string
}

func init() {
	outputs.Add("influxdb", func() models.Output {
		return &InfluxDB{HTTPOptions: defaultHTTP(), Database: "tagpipe"}
	})
}

func defaultHTTP() HTTPOptions {
	return HTTPOptions{
		URLs:            []string{"http://127.0.0.1:8086"},
		Timeout:         config.Duration(5 * time.Second),
		ContentEncoding: "gzip",
	}
}

// SampleConfig implements models.Output.
func (*InfluxDB) SampleConfig() string { return sampleConfig }

// Init implements models.Initializer.
func (o *InfluxDB) Init() error {
	if err := o.check(); err != nil {
		return err
	}
	if o.Database == "" {
		return config.KeyErrorf("database", "give the database to write to")
	}
	switch o.WriteConsistency {
	case "", "any", "one", "quorum", "all":
	default:
		return config.KeyErrorf("write_consistency", "%q: must be \"any\", \"one\", \"quorum\" or \"all\"", o.WriteConsistency)
	}
	if o.Password != "" && o.Username == "" {
		return config.KeyErrorf("password", "give the user name in username too")
	}
	q := url.Values{"db": {o.Database}}
	if o.RetentionPolicy != "" {
		q.Set("rp", o.RetentionPolicy)
	}
	if o.WriteConsistency != "" {
		q.Set("consistency", o.WriteConsistency)
	}
	q.Set("precision", precisions[o.Precision.D()][0])
	o.query = q.Encode()
	return nil
}

// Connect sets up the HTTP client and creates the database (unless skip_database_creation)
// on every URL. A database that cannot be created is logged, not fatal: the server may be
// down now, or the user may lack the right; a write answered "database not found" tries again.
func (o *InfluxDB) Connect(ctx context.Context) error {
	auth := "" // not kept in the plugin: an unexported field would print unredacted
	if o.Username != "" {
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(o.Username+":"+o.Password.Reveal()))
	}
	if err := o.w.setup(o.transport("influxdb", "write", auth), o.Log); err != nil {
		return err
	}
	if o.SkipDatabaseCreation {
		return nil
	}
	o.w.notFound = func(ctx context.Context, e *endpoint, msg string) bool {
		return strings.Contains(msg, "database not found") && o.createDatabase(ctx, e) == nil
	}
	for _, e := range o.w.eps {
		if err := o.createDatabase(ctx, e); err != nil {
			o.w.log.Warn("database not created; writes will show whether it exists", "url", e.label, "database", o.Database, "error", err)
		}
	}
	return nil
}

// createDatabase runs CREATE DATABASE on e (a no-op when it exists).
func (o *InfluxDB) createDatabase(ctx context.Context, e *endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, o.w.timeout)
	defer cancel()
	q := "CREATE DATABASE " + quoteIdent(o.Database)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base.JoinPath("query").String(),
		strings.NewReader(url.Values{"q": {q}}.Encode()))
	if err != nil {
		return err
	}
	req.Header = o.w.header.Clone()
	req.Header.Del("Content-Encoding")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := o.w.client.Do(req)
	if err != nil {
		return unwrapURLError(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, errorMessage(body))
	}
	var r struct {
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	if json.Unmarshal(body, &r) == nil {
		for _, res := range r.Results {
			if res.Error != "" {
				return fmt.Errorf("%s: %s", q, res.Error)
			}
		}
	}
	o.w.log.Debug("database created", "url", e.label, "database", o.Database)
	return nil
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Write implements models.Output.
func (o *InfluxDB) Write(ctx context.Context, batch []*models.Metric) error {
	o.w.begin()
	return o.w.finish(o.w.writeGroup(ctx, batch, o.w.indices(len(batch)), o.query))
}

// Close implements models.Output.
func (o *InfluxDB) Close() error {
	o.w.close()
	return nil
}
