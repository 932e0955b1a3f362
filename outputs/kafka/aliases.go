package kafka

import (
	"fmt"

	"github.com/tagpipe/tagpipe/config"
)

// telegrafCodecs are the numbers Telegraf's outputs.kafka uses for compression_codec.
var telegrafCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// Aliases implements config.Aliaser: the Telegraf spellings of settings this output has under
// another name, so that a table copied from a Telegraf configuration loads.
func (*Kafka) Aliases() []config.Alias {
	return []config.Alias{
		{Old: "compression_codec", New: "compression", Convert: func(v any) (any, error) {
			n, ok := v.(int64)
			if !ok || n < 0 || int(n) >= len(telegrafCodecs) {
				return nil, fmt.Errorf("%v: Telegraf's codes are 0 (none), 1 (gzip), 2 (snappy), 3 (lz4) and 4 (zstd)", v)
			}
			return telegrafCodecs[n], nil
		}},
		{Old: "routing_tag", New: "routing_tags", Convert: func(v any) (any, error) {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%v: the name of one tag", v)
			}
			return []string{s}, nil
		}},
		{Old: "enable_tls", New: "tls_enable"},
	}
}
