# Build, test and demo entry points. `make test` and `make demo` install their own
# system dependencies (see hack/deps.sh); everything else comes from the Go module proxy.
GO      ?= go
BIN     := bin
PKGS    := ./...
# Root-only end-to-end tests build network namespaces; keep one package at a time so
# their proxies and namespaces do not compete for the two cores.
TESTFLAGS ?= -race -count=1 -timeout 15m -p 1
# grpcnotrace drops gRPC's golang.org/x/net/trace (and with it html/template, whose reflection
# keeps every exported method of every type alive): a 6 MB smaller binary and ~3 MB less RSS per
# proxy. Exported, so the binaries the tests build themselves get it too.
export GOFLAGS := $(strip $(GOFLAGS) -tags=grpcnotrace)

.PHONY: all build test unit demo deps vet fmt clean

all: build

deps:
	@./hack/deps.sh

build:
	$(GO) build -o $(BIN)/ztunnel ./cmd/ztunnel
	$(GO) build -o $(BIN)/testbed ./cmd/testbed

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Unit tests only (no root needed).
unit:
	$(GO) test -count=1 -short $(PKGS)

# Everything: unit tests, fuzz seeds, and (as root) the end-to-end tests in network namespaces,
# all under the race detector, with the proxies of the end-to-end tests built with it too.
# The micro-benchmarks run once each, only to prove they still work (no timing is judged).
test: deps vet
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)
	E2E_RACE=1 $(GO) test $(TESTFLAGS) $(PKGS)

# Scenario S1 in the netns testbed (needs root).
demo: deps build
	./$(BIN)/testbed demo -ztunnel $(BIN)/ztunnel

# Benchmark harness (needs root): direct vs mesh vs Go TLS relay vs stunnel over two netns nodes.
# Prints a table; writes bench/out/results.json and detail.json. See bench/README.md.
.PHONY: bench
bench: deps build
	@./bench/deps.sh
	$(GO) build -o $(BIN)/bench ./bench/cmd/bench
	./$(BIN)/bench -ztunnel $(BIN)/ztunnel -out bench/out

clean:
	rm -rf $(BIN)
