package config

import (
	"github.com/tagpipe/tagpipe/inputs"
	"github.com/tagpipe/tagpipe/outputs"
	"github.com/tagpipe/tagpipe/processors"
)

// newPlugin returns a new instance of a registered plugin, or nil.
func newPlugin(kind, name string) any {
	switch kind {
	case "inputs":
		if c, ok := inputs.Registry[name]; ok {
			return c()
		}
	case "processors":
		if c, ok := processors.Registry[name]; ok {
			return c()
		}
	case "outputs":
		if c, ok := outputs.Registry[name]; ok {
			return c()
		}
	}
	return nil
}

func knownNames(kind string) []string {
	switch kind {
	case "inputs":
		return inputs.Names()
	case "processors":
		return processors.Names()
	case "outputs":
		return outputs.Names()
	}
	return nil
}
