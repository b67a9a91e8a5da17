#!/bin/sh
# One curl example per ternd endpoint. Run them all:   sh clients/curl.sh
# or one:                                              sh clients/curl.sh generate_image
# TERN_URL (default http://127.0.0.1:8080), TERN_API_KEY (if the server wants one) and
# TERN_IMAGE (a JPEG/PNG; default: the test picture in the source tree) change the target.
set -e
URL=${TERN_URL:-http://127.0.0.1:8080}
IMAGE=${TERN_IMAGE:-$(dirname "$0")/../tests/data/shapes/test/00000.jpg}
AUTH=""
[ -n "$TERN_API_KEY" ] && AUTH="Authorization: Bearer $TERN_API_KEY"

c() { curl -sS --fail-with-body ${AUTH:+-H "$AUTH"} "$@"; echo; }

health()            { c "$URL/health"; }
ready()             { c "$URL/ready"; }
# Native API: streamed NDJSON, a picture uploaded as multipart/form-data.
generate_image()    { c -N "$URL/generate" -F image=@"$IMAGE" -F prompt='Describe the image.'; }
# Native API: JSON body, one object back.
generate_json()     { c "$URL/generate" -H 'Content-Type: application/json' \
                        -d '{"prompt": "Name three colours.", "max_tokens": 32, "stream": false}'; }
# Ollama-compatible.
ollama_generate()   { c -N "$URL/api/generate" -H 'Content-Type: application/json' -d "{\"model\": \"tern\", \"prompt\": \"How many shapes are there?\", \"images\": [\"$(base64 -w0 "$IMAGE")\"]}"; }
ollama_chat()       { c -N "$URL/api/chat" -H 'Content-Type: application/json' -d '{"model": "tern", "messages": [{"role": "user", "content": "Hello!"}], "stream": false}'; }
ollama_tags()       { c "$URL/api/tags"; }
ollama_version()    { c "$URL/api/version"; }
# OpenAI-compatible: SSE stream with usage, the picture as a data URI.
openai_chat()       { c -N "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"tern\", \"stream\": true, \"stream_options\": {\"include_usage\": true},
  \"messages\": [{\"role\": \"user\", \"content\": [
    {\"type\": \"text\", \"text\": \"Describe the picture.\"},
    {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/jpeg;base64,$(base64 -w0 "$IMAGE")\"}}]}]}"; }
openai_models()     { c "$URL/v1/models"; }
metrics()           { c "$URL/metrics"; }
stats()             { c "$URL/stats?window=3600"; }
webpage()           { c -o /dev/null -w '%{http_code} %{content_type}\n' "$URL/"; }

ALL="health ready generate_image generate_json ollama_generate ollama_chat ollama_tags
     ollama_version openai_chat openai_models metrics stats webpage"
for name in ${*:-$ALL}; do
  echo "== $name"
  $name
done
