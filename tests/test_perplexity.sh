#!/usr/bin/env bash
# `tern perplexity` end to end on the tiny golden checkpoint (random weights):
# output, the qtype breakdown, bad input named by line, and — where Debian's
# python3 with torch and training/model.py are present — every example's
# answer NLL against the PyTorch reference (tests/ppl_reference.py).
# Usage: test_perplexity.sh TERN GOLDEN_DIR IMAGE_DIR PYTHON TRAINING_DIR
set -u
TERN=$1
GOLDEN=$2
IMAGES=$3
PY=$4
TRAINING=$5
HERE=$(cd "$(dirname "$0")" && pwd)
TEST_NAME=ppl
. "$HERE/cli_lib.sh"

"$TERN" convert "$GOLDEN/tiny-hf" "$T/tiny" --outtype f32 2>/dev/null || { echo "FAIL: convert"; exit 1; }
M=$T/tiny.gguf
V=$T/tiny-mmproj.gguf
mkdir -p "$T/d/img"
cp "$IMAGES/orient6.jpg" "$IMAGES/rgb.png" "$IMAGES/rgba.png" "$T/d/img/"
cat >"$T/d/test.jsonl" <<'JSONL'
{"image": "img/orient6.jpg", "prompt": "What is this?", "answer": "A red circle.", "qtype": "describe"}
{"image": "img/rgb.png", "prompt": "Colour?", "answer": "Blue.", "qtype": "color"}

{"image": "img/rgba.png", "prompt": "How many shapes are there?", "answer": "2.", "qtype": "count"}
{"prompt": "No image here.", "answer": "Fine.", "qtype": "color"}
JSONL

expect 0 "usage: tern perplexity" "$TERN" perplexity --help
expect 2 "needs -m" "$TERN" perplexity -m "$M"
expect 0 "examples     4" "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/test.jsonl" -t 1
grep -q "^color *examples     2" "$T/out" || { fail "no color breakdown"; cat "$T/out"; }
grep -Eq "^all .*perplexity [0-9]+\.[0-9]+ +exact 0\.[0-9]+" "$T/out" ||
    { fail "summary line"; cat "$T/out"; }
expect 0 "examples     2" "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/test.jsonl" -n 2 -t 1
expect 1 "has an image but no --mmproj" "$TERN" perplexity -m "$M" --data "$T/d/test.jsonl"

# a typed "<image>" is text, not an image slot (the reference tokenizer would
# differ here by design, so this one is not compared with PyTorch)
printf '%s\n' '{"image": "img/rgb.png", "prompt": "Is <image> an image?", "answer": "No."}' >"$T/d/typed.jsonl"
expect 0 "examples     1" "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/typed.jsonl" -t 1

printf '%s\n' '{"prompt": "ok", "answer": "fine"}' 'not json' >"$T/d/bad.jsonl"
expect 1 "bad.jsonl:2:" "$TERN" perplexity -m "$M" --data "$T/d/bad.jsonl"
printf '%s\n' '{"image": "img/missing.png", "prompt": "x", "answer": "y"}' >"$T/d/missing.jsonl"
expect 1 "missing.png" "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/missing.jsonl"
cp "$IMAGES/truncated.jpg" "$T/d/img/"
printf '%s\n' '{"image": "img/truncated.jpg", "prompt": "x", "answer": "y"}' >"$T/d/trunc.jsonl"
expect 1 "truncated.jpg" "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/trunc.jsonl"
: >"$T/d/empty.jsonl"
expect 1 "no examples" "$TERN" perplexity -m "$M" --data "$T/d/empty.jsonl"

# Against PyTorch: per-example total NLL (tokens x nll/token) within 1e-3.
if [ -f "$TRAINING/model.py" ] && [ -f "$TRAINING/tokenizer.py" ] &&
    "$PY" -c "import torch" 2>/dev/null; then
    "$TERN" perplexity -m "$M" --mmproj "$V" --data "$T/d/test.jsonl" -v -t 1 >"$T/tern.txt" 2>&1
    "$PY" "$HERE/ppl_reference.py" "$TRAINING" "$GOLDEN/tiny-hf" "$T/d/test.jsonl" >"$T/ref.txt" 2>&1 ||
        { fail "reference"; cat "$T/ref.txt"; }
    if ! awk 'NR == FNR { tok[$1] = $2; nll[$1] = $3; next }
              /^[0-9]+\t/ { n++; line = $1; t = $5; x = $3 * t
                  if (!(line in nll) || tok[line] != t) { print "line " line ": tokens differ"; bad = 1 }
                  else if (x - nll[line] > 1e-3 || nll[line] - x > 1e-3) {
                      print "line " line ": tern " x " reference " nll[line]; bad = 1 } }
              END { if (n != 4) { print n " examples scored"; bad = 1 }; exit bad }' \
            "$T/ref.txt" "$T/tern.txt"; then
        fail "NLLs differ from the PyTorch reference"; cat "$T/tern.txt" "$T/ref.txt"
    else
        echo "ok: answer NLLs match the PyTorch reference"
    fi
else
    echo "note: PyTorch reference skipped (needs $PY with torch and $TRAINING/model.py)"
fi

finish
