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
# Stages: the first world (data.py --wide 0: shapes on a 3x3 grid over dull backgrounds) trains
# the float model in two cosine cycles (float/, float2/); a third cycle (world/) goes on from
# it on the wider world mixed half and half with the first (data.py --wide 0.5: any background,
# shapes of any size anywhere, any picture size and format); the ternary and binary copies are
# fine-tuned from that. A fourth (world3/) goes on from the third on a larger set of fresh
# wider-world pictures (data-world3/) with the per-cell vision loss at full weight. Then the
# vision tower alone is taught each object's shape (tower/, world_probe.py pool) and the
# language side learns to read it in 900-step stages (B, C, E-J on the picture mixes
# of data-shapes/); the ternary and binary copies are fine-tuned from the last stage.
#
# Environment: PYTHON (default /usr/bin/python3, Debian's, which has python3-torch),
# OUT, FLOAT_STEPS (float steps of the first cycle, default 6900), FLOAT2_STEPS (second
# cycle, default 4000), WORLD_STEPS and WORLD2_STEPS (the two wider-world cycles), WORLD_FROM
# (an HF float model to start the wider-world cycle from instead of training float/ and
# float2/: the shipped models were made with WORLD_FROM = models/hf/float as of commit
# a7381e4), WORLD3_STEPS (the fourth cycle, world3/; 0: none), WORLD_CONTINUE (an HF float
# model to start world3/ from, skipping everything before it; training/checkpoints/world-float
# is world3/'s output, so that runs one more such cycle from it), QAT_STEPS, ABSMEAN_STEPS, EVAL_GREEDY (images decoded for real by
# evaluate.py, default 60), TERN (the tern CLI for the C-side hooks), MODELS (where the shipped
# files are written, default models/ of this checkout; another directory to compare before
# replacing them), THREADS (torch threads per process, default 1), SHAPES (0: stop after
# world3/, no tower or stages), TOWER_FROM (a world_probe.py pool checkpoint to use instead of
# training tower/: training/checkpoints/world-tower.pt is tower/'s output), SHAPES_CONTINUE (an
# HF float model to fine-tune the ternary and binary copies from, skipping all float training:
# training/checkpoints/world-shapes-j is the last stage's output, J) with SHAPES_DATA (the data.py
# directory they train on then; default: the last stage's picture mix, made as 2g makes it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
PY="${PYTHON:-/usr/bin/python3}"
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

if [ $smoke = 1 ]; then
  OUT="${OUT:-$(mktemp -d /tmp/tern-training-smoke.XXXXXX)}"
  data_args=(--train 48 --val 12 --test 8 --test-wide 8 --workers 1)
  world_data_args=(--train 48 --val 12 --test 8 --test-wide 8 --workers 1)
  ood_n=8
  float_args=(--images 4 --qpi 2 --eval-every 2 --eval-limit 4 --ckpt-every 2 --log-every 1)
  world_args=("${float_args[@]}" --steps 4 --attn-sup 3,0.5); ws2=0
  world3_data_args=("${world_data_args[@]}")
  world3_args=("${float_args[@]}" --steps 4 --attn-sup 3,0.5); ws3=4; ws3_first=2
  threads=1
  fs=4; grow_at=2; fs2=6
  float2_args=("${float_args[@]}" --steps 4 --attn-sup 3,0.5)
  first_args=(--train 16 --workers 1)
  wide_sets=(500000:12 600000:12)
  tower_segments=(3:3e-4:500000 5:1e-3:600000 7:1e-3:first)
  mixes=("lm3=w3 500000" "lm4=600000")
  stages=(B:lm3:3e-4:31 C:lm4:2e-4:32)
  shapes_args=("${float_args[@]}" --aux 1.0 --unlabel-reached --attn-sup 3,1.0); stage_steps=3
  qat_args=(--steps 3 --images 4 --qpi 2 --eval-every 2 --eval-limit 4 --log-every 1 --feat-kd 1.0)
  abs_args=("${qat_args[@]}")
  eval_args=(--limit 4)
