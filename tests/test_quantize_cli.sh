#!/usr/bin/env bash
# tern mkmodel and tern quantize end to end, checked with tern inspect.
# Usage: test_quantize_cli.sh TERN (meson passes the built program).
set -u
TERN=$1
TEST_NAME=quantize
. "$(dirname "$0")/cli_lib.sh"

# has FILE REGEX: `tern inspect FILE` has a line matching the extended regex
has() {
    if "$TERN" inspect "$1" | grep -qE -- "$2"; then
        echo "ok: inspect $(basename "$1") has /$2/"
    else
        fail "inspect $1 lacks /$2/"; "$TERN" inspect "$1" | tail -40
    fi
}

M=$T/tiny.gguf
P=$T/tiny-mmproj.gguf
expect 0 "wrote $M" "$TERN" mkmodel --like tiny --type f32 -o "$M" --mmproj "$P"
has "$M" '^  llama.vocab_size +u32 +512$'
has "$M" '^  token_embd.weight +f32 +\[256, 512\]'
has "$M" 'tokenizer.ggml.tokens +array +\[string × 512\]'
has "$M" '"<\|im_start\|>"'
has "$M" 'tokenizer.ggml.merges +array +\[string'
has "$P" '^  clip.projector_type +string +"idefics3"'
has "$P" '^  v.patch_embd.weight +f32 +\[16, 16, 3, 256\]'
has "$P" '^  mm.model.fc.weight +f32 +\[1024, 256\]'

# every target type: the 14 text matrices change, bits/weight as documented;
# beside ternary and binary ones the output and embeddings become q8_0
for tb in "tq2_0 2.0625 37 q8_0" "tq1_0 1.6875 36 q8_0" "q2_0 2.25 41 q8_0" \
          "q1_0 1.125 40 q8_0" "q8_0 8.5 7 f32" "f16 16 1 f32"; do
    set -- $tb
    O=$T/tiny-$1.gguf
    if [ "$4" = q8_0 ]; then re="16 of 21 tensors re-typed: 2 q8_0, 14 $1"; else re="14 of 21 tensors re-typed: 14 $1"; fi
    expect 0 "$re" "$TERN" quantize "$M" "$O" --type "$1"
    has "$O" "^  blk.0.ffn_up.weight +$1 +\[256, 512\] +[0-9]+ +$2\$"
    has "$O" "^  $1 +14 +1179648 +[0-9]+ +$2\$"
    has "$O" "^  general.file_type +u32 +$3\$"
    has "$O" "^  token_embd.weight +$4"
    has "$O" "^  output.weight +$4"
done

# --output-type: keep, or another type than the default
expect 0 "14 of 21 tensors re-typed: 14 tq2_0" "$TERN" quantize "$M" "$T/ok.gguf" --type tq2_0 --output-type keep
has "$T/ok.gguf" '^  output.weight +f32'
expect 0 "2 f16, 14 tq2_0" "$TERN" quantize "$M" "$T/of.gguf" --type tq2_0 --output-type f16
has "$T/of.gguf" '^  token_embd.weight +f16'
expect 2 "unknown type 'q5_0'" "$TERN" quantize "$M" "$T/x.gguf" --type tq2_0 --output-type q5_0

# the vision projector: embeddings, norms and biases stay f32
O=$T/mmproj-tq2_0.gguf
expect 0 "13 of 38 tensors re-typed: 13 tq2_0" "$TERN" quantize "$P" "$O" --type tq2_0 --report
has "$O" '^  v.position_embd.weight +f32'
has "$O" '^  v.patch_embd.weight +f32'
has "$O" '^  v.blk.0.attn_q.bias +f32'
has "$O" '^  mm.model.fc.weight +tq2_0'

# back to float, other methods, --keep
expect 0 "14 of 21 tensors re-typed: 14 f32" "$TERN" quantize "$T/tiny-tq2_0.gguf" "$T/back.gguf" --type f32
expect 0 "(twn, one scale per row)" "$TERN" quantize "$M" "$T/twn.gguf" --type tq2_0 --method twn
expect 0 "(absmean, one scale per tensor)" "$TERN" quantize "$M" "$T/pt.gguf" --type q2_0 --method absmean --per-tensor
expect 0 "9 of 21 tensors re-typed: 2 q8_0, 7 tq1_0" "$TERN" quantize "$M" "$T/keep.gguf" --type tq1_0 --keep 'blk.1.*'
has "$T/keep.gguf" '^  blk.1.ffn_up.weight +f32'

