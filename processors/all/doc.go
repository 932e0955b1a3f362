// Package all imports every processor plugin so that it registers itself.
package all
