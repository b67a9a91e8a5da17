#!/usr/bin/env python3
"""Follow-up turn TTFT: turn 2 of a conversation about a picture, on a ternd with its caches
(after turn 1) vs a ternd without them (--image-cache-bytes 0 --prefix-cache 0). Python 3
standard library only; 2 threads, greedy, 16-token answers.

  bench/ternd_followup.py build/src/server/ternd MODEL.gguf MMPROJ.gguf PICTURE.png
"""
import base64, http.client, json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ternd_proc  # noqa: E402
ternd, model, mmproj, image = sys.argv[1:5]
def start(caches):
    cmd = [ternd, '--config', '/dev/null', '--model', model, '--mmproj', mmproj,
           '--threads', '2', '--db', '', '--log-level', 'warn']
    if not caches: cmd += ['--image-cache-bytes', '0', '--prefix-cache', '0']
    return ternd_proc.start(cmd)
def chat(port, msgs):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    body = json.dumps({'model': 't', 'stream': True, 'max_tokens': 16, 'temperature': 0,
                       'stream_options': {'include_usage': True}, 'messages': msgs})
    t0 = time.perf_counter()
    c.request('POST', '/v1/chat/completions', body, {'Content-Type': 'application/json'})
    r = c.getresponse()
    if r.status != 200: sys.exit('/v1/chat/completions: HTTP %d %s' % (r.status, r.read()[:200]))
    first, text, usage = None, '', None
    for line in r:
        line = line.decode().strip()
        if not line.startswith('data: {'): continue
        o = json.loads(line[6:])
        if first is None: first = (time.perf_counter() - t0) * 1e3
        if o['choices'] and o['choices'][0]['delta'].get('content'): text += o['choices'][0]['delta']['content']
        if o.get('usage'): usage = o['usage']
    return first, text, usage
url = 'data:image/png;base64,' + base64.b64encode(open(image, 'rb').read()).decode()
turn1 = [{'role': 'system', 'content': 'You are a helpful assistant.'},
         {'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': url}},
                                      {'type': 'text', 'text': 'What is in the picture?'}]}]
warm, wport = start(True)
t1, a1, u1 = chat(wport, turn1)
turn2 = turn1 + [{'role': 'assistant', 'content': a1}, {'role': 'user', 'content': 'And what colour is it?'}]
t2, a2, u2 = chat(wport, turn2)
warm.terminate(); warm.wait()
cold, cport = start(False)
t2c, a2c, u2c = chat(cport, turn2)
cold.terminate(); cold.wait()
print('turn 1 (cold): TTFT %.0f ms, usage %s' % (t1, u1))
print('turn 2, caches on: TTFT %.0f ms, usage %s' % (t2, u2))
print('turn 2, caches off: TTFT %.0f ms, usage %s' % (t2c, u2c))
print('ratio %.3f; same answer: %s' % (t2 / t2c, a2 == a2c))
