#!/usr/bin/env python3
"""Reads one streamed answer on stdin and prints its text: the pieces joined, no newline.

    stream_text.py native|ollama-generate|ollama-chat|openai

Exits 1 (with the reason on stderr) unless the stream ended properly: the native and Ollama
streams with a final {"done": true, "done_reason": "stop"} line, the OpenAI one with
finish_reason "stop" and then "data: [DONE]". Used by deploy_lib.sh, where curl only moves bytes.
"""
import json
import sys

kind = sys.argv[1]
text, reason, done = [], None, False
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    if kind == 'openai':
        if not line.startswith('data: '):
            sys.exit('not an SSE data line: %r' % line)
        if line == 'data: [DONE]':
            done = True
            continue
        o = json.loads(line[len('data: '):])
        for c in o.get('choices', []):
            text.append(c.get('delta', {}).get('content') or '')
            reason = c.get('finish_reason') or reason
        continue
    o = json.loads(line)
    if 'error' in o:
        sys.exit('error in stream: %r' % o)
    if kind == 'native':
        text.append(o.get('token', ''))
    elif kind == 'ollama-generate':
        text.append(o.get('response', ''))
    elif kind == 'ollama-chat':
        text.append(o.get('message', {}).get('content', ''))
    else:
        sys.exit('unknown stream kind ' + kind)
    if o.get('done'):
        done, reason = True, o.get('done_reason')
if not done or reason != 'stop':
    sys.exit('%s stream did not finish with stop (done=%s, reason=%s)' % (kind, done, reason))
sys.stdout.write(''.join(text))
