// Package kafkasasl holds the SASL keys of the tables that talk to Kafka (sasl_mechanism,
// sasl_username, sasl_password), so that they are spelled and checked the same way in
// [[outputs.kafka]] (segmentio/kafka-go) and [cluster] (franz-go). Embed Config in the plugin's
// config struct (kafkasasl.SASL), call Check from Init, and ask for the mechanism of the client in use.
package kafkasasl

import (
	"errors"
	"fmt"
	"strings"

	franzsasl "github.com/twmb/franz-go/pkg/sasl"
	franzplain "github.com/twmb/franz-go/pkg/sasl/plain"
	franzscram "github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/tagpipe/tagpipe/internal/confval"
)

// SASL holds the SASL options. The field names are prefixed so that they read well where the
// struct is embedded (k.SASLMechanism).
type SASL struct {
	// SASLMechanism is "", "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
	SASLMechanism string         `toml:"sasl_mechanism"`
	SASLUsername  string         `toml:"sasl_username"`
	SASLPassword  confval.Secret `toml:"sasl_password"`
}

// Error is a SASL option that cannot be used; Key names it ("sasl_mechanism"). Its ConfigKey
// method lets the config loader report its FILE:LINE.
type Error = confval.KeyError

// Check returns an *Error when the options do not make a login: an unknown mechanism, a
// mechanism without a user name, a user name without a mechanism.
func (c *SASL) Check() error {
	switch c.mechanism() {
	case "":
		if c.SASLUsername != "" {
			return &Error{Key: "sasl_username", Err: errors.New("give sasl_mechanism too (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")}
		}
		return nil
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return &Error{Key: "sasl_mechanism", Err: fmt.Errorf("%q: must be \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"", c.SASLMechanism)}
	}
	if c.SASLUsername == "" {
		return &Error{Key: "sasl_mechanism", Err: errors.New("give the user name in sasl_username too")}
	}
	return nil
}

func (c *SASL) mechanism() string { return strings.ToUpper(c.SASLMechanism) }

// KafkaGo returns the mechanism for segmentio/kafka-go, nil when SASL is off.
func (c *SASL) KafkaGo() (sasl.Mechanism, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	switch m := c.mechanism(); m {
	case "PLAIN":
		return plain.Mechanism{Username: c.SASLUsername, Password: c.SASLPassword.Reveal()}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if strings.HasSuffix(m, "512") {
			algo = scram.SHA512
		}
		mech, err := scram.Mechanism(algo, c.SASLUsername, c.SASLPassword.Reveal())
		if err != nil {
			return nil, &Error{Key: "sasl_password", Err: err}
		}
		return mech, nil
	}
	return nil, nil
}

// Franz returns the mechanism for franz-go, nil when SASL is off.
func (c *SASL) Franz() (franzsasl.Mechanism, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	switch m := c.mechanism(); m {
	case "PLAIN":
		return franzplain.Auth{User: c.SASLUsername, Pass: c.SASLPassword.Reveal()}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return franzscram.Auth{User: c.SASLUsername, Pass: c.SASLPassword.Reveal()}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return franzscram.Auth{User: c.SASLUsername, Pass: c.SASLPassword.Reveal()}.AsSha512Mechanism(), nil
	}
	return nil, nil
}
