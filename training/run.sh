#!/usr/bin/env bash
# The demo model pipeline: data -> float training -> k-means ternary / binary / absmean
# fine-tuning -> export -> accuracy of the exported files -> results.json + RESULTS.md.
#
#   training/run.sh            full run in training/out (resumes: finished stages are skipped,
#                              float training continues from its checkpoint); copies the final
#                              models to OUT/export/{float,ternary,binary}, the float one to models/hf/float
#   training/run.sh --smoke    the whole pipeline on a tiny data set with a few steps, in a
#                              temporary directory (or $OUT), nothing copied; < 3 minutes
#
# Environment: PYTHON (default /usr/bin/python3, Debian's, which has python3-torch),
# OUT, FLOAT_STEPS (float steps of the first cycle, default 6900), FLOAT2_STEPS (second
# cycle, default 4000), QAT_STEPS, ABSMEAN_STEPS, TERN (the tern
# CLI for the C-side hooks).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
PY="${PYTHON:-/usr/bin/python3}"
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

if [ $smoke = 1 ]; then
  OUT="${OUT:-$(mktemp -d /tmp/tern-training-smoke.XXXXXX)}"
  data_args=(--train 48 --val 12 --test 8 --workers 1)
  float_args=(--images 4 --qpi 2 --eval-every 2 --eval-limit 4 --ckpt-every 2 --log-every 1)
  fs=4; grow_at=2; fs2=6
  float2_args=("${float_args[@]}" --steps 4 --attn-sup 3,0.5)
  qat_args=(--steps 3 --images 4 --qpi 2 --eval-every 2 --eval-limit 4 --log-every 1)
  abs_args=("${qat_args[@]}")
  eval_args=(--limit 4)
else
  OUT="${OUT:-$here/out}"
  data_args=()
  fs="${FLOAT_STEPS:-6900}"; grow_at=2800; fs2=$fs
  float_args=(--images 16 --qpi 6 --lr 1.5e-3 --aux 1.0 --aux-steps $((fs - 250))
              --eval-every 500 --eval-limit 150 --ckpt-every 200 --log-every 50)
  fs3="${FLOAT2_STEPS:-4000}"
  float2_args=(--steps "$fs3" --images 16 --qpi 6 --lr 7e-4 --aux 1.0 --aux-steps $((fs3 - 250))
               --qkeep describe=0.3,count=0.2,color=0.6,exists=0.6 --attn-sup 3,1.0 --seed 12
               --eval-every 500 --eval-limit 150 --ckpt-every 200 --log-every 50)
  qat_args=(--steps "${QAT_STEPS:-300}" --images 16 --qpi 6 --eval-every 500 --eval-limit 100)
  abs_args=(--steps "${ABSMEAN_STEPS:-150}" --images 16 --qpi 6 --eval-every 1000)
  eval_args=()
fi
echo "training pipeline: OUT=$OUT smoke=$smoke"
mkdir -p "$OUT"
t0=$(date +%s)

# 1. data + tokenizer + test split files for the C engine
[ -f "$OUT/data/train.npz" ] || "$PY" "$here/data.py" --out "$OUT/data" "${data_args[@]}"

# 2. float training (resumable). A 3-layer decoder learns to read the image quickly, but
#    finding an object named in the question stalls there, so at grow_at two identity layers
#    are inserted (grow.py) and training goes on with 5 layers, asking the questions that need
#    that (colour, shape, where, exists) more often than count and describe, with a hint on
#    where to look (--attn-sup: see train.py's attn_sup_loss).
if [ ! -f "$OUT/float/grown" ]; then
  "$PY" "$here/train.py" --data "$OUT/data" --out "$OUT/float" --resume "${float_args[@]}" \
    --steps $fs --stop-at $grow_at
  "$PY" "$here/grow.py" "$OUT/float/ckpt.pt" "$OUT/float/ckpt.pt" --after 0,1
  touch "$OUT/float/grown"
fi
[ -f "$OUT/float/hf/config.json" ] ||
  "$PY" "$here/train.py" --data "$OUT/data" --out "$OUT/float" --resume "${float_args[@]}" \
    --steps "$fs2" --config '{"text_config": {"num_hidden_layers": 5}}' \
    --qkeep describe=0.5,count=0.3 --attn-sup 3,0.5 --seed 3
