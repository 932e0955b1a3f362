// Package outputs is the registry of outputs plugins: each plugin's package registers itself by name
// in init(); outputs/all imports every plugin.
package outputs

import "github.com/tagpipe/tagpipe/models"

// Creator returns a new instance of a plugin with its defaults set.
type Creator = func() models.Output

// Registry maps plugin names to their creators.
var Registry = models.Registry[models.Output]{}

// Add registers a plugin; a second plugin with the same name panics (a build mistake).
func Add(name string, c Creator) { Registry.Add("outputs", name, c) }

// Names returns the registered plugin names, sorted.
func Names() []string { return Registry.Names() }
