package opcua

import "github.com/tagpipe/tagpipe/models"

// counters are the input's internal_opcua stats (reported by inputs.internal), tagged with the
// source and endpoint. Each bad input (an unknown node, a type the config did not expect, a
// rejected certificate, a wrong password) counts here besides its log line.
type counters struct {
	set *models.Stats

	connects          *models.Stat // sessions established
	connectErrors     *models.Stat // attempts that failed, whatever the reason
	disconnects       *models.Stat // sessions lost (the server went away, a probe failed)
	authErrors        *models.Stat // the server refused the identity (wrong password, ...)
	certificateErrors *models.Stat // the server's certificate was not trusted, or it refused ours
	values            *models.Stat // values turned into metrics
	droppedQuality    *models.Stat // bad or uncertain values dropped as configured
	droppedDuplicates *models.Stat // values a re-created subscription repeated
	nodeErrors        *models.Stat // unknown nodes, namespaces not on the server, refused items
	typeErrors        *models.Stat // values of a type the config did not expect
	operationSplits   *models.Stat // requests split after BadTooManyOperations
}

func newCounters(source, endpoint string) *counters {
	s := models.RegisterStats("internal_opcua", map[string]string{"source": source, "endpoint": endpoint})
	return &counters{
		set:               s,
		connects:          s.Get("connects"),
		connectErrors:     s.Get("connect_errors"),
		disconnects:       s.Get("disconnects"),
		authErrors:        s.Get("auth_errors"),
		certificateErrors: s.Get("certificate_errors"),
		values:            s.Get("values"),
		droppedQuality:    s.Get("dropped_quality"),
		droppedDuplicates: s.Get("dropped_duplicates"),
		nodeErrors:        s.Get("node_errors"),
		typeErrors:        s.Get("type_errors"),
		operationSplits:   s.Get("operation_splits"),
	}
}

func (c *counters) unregister() { c.set.Unregister() }

func (c *counters) register() { c.set.Register() }
