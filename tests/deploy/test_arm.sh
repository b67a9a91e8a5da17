#!/usr/bin/env bash
# The whole daemon and CLI on arm64, under qemu-user (make test-arm):
#
#   test_arm.sh NATIVE_BUILD ARM64_BUILD
#
# Starts the x86 ternd (NATIVE_BUILD) on the demo model and records its greedy answers to the
# known questions through every API; then the arm64 ternd (ARM64_BUILD, cross-built against
# Debian's arm64 libraries) under qemu-aarch64 twice, as a CPU with dotprod (-cpu max) and as a
# Raspberry Pi 4 (-cpu cortex-a72, plain NEON), and checks that its answers are byte for byte
# the x86 ones and that it picked the kernels that CPU should get. Then `tern bench -m` on the
# demo model under each CPU.
set -euo pipefail
native=$1 arm=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/deploy/deploy_lib.sh"
model=$root/models/tern-demo-tq2_0.gguf
mmproj=$root/models/tern-demo-mmproj-tq2_0.gguf
# -L /: dynamically linked arm64 programs find /lib/ld-linux-aarch64.so.1 and the multiarch
# libraries in /usr/lib/aarch64-linux-gnu.
qemu=(qemu-aarch64-static -L /)
# Two threads (the CI machine has two cores), one slot, no stats database.
args=(--config /dev/null --engine model --model "$model" --mmproj "$mmproj"
      --threads 2 --slots 1 --db '')
work=$(mktemp -d)
trap 'ternd_kill; rm -rf "$work"' EXIT

t0=$SECONDS
echo "== x86-64 ternd (the reference answers)"
ternd_start "$work/x86.log" "$native/src/server/ternd" "${args[@]}"
ask_all "$work/x86.txt"
ternd_stop
echo "   ($((SECONDS - t0)) s)"

for cpu in max:dotprod cortex-a72:neon; do
    name=${cpu%%:*} isa=${cpu#*:}
    t0=$SECONDS
    echo "== arm64 ternd under qemu-aarch64 -cpu $name (expects $isa kernels)"
    ternd_start "$work/$name.log" "${qemu[@]}" -cpu "$name" "$arm/src/server/ternd" "${args[@]}"
    if ! grep -q "kernels $isa," "$work/$name.log"; then
        echo "FAIL: ternd did not pick the $isa kernels:"; cat "$work/$name.log"; exit 1
    fi
    ask_all "$work/$name.txt"
    ternd_stop
    if ! diff -u "$work/x86.txt" "$work/$name.txt"; then
        echo "FAIL: arm64 ($name) answers differ from x86-64"; exit 1
    fi
    echo "   same answers as x86-64 ($((SECONDS - t0)) s)"

    t0=$SECONDS
    echo "== tern bench -m under qemu-aarch64 -cpu $name"
    "${qemu[@]}" -cpu "$name" "$arm/src/cli/tern" bench -m "$model" --mmproj "$mmproj" \
        -t 2 -r 1 -p 64 -n 16 | tee "$work/bench-$name.txt"
    if ! grep -q "| $isa |" "$work/bench-$name.txt"; then
        echo "FAIL: tern bench did not report the $isa kernels"; exit 1
    fi
    echo "   ($((SECONDS - t0)) s)"
done
echo "arm64 ternd and tern: same answers as x86-64 under both CPUs"