else
  OUT="${OUT:-$here/out}"
  data_args=(--test-wide 0)
  world_data_args=(--train 8000 --val 300 --test 400 --test-wide 400)
  ood_n=300
  threads="${THREADS:-1}"
  fs="${FLOAT_STEPS:-6900}"; grow_at=2800; fs2=$fs
  float_args=(--images 16 --qpi 6 --lr 1.5e-3 --aux 1.0 --aux-steps $((fs - 250))
              --eval-every 500 --eval-limit 150 --ckpt-every 200 --log-every 50)
  fs3="${FLOAT2_STEPS:-4000}"
  float2_args=(--steps "$fs3" --images 16 --qpi 6 --lr 7e-4 --aux 1.0 --aux-steps $((fs3 - 250))
               --qkeep describe=0.3,count=0.2,color=0.6,exists=0.6 --attn-sup 3,1.0 --seed 12
               --eval-every 500 --eval-limit 150 --ckpt-every 200 --log-every 50)
  ws="${WORLD_STEPS:-500}"; ws2="${WORLD2_STEPS:-500}"
  world_args=(--steps "$ws" --images 16 --qpi 6 --lr 6e-4 --warmup 30 --aux 0.3
              --aux-steps $((ws - 100)) --qkeep describe=0.5,count=0.5 --attn-sup 3,1.0 --seed 21
              --eval-every 100 --eval-limit 150 --ckpt-every 25 --log-every 10)
  world3_data_args=(--train 4000 --wide-offset 4000 --val 300 --test 400 --test-wide 400)
  ws3="${WORLD3_STEPS:-300}"; ws3_first=60
  world3_args=(--steps "$ws3" --images 24 --qpi 3 --lr 3e-4 --warmup 20 --aux 1.0
               --aux-steps $((ws3 - 50)) --qkeep describe=0.5,count=0.5 --attn-sup 3,1.0
               --seed 23 --eval-every 60 --eval-limit 100 --ckpt-every 10 --log-every 5)
  # 2f-2g as run (RESULTS-world.md sections 6-7): the tower's picture sets (data.py --wide 1.0
  # --wide-offset OFFSET, N pictures each), the step by which each had joined, the three
  # picture mixes of the language stages and the stages themselves
  first_args=(--train 4000)
  wide_sets=(500000:3000 600000:6000 700000:12000 800000:12000 900000:12000 920000:12000
             940000:12000 952000:12000)
  tower_segments=(4900:3e-4:500000 6900:1e-3: 9000:1e-3:600000 11700:1e-3:700000
                  13900:1e-3:800000 16500:1e-3:900000 22800:1e-3:920000 27000:1e-3:first)
  mixes=("lm3=w3 700000" "lm4=800000 940000" "lm5=900000 920000 952000")
  stages=(B:lm3:3e-4:31 C:lm4:2e-4:32 E:lm5:1.5e-4:34 F:lm4:1.5e-4:35 G:lm5:1.5e-4:36
          H:lm4:1.5e-4:8 I:lm5:1.5e-4:10 J:lm4:7.5e-5:11)
  shapes_args=(--images 24 --qpi 3 --warmup 20 --aux 1.0 --unlabel-reached
               --qkeep describe=0.5,count=0.5 --attn-sup 3,1.0
               --eval-every 300 --eval-limit 100 --ckpt-every 50 --log-every 10)
  stage_steps=900
  qat_args=(--steps "${QAT_STEPS:-600}" --images 16 --qpi 6 --eval-every 500 --eval-limit 100
            --feat-kd "${FEAT_KD:-1.0}")
  abs_args=(--steps "${ABSMEAN_STEPS:-50}" --images 16 --qpi 6 --eval-every 1000)
  eval_args=(--greedy-limit "${EVAL_GREEDY:-60}")
fi
shapes="${SHAPES:-1}"
echo "training pipeline: OUT=$OUT smoke=$smoke"
mkdir -p "$OUT"
t0=$(date +%s)

