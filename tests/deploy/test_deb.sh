#!/usr/bin/env bash
# The Debian package, really installed (make test-deb; as root):
#
#   test_deb.sh tern_VERSION_ARCH.deb
#
# Installs the package with dpkg, starts the installed ternd from the installed config
# /etc/ternd/ternd.conf without systemd (as root, on a free loopback port; the demo model from
# /usr/share/tern), asks it the known questions through every API, then removes the package
# and checks what Debian's rules say stays:
#   dpkg -r  removes every file the package shipped but keeps the conffile
#            /etc/ternd/ternd.conf and ternd's state directory /var/lib/ternd (the stats
#            database), so a reinstall picks up where it left off;
#   dpkg -P  also removes the conffile (dpkg) and the state directory (the package's postrm:
#            Policy has purge remove everything the package created), leaving nothing behind.
set -euo pipefail
deb=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/deploy/deploy_lib.sh"
if dpkg-query -W -f='${Status}' tern 2>/dev/null | grep -q 'install ok installed\|config-files'; then
    echo "the tern package is already installed here; this test installs and purges it."
    echo "Remove it first (dpkg -P tern) to run the test."
    exit 1
fi
work=$(mktemp -d)
cleanup() {
    ternd_kill
    dpkg -P tern >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

echo "== dpkg -i $(basename "$deb")"
dpkg -i "$deb"
dpkg -L tern >"$work/files"
for f in /usr/sbin/ternd /usr/bin/tern /etc/ternd/ternd.conf /lib/systemd/system/ternd.service \
         /usr/share/tern/models/tern-demo-tq2_0.gguf /usr/share/tern/models/tern-demo-mmproj-tq2_0.gguf \
         /usr/share/doc/tern/operations.md /usr/share/doc/tern/copyright; do
    grep -qx "$f" "$work/files" && [ -e "$f" ] || fail "$f is not installed by the package"
done
# The DNS-SD advertisement: an example (not in /etc/avahi/services), its version filled in.
svc=/usr/share/tern/avahi/ternd.service
grep -qx "$svc" "$work/files" || fail "$svc is not installed by the package"
grep -q "<txt-record>version=$(dpkg-query -W -f='${Version}' tern | sed 's/-[^-]*$//')</txt-record>" "$svc" ||
    fail "$svc: version TXT record not filled in"
python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$svc" || fail "$svc: not XML"
[ ! -e /etc/avahi/services/ternd.service ] || fail "the package enabled the DNS-SD advertisement"
dpkg-query -W -f='${Conffiles}\n' tern | grep -q '^ /etc/ternd/ternd.conf ' ||
    fail "/etc/ternd/ternd.conf is not a conffile"
tern --version

echo "== ternd --config /etc/ternd/ternd.conf (no systemd; as root)"
# Under systemd the unit's StateDirectory= makes the stats database's directory; here we do.
mkdir -p -m 0750 /var/lib/ternd
# From / so that the config's relative model paths resolve against data_dir (/usr/share/tern),
# not a models/ folder in the working directory.
ternd_start "$work/ternd.log" env -C / /usr/sbin/ternd --config /etc/ternd/ternd.conf
grep -q '/usr/share/tern/models/tern-demo-tq2_0.gguf' "/proc/$TERND_PID/maps" ||
    fail "ternd did not map the installed demo model"
ask_all "$work/answers.txt"
ternd_stop
cat "$work/ternd.log" | sed 's/^/  ternd: /' | head -5
[ -s /var/lib/ternd/stats.db ] || fail "no stats database in /var/lib/ternd"
n=$(sqlite3 /var/lib/ternd/stats.db 'select count(*) from requests')
(( n >= 5 )) || fail "the stats database recorded $n requests, not the 5 asked"
echo "stats database /var/lib/ternd/stats.db: $n requests recorded"

echo "== dpkg -r tern"
dpkg -r tern
dpkg-query -W -f='${Status}\n' tern | grep -q 'deinstall ok config-files' || fail "not in config-files state"
while read -r f; do
    [ -d "$f" ] && continue          # shared directories (/usr/bin, ...) stay, of course
    [ "$f" = /etc/ternd/ternd.conf ] && continue
    [ ! -e "$f" ] || fail "$f left after dpkg -r"
done <"$work/files"
[ -f /etc/ternd/ternd.conf ] || fail "dpkg -r removed the conffile"
[ -f /var/lib/ternd/stats.db ] || fail "dpkg -r removed the state directory"
echo "after dpkg -r: binaries gone; kept /etc/ternd/ternd.conf and /var/lib/ternd"

echo "== dpkg -P tern"
dpkg -P tern
dpkg-query -W tern >/dev/null 2>&1 && fail "dpkg still knows the package after purge"
left=""
while read -r f; do
    [ -d "$f" ] && [ "$f" != /etc/ternd ] && [ "$f" != /usr/share/tern ] && [ "$f" != /usr/share/doc/tern ] && continue
    [ -e "$f" ] && left="$left $f"
done <"$work/files"
for f in /etc/ternd /var/lib/ternd /var/lib/private/ternd /etc/systemd/system/multi-user.target.wants/ternd.service \
         /var/lib/systemd/deb-systemd-helper-enabled/ternd.service.dsh-also \
         /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/ternd.service; do
    [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
[ -z "$left" ] || fail "left after dpkg -P:$left"
echo "after dpkg -P: nothing left (conffile, state directory and unit enablement gone)"
echo "package test passed: installed, served the known answers, removed and purged cleanly"
