// Package all imports every output plugin so that it registers itself.
package all
