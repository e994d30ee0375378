# corral: build, test and benchmark entry points (GNU make).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO ?= cargo
ROOTFS ?= $(CURDIR)/build/rootfs/busybox
# Named images built from rootfs-images/<name>/build.sh: <dir>/<name>/rootfs (+ .stamp).
IMAGES_DIR ?= $(CURDIR)/build/images
IMAGES ?= busybox python gcc
CORRAL_BIN := $(CURDIR)/target/release/corral

.PHONY: build deps rootfs images lint test bench run clean check-root

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

# Sequential on purpose: the debootstrap recipes share one .deb cache. A recipe whose
# stamp (its hash and inputs) matches its output does nothing.
images: check-root deps
	for image in $(IMAGES); do \
		CORRAL_DEB_CACHE="$(IMAGES_DIR)/.debcache" \
			rootfs-images/$$image/build.sh "$(IMAGES_DIR)/$$image/rootfs"; \
	done

build: deps
	$(CARGO) build --release

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: check-root deps rootfs images lint build
	CORRAL_TEST_ROOTFS="$(ROOTFS)" CORRAL_TEST_IMAGES="$(IMAGES_DIR)" \
		$(CARGO) test --release -- --test-threads=2
	CORRAL="$(CORRAL_BIN)" ROOTFS="$(ROOTFS)" tests/podman/run.sh
	CORRAL="$(CORRAL_BIN)" ROOTFS="$(ROOTFS)" tests/containerd/run.sh

bench: check-root deps rootfs build
	CORRAL_BIN="$(CORRAL_BIN)" RUNC_BIN="$$(command -v runc)" \
		CORRAL_BENCH_ROOTFS="$(ROOTFS)" $(CARGO) bench --bench runtime

# The HTTP service on 127.0.0.1:8080 with the default busybox image (built from its
# recipe on first start) and a token file created in the data dir (its token printed);
# with the images of `make images` when they were built.
run: check-root deps build
	$(CORRAL_BIN) serve $(if $(wildcard $(IMAGES_DIR)/*/rootfs),--images-dir "$(IMAGES_DIR)")

clean:
	$(CARGO) clean
	rm -rf build
