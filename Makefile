# tagpipe's make targets. `go test ./...` is the whole suite; make only adds packaging and the
# long-running checks.
#
#   make build      static binaries for linux amd64 and arm64 in dist/linux_ARCH/tagpipe
#   make deb rpm    the packages for both, in dist/ (VERSION=1.2.0 to choose the version)
#   make version    the version the packages get
#   make test       scripts/test.sh: installs the test peers (as root), gofmt, vet, go test -race
#   make lint       gofmt, go vet, the maintainer scripts, staticcheck if installed
#   make bench      every benchmark, -benchmem, 5 runs (compare medians)
#   make fuzz       every fuzz target, FUZZTIME each (default 30s); FUZZPKGS narrows it to some
#                   packages. A CI-sized job (about 2 minutes; the lead decides whether CI runs
#                   it): make fuzz FUZZPKGS=./internal/diskbuffer FUZZTIME=60s

GO       ?= go
DIST     ?= dist
ARCHES   ?= amd64 arm64
FUZZTIME ?= 30s
FUZZPKGS ?= ./...

# Reproducible: the date is the commit's (SOURCE_DATE_EPOCH also sets the packages' file times).
COMMIT            ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
DATE              ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
# v1.2.0 tagged here: 1.2.0; three commits later: 1.2.0+3.gabc1234; no tag: 0.0.0+git<time>.<commit>.
# Valid as a deb and an rpm version, and ordered as the commits are.
VERSION ?= $(shell d=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null); \
	if [ -n "$$d" ]; then echo "$${d\#v}" | sed 's/-\([0-9]*\)-g/+\1.g/'; \
	else echo "0.0.0+git$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y%m%d%H%M%S).$(COMMIT)"; fi)

LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
NFPM     = ARCH=$* VERSION='$(VERSION)' DIST='$(DIST)' SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	$(GO) tool nfpm package -f packaging/nfpm.yaml -t '$(DIST)/'

BUILDS := $(addprefix build-,$(ARCHES))
DEBS   := $(addprefix deb-,$(ARCHES))
RPMS   := $(addprefix rpm-,$(ARCHES))

.PHONY: all build deb rpm docs version test lint bench fuzz clean $(BUILDS) $(DEBS) $(RPMS)

all: build

build: $(BUILDS)

$(BUILDS): build-%:
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o '$(DIST)/linux_$*/tagpipe' ./cmd/tagpipe

# What the packages carry besides the binary: the man page (gzipped, stamped with the version)
# and the full sample configuration.
docs:
	mkdir -p '$(DIST)'
	sed 's/^\.TH TAGPIPE 1 "" "tagpipe"/.TH TAGPIPE 1 "$(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%d)" "tagpipe $(VERSION)"/' \
		packaging/tagpipe.1 | gzip -9n > '$(DIST)/tagpipe.1.gz'
	$(GO) run ./cmd/tagpipe config > '$(DIST)/sample.conf'

deb: $(DEBS)
rpm: $(RPMS)

$(DEBS): deb-%: build-% docs
	$(NFPM) -p deb

$(RPMS): rpm-%: build-% docs
	$(NFPM) -p rpm

version:
	@echo '$(VERSION)'

test:
	scripts/test.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	for f in packaging/*.sh; do sh -n "$$f" || exit 1; done  # maintainer scripts: POSIX sh
	for f in scripts/*.sh scripts/peers.d/*.sh; do [ ! -e "$$f" ] || bash -n "$$f" || exit 1; done
	if command -v shellcheck >/dev/null; then shellcheck -s sh packaging/*.sh; fi
	if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "lint: staticcheck not installed, skipped"; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

fuzz:
	@for pkg in $$($(GO) list $(FUZZPKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
		done; \
	done

clean:
	rm -rf '$(DIST)'