# 1. data + tokenizer + test split files for the C engine: the first world (float/, float2/),
#    the wider world mixed with it (world/ and the fine-tunings), and the second renderer's
#    out-of-distribution test split (data_ood.py, never trained on)
[ -n "${WORLD_FROM:-}${WORLD_CONTINUE:-}${SHAPES_CONTINUE:-}" ] || [ -f "$OUT/data/train.npz" ] ||
  "$PY" "$here/data.py" --out "$OUT/data" --wide 0 "${data_args[@]}"
[ -n "${WORLD_CONTINUE:-}${SHAPES_CONTINUE:-}" ] || [ -f "$OUT/data-world/train.npz" ] ||
  "$PY" "$here/data.py" --out "$OUT/data-world" --wide 0.5 "${world_data_args[@]}"
[ "$ws3" = 0 ] || [ -f "$OUT/data-world3/train.npz" ] ||
  "$PY" "$here/data.py" --out "$OUT/data-world3" --wide 0.5 "${world3_data_args[@]}"
if "$PY" -c 'import cairo' 2>/dev/null; then
  for d in data-world data-world3; do
    if [ -d "$OUT/$d" ] && [ ! -f "$OUT/$d/test_ood.npz" ]; then
      "$PY" "$here/data_ood.py" --out "$OUT/$d" --n "$ood_n"
    fi
  done
else
  echo "python3-cairo not installed: no out-of-distribution split (data_ood.py)"
fi

# 2. float training (resumable). A 3-layer decoder learns to read the image quickly, but
#    finding an object named in the question stalls there, so at grow_at two identity layers
#    are inserted (grow.py) and training goes on with 5 layers, asking the questions that need
#    that (colour, shape, where, exists) more often than count and describe, with a hint on
#    where to look (--attn-sup: see train.py's attn_sup_loss).
skip_early=${WORLD_CONTINUE:+1}${SHAPES_CONTINUE:+1}
if [ -z "${WORLD_FROM:-}${skip_early}" ] && [ ! -f "$OUT/float/grown" ]; then
  "$PY" "$here/train.py" --data "$OUT/data" --out "$OUT/float" --resume "${float_args[@]}" \
    --steps $fs --stop-at $grow_at
  "$PY" "$here/grow.py" "$OUT/float/ckpt.pt" "$OUT/float/ckpt.pt" --after 0,1
  touch "$OUT/float/grown"
fi
[ -n "${WORLD_FROM:-}${skip_early}" ] || [ -f "$OUT/float/hf/config.json" ] ||
  "$PY" "$here/train.py" --data "$OUT/data" --out "$OUT/float" --resume "${float_args[@]}" \
    --steps "$fs2" --config '{"text_config": {"num_hidden_layers": 5}}' \
    --qkeep describe=0.5,count=0.3 --attn-sup 3,0.5 --seed 3
# 2b. a second cosine cycle (warm restart) from that model: the object-finding questions are
#     still improving when the first cycle's learning rate has decayed. This cycle asks mostly
#     "What shape is the red object?" and "Where is ...?" and doubles the attention hint.
F2="${WORLD_FROM:-$OUT/float2/hf}"
[ -n "$skip_early" ] || [ -f "$F2/config.json" ] ||
  "$PY" "$here/train.py" --data "$OUT/data" --out "$OUT/float2" --resume --init "$OUT/float/hf" \
    --config '{"text_config": {"num_hidden_layers": 5}}' "${float2_args[@]}"
# 2c. the wider world: a third cosine cycle from that model on the wider world mixed half and
#     half with the first (which keeps its accuracy there); colour and count questions are
#     what the wider world changes most, so nothing is asked much less often than the rest.
F="$OUT/world"
[ -n "$skip_early" ] || [ -f "$F/hf/config.json" ] ||
  "$PY" "$here/train.py" --data "$OUT/data-world" --out "$F" --resume --init "$F2" \
    --threads "$threads" --config '{"text_config": {"num_hidden_layers": 5}}' "${world_args[@]}"
