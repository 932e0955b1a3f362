// Package all imports every input plugin so that it registers itself.
package all
