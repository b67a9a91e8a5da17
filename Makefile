# A thin front door over meson. Everything real lives in meson.build files.

# Debian's arm64 builds of the libraries, installed beside the amd64 ones (multiarch), that the
# cross-built ternd and tern link against (make test-arm, make deb); pkgconf:arm64 brings
# aarch64-linux-gnu-pkg-config, which finds them. `make deps` adds the arm64 architecture first.
ARM64_PKGS := libmicrohttpd-dev:arm64 libcjson-dev:arm64 libjpeg62-turbo-dev:arm64 \
        libspng-dev:arm64 libinih-dev:arm64 libsystemd-dev:arm64 libsqlite3-dev:arm64 \
        check:arm64 pkgconf:arm64

# Debian packages the project builds, tests and trains with.
PKGS := gcc make meson ninja-build pkg-config clang libclang-rt-14-dev \
        libmicrohttpd-dev libcjson-dev libjpeg62-turbo-dev libspng-dev libinih-dev \
        libsystemd-dev libsqlite3-dev sqlite3 check curl openssl systemd clang-format \
        python3 python3-torch python3-numpy python3-pil libopenblas0-pthread \
        python3-cairo python3-matplotlib \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static chromium \
        $(ARM64_PKGS) debhelper dpkg-dev lintian \
        haproxy python3-yaml avahi-daemon avahi-utils iproute2

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
ARM_BUILD  ?= build-arm
ARM64_BUILD ?= build-arm64
DEB_OUT    ?= build-deb
FUZZ_SECONDS ?= 20

export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1

.PHONY: all deps clients build test test-release test-attack test-asan test-arm test-deb test-fleet test-dnssd test-training fuzz fuzz-long format format-check serve deb clean

all: build

# Install what is missing (as root), or say exactly what to install. The :arm64 packages need
# the arm64 architecture known to dpkg first (multiarch), so that step comes before apt-get update.
deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	addarch=""; \
	case "$$missing" in *:arm64*) \
	  [ "$$(dpkg --print-architecture)" = arm64 ] || dpkg --print-foreign-architectures | grep -qx arm64 || \
	    addarch="dpkg --add-architecture arm64";; \
	esac; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    if [ -n "$$addarch" ]; then echo "$$addarch"; $$addarch; fi; \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing packages; run as root:"; [ -z "$$addarch" ] || echo "  $$addarch"; \
	    echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD)

# The official openai/ollama npm clients the API tests drive (tests/server/clients); the npm
# registry is the one network place besides Debian's packages. Without npm the test skips.
clients:
	@if command -v npm >/dev/null && [ ! -d tests/server/clients/node_modules ]; then \
	  npm ci --prefix tests/server/clients --no-audit --no-fund; fi

build: deps clients $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
	  -Db_lundef=false -Dc_args=-fno-sanitize-recover=all

test-release: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2

# ternd attacked as a stranger on the LAN would (tests/server/test_attack.py, test_hostile.py,
# test_tls.py); also part of test-release and test-asan through the integration suite.
test-attack: build
	meson test -C $(BUILD) --print-errorlogs --suite attack

test-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2 --suite unit --suite integration