# 2d. a second wider-world cycle (warm restart from world/): the first one's loss on the wider
#     world was still falling fast when its learning rate had decayed.
if [ "$ws2" -gt 0 ]; then
  [ -n "$skip_early" ] || [ -f "$OUT/world2/hf/config.json" ] ||
    "$PY" "$here/train.py" --data "$OUT/data-world" --out "$OUT/world2" --resume --init "$F/hf" \
      --threads "$threads" --config '{"text_config": {"num_hidden_layers": 5}}' \
      "${world_args[@]}" --steps "$ws2" --aux-steps $((ws2 - 100)) --lr 4e-4 --seed 22
  F="$OUT/world2"
fi
# 2e. a fourth cycle on fresh wider-world pictures (data-world3: 2000, none of them in
#     data-world, and the first world's again, half and half; the wider world's shapes drawn
#     in more forms: data.wide_polygon). After 2d the model named the shape of a wider-world or
#     second-renderer object right only 20-25 % of the time (a single large shape on a plain
#     background too, any shape size), while colour, place and count were at 55-90 %: the
#     vision encoder knows shapes at the first world's size and grid only. So the per-cell
#     vision loss (train.py aux_head: shape, colour, size of the object centred in each cell)
#     goes back to full weight, each step sees more pictures with fewer questions each (24 x 3,
#     not 16 x 6; about the same cost), and the evaluations also score the held-out split, the
#     wider world's test split and the second renderer's (never trained on) into log.jsonl.
#     As run (training/checkpoints/world-float is its output, from world2/'s): the first 60
#     steps at lr 5e-4 on a 240-step cosine, then, after the evaluation at step 60 had fallen
#     on every split, resumed at lr 3e-4 on a 300-step cosine. Against world2/ (C engine, whole
#     splits): held-out 94.1 -> 93.7 %, OOD 54.2 -> 56.1 %, OOD single colour 79.8 -> 85.4 %;
#     shape recognition barely moved (training/checkpoints/README.md).
W3="$OUT/data-world3"
ev=held="$W3/test.npz",wide="$W3/test_wide.npz"  # what train.py --eval-extra scores
[ -f "$W3/test_ood.npz" ] && ev="$ev,ood=$W3/test_ood.npz"
if [ "$ws3" -gt 0 ] && [ -z "${SHAPES_CONTINUE:-}" ]; then
  src="${WORLD_CONTINUE:-$F/hf}"
  w3=("$PY" "$here/train.py" --data "$W3" --out "$OUT/world3" --resume --init "$src"
      --threads "$threads" --config '{"text_config": {"num_hidden_layers": 5}}'
      --eval-extra "$ev" "${world3_args[@]}")
  if [ ! -f "$OUT/world3/ckpt.pt" ] && [ ! -f "$OUT/world3/hf/config.json" ] && [ $smoke = 0 ]; then
    "${w3[@]}" --steps 240 --lr 5e-4 --aux-steps 190 --stop-at "$ws3_first"
  fi
  [ -f "$OUT/world3/hf/config.json" ] || "${w3[@]}"
  F="$OUT/world3"
fi
# the float cycles in order, for report.py
for c in float2 world world2 world3; do [ -d "$OUT/$c" ] && echo $c; done > "$OUT/cycles"
# the data the evaluations below use: the last cycle's test splits
WD="$OUT/data-world"; [ "$ws3" -gt 0 ] && WD="$W3"
QD="$WD"  # ... and the data the fine-tunings train on