# moondream2's decoder (phi2): fused qkv and biases; --preset paper keeps the first and last
# blocks and the output layer in float, ternarizes the blocks between
F=$T/phi.gguf
expect 0 "wrote $F" "$TERN" mkmodel --like phi-tiny --layers 4 --type f16 -o "$F"
has "$F" '^  general.architecture +string +"phi2"'
has "$F" '^  phi2.rope.dimension_count +u32 +32$'
has "$F" '^  blk.0.attn_qkv.weight +f16 +\[256, 768\]'
has "$F" '^  blk.3.ffn_down.bias +f32 +\[256\]'
has "$F" '^  output.bias +f32 +\[512\]'
expect 0 "8 of 45 tensors re-typed: 8 tq2_0" "$TERN" quantize "$F" "$T/paper.gguf" --type tq2_0 --preset paper
has "$T/paper.gguf" '^  blk.0.attn_qkv.weight +f16'
has "$T/paper.gguf" '^  blk.1.attn_qkv.weight +tq2_0'
has "$T/paper.gguf" '^  blk.2.ffn_down.weight +tq2_0'
has "$T/paper.gguf" '^  blk.3.ffn_up.weight +f16'
has "$T/paper.gguf" '^  output.weight +f16'
expect 0 "0 of 38 tensors re-typed" "$TERN" quantize "$P" "$T/pm2.gguf" --type tq2_0 --preset paper
expect 2 "unknown preset 'fast'" "$TERN" quantize "$F" "$T/x.gguf" --type tq2_0 --preset fast

# same seed, same file; another seed, another file
"$TERN" mkmodel --like tiny --type tq2_0 -o "$T/s1.gguf" --seed 7 >/dev/null
"$TERN" mkmodel --like tiny --type tq2_0 -o "$T/s2.gguf" --seed 7 >/dev/null
"$TERN" mkmodel --like tiny --type tq2_0 -o "$T/s3.gguf" --seed 8 >/dev/null
cmp -s "$T/s1.gguf" "$T/s2.gguf" && echo "ok: mkmodel is deterministic" || fail "same seed, different files"
cmp -s "$T/s1.gguf" "$T/s3.gguf" && fail "different seeds, same file" || echo "ok: the seed matters"

# rows of 576 do not fit tq2_0's 256: fallback, or refusal with --strict
S=$T/s256.gguf
expect 0 "wrote $S" "$TERN" mkmodel --like smolvlm-256m --layers 1 --type q8_0 -o "$S"
has "$S" '^  llama.block_count +u32 +1$'
has "$S" '^  blk.0.attn_q.weight +q8_0 +\[576, 576\]'
expect 1 "(--strict)" "$TERN" quantize "$S" "$T/strict.gguf" --type tq2_0 --strict
[ -e "$T/strict.gguf" ] && fail "--strict left a file" || echo "ok: --strict wrote nothing"
expect 0 "using q2_0" "$TERN" quantize "$S" "$T/fb.gguf" --type tq2_0
has "$T/fb.gguf" '^  blk.0.attn_q.weight +q2_0 +\[576, 576\]'
has "$T/fb.gguf" '^  blk.0.ffn_down.weight +tq2_0 +\[1536, 576\]'

# bad command lines exit 2, failures exit 1 naming the file
expect 2 "need IN and OUT" "$TERN" quantize
expect 2 "need --type" "$TERN" quantize "$M" "$T/x.gguf"
expect 2 "unknown type 'q4_0'" "$TERN" quantize "$M" "$T/x.gguf" --type q4_0
expect 2 "unknown method 'gptq'" "$TERN" quantize "$M" "$T/x.gguf" --type tq2_0 --method gptq
expect 2 "unknown option '--bogus'" "$TERN" quantize "$M" "$T/x.gguf" --type tq2_0 --bogus
expect 2 "unexpected argument" "$TERN" quantize "$M" "$T/x.gguf" extra --type tq2_0
expect 0 "usage: tern quantize" "$TERN" quantize --help
expect 1 "$T/missing.gguf" "$TERN" quantize "$T/missing.gguf" "$T/x.gguf" --type tq2_0
expect 2 "unknown --like 'huge'" "$TERN" mkmodel --like huge --type f32 -o "$T/x.gguf"
expect 2 "need --like, --type and -o" "$TERN" mkmodel --like tiny -o "$T/x.gguf"
expect 2 "no vision part" "$TERN" mkmodel --like smollm2-1.7b --type f32 -o "$T/x.gguf" --mmproj "$T/y.gguf"
expect 2 "--layers" "$TERN" mkmodel --like tiny --type f32 -o "$T/x.gguf" --layers 0
expect 0 "usage: tern mkmodel" "$TERN" help mkmodel
expect 1 "$T/nodir/x.gguf" "$TERN" mkmodel --like tiny --type f32 -o "$T/nodir/x.gguf"

finish