# libFuzzer needs clang; skipped (with a note) where clang is absent. Each
# target runs FUZZ_SECONDS from seeds in tests/data (GGUF files, images, text).
fuzz: deps
	@if command -v clang >/dev/null; then \
	  [ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) -Dbuildtype=debugoptimized -Dfuzz=true; \
	  ninja -C $(FUZZ_BUILD) tests/fuzz_gguf tests/fuzz_image tests/fuzz_tokenizer && \
	  mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/corpus-image $(FUZZ_BUILD)/corpus-tokenizer && \
	  cp tests/data/images/*.jpg tests/data/images/*.png $(FUZZ_BUILD)/corpus-image/ && \
	  cp tests/data/images/*.txt $(FUZZ_BUILD)/corpus-tokenizer/ && \
	  $(FUZZ_BUILD)/tests/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    $(FUZZ_BUILD)/corpus tests/data/fuzz-seeds && \
	  $(FUZZ_BUILD)/tests/fuzz_image -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    $(FUZZ_BUILD)/corpus-image && \
	  $(FUZZ_BUILD)/tests/fuzz_tokenizer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    -max_len=4096 $(FUZZ_BUILD)/corpus-tokenizer && \
	  ninja -C $(FUZZ_BUILD) tests/server/fuzz_request && \
	  mkdir -p $(FUZZ_BUILD)/corpus-request && \
	  $(FUZZ_BUILD)/tests/server/fuzz_request -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    $(FUZZ_BUILD)/corpus-request tests/server/fuzz-seeds; \
	else echo "clang not found: fuzzing skipped"; fi

# Long local fuzzing, not in CI nor in `make test`: every fuzzer (the four above) for
# FUZZ_SECONDS each (600 unless given: make fuzz-long FUZZ_SECONDS=3600), keeping its corpus in
# $(FUZZ_CORPUS) (git-ignored) from one run to the next; crashes go to $(FUZZ_CORPUS)/crashes
# and are listed with the command that reproduces each (tests/fuzz_long.sh).
FUZZ_CORPUS ?= fuzz-corpus
fuzz-long: deps
	@command -v clang >/dev/null || { echo "clang not found: fuzz-long needs it"; exit 1; }
	[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) -Dbuildtype=debugoptimized -Dfuzz=true
	ninja -C $(FUZZ_BUILD) tests/fuzz_gguf tests/fuzz_image tests/fuzz_tokenizer tests/server/fuzz_request
	tests/fuzz_long.sh $(FUZZ_BUILD) $(FUZZ_CORPUS) $(if $(filter file,$(origin FUZZ_SECONDS)),600,$(FUZZ_SECONDS))

# ARM, under qemu-user, skipped (with a note) without the cross compiler or qemu:
# 1. the kernels and their test, cross-built static for aarch64 and run twice: a CPU with
#    dotprod (sdot kernels) and the Raspberry Pi 4's Cortex-A72 (plain NEON);
# 2. the whole ternd and tern, cross-built against Debian's arm64 libraries (ARM64_PKGS), under
#    the same two CPUs: the demo model's answers through every API must equal the x86-64 ones
#    byte for byte, and `tern bench -m` runs (tests/deploy/test_arm.sh).
test-arm: build
	@if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; then \
	  set -e; \
	  [ -f $(ARM_BUILD)/build.ninja ] || meson setup $(ARM_BUILD) --cross-file cross/aarch64.txt -Dkernels_only=true; \
	  ninja -C $(ARM_BUILD) test_kernels; \
	  echo "== aarch64, -cpu max (dotprod)"; \
	  TERN_EXPECT_ISA=dotprod qemu-aarch64-static -cpu max $(ARM_BUILD)/test_kernels; \
	  echo "== aarch64, -cpu cortex-a72 (NEON, no dotprod)"; \
	  TERN_EXPECT_ISA=neon qemu-aarch64-static -cpu cortex-a72 $(ARM_BUILD)/test_kernels; \
	  if aarch64-linux-gnu-pkg-config --exists libmicrohttpd libcjson libjpeg spng inih libsystemd sqlite3 check 2>/dev/null; then \
	    [ -f $(ARM64_BUILD)/build.ninja ] || meson setup $(ARM64_BUILD) --cross-file cross/aarch64.txt; \
	    ninja -C $(ARM64_BUILD) src/server/ternd src/cli/tern; \
	    tests/deploy/test_arm.sh $(BUILD) $(ARM64_BUILD); \
	  else echo "arm64 libraries not installed (make deps as root adds them): arm64 ternd and tern skipped"; fi; \
	else echo "aarch64-linux-gnu-gcc or qemu-aarch64-static not found: ARM tests skipped"; fi

# Debian packages (debian/, debhelper's meson build system): $(DEB_OUT)/tern_VERSION_amd64.deb
# built natively and tern_VERSION_arm64.deb cross-built (dpkg-buildpackage -aarm64 against the
# multiarch arm64 libraries), each checked by lintian (an error fails). The arm64 one is skipped
# (with a note) without the cross compiler or the arm64 libraries.
deb: deps
	@arches=$$(dpkg --print-architecture); \
	if [ "$$arches" = amd64 ]; then \
	  if command -v aarch64-linux-gnu-gcc >/dev/null && aarch64-linux-gnu-pkg-config --exists libmicrohttpd 2>/dev/null; then \
	    arches="$$arches arm64"; \
	  else echo "aarch64-linux-gnu-gcc or the arm64 libraries not installed: the arm64 package is skipped"; fi; \
	fi; \
	tools/build_deb.sh $(DEB_OUT) $$arches

# The package for this machine, really installed with dpkg, serving from its installed config
# (without systemd), then removed and purged (tests/deploy/test_deb.sh). Needs root: as
# another user it is skipped with a note.
test-deb: deb
	@if [ "$$(id -u)" = 0 ]; then \
	  tests/deploy/test_deb.sh $(DEB_OUT)/tern_$$(dpkg-parsechangelog -S Version)_$$(dpkg --print-architecture).deb; \
	else echo "not root: the package install test (test-deb) is skipped"; fi

# A fleet: three ternd with the demo model behind a real haproxy run from config/haproxy.cfg
# (tests/deploy/test_fleet.py: 24 concurrent streams, then a box SIGKILLed and another
# SIGTERMed under load), and the Kubernetes example config/k8s/ternd.yaml checked. The fleet is
# skipped (with a note) where haproxy is not installed.
test-fleet: build
	python3 tests/deploy/test_k8s.py $(BUILD)/src/server/ternd
	@if command -v haproxy >/dev/null; then \
	  python3 tests/deploy/test_fleet.py $(BUILD)/src/server/ternd; \
	else echo "haproxy not found (make deps as root installs it): the fleet test is skipped"; fi

# DNS-SD: the Avahi service file and tern_client.py --discover; as root with avahi-daemon, for
# real in a private network namespace (tests/deploy/test_dnssd.py says when it is skipped).
test-dnssd: build
	python3 tests/deploy/test_dnssd.py $(BUILD)/src/server/ternd

# The demo model's Python pipeline on a tiny data set (skipped without python3-torch). It must
# leave the shipped models alone: checked against their checksums.
# The training smoke run, then self-distillation of a random checkpoint at SmolVLM-256M's real
# shapes (a few steps: about 6 GB and a few minutes; issue 17's evidence at real scale).
test-training:
	@sums=$$(cat models/*.gguf models/hf/float/* | md5sum); \
	$(MAKE) -C training smoke && \
	$(MAKE) -C training distill-smoke DISTILL_LIKE=smolvlm-256m DISTILL_STEPS=4 && \
	if [ "$$(cat models/*.gguf models/hf/float/* | md5sum)" != "$$sums" ]; then \
	  echo "training smoke run changed models/"; exit 1; fi

# Every C file but the generated Unicode tables follows .clang-format; `make format` applies it.
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' | grep -v '^src/engine/unicode_tables.c$$')
format:
	clang-format -i $(FORMAT_FILES)
format-check: deps
	clang-format --dry-run -Werror $(FORMAT_FILES)

test: format-check test-release test-asan test-arm test-deb test-fleet test-dnssd fuzz test-training

# Start ternd on 127.0.0.1:8080 with the demo model (the echo test double when the model
# files are not there yet). Stats go to $(BUILD)/ternd-stats.db.
SERVE_MODEL  ?= models/tern-demo-tq2_0.gguf
SERVE_MMPROJ ?= models/tern-demo-mmproj-tq2_0.gguf
serve: build
	@if [ -f $(SERVE_MODEL) ]; then engine=model; else engine=echo; \
	  echo "note: $(SERVE_MODEL) not found: serving the echo test double (it repeats the prompt)"; fi; \
	echo "try:  curl -N http://127.0.0.1:8080/generate -F image=@tests/data/shapes/test/00000.jpg -F prompt='Describe the image.'"; \
	echo "  or open http://127.0.0.1:8080/ in a browser"; \
	exec $(BUILD)/src/server/ternd --config /dev/null --bind 127.0.0.1 --port 8080 --engine $$engine \
	  --model $(SERVE_MODEL) --mmproj $(SERVE_MMPROJ) --db $(BUILD)/ternd-stats.db

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(ARM_BUILD) $(ARM64_BUILD) $(DEB_OUT)
