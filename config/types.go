package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/internal/confval"
)

// maxSeconds is the longest duration in whole seconds: a number of seconds above it would
// overflow (18446744074 became 0.29 s).
const maxSeconds = int64(math.MaxInt64 / time.Second)

// Duration is a time.Duration read from TOML as a string ("1m30s", "250ms") or a number of
// seconds (10, 0.5).
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		s := strings.TrimSpace(x)
		if s == "" || s == "0" {
			*d = 0
			return nil
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (write it like \"10s\", \"1m30s\", \"250ms\")", x)
		}
		if dur < 0 {
			return fmt.Errorf("%q: a duration cannot be negative", x)
		}
		*d = Duration(dur)
	case int64:
		if x < 0 {
			return fmt.Errorf("%d: a duration cannot be negative", x)
		}
		if x > maxSeconds {
			return fmt.Errorf("%d seconds is longer than a duration can be (%d seconds, 292 years)", x, maxSeconds)
		}
		*d = Duration(time.Duration(x) * time.Second)
	case float64:
		if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%v: not a valid number of seconds", x)
		}
		if x >= float64(maxSeconds) {
			return fmt.Errorf("%v seconds is longer than a duration can be (%d seconds, 292 years)", x, maxSeconds)
		}
		*d = Duration(x * float64(time.Second))
	default:
		return fmt.Errorf("%T: a duration is a string like \"10s\" or a number of seconds", v)
	}
	return nil
}

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Size is a number of bytes read from TOML as a string ("64MiB", "10MB", "512KiB") or a number.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{ // longest suffixes first
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000}, {"tb", 1000 * 1000 * 1000 * 1000},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// UnmarshalTOML implements toml.Unmarshaler.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("%d: a size cannot be negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		n, err := ParseSize(x)
		if err != nil {
			return err
		}
		*s = Size(n)
		return nil
	}
	return fmt.Errorf("%T: a size is a string like \"64MiB\" or a number of bytes", v)
}

// ParseSize parses "64MiB", "10MB", "1.5GiB" or "4096".
func ParseSize(str string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(str))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || f*float64(mult) > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size (write it like \"64MiB\", \"10MB\" or a number of bytes)", str)
	}
	return int64(f * float64(mult)), nil
}

// Secret is a string that never shows itself: printing, logging or formatting it gives
// "<redacted>". Use Reveal where the value is really needed (a login). It lives in
// internal/confval so that libraries the config uses (internal/kafkasasl) can hold one too.
type Secret = confval.Secret

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
