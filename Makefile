# disco: every folder holding a go.mod (outside .ci/) is a module; targets
# loop over all of them. `make test` is the test command the README gives.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
MODULES := $(shell find . -name go.mod -not -path './.ci/*' -not -path './.git/*' -printf '%h\n' | sort)
CACHE ?= $(HOME)/.cache/disco
TOOLS := $(CACHE)/tools
GOTESTFLAGS ?= -race -count=1 -timeout 20m
BENCHFLAGS ?= -run '^$$' -bench . -benchmem
# Every Go file, tracked or not yet, except generated protobuf code.
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -name '*.pb.go')

.PHONY: all test lint vet fmt modules-check deps-align version tags tidy tidy-check bench demo ci help k8s-bins

all: lint test

help:
	@echo "make demo           the demo: control plane, pods, a balancing client (DEMO_FLAGS=-help)"
	@echo "make test           race tests of every module ($(words $(MODULES)) modules); builds k8s-bins first"
	@echo "make k8s-bins       build kube-apiserver, etcd, kubectl (pinned in .ci/k8s) into $(CACHE)"
	@echo "make lint           gofmt, go vet and staticcheck (pinned in .ci/tools/go.mod)"
	@echo "make modules-check  each module alone (GOWORK=off), and the module rules (.ci/modcheck)"
	@echo "make deps-align     one version of every shared dependency in every module"
	@echo "make version VERSION=vX.Y.Z   require every sibling module at VERSION"
	@echo "make tags [TAG=1]   print (or create) the release tags <module dir>/VERSION"
	@echo "make tidy           go mod tidy in every module; tidy-check only reports"
	@echo "make bench          benchmarks of every module"

# Kubernetes binaries for the tests' control planes, built once per version
# into $(CACHE) (minutes when cold, nothing when cached).
k8s-bins:
	@DISCO_CACHE=$(CACHE) .ci/k8s-bins >/dev/null

# Tests find the binaries through DISCO_K8S_BINS. CI also sets
# DISCO_REQUIRE_K8S=1 and DISCO_REQUIRE_NETNS=1 so that nothing skips there.
test: k8s-bins
	@bins=$$(DISCO_CACHE=$(CACHE) .ci/k8s-bins 2>/dev/null); \
	  for m in $(MODULES); do echo "== go test $$m"; \
	    (cd $$m && DISCO_K8S_BINS=$$bins go test $(GOTESTFLAGS) ./...); done

fmt:
	@gofmt -w $(GOFILES)

vet:
	@for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && go vet ./...); done

$(TOOLS)/staticcheck: .ci/tools/go.mod .ci/tools/go.sum
	@mkdir -p $(TOOLS)
	cd .ci/tools && GOWORK=off go build -o $@ honnef.co/go/tools/cmd/staticcheck

lint: vet $(TOOLS)/staticcheck
	@bad=$$(gofmt -l $(GOFILES)); \
	  if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do echo "== staticcheck $$m"; (cd $$m && $(TOOLS)/staticcheck ./...); done

$(TOOLS)/modcheck: .ci/modcheck/go.mod $(wildcard .ci/modcheck/*.go)
	@mkdir -p $(TOOLS)
	cd .ci/modcheck && GOWORK=off go build -o $@ .

# Each module builds, vets and compiles its tests on its own, through the
# replace directives in its go.mod; then the module rules: siblings at one
# release version, one version of each dependency, the Kubernetes client of
# the tested minor, no test-only requirement in a product module.
modules-check: $(TOOLS)/modcheck
	@for m in $(MODULES); do echo "== GOWORK=off $$m"; \
	  (cd $$m && GOWORK=off go build ./... && GOWORK=off go vet ./... && GOWORK=off go test -count=1 -run '^$$' ./... >/dev/null); done
	@$(TOOLS)/modcheck check

deps-align: $(TOOLS)/modcheck
	@for i in 1 2 3; do $(TOOLS)/modcheck align; $(MAKE) -s tidy; done
	@$(TOOLS)/modcheck check

# Release: make version VERSION=v0.3.0, commit, make tags TAG=1, push the tags.
version: $(TOOLS)/modcheck
	@test -n "$(VERSION)" || { echo "make version VERSION=vX.Y.Z"; exit 1; }
	@$(TOOLS)/modcheck version $(VERSION)
	@$(MAKE) -s tidy

tags: $(TOOLS)/modcheck
	@$(TOOLS)/modcheck tags $(if $(TAG),-create,)

tidy:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy); done

tidy-check:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "go.mod of $$m is not tidy: run make tidy"; exit 1; }; done

bench:
	@for m in $(MODULES); do echo "== go test -bench $$m"; (cd $$m && go test $(BENCHFLAGS) ./...); done

# The main job: a local control plane, greeter pods in network namespaces and
# a client balancing across them while they scale and restart. Needs root.
# DEMO_FLAGS passes flags, e.g. make demo DEMO_FLAGS="-pods 4 -phase 10s".
demo: k8s-bins
	@bins=$$(DISCO_CACHE=$(CACHE) .ci/k8s-bins 2>/dev/null); \
	  cd examples && DISCO_K8S_BINS=$$bins go run ./cmd/demo $(DEMO_FLAGS)

# What CI runs after installing its packages (see .ci/run).
ci: lint tidy-check modules-check test
