# swift virtiofsd. `make` builds the release binary; `make test` runs every test.
SWIFT      ?= swift
PREFIX     ?= /usr/local
DESTDIR    ?=
BUILD_DIR  := .build
RELEASE_BIN := $(BUILD_DIR)/release/virtiofsd
# Package.swift's release link searches here first, so the toolchain's -lstdc++
# picks the static archive: the binary needs no libstdc++.so or libgcc_s.so.
STATIC_CXX  := $(BUILD_DIR)/static-libstdc++
DEBUG_BIN   := $(BUILD_DIR)/debug/virtiofsd

# Debian packages the build, the tests, the guest rig and the demo need.
APT_PACKAGES := pkg-config debootstrap libseccomp-dev libcap-ng-dev libfuse3-dev fuse3 \
                qemu-system-x86 qemu-utils linux-image-amd64 busybox-static \
                attr acl cpio kmod gcc libc6-dev libstdc++-12-dev strace uidmap

.PHONY: all release static-cxx debug deps test unit-test e2e e2e-reference e2e-rootfs e2e-libvirt \
        e2e-identity e2e-libvirt11 e2e-migrate \
        bench demo install clean fuzz fuzz-build fuzz-smoke soak soak-smoke

all: release

release: deps static-cxx
	$(SWIFT) build -c release --static-swift-stdlib --product virtiofsd
	@# A binary linked before the archive link existed is up to date for SwiftPM: relink it.
	@if ldd $(RELEASE_BIN) | grep -Eq 'libstdc\+\+|libgcc_s' && [ -e $(STATIC_CXX)/libstdc++.a ]; then \
	    rm -f $(RELEASE_BIN) && $(SWIFT) build -c release --static-swift-stdlib --product virtiofsd; fi
	@if ldd $(RELEASE_BIN) | grep -Eq 'libstdc\+\+|libgcc_s'; then \
	    echo "warning: $(RELEASE_BIN) links the C++ runtime dynamically"; fi

static-cxx:
	@mkdir -p $(STATIC_CXX)
	@lib=$$($(CC) -print-file-name=libstdc++.a); \
	if [ -f "$$lib" ]; then ln -sf "$$lib" $(STATIC_CXX)/libstdc++.a; \
	else echo "warning: no libstdc++.a (install libstdc++-12-dev); linking libstdc++ dynamically"; fi

debug: deps
	$(SWIFT) build

# Installs whatever of APT_PACKAGES is missing (CI and fresh machines).
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	        || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: unit-test fuzz-smoke e2e e2e-libvirt soak-smoke

unit-test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# libFuzzer harnesses (Fuzz/), built apart in $(FUZZ_BUILD) with the fuzzer and
# AddressSanitizer; optimised, with -enable-testing for the harnesses that reach
# internal types. `make fuzz` runs each for FUZZ_SECONDS, `make fuzz-smoke` (part
# of `make test`) for FUZZ_SMOKE_SECONDS; a crash fails the target (Fuzz/run.sh).
FUZZ_BUILD         := .build-fuzz
FUZZ_HARNESSES     ?= vhost-message virtqueue fuse-null fuse-passthrough xattrmap command-line
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_FLAGS := --scratch-path $(FUZZ_BUILD) -c release --sanitize=fuzzer --sanitize=address \
              -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing -Xswiftc -DFUZZING

fuzz-build: deps
	@for h in $(FUZZ_HARNESSES); do \
	    $(SWIFT) build $(FUZZ_FLAGS) --product fuzz-$$h || exit 1; done

fuzz: fuzz-build
	Fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_HARNESSES)

fuzz-smoke: fuzz-build
	Fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_HARNESSES)

# Real-guest checks (QEMU, TCG). E2E_ARGS passes extra options, e.g. E2E_ARGS="--config xattr".
e2e: release
	Tests/e2e/run.sh --daemon $(RELEASE_BIN) $(E2E_ARGS)
	@# A find over more files than RLIMIT_NOFILE allows: the top complaint about virtiofsd.
	Tests/e2e/run.sh --daemon $(RELEASE_BIN) --config fd-limit
	@# The README's recipe as written, a QEMU wanting more queues than offered, and
	@# the identity models (user-namespace maps as root and unprivileged, translation).
	Tests/e2e/run.sh --daemon $(RELEASE_BIN) --config readme --config queue-mismatch \
	    --config idmap --config idmap-user --config translate

# Soak (Tests/e2e/soak.sh): SOAK_MINUTES of a mixed guest workload checked against
# its model and the host, with 1 and then 2 request queues, and a daemon killed with
# SIGKILL under fsync'd appends. `make soak-smoke` (part of `make test`) is a minute
# of the first and 20 s of the second.
SOAK_MINUTES ?= 10