# 2f. the tower taught shapes directly (world_probe.py pool; RESULTS-world.md sections 6-7).
#     After 2e the vision tower knew shapes only at the first world's offset to its patches, so
#     the tower alone (with a linear shape/colour head) learns each object's shape from the
#     patches its disc covers, on wider-world pictures only (fresh ones added as it goes: what
#     limits it is pictures, not steps), then with a third of each batch from first-world
#     pictures moved by up to 8 px so that the first world is not given up. Each segment is a
#     resume (fresh optimiser, 50-step warm-up) to its end step.
# 2g. the language side reads the new tower: world3/'s model with it (train.py --vision-init),
#     then 900-step warm restarts alternating between picture sets that hold the first world
#     three times and 24 000-36 000 wider-world pictures (mix.py), as listed in $stages.
WS="$OUT/data-shapes"
wide_set() {  # OFFSET: its N wider-world pictures (wide_sets' OFFSET:N), made once
  local set
  for set in "${wide_sets[@]}"; do
    [ "${set%%:*}" = "$1" ] && [ ! -f "$WS/w$1/train.npz" ] &&
      "$PY" "$here/data.py" --out "$WS/w$1" --splits train --wide 1.0 --train "${set#*:}" \
        --wide-offset "$1" --workers 1
  done
  return 0
}
first_set() {  # the first world's pictures the tower and the mixes use, made once
  [ -f "$WS/first/train.npz" ] ||
    "$PY" "$here/data.py" --out "$WS/first" --splits train --wide 0 "${first_args[@]}"
}
make_mix() {  # NAME of mixes: the first world three times + its wider-world sets, made once
  local mx name o ins=() f d
  first_set
  for mx in "${mixes[@]}"; do  # NAME=OFFSET OFFSET...; w3: data-world3's wider-world pictures
    name=${mx%%=*}; [ "$name" = "$1" ] || continue
    for o in ${mx#*=}; do
      if [ "$o" = w3 ]; then ins+=("$W3/train.npz:wide"); else wide_set "$o"; ins+=("$WS/w$o/train.npz"); fi
    done
    d="$WS/$name"; mkdir -p "$d"
    [ -f "$d/train.npz" ] || (cd "$here" && "$PY" mix.py "$d/train.npz" \
      "$WS/first/train.npz" "$WS/first/train.npz" "$WS/first/train.npz" "${ins[@]}")
    for f in val.npz test.npz tokenizer.json; do ln -sf "$W3/$f" "$d/$f"; done
  done
}
if [ "$shapes" = 1 ] && [ -z "${SHAPES_CONTINUE:-}" ]; then
  mkdir -p "$WS"
  for set in "${wide_sets[@]}"; do wide_set "${set%%:*}"; done
  first_set
  tower="${TOWER_FROM:-$OUT/tower/tower.pt}"
  if [ -z "${TOWER_FROM:-}" ]; then
    mkdir -p "$OUT/tower"
    sets=(); resume=()
    for seg in "${tower_segments[@]}"; do  # END_STEP:LR:OFFSET_ADDED|first
      IFS=: read -r end lr add <<< "$seg"
      if [ "$add" = first ]; then sets+=(--first "$WS/first/train.npz")
      elif [ -n "$add" ]; then sets+=("$WS/w$add/train.npz"); fi
      if [ ! -f "$OUT/tower/done-$end" ]; then
        WORLD_DATA="$W3" "$PY" "$here/world_probe.py" pool "$F/hf" "$end" "$tower" \
          --lr "$lr" "${resume[@]}" "${sets[@]}" > "$OUT/tower/log-$end" 2>&1
        touch "$OUT/tower/done-$end"
      fi
      resume=(--resume "$tower")
    done
  fi
  for mx in "${mixes[@]}"; do make_mix "${mx%%=*}"; done
  prev="$F/hf"; init=(--vision-init "$tower")
  for st in "${stages[@]}"; do  # NAME:MIX:LR:SEED[:STEPS]; the per-cell loss stops 50 before
    IFS=: read -r name mix lr seed n <<< "$st"
    n=${n:-$stage_steps}
    [ -f "$OUT/$name/hf/config.json" ] ||
      "$PY" "$here/train.py" --data "$WS/$mix" --out "$OUT/$name" --resume --init "$prev" \
        "${init[@]}" --threads "$threads" --config '{"text_config": {"num_hidden_layers": 5}}' \
        --eval-extra "$ev" --lr "$lr" --seed "$seed" "${shapes_args[@]}" --steps "$n" \
        --aux-steps $((n > 100 ? n - 50 : n))
    prev="$OUT/$name/hf"; init=(); F="$OUT/$name"; QD="$WS/$mix"; echo "$name" >> "$OUT/cycles"
  done
fi
if [ -n "${SHAPES_CONTINUE:-}" ]; then  # start the fine-tunings from a model made as above
  F="$OUT/shapes-continue"; mkdir -p "$F"
  ln -sfn "$(cd "$SHAPES_CONTINUE" && pwd)" "$F/hf"
  echo shapes-continue > "$OUT/cycles"
  last="${stages[${#stages[@]}-1]}"; last="${last#*:}"; last="${last%%:*}"
  [ -n "${SHAPES_DATA:-}" ] || { mkdir -p "$WS"; make_mix "$last"; }
  QD="${SHAPES_DATA:-$WS/$last}"  # as run: the last stage's picture mix
fi
fl=$(basename "$F")
[ -f "$F/hf16/config.json" ] || "$PY" "$here/export.py" "$F/hf" "$F/hf16"

# 3. ternary (k-means), binary and absmean (the comparison) fine-tuning side by side, one
#    thread each. The ternary and binary copies also learn to give the float model's image
#    features (--feat-kd: the frozen float tower runs beside them): trained on the answers
#    alone, the quantized tower kept what the training pictures' questions need and lost
#    shape on pictures unlike them (from J, C engine: second renderer's shape questions
#    88 % float, 77 % TQ2_0 without it, 79 % with it; Q1_0 held-out 93.8 -> 95.2 %).
pids=()
for mode in kmeans binary absmean; do
  dir=ternary; [ $mode = binary ] && dir=binary; [ $mode = absmean ] && dir=absmean
  args=("${qat_args[@]}"); [ $mode = absmean ] && args=("${abs_args[@]}")
  if [ ! -f "$OUT/$dir/eval.json" ]; then
    "$PY" "$here/ternarize.py" --data "$QD" --float "$F/hf" --out "$OUT/$dir" \
      --mode $mode "${args[@]}" > "$OUT/$dir.out" 2>&1 &
    pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p"; done

# 4. accuracy of the exported files (what tern convert will read)
for st in $fl:hf16 ternary:hf binary:hf; do
  name=${st%%:*}; sub=${st#*:}
  [ -f "$OUT/$name/eval_hf.json" ] ||
    "$PY" "$here/evaluate.py" --model "$OUT/$name/$sub" --data "$WD" "${eval_args[@]}" \
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
for st in $fl:hf16:float ternary:hf:ternary binary:hf:binary; do
  IFS=: read -r src sub name <<< "$st"
  mkdir -p "$OUT/export/$name"
  cp "$OUT/$src/$sub"/* "$OUT/export/$name/"
done
# The float checkpoint ships too, so that training can go on from it.
MODELS="${MODELS:-$root/models}"
mkdir -p "$MODELS/hf/float"
cp "$OUT/export/float"/* "$MODELS/hf/float/"

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
    cp "$g/float$f.gguf" "$MODELS/tern-demo$f-f16.gguf"
    "$TERN" quantize "$g/float$f.gguf" "$MODELS/tern-demo$f-q8_0.gguf" --type q8_0 > /dev/null
    "$TERN" quantize "$g/ternary$f.gguf" "$MODELS/tern-demo$f-tq2_0.gguf" --type tq2_0 > /dev/null
    "$TERN" quantize "$g/ternary$f.gguf" "$MODELS/tern-demo$f-tq1_0.gguf" --type tq1_0 > /dev/null
    "$TERN" quantize "$g/binary$f.gguf" "$MODELS/tern-demo$f-q1_0.gguf" --type q1_0 > /dev/null
  done
  # the whole test split (400 images), not just the 50 committed in tests/data/shapes
  w="$WD"
  ood=("--ood" "" "--ood-single" "")
  [ -f "$w/test_ood.jsonl" ] &&
    ood=(--ood "$w/test_ood.jsonl" --ood-single "$w/test_ood_single_color.jsonl")
  (cd "$root" && python3 bench/demo_table.py --tern "$TERN" --models "$MODELS" --data "$w/test.jsonl" \
     "${ood[@]}" \
     --wide "$w/test_wide.jsonl" --post-training) |
    tee "$OUT/demo_table.md"
else
  echo "no tern CLI at $TERN (run make build first): GGUF conversion and C-engine evaluation skipped"
fi
echo "pipeline done in $(( $(date +%s) - t0 )) s"