# 2b. a second cosine cycle (warm restart) from that model: the object-finding questions are
#     still improving when the first cycle's learning rate has decayed. This cycle asks mostly
#     "What shape is the red object?" and "Where is ...?" and doubles the attention hint.
F="$OUT/float2"
[ -f "$F/hf/config.json" ] ||
  "$PY" "$here/train.py" --data "$OUT/data" --out "$F" --resume --init "$OUT/float/hf" \
    --config '{"text_config": {"num_hidden_layers": 5}}' "${float2_args[@]}"
[ -f "$F/hf16/config.json" ] || "$PY" "$here/export.py" "$F/hf" "$F/hf16"

# 3. ternary (k-means) and binary fine-tuning side by side (one thread each), then absmean
pids=()
for mode in kmeans binary; do
  dir=ternary; [ $mode = binary ] && dir=binary
  if [ ! -f "$OUT/$dir/eval.json" ]; then
    "$PY" "$here/ternarize.py" --data "$OUT/data" --float "$F/hf" --out "$OUT/$dir" \
      --mode $mode "${qat_args[@]}" > "$OUT/$dir.out" 2>&1 &
    pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
[ -f "$OUT/absmean/eval.json" ] ||
  "$PY" "$here/ternarize.py" --data "$OUT/data" --float "$F/hf" --out "$OUT/absmean" \
    --mode absmean "${abs_args[@]}" > "$OUT/absmean.out" 2>&1

# 4. accuracy of the exported files (what tern convert will read)
for st in float2:hf16 ternary:hf binary:hf; do
  name=${st%%:*}; sub=${st#*:}
  [ -f "$OUT/$name/eval_hf.json" ] ||
    "$PY" "$here/evaluate.py" --model "$OUT/$name/$sub" --data "$OUT/data" "${eval_args[@]}" \
      --out "$OUT/$name/eval_hf.json" > /dev/null
done

# 5. results
if [ $smoke = 1 ]; then
  "$PY" "$here/report.py" "$OUT" "$OUT/results.json" "$OUT/RESULTS.md"
  echo "smoke pipeline OK in $(( $(date +%s) - t0 )) s: $OUT"
  [ -n "${KEEP:-}" ] || rm -rf "$OUT"
  exit 0
fi
"$PY" "$here/report.py" "$OUT" "$here/results.json" "$here/RESULTS.md"
for st in float2:hf16:float ternary:hf:ternary binary:hf:binary; do
  IFS=: read -r src sub name <<< "$st"
  mkdir -p "$OUT/export/$name"
  cp "$OUT/$src/$sub"/* "$OUT/export/$name/"
done
# The float checkpoint ships too, so that training can go on from it.
mkdir -p "$root/models/hf/float"
cp "$OUT/export/float"/* "$root/models/hf/float/"

# 6. The C side: convert, re-type and write the shipped GGUF pairs into models/, then measure
#    them (bench/demo_table.py: size, bits/weight, RSS, tok/s, perplexity, accuracy per type).
#    The ternary/binary weights are already t*s with f16 s, so re-quantizing them to
#    TQ2_0/TQ1_0/Q1_0 reproduces them exactly (no second rounding).
TERN="${TERN:-$root/build/src/cli/tern}"  # the CLI of this checkout (make build)
if [ -x "$TERN" ]; then
  g="$OUT/gguf"; mkdir -p "$g"
  for name in float ternary binary; do
    "$TERN" convert "$OUT/export/$name" "$g/$name" --outtype f16
  done
  for f in "" -mmproj; do
    cp "$g/float$f.gguf" "$root/models/tern-demo$f-f16.gguf"
    "$TERN" quantize "$g/float$f.gguf" "$root/models/tern-demo$f-q8_0.gguf" --type q8_0 > /dev/null
    "$TERN" quantize "$g/ternary$f.gguf" "$root/models/tern-demo$f-tq2_0.gguf" --type tq2_0 > /dev/null
    "$TERN" quantize "$g/ternary$f.gguf" "$root/models/tern-demo$f-tq1_0.gguf" --type tq1_0 > /dev/null
    "$TERN" quantize "$g/binary$f.gguf" "$root/models/tern-demo$f-q1_0.gguf" --type q1_0 > /dev/null
  done
  # the whole test split (400 images), not just the 50 committed in tests/data/shapes
  (cd "$root" && python3 bench/demo_table.py --tern "$TERN" --data "$OUT/data/test.jsonl" \
                     --post-training) |
    tee "$OUT/demo_table.md"
else
  echo "no tern CLI at $TERN (run make build first): GGUF conversion and C-engine evaluation skipped"
fi
echo "pipeline done in $(( $(date +%s) - t0 )) s"
