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

.PHONY: all test lint vet fmt modules-check tidy tidy-check bench demo ci help k8s-bins

all: lint test

help:
	@echo "make demo           the demo: control plane, pods, a balancing client (DEMO_FLAGS=-help)"
	@echo "make test           race tests of every module ($(words $(MODULES)) modules); builds k8s-bins first"
	@echo "make k8s-bins       build kube-apiserver, etcd, kubectl (pinned in .ci/k8s) into $(CACHE)"
	@echo "make lint           gofmt, go vet and staticcheck (pinned in .ci/tools/go.mod)"
	@echo "make modules-check  build, vet and compile tests of each module alone (GOWORK=off)"
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

# Each module builds, vets and compiles its tests on its own, through the
# replace directives in its go.mod, as a user importing only it would.
modules-check:
	@for m in $(MODULES); do echo "== GOWORK=off $$m"; \
	  (cd $$m && GOWORK=off go build ./... && GOWORK=off go vet ./... && GOWORK=off go test -count=1 -run '^$$' ./... >/dev/null); done

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
