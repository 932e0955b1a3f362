// Package packaging holds what the .deb and .rpm packages are made of: the nfpm configuration
// (nfpm.yaml), the systemd unit (tagpipe.service), the default configuration (tagpipe.conf),
// the maintainer scripts and the man page (tagpipe.1). The root Makefile builds the packages
// (make deb rpm); the tests here build them, look inside them, install the .deb and run it.
// README.md is the operator's guide.
package packaging
