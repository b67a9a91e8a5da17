#!/usr/bin/env bash
# The tern front end and `tern inspect`: exit codes, messages, text and JSON
# output. Usage: test_cli.sh TERN MKGGUF (meson passes the built programs).
set -u
TERN=$1
MKGGUF=$2
TEST_NAME=cli
. "$(dirname "$0")/cli_lib.sh"

"$MKGGUF" "$T" || { echo "FAIL: mkgguf"; exit 1; }
F=$T/vocab.gguf

# front end
expect 0 "inspect" "$TERN" --help
expect 0 "inspect" "$TERN" help
expect 2 "usage: tern COMMAND" "$TERN"
expect 0 "tern 0." "$TERN" --version
expect 0 "usage: tern inspect FILE" "$TERN" help inspect
expect 0 "usage: tern inspect FILE" "$TERN" inspect --help
expect 2 "'frobnicate' is not a tern command" "$TERN" frobnicate
expect 2 "'frobnicate' is not a tern command" "$TERN" help frobnicate
expect 2 "unknown option '--bogus'" "$TERN" --bogus
expect 2 "tern inspect: unknown option '--bogus'" "$TERN" inspect --bogus "$F"
expect 2 "tern inspect: unknown option '-x'" "$TERN" inspect -x "$F"
expect 2 "unexpected value '--json=1'" "$TERN" inspect --json=1 "$F"
expect 2 "tern inspect: no FILE given" "$TERN" inspect
expect 2 "tern inspect: one FILE at a time" "$TERN" inspect "$F" "$F"

# text output
expect 0 "GGUF v3, alignment 32, 2336 bytes, 11 keys, 4 tensors" "$TERN" inspect "$F"
expect 0 'tokenizer.ggml.tokens                   array   [string × 12] "<|endoftext|>", "<|im_start|>"' "$TERN" inspect "$F"
expect 0 'llama.attention.layer_norm_rms_epsilon  f32     1e-05' "$TERN" inspect "$F"
expect 0 "blk.0.ffn_up.weight  tq2_0   [256, 2]                        132  2.0625" "$TERN" inspect "$F"
expect 0 "  total         4            1600            1276  6.38" "$TERN" inspect "$F"
expect 0 "alignment 64" "$TERN" inspect "$T/align64.gguf"
expect 0 "0 keys, 0 tensors" "$TERN" inspect "$T/empty.gguf"
expect 0 '"gamma \"quoted\"\n"' "$TERN" inspect "$T/tiny.gguf"
expect 0 "q1_0          1             128              18  1.125" "$TERN" inspect "$T/tiny.gguf"

# JSON output (options after the operand work too)
if "$TERN" inspect "$F" --json >"$T/json" && python3 - "$T/json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["version"] == 3 and d["alignment"] == 32 and d["size"] == 2336, d
meta = {m["key"]: m for m in d["metadata"]}
tok = meta["tokenizer.ggml.tokens"]
assert tok["type"] == "array" and tok["element_type"] == "string" and tok["length"] == 12, tok
assert tok["head"][0] == "<|endoftext|>", tok
assert meta["llama.block_count"]["value"] == 1
assert meta["general.name"]["value"] == "vocab test"
assert [t["name"] for t in d["tensors"]][0] == "token_embd.weight"
t = d["tensors"][2]
assert t["type"] == "tq2_0" and t["shape"] == [256, 2] and t["bytes"] == 132, t
assert t["bits_per_weight"] == 2.0625
assert d["total"]["params"] == 1600 and d["total"]["bytes"] == 1276, d["total"]
assert [x["type"] for x in d["totals"]] == ["f32", "q8_0", "tq2_0", "q2_0"], d["totals"]
PY
then echo "ok: inspect --json"; else fail "inspect --json"; fi
"$TERN" inspect --json "$T/tiny.gguf" | python3 -c 'import json,sys; d=json.load(sys.stdin); m={x["key"]:x for x in d["metadata"]}; assert m["test.u64"]["value"]==1<<60 and m["test.i64"]["value"]==-(1<<60)' \
    && echo "ok: 64-bit integers exact in JSON" || fail "64-bit integers in JSON"

# bad files: exit 1 and a message naming the file
head -c 100 "$F" >"$T/cut.gguf"
expect 1 "tern inspect: $T/cut.gguf: header claims 11 metadata keys" "$TERN" inspect "$T/cut.gguf"
head -c 1000 "$F" >"$T/cut2.gguf"
expect 1 "tern inspect: $T/cut2.gguf: tensor 'token_embd.weight': data at offset 992 (816 bytes) runs past the end of the file (1000 bytes)" "$TERN" inspect "$T/cut2.gguf"
echo "hello" >"$T/text.gguf"
expect 1 "tern inspect: $T/text.gguf: not a GGUF file" "$TERN" inspect "$T/text.gguf"
expect 1 "tern inspect: $T/missing.gguf: No such file" "$TERN" inspect "$T/missing.gguf"
expect 1 "tern inspect: $T/cut2.gguf: tensor 'token_embd.weight': data at offset 992 (816 bytes) runs past the end of the file (1000 bytes)" "$TERN" inspect --json "$T/cut2.gguf"

finish
