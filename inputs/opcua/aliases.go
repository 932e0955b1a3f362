package opcua

import "github.com/tagpipe/tagpipe/config"

// Aliases implements config.Aliaser: Telegraf's opcua_listener calls the subscription's
// publishing interval subscription_interval.
func (*OPCUA) Aliases() []config.Alias {
	return []config.Alias{{Old: "subscription_interval", New: "publishing_interval"}}
}
