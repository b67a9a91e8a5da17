#!/bin/sh
# systemd-analyze verify on the generated ternd.service (ExecStart pointed at the build's
# binary, since the unit names the installed path). Skipped (77) without systemd-analyze.
set -e
unit=$1 ternd=$2
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed: skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|^ExecStart=[^ ]*ternd|ExecStart=$ternd|" "$unit" > "$dir/ternd.service"
out=$(systemd-analyze verify "$dir/ternd.service" 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "$out"; exit 1; }
grep -q '^Type=notify$' "$dir/ternd.service"
grep -q '^WatchdogSec=' "$dir/ternd.service"
echo "systemd-analyze verify: clean"
