#!/usr/bin/env bash
# Debian packages of tern with Debian's own tooling (make deb):
#
#   tools/build_deb.sh OUTDIR ARCH...
#
# For each ARCH, dpkg-buildpackage (debhelper's meson build system, debian/) in a fresh copy of
# the source tree under OUTDIR/ARCH -- dpkg-buildpackage writes its results next to the tree it
# builds, and a copy keeps obj-*/ and debian/tmp out of the work tree -- then
# OUTDIR/tern_VERSION_ARCH.deb, checked by lintian (any error fails). The build machine's own
# architecture is built natively, any other cross (-aARCH with Debian's cross compiler and the
# ARCH libraries installed by multiarch: make deps). Tests are not run in the package build
# (DEB_BUILD_OPTIONS=nocheck): `make test` runs the same suite on the same tree, and a cross
# build could not run it without qemu.
set -euo pipefail
out=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$root" && dpkg-parsechangelog -S Version)
meson_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$root/meson.build" | head -1)
if [ "$version" != "$meson_version" ]; then
    echo "debian/changelog says $version but meson.build says $meson_version: add a changelog entry"
    exit 1
fi
build_arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)

for arch in "$@"; do
    t0=$SECONDS
    dir=$out/$arch
    rm -rf "$dir" && mkdir -p "$dir/tern-$version"
    # The tracked and new (not ignored) files: what a clone of this tree would hold.
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$dir/tern-$version"
    opts=(-b -us -uc --no-sign)
    cross=()
    if [ "$arch" != "$build_arch" ]; then
        opts+=(-a"$arch" -Pcross,nocheck)
        # debhelper would generate a meson cross file with meson's debcrossgen, which insists
        # on a C++ cross compiler too; tern is C only, and make test-arm's file says it all.
        case $arch in
            arm64) cross=(DH_MESON_CROSS_FILE="$root/cross/aarch64.txt") ;;
            *) echo "no cross file for $arch (cross/)"; exit 1 ;;
        esac
    fi
    echo "== dpkg-buildpackage ${opts[*]} ($arch)"
    (cd "$dir/tern-$version" && env "${cross[@]}" DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}" \
        dpkg-buildpackage "${opts[@]}") >"$dir/build.log" 2>&1 ||
        { tail -40 "$dir/build.log"; echo "dpkg-buildpackage failed: $dir/build.log"; exit 1; }
    deb=tern_${version}_$arch.deb
    mv "$dir/$deb" "$out/$deb"
    echo "$out/$deb ($((SECONDS - t0)) s)"
    dpkg-deb --info "$out/$deb" | sed -n '/Package:/,$p'
    dpkg-deb --contents "$out/$deb" | awk '{print "  " $1, $3, $6}'
    echo "== lintian $deb"
    lintian --fail-on error --display-info "$out/$deb" || { echo "lintian found errors in $deb"; exit 1; }
    echo "lintian: no errors ($((SECONDS - t0)) s with the build)"
done
