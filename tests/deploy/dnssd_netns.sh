#!/usr/bin/env bash
# Run by test_dnssd.py under `unshare -mn` (as root): a private network namespace (only lo)
# and mount namespace, so that nothing here is advertised on the real LAN, no system
# avahi-daemon or D-Bus is touched, and /etc/avahi/services is this test's copy.
#
#   dnssd_netns.sh WORKDIR TERND   (WORKDIR holds services/ternd.service)
#
# Starts a private D-Bus system bus, avahi-daemon on lo (with our service file), ternd on
# port 8080 (the port the service file advertises), then prints tern_client.py --discover's
# output and avahi-browse's view of _http._tcp. Every daemon is stopped on exit.
set -euo pipefail
work=$1 ternd=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mount --bind "$work/services" /etc/avahi/services
mkdir -p "$work/run" /run/avahi-daemon
mount --bind "$work/run" /run/avahi-daemon      # avahi-daemon's pid file and socket
# avahi only uses multicast-capable interfaces; lo is not one by default.
ip link set lo up
ip link set lo multicast on

cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
cat >"$work/avahi.conf" <<CONF
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
CONF
# libdbus (avahi-daemon, avahi-browse) finds the system bus here instead of /run/dbus.
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$work/bus
dbus-daemon --config-file="$work/bus.conf" --nofork >"$work/dbus.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/bus" ] && break; sleep 0.1; done
avahi-daemon -f "$work/avahi.conf" --no-drop-root --no-chroot --no-rlimits >"$work/avahi.log" 2>&1 &
pids+=($!)
"$ternd" --config /dev/null --bind 127.0.0.1 --port 8080 --engine model \
    --model "$root/models/tern-demo-tq2_0.gguf" --mmproj "$root/models/tern-demo-mmproj-tq2_0.gguf" \
    --threads 1 >"$work/ternd.log" 2>&1 &
pids+=($!)
# Both ready: avahi has established the service, ternd answers /ready.
for _ in $(seq 300); do
    grep -q 'successfully established' "$work/avahi.log" && curl -sf -o /dev/null http://127.0.0.1:8080/ready && break
    sleep 0.1
done
grep -q 'successfully established' "$work/avahi.log" || { echo "avahi-daemon did not publish:"; cat "$work/avahi.log"; exit 1; }
echo "== tern_client.py --discover"
python3 "$root/clients/python/tern_client.py" --discover
echo "== avahi-browse -rpt _http._tcp"
avahi-browse -rpt _http._tcp | grep '^='
echo "== the discovered box answers"
PYTHONPATH="$root/clients/python" python3 -c '
import urllib.request, tern_client
for b in tern_client.discover():
    print(b["url"], urllib.request.urlopen(b["url"] + "/ready", timeout=10).read().decode().strip())'
