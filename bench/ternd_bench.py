#!/usr/bin/env python3
"""ternd with a real model: idle memory, time to first token, and generation throughput for
1, 4 and 8 concurrent streams (continuous batching). Python 3 standard library only.

  bench/ternd_bench.py --ternd build/src/server/ternd --model M.gguf --mmproj P.gguf
  bench/ternd_bench.py --url http://127.0.0.1:8080          # attach to a running ternd

What it measures (each figure is taken by this script, client side, unless it says server):
  rss_*        VmRSS / VmHWM of the ternd process (/proc/PID/status): right after /ready, and
               idle again after a warm-up (one image request, one generation); RssAnon is the
               part that is not mapped model pages (heap: KV cache, buffers, caches)
  ttft         a small JPEG + a short prompt, streamed, one request at a time: time from
               sending the request to the first NDJSON line; median of --ttft-n (server's own
               queue/vision/prefill/ttft split from the final line, medians too)
  streams N    N clients in a closed loop for --seconds: each sends a text-only request with
               max_tokens --max-tokens, reads the stream to the end, sends the next. After the
               window no new request starts and the in-flight ones finish. Aggregate tokens/s
               = sum of usage.completion_tokens / wall time (first send to last reply), so
               answers that stop early (EOS) count what they produced, prompts included in
               the cost. ratio = aggregate(N) / aggregate(1) of the same repeat.
  repeat_image with --repeat-image N: a ternd of its own with its caches on (the server
               default) gets a picture it has not seen (a --repeat-image-px square PNG made
               here), then the same picture N times with the same question and N times with
               other questions: client TTFT of the first vs the medians of the repeats, with
               the server's vision_ms and usage.cached_tokens. The other phases run with
               --image-cache-bytes=0 --prefix-cache=0, so their TTFT is a first request's.
Repeats (--repeat) run the TTFT and stream phases again against the same server; the table
gives the median and the min..max spread. Counts above --slots are run against a second
ternd started with --slots N (or queue when attached).

  bench/ternd_bench.py --gaps 20 --ternd T --model M.gguf --mmproj P.gguf [--slots 4]
  gaps         instead of the above: one client streams text requests back to back for --gaps
               seconds and the time between consecutive token lines is recorded (client side;
               each request's first token is left out); then the same again while a second
               client keeps sending image requests (--image, max_tokens 1, --gap-image-pause
               seconds apart). Median, p99 and max gap of each phase, per repeat. A token whose
               text is empty (mid UTF-8, or nothing to show) sends no line: pick a --gen-prompt
               whose answer is mostly plain text, or the gaps count several tokens.
"""
import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ternd_proc  # noqa: E402