soak: release
	Tests/e2e/soak.sh --daemon $(RELEASE_BIN) --minutes $(SOAK_MINUTES) --queues 1
	Tests/e2e/soak.sh --daemon $(RELEASE_BIN) --minutes $(SOAK_MINUTES) --queues 2
	Tests/e2e/soak.sh --daemon $(RELEASE_BIN) --kill-after 90

soak-smoke: release
	Tests/e2e/soak.sh --daemon $(RELEASE_BIN) --minutes 1 --queues 2
	Tests/e2e/soak.sh --daemon $(RELEASE_BIN) --kill-after 20

e2e-reference: release
	Tests/e2e/run.sh --daemon $(RELEASE_BIN) --reference /usr/lib/qemu/virtiofsd $(E2E_ARGS)

e2e-rootfs: release
	Tests/e2e/rootfs.sh --daemon $(RELEASE_BIN) $(E2E_ARGS)

e2e-libvirt: release
	Tests/e2e/libvirt.sh --daemon $(RELEASE_BIN)

# User-namespace maps (root, and uid 1000 with subordinate ids) and id translation in a guest.
e2e-identity: release
	Tests/e2e/run.sh --daemon $(RELEASE_BIN) --config idmap --config idmap-user --config translate

# libvirt 11 (Debian 13) in session mode launching the daemon unprivileged with its
# --uid-map/--gid-map ranges. Builds a Debian 13 tree from the package mirror on first
# use, so it is not part of `make test`.
e2e-libvirt11: release
	Tests/e2e/libvirt11.sh --daemon $(RELEASE_BIN) $(E2E_ARGS)

# Live migration between two QEMU 10 instances (docs/migration.md): both ways of
# finding the files, and a host-side rename while memory is copied.
e2e-migrate: release
	Tests/e2e/migrate.sh --daemon $(RELEASE_BIN) --mode find-paths --cache always --rename
	Tests/e2e/migrate.sh --daemon $(RELEASE_BIN) --mode file-handles --rename
	Tests/e2e/migrate.sh --daemon $(RELEASE_BIN) --mode find-paths --cache always --big-tree 10000

# RUST_VIRTIOFSD: the Rust virtiofsd to compare with (its column is skipped if it is missing).
RUST_VIRTIOFSD ?= ../shared/tools/rust-virtiofsd

bench: release
	$(SWIFT) build -c release --product virtiofsd-bench
	$(BUILD_DIR)/release/virtiofsd-bench --daemon $(RELEASE_BIN) --rust $(RUST_VIRTIOFSD) --seconds 4

demo: release
	Tests/e2e/demo.sh --daemon $(RELEASE_BIN) $(E2E_ARGS)

# What a guest sees: ours, QEMU's C virtiofsd, the Rust virtiofsd and 9p, one guest
# workload each (docs/benchmarks.md, "Guest-visible"). BENCH_GUEST_ARGS passes options,
# e.g. BENCH_GUEST_ARGS="--modes auto --no-rust". The smoke run tests the script (~1 min).
.PHONY: bench-guest bench-guest-smoke
bench-guest: release
	Tests/e2e/bench-guest.sh --daemon $(RELEASE_BIN) $(BENCH_GUEST_ARGS)

bench-guest-smoke: release
	Tests/e2e/bench-guest.sh --daemon $(RELEASE_BIN) --smoke $(BENCH_GUEST_ARGS)

# libvirt reads vhost-user descriptors from /usr/share/qemu/vhost-user and
# /etc/qemu/vhost-user and takes the first "fs" one by file name; QEMU's own is
# 50-qemu-virtiofsd.json. To make libvirt pick this daemon without <binary path>:
#   make install VHOST_USER_DIR=/etc/qemu/vhost-user DESCRIPTOR_NAME=40-swift-virtiofsd.json
VHOST_USER_DIR  ?= $(PREFIX)/share/qemu/vhost-user
DESCRIPTOR_NAME ?= 50-swift-virtiofsd.json

install: release
	install -D -s -m 0755 $(RELEASE_BIN) $(DESTDIR)$(PREFIX)/libexec/virtiofsd
	install -D -m 0644 docs/virtiofsd.1 $(DESTDIR)$(PREFIX)/share/man/man1/virtiofsd.1
	install -d $(DESTDIR)$(VHOST_USER_DIR)
	sed 's|@BINARY@|$(PREFIX)/libexec/virtiofsd|' docs/50-swift-virtiofsd.json.in \
	    > $(DESTDIR)$(VHOST_USER_DIR)/$(DESCRIPTOR_NAME)

clean:
	rm -rf $(BUILD_DIR)
