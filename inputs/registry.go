// Package inputs is the registry of inputs plugins: each plugin's package registers itself by name
// in init(); inputs/all imports every plugin.
package inputs

import "github.com/tagpipe/tagpipe/models"

// Creator returns a new instance of a plugin with its defaults set.
type Creator = func() models.Input

// Registry maps plugin names to their creators.
var Registry = models.Registry[models.Input]{}

// Add registers a plugin; a second plugin with the same name panics (a build mistake).
func Add(name string, c Creator) { Registry.Add("inputs", name, c) }

// Names returns the registered plugin names, sorted.
func Names() []string { return Registry.Names() }