class Server:
    """A ternd we started (and stop), or one we attached to."""

    def __init__(self, host, port, proc=None, pid=None):
        self.host, self.port, self.proc = host, port, proc
        self.pid = proc.pid if proc else pid

    def status(self):
        """VmRSS and VmHWM in kB, or None when the process is not ours to read."""
        if not self.pid:
            return None
        try:
            with open('/proc/%d/status' % self.pid) as f:
                kv = dict(l.split(':', 1) for l in f if ':' in l)
            return {k: int(kv[k].split()[0]) for k in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile')}
        except OSError:
            return None

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request('GET', path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(a, slots, caches=False):
    cmd = [a.ternd, '--config', '/dev/null', '--model', a.model,
           '--mmproj', a.mmproj or '', '--slots', str(slots), '--threads', str(a.threads),
           '--log-level', 'warn', '--db', '']
    if not caches:
        cmd += ['--image-cache-bytes', '0', '--prefix-cache', '0']
    cmd += a.server_arg
    try:
        proc, port = ternd_proc.start(cmd, stderr=subprocess.PIPE if a.quiet else None)
    except RuntimeError as e:
        sys.exit(str(e))
    return Server('127.0.0.1', port, proc), ' '.join(cmd)


def generate_request(srv, body):
    """The bytes of a POST /generate with body (keys set to None left out), one per connection."""
    data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    return (b'POST /generate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n'
            b'Content-Length: %d\r\nConnection: close\r\n\r\n%s'
            % (srv.host.encode(), len(data), data))


def generate(srv, body):
    """One streamed /generate. Returns (seconds to the first line, final object).

    A raw socket and one parse at the end: at thousands of tokens/s a per-line Python client
    (http.client's chunked reader + json per line) would cost more CPU than the server."""
    req = generate_request(srv, body)
    s = socket.create_connection((srv.host, srv.port), timeout=600)
    t0 = time.perf_counter()
    s.sendall(req)
    buf, first, head = [], None, b''
    while True:
        b = s.recv(65536)
        if not b:
            break
        if first is None:
            head += b
            i = head.find(b'\r\n\r\n')
            if i >= 0 and b'{' in head[i:]:     # headers and the first line's JSON
                first = time.perf_counter() - t0
        buf.append(b)
    s.close()
    raw = b''.join(buf)
    hdr, _, body_raw = raw.partition(b'\r\n\r\n')
    status = int(hdr.split(b' ', 2)[1]) if hdr.startswith(b'HTTP/') else 0
    if b'chunked' in hdr.lower():
        out, i = [], 0
        while i < len(body_raw):
            j = body_raw.index(b'\r\n', i)
            n = int(body_raw[i:j].split(b';')[0], 16)
            if n == 0:
                break
            out.append(body_raw[j + 2:j + 2 + n])
            i = j + 4 + n
        body_raw = b''.join(out)
    lines = body_raw.strip().split(b'\n')
    final = json.loads(lines[-1]) if lines and lines[-1] else None
    if status != 200 or not final or not final.get('done'):
        raise RuntimeError('/generate: HTTP %d %s' % (status, final))
    if final.get('done_reason') == 'error':
        raise RuntimeError('/generate failed: %s' % final.get('error'))
    return first, final


def ttft(srv, a, image_b64):
    body = {'prompt': a.ttft_prompt, 'image': image_b64, 'max_tokens': 4, 'stream': True}
    client, server = [], {k: [] for k in ('queue_ms', 'vision_ms', 'prefill_ms', 'ttft_ms')}
    for _ in range(a.ttft_n):
        first, final = generate(srv, body)
        client.append(first * 1e3)
        for k in server:
            if final['timings'].get(k) is not None:
                server[k].append(final['timings'][k])
    out = {'ttft_ms': statistics.median(client), 'ttft_ms_min': min(client),
           'ttft_ms_max': max(client)}
    for k, v in server.items():
        out['server_' + k] = statistics.median(v) if v else None
    return out


def picture_png(px, seed):
    """A px x px RGB PNG no server has seen (seeded stripes), made with the standard library."""
    import struct
    import zlib
    rows = [b'\0' + bytes((x * 37 + y * 11 + seed) % 256 if c == 0 else (x * 5 + seed * c) % 256
                          if c == 1 else (y * 23) % 256 for x in range(px) for c in range(3))
            for y in range(px)]

    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', px, px, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b''.join(rows))) + chunk(b'IEND', b''))


def repeat_image(srv, a):
    """The first request with a new picture, then repeats (see the module docstring)."""
    img = base64.b64encode(picture_png(a.repeat_image_px, int(time.time()) % 251)).decode()
    body = {'prompt': a.ttft_prompt, 'image': img, 'max_tokens': 4, 'stream': True}
    first, f = generate(srv, body)
    out = {'px': a.repeat_image_px, 'first_ttft_ms': first * 1e3,
           'first_vision_ms': f['timings']['vision_ms'], 'prompt_tokens': f['usage']['prompt_tokens']}
    for name, prompts in (('same', [a.ttft_prompt] * a.repeat_image),
                          ('other', ['Question %d: what is in the corner?' % i
                                     for i in range(a.repeat_image)])):
        t, vis, cached = [], [], []
        for q in prompts:
            first, f = generate(srv, dict(body, prompt=q))
            t.append(first * 1e3)
            vis.append(f['timings']['vision_ms'])
            cached.append(f['usage'].get('cached_tokens', 0))
        out[name] = {'ttft_ms': statistics.median(t), 'vision_ms': statistics.median(vis),
                     'cached_tokens': statistics.median(cached),
                     'ratio': statistics.median(t) / out['first_ttft_ms']}
    return out


def streams(srv, a, n):
    """n clients in a closed loop for a.seconds; see the module docstring."""
    body = {'prompt': a.gen_prompt, 'max_tokens': a.max_tokens, 'temperature': a.temperature,
            'stream': not a.whole}
    tokens, requests, decode_tps, errors = [0] * n, [0] * n, [], []
    lock = threading.Lock()
    t_start = time.perf_counter()
    deadline = t_start + a.seconds

    def client(i):
        while time.perf_counter() < deadline:
            try:
                _, final = generate(srv, body)
            except (OSError, RuntimeError) as e:
                with lock:
                    errors.append(str(e))
                return
            tokens[i] += final['usage']['completion_tokens']
            requests[i] += 1
            tps = final['timings'].get('decode_tokens_per_s')
            if tps:
                with lock:
                    decode_tps.append(tps)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t_start
    if errors:
        sys.exit('streams %d: %s' % (n, errors[0]))
    return {'streams': n, 'tokens': sum(tokens), 'requests': sum(requests), 'wall_s': wall,
            'tokens_per_s': sum(tokens) / wall,
            'stream_decode_tokens_per_s': statistics.median(decode_tps) if decode_tps else None}


def stream_gaps(srv, body, stop_at):
    """Token-to-token gaps (ms) of streamed /generate requests sent one after another until
    stop_at (each request's first token excluded: it waits for admission and prefill)."""
    req = generate_request(srv, body)
    gaps = []
    while time.time() < stop_at:
        s = socket.create_connection((srv.host, srv.port), timeout=600)
        s.sendall(req)
        last = None
        while True:
            b = s.recv(65536)
            if not b:
                break
            now = time.perf_counter()
            for _ in range(b.count(b'{"token":')):   # one NDJSON line per piece of text
                if last is not None:
                    gaps.append((now - last) * 1e3)
                last = now
        s.close()
    return gaps


def image_arrivals(srv, a, image_b64, stop_at, count):
    """Image requests one after another (a.gap_image_pause apart) until stop_at."""
    body = {'prompt': a.ttft_prompt, 'image': image_b64, 'max_tokens': 1}
    while time.time() < stop_at:
        t0 = time.perf_counter()
        generate(srv, body)
        count.append(time.perf_counter() - t0)
        time.sleep(a.gap_image_pause)


def gap_stats(g):
    g = sorted(g)
    if not g:
        return {'tokens': 0}
    return {'tokens': len(g), 'median_ms': statistics.median(g),
            'p99_ms': g[min(len(g) - 1, int(0.99 * len(g)))], 'max_ms': g[-1]}


def gaps(srv, a, image_b64):
    """A running stream's gaps without, then with, other requests' images arriving."""
    body = {'prompt': a.gen_prompt, 'max_tokens': a.max_tokens, 'temperature': a.temperature,
            'stream': True}
    out = {'loadavg': loadavg()}
    out['quiet'] = gap_stats(stream_gaps(srv, body, time.time() + a.gaps))
    stop_at, count = time.time() + a.gaps, []
    t = threading.Thread(target=image_arrivals, args=(srv, a, image_b64, stop_at, count))
    t.start()
    out['images'] = gap_stats(stream_gaps(srv, body, stop_at))
    t.join()
    out['images']['image_requests'] = len(count)
    out['images']['image_request_s'] = statistics.median(count) if count else None
    return out


def render_gaps(res):
    print('ternd: %s\n' % res['command'])
    print('| repeat | image arrivals (median seconds each) | tokens | median gap ms | p99 ms | '
          'max ms | load |')
    print('|---:|---|---:|---:|---:|---:|---|')
    for i, run in enumerate(res['gap_runs']):
        for k in ('quiet', 'images'):
            g = run[k]
            label = 'none' if k == 'quiet' else '%d image requests' % g['image_requests']
            if g.get('image_request_s') is not None:
                label += ' (%.1f s)' % g['image_request_s']
            if not g['tokens']:
                print('| %d | %s | 0 | | | | |' % (i + 1, label))
                continue
            print('| %d | %s | %d | %.1f | %.1f | %.1f | %s |' % (
                i + 1, label, g['tokens'], g['median_ms'], g['p99_ms'], g['max_ms'],
                run['loadavg']))


def loadavg():
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return '?'


def spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return '-'
    s = fmt % statistics.median(vals)
    if len(vals) > 1:
        s += ' (' + fmt % min(vals) + '..' + fmt % max(vals) + ')'
    return s


def render(res):
    """The markdown table of one result (this script's --json output)."""
    runs = res['runs']
    print('model `%s`, threads %s, slots %s, image %s; streams: %s, max_tokens %d, '
          'temperature %g, %g s windows; load average %s -> %s\n'
          % (res['model'],
             '? (attached)' if res['threads'] is None else res['threads'] or 'one per core',
             res['server_slots'], res['image'] or 'none',
             'streamed' if res['streamed'] else '"stream": false', res['max_tokens'],
             res['temperature'], res['seconds'], res['loadavg_start'], res['loadavg_end']))
    print('| measure | median (min..max over %d repeats) |' % len(runs))
    print('|---|---|')
    for k, label in (('rss_after_load', 'RSS after load'),
                     ('rss_idle_after_warmup', 'RSS idle after warm-up')):
        if res[k]:
            print('| %s | %.1f MB (peak %.1f MB; anonymous %.1f MB, file pages %.1f MB) |'
                  % (label, res[k]['VmRSS'] / 1024, res[k]['VmHWM'] / 1024,
                     res[k].get('RssAnon', 0) / 1024, res[k].get('RssFile', 0) / 1024))
    if runs[0]['ttft']:
        print('| TTFT, %sshort prompt (client) | %s ms |'
              % ('image + ' if res['image'] else '',
                 spread([r['ttft']['ttft_ms'] for r in runs], '%.1f')))
        for k in ('queue_ms', 'vision_ms', 'prefill_ms', 'ttft_ms'):
            print('| … server %s | %s |'
                  % (k, spread([r['ttft']['server_' + k] for r in runs], '%.1f')))
    for n in sorted(int(k) for k in runs[0]['streams']):
        s = [r['streams'][str(n)] for r in runs]
        print('| %d stream%s: aggregate tokens/s | %s |'
              % (n, 's' if n > 1 else '', spread([x['tokens_per_s'] for x in s], '%.0f')))
        if n > 1:
            print('| … ratio to 1 stream (same repeat) | %s× |' % spread([x['ratio'] for x in s], '%.2f'))
        print('| … per-stream decode tokens/s (server) | %s |'
              % spread([x['stream_decode_tokens_per_s'] for x in s], '%.0f'))
        print('| … requests, tokens in window | %s |' % ', '.join(
            '%d/%d' % (x['requests'], x['tokens']) for x in s))
    ri = res.get('repeat_image')
    if ri:
        print('| repeated picture (%d px, caches on): first TTFT (client) | %.1f ms (vision %.1f ms, '
              '%d prompt tokens) |' % (ri['px'], ri['first_ttft_ms'], ri['first_vision_ms'],
                                       ri['prompt_tokens']))
        for k, label in (('same', 'same question'), ('other', 'other questions')):
            r = ri[k]
            print('| … again, %s: TTFT median | %.1f ms = %.3f× the first (vision %.1f ms, '
                  '%d tokens reused) |' % (label, r['ttft_ms'], r['ratio'], r['vision_ms'],
                                            r['cached_tokens']))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--ternd', default='build/src/server/ternd')
    p.add_argument('--model', help='text model GGUF (omit with --url)')
    p.add_argument('--mmproj', help='vision projector GGUF')
    p.add_argument('--url', help='attach to a running ternd instead of starting one')
    p.add_argument('--pid', type=int, help='with --url: its pid, to read its RSS')
    p.add_argument('--threads', type=int, default=0, help='ternd --threads (0 = one per core)')
    p.add_argument('--slots', type=int, default=4, help='ternd --slots (default 4, as ternd)')
    p.add_argument('--streams', default='1,4,8', help='concurrent stream counts')
    p.add_argument('--seconds', type=float, default=8, help='closed-loop window per count')
    p.add_argument('--max-tokens', type=int, default=128)
    p.add_argument('--temperature', type=float, default=0.0,
                   help='sampling for the stream phase (0 = greedy, the server default)')
    p.add_argument('--whole', action='store_true',
                   help='stream phase with "stream": false (no per-token HTTP writes)')
    p.add_argument('--gen-prompt', default='Tell me a long story about the shapes.')
    p.add_argument('--ttft-prompt', default='What is in the picture?')
    p.add_argument('--ttft-n', type=int, default=15, help='TTFT requests per repeat (0: skip)')
    p.add_argument('--image', default=os.path.join(HERE, 'data', 'shapes96.jpg'))
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--repeat-image', type=int, default=0, metavar='N',
                   help='repeated-picture TTFT phase with N repeats (0 = skip)')
    p.add_argument('--repeat-image-px', type=int, default=512)
    p.add_argument('--server-arg', action='append', default=[],
                   help='extra ternd argument, e.g. --server-arg=--prefill-chunk=32')
    p.add_argument('--json', action='store_true', help='print JSON instead of markdown')
    p.add_argument('--quiet', action='store_true', help="hide ternd's stderr")
    p.add_argument('--render', metavar='FILE', help='print the table of a saved --json result')
    p.add_argument('--gaps', type=float, metavar='SECONDS',
                   help='measure a stream\'s token gaps without and with image arrivals instead')
    p.add_argument('--gap-image-pause', type=float, default=0.5,
                   help='--gaps: seconds between one image request\'s end and the next')
    a = p.parse_args()
    if a.render:
        with open(a.render) as f:
            res = json.load(f)
            render_gaps(res) if 'gap_runs' in res else render(res)
        return
    counts = [int(x) for x in a.streams.split(',') if x]
    # A text-only model (started here without --mmproj) is measured without pictures.
    text_only = not a.url and not a.mmproj
    if text_only and (a.gaps or a.repeat_image):
        sys.exit('--gaps and --repeat-image need --mmproj: they send pictures')
    image_b64 = None
    if not text_only:
        with open(a.image, 'rb') as f:
            image_b64 = base64.b64encode(f.read()).decode()

    res = {'loadavg_start': loadavg(), 'image': None if text_only else os.path.basename(a.image),
           'threads': None if a.url else a.threads, 'slots': a.slots, 'max_tokens': a.max_tokens,
           'seconds': a.seconds, 'temperature': a.temperature, 'streamed': not a.whole}
    if a.url:
        u = urllib.parse.urlsplit(a.url)
        srv, res['command'] = Server(u.hostname, u.port or 80, pid=a.pid), 'attached to ' + a.url
    else:
        if not a.model:
            sys.exit('--model is required unless --url is given')
        srv, res['command'] = start(a, a.slots)
    if a.gaps:
        try:
            generate(srv, {'prompt': a.ttft_prompt, 'image': image_b64, 'max_tokens': 1})
            res['gap_runs'] = []
            for r in range(a.repeat):
                res['gap_runs'].append(gaps(srv, a, image_b64))
                print('repeat %d/%d done' % (r + 1, a.repeat), file=sys.stderr)
        finally:
            srv.stop()
        print(json.dumps(res, indent=1)) if a.json else render_gaps(res)
        return
    extra = {}
    try:
        ready = json.loads(srv.get('/ready')[1])
        res['model'], res['server_slots'] = ready.get('model'), ready.get('slots')
        res['rss_after_load'] = srv.status()
        generate(srv, {'prompt': a.ttft_prompt, 'image': image_b64, 'max_tokens': 8})
        generate(srv, {'prompt': a.gen_prompt, 'max_tokens': a.max_tokens,
                       'temperature': a.temperature})
        time.sleep(0.2)
        res['rss_idle_after_warmup'] = srv.status()
        runs = []
        for r in range(a.repeat):
            run = {'loadavg': loadavg(), 'ttft': ttft(srv, a, image_b64) if a.ttft_n else None,
                   'streams': {}}
            for n in counts:
                if n > res['server_slots'] and not a.url:
                    if n not in extra:
                        extra[n], _ = start(a, n)
                    run['streams'][n] = streams(extra[n], a, n)
                else:
                    run['streams'][n] = streams(srv, a, n)
            base = run['streams'].get(1)
            for n, s in run['streams'].items():
                s['ratio'] = s['tokens_per_s'] / base['tokens_per_s'] if base else None
            runs.append(run)
            print('repeat %d/%d done (load %s)' % (r + 1, a.repeat, run['loadavg']), file=sys.stderr)
        res['runs'] = runs
        res['rss_end'] = srv.status()
        if a.repeat_image and not a.url:
            cached, _ = start(a, a.slots, caches=True)
            extra['repeat_image'] = cached
            res['repeat_image'] = repeat_image(cached, a)
        elif a.repeat_image:
            res['repeat_image'] = repeat_image(srv, a)
        res['loadavg_end'] = loadavg()
    finally:
        srv.stop()
        for s in extra.values():
            s.stop()

    if a.json:
        print(json.dumps(res, indent=1))
    else:
        render(json.loads(json.dumps(res)))   # the same path as --render: string keys


if __name__ == '__main__':
    main()
