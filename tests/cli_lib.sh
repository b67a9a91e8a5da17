# What the shell tests of the tern CLI share. Source it after setting
# TEST_NAME: it makes the scratch folder $T (removed on exit) and defines
# fail, expect and finish.
T=$(mktemp -d "/tmp/tern-test-$TEST_NAME-XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

# fail MESSAGE: report a failed check and count it.
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect CODE PATTERN CMD...: run CMD, check its exit code and that its
# stdout+stderr (left in $T/out) contains PATTERN (a fixed string).
expect() {
    local want=$1 pat=$2
    shift 2
    "$@" >"$T/out" 2>&1
    local rc=$?
    if [ "$rc" != "$want" ]; then
        fail "'$*' exited $rc, want $want"; cat "$T/out"
    elif ! grep -qF -- "$pat" "$T/out"; then
        fail "'$*' output lacks '$pat':"; cat "$T/out"
    else
        echo "ok: $* -> $rc"
    fi
}

# finish: the summary line, and exit 1 if any check failed.
finish() {
    if [ "$fails" != 0 ]; then
        echo "$fails failed"
        exit 1
    fi
    echo "all passed"
}
