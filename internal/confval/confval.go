// Package confval holds the configuration's types that the libraries under the config loader
// share with it (internal/tlsconfig, internal/kafkasasl cannot import config, which imports
// them): Secret, a string that never shows itself, and KeyError, an error naming its key.
// config.Secret and config.KeyError are the same types.
package confval

import (
	"log/slog"
	"strconv"
)

// Secret is a string that never shows itself: printing, logging or formatting it gives
// "<redacted>". Use Reveal where the value is really needed (a login).
type Secret string

const redacted = "<redacted>"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler, so that JSON and TOML dumps stay redacted too.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

// KeyError is a bad value of one key of a table. Key is the path below the table: "slave_id",
// "device[3].slave_id" or "device.slave_id" (the first such key). The config loader turns it
// into FILE:LINE.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// ConfigKey names the key at fault.
func (e *KeyError) ConfigKey() string { return e.Key }
