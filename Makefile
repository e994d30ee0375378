# corral: build, test and benchmark entry points (GNU make).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO ?= cargo
ROOTFS ?= $(CURDIR)/build/rootfs/busybox
CORRAL_BIN := $(CURDIR)/target/release/corral

.PHONY: build deps rootfs lint test bench run clean check-root

# Containers need root; fail early and clearly.
check-root:
	@if [[ $$(id -u) -ne 0 ]]; then \
		echo "error: 'make $(MAKECMDGOALS)' must run as root (it creates containers)" >&2; \
		exit 1; \
	fi

deps:
	scripts/install-deps.sh

rootfs: deps
	rootfs-images/busybox/build.sh "$(ROOTFS)"

build: deps
	$(CARGO) build --release

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: check-root deps rootfs lint build
	CORRAL_TEST_ROOTFS="$(ROOTFS)" $(CARGO) test --release -- --test-threads=2
	CORRAL="$(CORRAL_BIN)" ROOTFS="$(ROOTFS)" tests/podman/run.sh
	CORRAL="$(CORRAL_BIN)" ROOTFS="$(ROOTFS)" tests/containerd/run.sh

bench: check-root deps rootfs build
	CORRAL_BIN="$(CORRAL_BIN)" RUNC_BIN="$$(command -v runc)" \
		CORRAL_BENCH_ROOTFS="$(ROOTFS)" $(CARGO) bench --bench runtime

# The HTTP service on 127.0.0.1:8080 with the default busybox image (built from its
# recipe on first start) and a token file created in the data dir (its token printed).
run: check-root deps build
	$(CORRAL_BIN) serve

clean:
	$(CARGO) clean
	rm -rf build
