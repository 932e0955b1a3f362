package config

import (
	_ "embed"
	"strings"

	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/outputs"
	"github.com/tagpipe/tagpipe/processors"
)

//go:embed agent.conf
var agentSample string

// Sample returns the full sample configuration: the [agent] table and the sample of every
// registered plugin (inputs, processors, outputs, each sorted by name). It is valid TOML that
// loads back.
func Sample() string {
	var b strings.Builder
	b.WriteString(agentSample)
	section := func(title string, names []string, sample func(string) string) {
		b.WriteString("\n\n###############################################################################\n")
		b.WriteString("#  " + title + "\n")
		b.WriteString("###############################################################################\n")
		for _, n := range names {
			b.WriteString("\n")
			b.WriteString(strings.TrimRight(sample(n), "\n"))
			b.WriteString("\n")
		}
	}
	section("INPUTS", inputs.Names(), func(n string) string { return inputs.Registry[n]().SampleConfig() })
	section("PROCESSORS", processors.Names(), func(n string) string { return processors.Registry[n]().SampleConfig() })
	section("OUTPUTS", outputs.Names(), func(n string) string { return outputs.Registry[n]().SampleConfig() })
	return b.String()
}
