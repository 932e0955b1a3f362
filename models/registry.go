package models

import (
	"maps"
	"slices"
)

// Registry maps plugin names to their constructors. The inputs, processors and outputs packages
// each keep one; plugins add themselves from init, so it is only written before main runs.
type Registry[T any] map[string]func() T

// Add registers a plugin; a second plugin with the same name panics (a build mistake).
func (r Registry[T]) Add(kind, name string, c func() T) {
	if _, dup := r[name]; dup {
		panic(kind + ": plugin registered twice: " + name)
	}
	r[name] = c
}

// Names returns the registered plugin names, sorted.
func (r Registry[T]) Names() []string { return slices.Sorted(maps.Keys(r)) }
