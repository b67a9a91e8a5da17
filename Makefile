# A thin front door over meson. Everything real lives in meson.build files.

# Debian packages the project builds, tests and trains with.
PKGS := gcc make meson ninja-build pkg-config clang libclang-rt-14-dev \
        libmicrohttpd-dev libcjson-dev libjpeg62-turbo-dev libspng-dev libinih-dev \
        libsystemd-dev libsqlite3-dev sqlite3 check \
        python3 python3-torch python3-numpy python3-pil libopenblas0-pthread

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20

export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1

.PHONY: all deps build test test-release test-asan fuzz serve clean test-training

all: build

# Install what is missing (as root), or say exactly what to install.
deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing packages; run as root:"; echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
	  -Db_lundef=false -Dc_args=-fno-sanitize-recover=all

test-release: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2

test-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2 --suite unit

# libFuzzer needs clang; skipped (with a note) where clang is absent.
fuzz: deps
	@if command -v clang >/dev/null; then \
	  [ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) -Dbuildtype=debugoptimized -Dfuzz=true; \
	  ninja -C $(FUZZ_BUILD) tests/fuzz_gguf && \
	  mkdir -p $(FUZZ_BUILD)/corpus && \
	  $(FUZZ_BUILD)/tests/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    $(FUZZ_BUILD)/corpus tests/data/fuzz-seeds; \
	else echo "clang not found: fuzzing skipped"; fi

test: test-release test-asan fuzz test-training

# The demo model's Python pipeline on a tiny data set (skipped without python3-torch).
test-training:
	$(MAKE) -C training smoke

# Until the daemon lands this builds and shows the CLI.
serve: build
	$(BUILD)/src/cli/tern --help

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
