package importer

import (
	"fmt"
	"strings"
)

// outputKeys are the keys an output has under the same name and meaning in Telegraf and tagpipe.
var outputKeys = map[string][]string{
	"influxdb": {"urls", "database", "retention_policy", "write_consistency", "username", "password",
		"content_encoding", "influx_uint_support", "skip_database_creation"},
	"influxdb_v2": {"urls", "token", "organization", "bucket", "bucket_tag", "exclude_bucket_tag",
		"content_encoding", "influx_uint_support"},
	"kafka": {"brokers", "topic", "topic_tag", "exclude_topic_tag", "routing_key", "max_retry", "client_id",
		"sasl_mechanism", "sasl_username", "sasl_password", "data_format"},
	"file": {"files", "data_format", "rotation_max_archives"},
}

// telegrafCodecs are Telegraf's compression_codec numbers.
var telegrafCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// output imports outputs.influxdb, influxdb_v2, kafka and file.
func (im *telegrafImport) output(order int, name string, t *table) {
	var list []kv
	for _, k := range outputKeys[name] {
		v, ok := t.get(k)
		if !ok {
			continue
		}
		switch x := v.(type) {
		case []any:
			t.used[k] = false
			if s, ok := t.strings(k); ok {
				list = append(list, kv{key: k, val: s})
			}
			continue
		case string, bool, int64:
			if k == "data_format" && x != "influx" && x != "json" {
				t.report(k, Unmapped, "%q: tagpipe writes influx (line protocol) or json; left out (influx)", x)
				continue
			}
			list = append(list, kv{key: k, val: x})
		default:
			t.wrong(k, v, "a string, number or boolean")
		}
	}
	for _, k := range []string{"timeout"} {
		if d, ok := t.duration(k); ok {
			list = append(list, kv{key: k, val: d})
		}
	}
	if h, ok := t.stringMap("http_headers"); ok {
		list = append(list, kv{key: "http_headers", val: h})
	}
	// TLS: the same keys in both; Telegraf's enable_tls is tagpipe's tls_enable.
	for _, k := range []string{"tls_ca", "tls_cert", "tls_key", "tls_server_name"} {
		if s, ok := t.str(k); ok {
			list = append(list, kv{key: k, val: s})
		}
	}
	if b, ok := t.boolean("insecure_skip_verify"); ok {
		list = append(list, kv{key: "insecure_skip_verify", val: b})
	}
	switch name {
	case "influxdb":
		t.skip("database_tag", Unmapped, "tagpipe writes every metric to database")
		t.skip("exclude_database_tag", Unmapped, "tagpipe writes every metric to database")
		t.skip("retention_policy_tag", Unmapped, "tagpipe writes every metric with retention_policy")
		t.skip("exclude_retention_policy_tag", Unmapped, "tagpipe writes every metric with retention_policy")
		t.skip("udp_payload", Unmapped, "tagpipe writes over HTTP only")
	case "kafka":
		if n, ok := t.integer("compression_codec"); ok {
			if n < 0 || int(n) >= len(telegrafCodecs) {
				t.report("compression_codec", Bad, "%d: Telegraf's codes are 0 to 4; left out", n)
			} else {
				list = append(list, kv{key: "compression", val: telegrafCodecs[n]})
			}
		}
		if s, ok := t.str("routing_tag"); ok && s != "" {
			list = append(list, kv{key: "routing_tags", val: []string{s}})
		}
		for i, x := range list {
			if x.key == "routing_key" && x.val == "random" {
				list = append(list[:i], list[i+1:]...)
				t.report("routing_key", Approximate, "\"random\": tagpipe sends a metric without routing tags with no key, which spreads such metrics over the partitions")
				break
			}
		}
		if v, ok := t.get("required_acks"); ok {
			n, isInt := v.(int64)
			switch {
			case !isInt || n < -1 || n > 1:
				t.wrong("required_acks", v, "-1, 0 or 1")
			case n == -1:
				list = append(list, kv{key: "required_acks", val: "all"})
			default:
				list = append(list, kv{key: "required_acks", val: n})
			}
		}
		if n, ok := t.integer("max_message_bytes"); ok {
			list = append(list, kv{key: "max_message_bytes", val: n})
		}
		if b, ok := t.boolean("enable_tls"); ok {
			list = append(list, kv{key: "tls_enable", val: b})
		}
		if ts := t.sub("topic_suffix"); ts != nil {
			var s []string
			if m, ok := ts.str("method"); ok {
				s = append(s, fmt.Sprintf("method = %q", m))
			}
			if keys, ok := ts.strings("keys"); ok {
				s = append(s, "keys = "+tomlValue(keys))
			}
			if sep, ok := ts.str("separator"); ok {
				s = append(s, fmt.Sprintf("separator = %q", sep))
			}
			ts.rest()
			list = append(list, kv{key: "topic_suffix", val: raw("{ " + strings.Join(s, ", ") + " }")})
		}
		t.skip("version", Note, "tagpipe speaks the versions kafka-go negotiates with the brokers")
		t.skip("idempotent_writes", Unmapped, "tagpipe keeps a batch until the brokers acknowledge it; a retry may write it twice")
		t.skip("sasl_version", Unmapped, "tagpipe negotiates the SASL handshake version")
		for _, k := range []string{"metadata_full", "metadata_retry_max", "metadata_retry_type", "metadata_retry_backoff", "metadata_retry_max_duration"} {
			t.skip(k, Unmapped, "tagpipe uses kafka-go's metadata handling")
		}
	case "file":
		if v, ok := t.get("rotation_max_size"); ok {
			list = append(list, kv{key: "rotation_max_size", val: v})
		}
		t.skip("rotation_interval", Unmapped, "tagpipe rotates by size only")
		t.skip("use_batch_format", Unmapped, "tagpipe writes one metric per line")
	}
	for _, k := range []string{"influx_sort_fields", "influx_max_line_bytes", "json_timestamp_units", "json_timestamp_format"} {
		t.skip(k, Approximate, "tagpipe's serializer has no such option")
	}
	// The generic keys of an output.
	if s, ok := t.str("alias"); ok {
		list = append(list, kv{key: "alias", val: s})
	}
	list = append(list, filters(t)...)
	for _, k := range []string{"metric_batch_size", "metric_buffer_limit"} {
		if n, ok := t.integer(k); ok {
			list = append(list, kv{key: k, val: n})
		}
	}
	for _, k := range []string{"flush_interval", "flush_jitter"} {
		if d, ok := t.duration(k); ok {
			list = append(list, kv{key: k, val: d})
		}
	}
	if s, ok := t.str("buffer_strategy"); ok {
		list = append(list, kv{key: "buffer_strategy", val: s})
	}
	t.skip("name_override", Unmapped, "a tagpipe output writes the metrics' own names")
	t.skip("log_level", Unmapped, "tagpipe sets the log level for the whole agent")
	t.skip("user_agent", Unmapped, "tagpipe sends its own User-Agent")
	t.skip("http_proxy", Unmapped, "tagpipe has no proxy setting")
	t.rest()
	from := fmt.Sprintf("%s:%d", t.src.file, t.line)
	im.parts = append(im.parts, part{order: order, write: func(e *emitter) {
		e.comment(0, "From [[outputs."+name+"]] at "+from+".")
		e.header(0, "[[outputs."+name+"]]")
		e.kvs(1, list)
	}})
}
