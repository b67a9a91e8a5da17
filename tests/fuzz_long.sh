#!/bin/sh
# Long local fuzz runs (`make fuzz-long`; not part of CI or `make test`): every libFuzzer target
# for SECONDS each, one after the other. Each keeps its corpus in CORPUS/NAME between runs
# (started from the seeds in the tree), so a second run goes on where the first stopped.
# Crashes, leaks and timeouts are written to CORPUS/crashes/ and listed at the end, each with
# the command that reproduces it. Exit status 1 when any target found something.
#
# usage: tests/fuzz_long.sh FUZZ_BUILD CORPUS SECONDS
set -u
build=$1 corpus=$2 seconds=$3
mkdir -p "$corpus/crashes"
found=""

# run NAME BINARY EXTRA-FLAGS SEED-DIR...
run() {
    name=$1 bin=$2 flags=$3
    shift 3
    mkdir -p "$corpus/$name"
    # libFuzzer adds new inputs to the first directory only: the seeds stay untouched.
    set -- "$corpus/$name" "$@"
    echo "== $name: $seconds s, corpus $corpus/$name ($(ls "$corpus/$name" | wc -l) inputs)"
    touch "$corpus/.started"
    # shellcheck disable=SC2086  # flags is a list of words
    "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$corpus/crashes/$name-" $flags "$@" >"$corpus/$name.log" 2>&1
    rc=$?
    tail -n 12 "$corpus/$name.log" | grep -E '^(stat::|Done|==|SUMMARY)' || true
    # written during this run (an input found again overwrites its file of the same name)
    new=$(find "$corpus/crashes" -name "$name-*" -newer "$corpus/.started" | sort)
    if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
        echo "   $name FAILED (exit $rc); log: $corpus/$name.log"
        for f in $new; do
            found="$found
  $bin $f"
        done
        [ -n "$new" ] || found="$found
  $name exited $rc without an artifact: see $corpus/$name.log"
    fi
}

run gguf "$build/tests/fuzz_gguf" "" tests/data/fuzz-seeds
run image "$build/tests/fuzz_image" "" tests/data/images
run tokenizer "$build/tests/fuzz_tokenizer" "-max_len=4096" tests/data/images
run request "$build/tests/server/fuzz_request" "" tests/server/fuzz-seeds

if [ -n "$found" ]; then
    echo "fuzz-long: found problems; reproduce each with:$found"
    exit 1
fi
echo "fuzz-long: no crash in $seconds s per target (corpora in $corpus)"
