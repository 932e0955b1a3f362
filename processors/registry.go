// Package processors is the registry of processors plugins: each plugin's package registers itself by name
// in init(); processors/all imports every plugin.
package processors

import (
	"sort"

	"github.com/tagpipe/tagpipe/models"
)

// Creator returns a new instance of a plugin with its defaults set.
type Creator func() models.Processor

// Registry maps plugin names to their creators. Only init functions write it.
var Registry = map[string]Creator{}

// Add registers a plugin; a second plugin with the same name panics (a build mistake).
func Add(name string, c Creator) {
	if _, dup := Registry[name]; dup {
		panic("processors: plugin registered twice: " + name)
	}
	Registry[name] = c
}

// Names returns the registered plugin names, sorted.
func Names() []string {
	names := make([]string, 0, len(Registry))
	for n := range Registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
