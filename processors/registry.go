// Package processors is the registry of processors plugins: each plugin's package registers itself by name
// in init(); processors/all imports every plugin.
package processors

import "github.com/tagpipe/tagpipe/models"

// Creator returns a new instance of a plugin with its defaults set.
type Creator = func() models.Processor

// Registry maps plugin names to their creators.
var Registry = models.Registry[models.Processor]{}

// Add registers a plugin; a second plugin with the same name panics (a build mistake).
func Add(name string, c Creator) { Registry.Add("processors", name, c) }

// Names returns the registered plugin names, sorted.
func Names() []string { return Registry.Names() }
