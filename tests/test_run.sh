#!/usr/bin/env bash
# `tern run` end to end on the tiny golden checkpoint (random weights, so the
# text is noise): exit codes, the timing line, determinism per seed, images.
# Usage: test_run.sh TERN GOLDEN_DIR IMAGE_DIR (meson passes them).
set -u
TERN=$1
GOLDEN=$2
IMAGES=$3
TEST_NAME=run
. "$(dirname "$0")/cli_lib.sh"

"$TERN" convert "$GOLDEN/tiny-hf" "$T/tiny" --outtype f32 2>/dev/null || { echo "FAIL: convert"; exit 1; }
M=$T/tiny.gguf
V=$T/tiny-mmproj.gguf

expect 0 "usage: tern run" "$TERN" run --help
expect 2 "-m MODEL and -p PROMPT are required" "$TERN" run -m "$M"
expect 2 "--image needs --mmproj" "$TERN" run -m "$M" -p hi --image "$IMAGES/rgb.png"
expect 2 "--temp" "$TERN" run -m "$M" -p hi --temp -1
expect 1 "nonexistent.gguf" "$TERN" run -m "$T/nonexistent.gguf" -p hi
expect 0 "generation 8 tokens" "$TERN" run -m "$M" -p "what shape?" -n 8 -t 1
expect 0 "peak RSS" "$TERN" run -m "$M" --mmproj "$V" --image "$IMAGES/rgb.png" -p "colour?" -n 4 -t 1
expect 1 "truncated.png" "$TERN" run -m "$M" --mmproj "$V" --image "$IMAGES/truncated.png" -p hi

# Same seed, same text; another seed, other text.
for s in 1 1 2; do
    "$TERN" run -m "$M" -p "a story" -n 24 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 \
        --seed $s -t 1 >"$T/seed$s.$RANDOM" 2>/dev/null
done
a=$(ls "$T"/seed1.* | head -1); b=$(ls "$T"/seed1.* | tail -1)
if [ "$a" = "$b" ] || ! cmp -s "$a" "$b"; then
    fail "same seed, different text"
else
    echo "ok: same seed, same text"
fi
if cmp -s "$a" "$T"/seed2.*; then
    fail "seeds 1 and 2 gave the same 24 tokens"
else
    echo "ok: another seed, other text"
fi

finish
