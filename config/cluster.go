package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/tagpipe/tagpipe/internal/kafkasasl"
	"github.com/tagpipe/tagpipe/internal/tlsconfig"
)

// Cluster is the [cluster] table: agents with the same group share one device inventory
// through a Kafka consumer group (docs/cluster.md). Without the table, Config.Cluster is nil and
// the agent polls every device itself.
type Cluster struct {
	// Brokers to bootstrap from (host:port).
	Brokers []string `toml:"brokers"`
	// Group names the agents that share the inventory, and their membership topic
	// (tagpipe.cluster.GROUP).
	Group string `toml:"group"`
	// Shards is the number of shards (partitions of the membership topic); fixed for the
	// life of the group.
	Shards int `toml:"shards"`
	// SessionTimeout is how long the group coordinator waits for a silent agent before it
	// gives its shards to the others.
	SessionTimeout Duration `toml:"session_timeout"`
	// Member is this agent's name in the group (its Kafka client id, the owner the device page
	// shows, the agent tag); default: [agent] hostname, else $HOSTNAME, else the host name.
	Member string `toml:"member"`
	// OnCoordinatorLoss is "keep" (poll the shards last assigned while Kafka is unreachable)
	// or "stop" (poll nothing until the group is rejoined).
	OnCoordinatorLoss string `toml:"on_coordinator_loss"`
	// TagMetrics adds the tag agent = Member to every metric.
	TagMetrics bool `toml:"tag_metrics"`
	// TLSEnable turns TLS on without any file (system CAs); any tls_* key turns it on too.
	TLSEnable bool `toml:"tls_enable"`
	tlsconfig.Client
	kafkasasl.SASL
}

// Shard limits: at least one, and at most as many as a rebalance carries comfortably (every
// member's assignment travels in each SyncGroup).
const (
	MinShards = 1
	MaxShards = 4096
)

// DefaultCluster returns the [cluster] defaults.
func DefaultCluster() Cluster {
	return Cluster{Shards: 64, SessionTimeout: Duration(10 * time.Second), OnCoordinatorLoss: "keep"}
}

// TLS reports whether the cluster's Kafka connections use TLS.
func (c *Cluster) TLS() bool { return c.TLSEnable || c.Client.Set() }

// groupRE: the group names the topic tagpipe.cluster.GROUP, which must be a valid topic name.
var groupRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,200}$`)

// check returns the first problem of the table, naming its key.
func (c *Cluster) check() error {
	if len(c.Brokers) == 0 {
		return KeyErrorf("brokers", "give at least one broker, e.g. \"127.0.0.1:9092\"")
	}
	for _, b := range c.Brokers {
		if i := strings.LastIndexByte(b, ':'); i <= 0 || i == len(b)-1 {
			return KeyErrorf("brokers", "%q: give host:port", b)
		}
	}
	if c.Group == "" {
		return KeyErrorf("group", "give the group's name: agents with the same group share the inventory")
	}
	if !groupRE.MatchString(c.Group) {
		return KeyErrorf("group", "%q: 1 to 200 of a-z A-Z 0-9 . _ - (it names the membership topic tagpipe.cluster.%s)", c.Group, c.Group)
	}
	if c.Shards < MinShards || c.Shards > MaxShards {
		return KeyErrorf("shards", "%d: must be %d..%d", c.Shards, MinShards, MaxShards)
	}
	if d := c.SessionTimeout.D(); d < time.Second || d > 30*time.Minute {
		return KeyErrorf("session_timeout", "%s: must be 1s..30m (brokers allow 6s..30m unless configured otherwise)", d)
	}
	switch c.OnCoordinatorLoss {
	case "keep", "stop":
	default:
		return KeyErrorf("on_coordinator_loss", "%q: must be \"keep\" (poll the shards last assigned) or \"stop\"", c.OnCoordinatorLoss)
	}
	if len(c.Member) > 200 || strings.IndexFunc(c.Member, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return KeyErrorf("member", "%q: at most 200 printable characters", c.Member)
	}
	if err := c.SASL.Check(); err != nil {
		return err
	}
	if c.TLS() {
		if _, err := c.Client.Config(); err != nil {
			return err
		}
	}
	return nil
}

// defaultMember is the member name when [cluster] member is not set.
func defaultMember(agentHostname string) string {
	if agentHostname != "" {
		return agentHostname
	}
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// cluster decodes the [cluster] table into the loader's config and checks it.
func (s *section) cluster() {
	l := s.l
	if l.cfg.Cluster == nil {
		c := DefaultCluster()
		l.cfg.Cluster = &c
	}
	s.label = "cluster"
	if !s.decodeTable("cluster", l.cfg.Cluster) {
		return
	}
	if err := l.cfg.Cluster.check(); err != nil {
		var ke keyedError
		line := s.span.start
		if errors.As(err, &ke) {
			if kl := s.sc.lookupIn(&s.span, ke.ConfigKey()); kl > 0 {
				line = kl
			}
		}
		l.fail(s.file, line, "cluster", "%v", err)
	}
}

// finishCluster resolves the member name and the agent tag once every file is read.
func (l *loader) finishCluster() {
	c := l.cfg.Cluster
	if c == nil {
		return
	}
	if c.Member == "" {
		c.Member = defaultMember(l.cfg.Agent.Hostname)
	}
	if c.Member == "" {
		l.errs = append(l.errs, &Error{File: l.cfg.Files[len(l.cfg.Files)-1], Plugin: "cluster",
			Msg: "member: the host name is unknown: give member = \"NAME\""})
		return
	}
	if c.TagMetrics {
		if _, set := l.cfg.GlobalTags["agent"]; !set {
			l.cfg.GlobalTags["agent"] = c.Member
		}
	}
}

// String names the group and member, for logs.
func (c *Cluster) String() string {
	return fmt.Sprintf("group %q member %q (%d shards)", c.Group, c.Member, c.Shards)
}
