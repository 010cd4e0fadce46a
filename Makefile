# brouter — build, test, demo, bench, install.
#
# On a fresh Debian machine, as root:
#   make demo    # install what is missing, build, show the suite working in throwaway namespaces
#   make test    # install what is missing, build, run unit + kernel + end-to-end tests

SHELL := /bin/bash

# Go: the one on PATH, else the official tarball's location.
ifeq ($(origin GO),undefined)
GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
endif
export PATH := $(PATH):/usr/local/go/bin

BINDIR      ?= bin
TEST_TIMEOUT ?= 30m
FUZZTIME    ?= 5s
GOTESTFLAGS ?=
DESTDIR     ?=
PREFIX      ?= /usr/local

# Every main package under hooks/ and plugins/ (new ones are picked up automatically).
# Packages that fail to load are included too, so that `go build` reports their error.
MAIN_DIRS = $(shell $(GO) list -e -f '{{if or (eq .Name "main") .Error}}{{.Dir}}{{end}}' ./hooks/... ./plugins/... 2>/dev/null)

.PHONY: all build setup test fuzz demo bench bench-shaping bench-cni bench-overlay install clean fmt vet

all: build

setup:
	./scripts/setup.sh

build:
	@command -v $(GO) >/dev/null || { echo "build: Go not found; install it at /usr/local/go or set GO=/path/to/go" >&2; exit 1; }
	@mkdir -p $(BINDIR)
	@dirs='$(MAIN_DIRS)'; \
	if [ -z "$$dirs" ]; then echo "build: no main packages under hooks/ or plugins/" >&2; exit 1; fi; \
	for d in $$dirs; do \
		name=$$(basename $$d); \
		echo "go build -o $(BINDIR)/$$name ./$${d#$(CURDIR)/}"; \
		CGO_ENABLED=0 $(GO) build -trimpath -o $(BINDIR)/$$name $$d || exit 1; \
	done

test: setup
	$(MAKE) build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) ./...

# Every fuzz target (func FuzzX in a _test.go under shared/, hooks/, plugins/),
# one after the other, FUZZTIME each (no root needed). A failing input is
# kept under the package's testdata/fuzz/ and replayed by go test.
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' shared hooks plugins | sort | while read -r f; do \
		dir=./$$(dirname $$f); \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "go test -run='^$$' -fuzz='^$$fn\$$' -fuzztime=$(FUZZTIME) $$dir"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$dir || exit 1; \
		done; \
	done

demo: setup
	$(MAKE) build
	$(GO) build -o $(BINDIR)/xenstored-double ./tools/xenstored-double
	$(GO) build -o $(BINDIR)/qemu-guest ./tools/qemu-guest
	$(GO) build -o $(BINDIR)/host-local github.com/containernetworking/plugins/plugins/ipam/host-local
	./scripts/demo.sh

bench: setup
	$(MAKE) build
	$(GO) run ./tools/bench
	$(GO) run ./tools/bench-vif -bin $(BINDIR)
	$(GO) run ./tools/bench-heal -bin $(BINDIR)

bench-shaping: setup
	$(GO) run ./tools/bench-shaping

bench-cni: setup
	$(MAKE) build
	$(GO) run ./tools/bench-cni -bin $(BINDIR)

bench-overlay: setup
	$(MAKE) build
	$(GO) run ./tools/bench-overlay -bin $(BINDIR)

install: build
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' ./install/install.sh

clean:
	rm -rf $(BINDIR)

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...
