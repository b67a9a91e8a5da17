# Shared by test_arm.sh and test_deb.sh (sourced, bash): start one ternd on a free loopback
# port, ask it known questions about the shapes test pictures through every API with curl, stop
# it. The questions and answers are tests/server/test_ternd.py's DemoModel.KNOWN (greedy
# decoding of the demo model, models/tern-demo-tq2_0.gguf + its mmproj).

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHAPES=$DEPLOY_DIR/../data/shapes/test
# Under qemu the model loads and answers slowly; give it time, but not forever.
READY_TIMEOUT=${READY_TIMEOUT:-300}
ANSWER_TIMEOUT=${ANSWER_TIMEOUT:-600}

# ternd_start LOG CMD... : runs CMD (a ternd command line; --bind/--port are appended) in the
# background with its output in LOG, and waits until /ready says 200. Sets TERND_PID, PORT.
# Port 0: the kernel picks a free port as ternd binds (nothing can take it in between); PORT is
# read from ternd's "listening on" line.
ternd_start() {
    local log=$1; shift
    PORT=
    # The log exists before the loop reads it: the background child opens it only when it runs.
    : >"$log"
    "$@" --bind 127.0.0.1 --port 0 >"$log" 2>&1 &
    TERND_PID=$!
    local t0=$SECONDS
    until [[ -n $PORT ]] && curl -sf -o /dev/null "http://127.0.0.1:$PORT/ready"; do
        if ! kill -0 "$TERND_PID" 2>/dev/null; then
            echo "ternd exited before it was ready:"; cat "$log"; return 1
        fi
        if (( SECONDS - t0 > READY_TIMEOUT )); then
            echo "ternd not ready after ${READY_TIMEOUT}s:"; cat "$log"; ternd_kill; return 1
        fi
        PORT=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\) .*|\1|p' "$log" | head -n 1)
        sleep 0.5
    done
}

# SIGTERM drains and must exit 0.
ternd_stop() {
    kill -TERM "$TERND_PID"
    local rc=0
    wait "$TERND_PID" || rc=$?
    TERND_PID=
    if (( rc != 0 )); then echo "ternd exited with $rc on SIGTERM"; return 1; fi
}

ternd_kill() {
    [ -n "${TERND_PID:-}" ] && kill -KILL "$TERND_PID" 2>/dev/null && wait "$TERND_PID" 2>/dev/null
    TERND_PID=
    return 0
}

# stream KIND PATH BODYFILE [curl args...]: one streamed request; prints the answer's text.
stream() {
    local kind=$1 path=$2 body=$3; shift 3
    curl -sS -N --fail-with-body --max-time "$ANSWER_TIMEOUT" "http://127.0.0.1:$PORT$path" \
        -H 'Content-Type: application/json' --data-binary "@$body" "$@" |
        python3 "$DEPLOY_DIR/stream_text.py" "$kind"
}

# ask_all OUT: streams the known questions through every generation API (greedy: temperature
# 0) and writes one line per request to OUT, "API PICTURE | QUESTION | ANSWER". Fails when a
# stream breaks or an answer (whitespace trimmed) is not the known one, so the lines of two
# daemons can be compared exactly afterwards.
ask_all() {
    local out=$1 tmp
    tmp=$(mktemp -d)
    : >"$out"
    local pic=00000.jpg q='What does the image show?'
    local want='A red circle on the right and a small black cross at the bottom right.'
    local b64
    b64=$(base64 -w0 "$SHAPES/$pic")
    printf '{"prompt": "%s", "image": "%s", "temperature": 0}' "$q" "$b64" >"$tmp/native.json"
    printf '{"model": "tern", "prompt": "%s", "images": ["%s"], "options": {"temperature": 0}}' \
        "$q" "$b64" >"$tmp/ollama-generate.json"
    printf '{"model": "tern", "messages": [{"role": "user", "content": "%s", "images": ["%s"]}], "options": {"temperature": 0}}' \
        "$q" "$b64" >"$tmp/ollama-chat.json"
    printf '{"model": "tern", "stream": true, "temperature": 0, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,%s"}}, {"type": "text", "text": "%s"}]}]}' \
        "$b64" "$q" >"$tmp/openai.json"
    local rc=0 api text
    for api in native:/generate ollama-generate:/api/generate ollama-chat:/api/chat openai:/v1/chat/completions; do
        text=$(stream "${api%%:*}" "${api#*:}" "$tmp/${api%%:*}.json") || { rc=1; continue; }
        check_answer "$out" "${api#*:}" "$pic" "$q" "$text" "$want" || rc=1
    done
    # And a PNG (libspng rather than libjpeg) as a multipart upload, as curl -F sends a file.
    pic=00002.png q='What shape is the blue object?' want='A circle.'
    if text=$(curl -sS -N --fail-with-body --max-time "$ANSWER_TIMEOUT" "http://127.0.0.1:$PORT/generate" \
                -F "image=@$SHAPES/$pic" -F "prompt=$q" -F temperature=0 |
              python3 "$DEPLOY_DIR/stream_text.py" native); then
        check_answer "$out" "/generate(multipart)" "$pic" "$q" "$text" "$want" || rc=1
    else rc=1; fi
    rm -rf "$tmp"
    return $rc
}

check_answer() {
    local out=$1 api=$2 pic=$3 q=$4 text=$5 want=$6
    printf '%s %s | %s | %s\n' "$api" "$pic" "$q" "$text" | tee -a "$out"
    local trimmed
    trimmed=$(printf '%s' "$text" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    if [ "$trimmed" != "$want" ]; then
        echo "  FAIL: expected \"$want\""; return 1
    fi
}
