#!/usr/bin/env python3
"""A fleet of three ternd behind a real haproxy, configured by config/haproxy.cfg.

    test_fleet.py PATH/TO/ternd [PATH/TO/haproxy]

Starts three ternd with the demo model on loopback ports and haproxy in the foreground with a
config generated from the shipped one (only its bind addresses and server lines replaced, so
what is tested is what users install), then:

1. 24 concurrent streamed requests (native NDJSON, Ollama NDJSON, OpenAI SSE): all succeed with
   the known greedy answers, and every box served some (counted from haproxy's X-Tern-Box
   header, and checked against each ternd's own /metrics).
2. Under continuous load, SIGKILL one box while it is generating. Every request sent after the
   kill must succeed on the two others; the requests in flight on the killed box may fail,
   cleanly (an error status or a stream cut short, never a hang or a wrong answer): counted.
3. Under continuous load, SIGTERM a second box while it is generating: its in-flight streams
   must finish (no request fails), ternd exits 0, and requests sent after it stopped listening
   all go to the last box.

The demo model answers in milliseconds, so a box is caught "mid-run" by polling its /ready
(active_slots > 0) right before the signal, under load that keeps every box busy.
"""
import base64
import csv
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, '..', '..'))
TEMPLATE = os.path.join(ROOT, 'config', 'haproxy.cfg')
MODEL = os.path.join(ROOT, 'models', 'tern-demo-tq2_0.gguf')
MMPROJ = os.path.join(ROOT, 'models', 'tern-demo-mmproj-tq2_0.gguf')
SHAPES = os.path.join(ROOT, 'tests', 'data', 'shapes')
# tests/server/test_ternd.py DemoModel.KNOWN: answered exactly by the demo model, greedy.
KNOWN = [('test/00000.jpg', 'How many shapes are there?', 'Two.'),
         ('test/00000.jpg', 'What colour is the circle?', 'Red.'),
         ('test/00000.jpg', 'What does the image show?',
          'A red circle on the right and a small black cross at the bottom right.'),
         ('test/00002.png', 'What shape is the blue object?', 'A circle.'),
         ('test/00000.jpg', 'Where is the circle?', 'On the right.'),
         ('test/00001.jpg', 'What color is the hexagon?', 'Black.'),
         ('test/00000.jpg', 'Is there a black cross in the image?', 'Yes.'),
         ('test/00001.jpg', 'Where is the hexagon?', 'At the bottom.')]
APIS = ['native', 'ollama', 'openai']
# Generous: the machine is shared; an answer normally takes milliseconds.
READY_TIMEOUT, ANSWER_TIMEOUT = 120, 120
SLOTS = 4  # each ternd's --slots; must equal the template's maxconn (checked below)

failures = []


def check(cond, what):
    print(('  ok    ' if cond else '  FAIL  ') + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path, timeout=5):
    with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=timeout) as r:
        return r.read().decode()


def wait_until(cond, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError('timed out waiting for ' + what)


# ---- the fleet ----

class Box:
    def __init__(self, name, ternd, tmp):
        self.name = name
        self.log = os.path.join(tmp, name + '.log')
        with open(self.log, 'w') as log:
            # One thread each: three boxes share this machine's cores. Port 0: the kernel
            # picks a free one as ternd binds; port() reads it from the start-up line.
            self.proc = subprocess.Popen(
                [ternd, '--config', '/dev/null', '--bind', '127.0.0.1', '--port', '0',
                 '--engine', 'model', '--model', MODEL, '--mmproj', MMPROJ,
                 '--db', os.path.join(tmp, name + '.db'), '--threads', '1',
                 '--slots', str(SLOTS), '--queue', '16'],
                stdout=log, stderr=subprocess.STDOUT)
        self.port = None

    def wait_listening(self):
        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited: %s' % (self.name, open(self.log).read()))
            m = re.search(r'listening on http://\S+:(\d+) ', open(self.log).read())
            self.port = int(m.group(1)) if m else None
            return self.port is not None
        wait_until(listening, READY_TIMEOUT, self.name + ' listening')

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited: %s' % (self.name, open(self.log).read()))
            return json.loads(get(self.port, '/ready'))['status'] == 'ready'
        wait_until(ready, READY_TIMEOUT, self.name + ' /ready')

    def active(self):
        return json.loads(get(self.port, '/ready', timeout=2))['active_slots']

    def served(self):
        """Generation requests this ternd answered 200, from its own /metrics."""
        n = 0
        for m in re.finditer(r'^ternd_requests_total\{endpoint="([^"]+)",code="200"\} (\d+)$',
                             get(self.port, '/metrics'), re.M):
            if m.group(1) in ('/generate', '/api/chat', '/v1/chat/completions'):
                n += int(m.group(2))
        return n

    def signal_when_busy(self, sig, streams=1):
        """Sends sig the moment the box is running at least `streams` streams (polled on
        /ready), so that some are in flight; returns the time it was sent."""
        wait_until(lambda: self.active() >= streams, 30, self.name + ' generating')
        self.proc.send_signal(sig)
        return time.monotonic()


def fleet_config(template, port, stats_port, boxes):
    """The shipped config with its bind addresses and server lines replaced; everything else
    (timeouts, checks, retries, maxconn) is tested as shipped."""
    out, servers_done, binds = [], False, 0
    for line in template.splitlines():
        s = line.strip()
        if s.startswith('server '):
            if not servers_done:
                out += ['    server %s 127.0.0.1:%d' % (b.name, b.port) for b in boxes]
                servers_done = True
            continue
        if s.startswith('bind '):
            binds += 1
            line = '    bind 127.0.0.1:%d' % (port if binds == 1 else stats_port)
        if s.split()[:1] in (['user'], ['group']) and os.geteuid() != 0:
            continue  # only root can switch to the haproxy user
        out.append(line)
    assert servers_done and binds == 2, 'config/haproxy.cfg: expected server lines and two binds'
    return '\n'.join(out) + '\n'


def haproxy_stats(stats_port):
    """{server name: row} from haproxy's CSV stats page."""
    text = get(stats_port, '/;csv').lstrip('# ')
    return {r['svname']: r for r in csv.DictReader(io.StringIO(text)) if r['pxname'] == 'ternd'}


# ---- clients ----

def body(api, picture, question):
    with open(os.path.join(SHAPES, picture), 'rb') as f:
        b64 = base64.b64encode(f.read()).decode()
    if api == 'native':
        return '/generate', {'prompt': question, 'image': b64, 'temperature': 0}
    if api == 'ollama':
        return '/api/chat', {'model': 'tern', 'options': {'temperature': 0}, 'messages': [
            {'role': 'user', 'content': question, 'images': [b64]}]}
    mime = 'image/png' if picture.endswith('.png') else 'image/jpeg'
    return '/v1/chat/completions', {'model': 'tern', 'stream': True, 'temperature': 0, 'messages': [
        {'role': 'user', 'content': [
            {'type': 'image_url', 'image_url': {'url': 'data:%s;base64,%s' % (mime, b64)}},
            {'type': 'text', 'text': question}]}]}


def read_stream(api, resp):
    """The answer's text, or an exception if the stream did not end properly (its final
    done/finish_reason line and, for SSE, data: [DONE])."""
    text, reason, done = [], None, False
    for raw in resp:
        line = raw.decode().strip()
        if not line:
            continue
        if api == 'openai':
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
            raise RuntimeError('error in stream: %r' % o)
        text.append(o.get('token', '') if api == 'native' else o.get('message', {}).get('content', ''))
        if o.get('done'):
            done, reason = True, o.get('done_reason')
    if not done or reason != 'stop':
        raise RuntimeError('stream ended early (done=%s, reason=%s)' % (done, reason))
    return ''.join(text).strip()


class Result:
    pass


def ask(port, i):
    """Request number i: question KNOWN[i % 8] through API APIS[i % 3]."""
    picture, question, answer = KNOWN[i % len(KNOWN)]
    api = APIS[i % len(APIS)]
    r = Result()
    r.api, r.box, r.status, r.error, r.ok = api, None, None, None, False
    path, b = body(api, picture, question)
    r.t0 = time.monotonic()
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=ANSWER_TIMEOUT)
    try:
        conn.request('POST', path, json.dumps(b), {'Content-Type': 'application/json'})
        resp = conn.getresponse()
        r.status, r.box = resp.status, resp.getheader('X-Tern-Box')
        if resp.status != 200:
            r.error = '%d %s' % (resp.status, resp.read()[:200].decode(errors='replace'))
        else:
            text = read_stream(api, resp)
            r.ok = text == answer
            if not r.ok:
                r.error = 'wrong answer %r to %r (want %r)' % (text, question, answer)
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as e:
        r.error = '%s: %s' % (type(e).__name__, e)
    finally:
        conn.close()
    r.t1 = time.monotonic()
    return r


def burst(port, n):
    """n requests at once (a barrier releases them together)."""
    results, gate = [None] * n, threading.Barrier(n)

    def one(i):
        gate.wait()
        results[i] = ask(port, i)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class Load:
    """n clients asking one question after another until stop()."""

    def __init__(self, port, n):
        self.results, self.lock, self.stopping = [], threading.Lock(), False
        self.threads = [threading.Thread(target=self.run, args=(port, k, n)) for k in range(n)]
        for t in self.threads:
            t.start()

    def run(self, port, k, n):
        i = k
        while not self.stopping:
            r = ask(port, i)
            with self.lock:
                self.results.append(r)
            i += n

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join()
        return self.results


def per_box(results):
    counts = {}
    for r in results:
        counts[r.box] = counts.get(r.box, 0) + 1
    return counts


def main():
    ternd = sys.argv[1]
    haproxy = sys.argv[2] if len(sys.argv) > 2 else 'haproxy'
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix='tern-fleet-')
    template = open(TEMPLATE).read()
    check(re.search(r'maxconn %d\b' % SLOTS, template) is not None,
          'config/haproxy.cfg: server maxconn equals the boxes\' slots (%d)' % SLOTS)
    boxes = [Box('box%d' % k, ternd, tmp) for k in (1, 2, 3)]
    for b in boxes:
        b.wait_listening()
    port, stats_port = free_port(), free_port()
    cfg = os.path.join(tmp, 'haproxy.cfg')
    with open(cfg, 'w') as f:
        f.write(fleet_config(template, port, stats_port, boxes))
    subprocess.run([haproxy, '-c', '-q', '-f', cfg], check=True)
    hlog = open(os.path.join(tmp, 'haproxy.log'), 'w')
    # -db: stay in the foreground, as a plain child of this test (not a service).
    hap = subprocess.Popen([haproxy, '-db', '-f', cfg], stdout=hlog, stderr=subprocess.STDOUT)
    try:
        for b in boxes:
            b.wait_ready()
        wait_until(lambda: all(s['status'] == 'UP' for k, s in haproxy_stats(stats_port).items()
                               if k.startswith('box')), 30, 'haproxy to see three boxes up')
        print('fleet up in %.1f s: haproxy on 127.0.0.1:%d, boxes on %s' % (
            time.monotonic() - t_start, port, ', '.join(str(b.port) for b in boxes)), flush=True)
        box1, box2, box3 = boxes

        print('1. 24 concurrent streamed requests', flush=True)
        res = burst(port, 24)
        counts = per_box(res)
        print('  per box (X-Tern-Box): %s' % counts)
        for r in res:
            if not r.ok:
                print('  %s on %s: %s' % (r.api, r.box, r.error))
        check(all(r.ok for r in res), 'all 24 answered with the known answers')
        check(all(counts.get(b.name, 0) > 0 for b in boxes), 'every box served some')
        served = {b.name: b.served() for b in boxes}
        print('  per box (ternd /metrics): %s' % served)
        check(served == {b.name: counts.get(b.name, 0) for b in boxes},
              "each ternd's own count matches the header's")

        print('2. SIGKILL box1 under load (24 clients)', flush=True)
        load = Load(port, 24)
        time.sleep(1)
        t_kill = box1.signal_when_busy(signal.SIGKILL)
        time.sleep(4)  # past haproxy's health checks marking it down (fall 2 x fastinter)
        res = load.stop()
        box1.proc.wait()
        before = [r for r in res if r.t0 < t_kill]
        after = [r for r in res if r.t0 >= t_kill]
        lost = [r for r in before if not r.ok]
        print('  %d requests before the kill, %d after; per box before %s, after %s' % (
            len(before), len(after), per_box(before), per_box(after)))
        in_flight = [r for r in before if r.t1 >= t_kill]
        print('  in flight at the kill: %d (on box1: %d), of which failed: %d' % (
            len(in_flight), sum(r.box == 'box1' for r in in_flight), len(lost)))
        for r in lost:
            print('    failed cleanly after %.2f s: %s (%s, status %s, box %s)' % (
                r.t1 - r.t0, r.error, r.api, r.status, r.box))
        for r in after:
            if not r.ok:
                print('    FAILED after the kill: %s on %s: %s' % (r.api, r.box, r.error))
        check(len(after) > 0 and all(r.ok for r in after),
              'every request sent after the kill succeeded (%d)' % len(after))
        check(all(r.box in ('box1', None) and r.t1 >= t_kill for r in lost),
              'only requests in flight on box1 failed (%d)' % len(lost))
        # No "wrong answer" among the losses: a cut stream is an error, not a different text.
        check(all(not (r.error or '').startswith('wrong answer') for r in res), 'no wrong answers')
        late = [r for r in after if r.t0 > t_kill + 3]
        check(all(r.box != 'box1' for r in late), 'box1 out of rotation within 3 s')
        st = haproxy_stats(stats_port)
        print('  haproxy: box1 %s; retries %s, redispatches %s' % (
            st['box1']['status'], st['BACKEND']['wretr'], st['BACKEND']['wredis']))
        check(st['box1']['status'].startswith('DOWN'), 'haproxy marked box1 down')

        print('3. SIGTERM box2 under load (24 clients)', flush=True)
        load = Load(port, 24)
        time.sleep(1)
        # A kept-alive connection opened before the signal: ternd keeps serving it while it
        # drains, and its /ready then says "draining"; new connections are still taken (so a
        # load balancer can watch /ready) and their generations get 503 "unavailable".
        keep = http.client.HTTPConnection('127.0.0.1', box2.port, timeout=10)
        keep.request('GET', '/ready')
        keep.getresponse().read()
        # Two streams or more: one may end in the instant between the poll and the signal.
        t_term = box2.signal_when_busy(signal.SIGTERM, streams=2)
        time.sleep(0.01)  # let ternd take the signal
        # Asked at once, while its last streams run: "503 draining". When the demo model has
        # already finished them, ternd has closed the connection and exited: no answer.
        try:
            keep.request('GET', '/ready')
            kr = keep.getresponse()
            drain_ready = '%d %s' % (kr.status, json.loads(kr.read())['status'])
        except (OSError, http.client.HTTPException) as e:
            drain_ready = 'no answer (%s: drain over, connection closed)' % type(e).__name__
        keep.close()
        try:
            nc = http.client.HTTPConnection('127.0.0.1', box2.port, timeout=5)
            nc.request('POST', '/generate', json.dumps({'prompt': 'late'}),
                       {'Content-Type': 'application/json'})
            refused = nc.getresponse().status == 503
            nc.close()
        except (OSError, http.client.HTTPException):
            refused = True  # drain already over: ternd has exited
        time.sleep(4)
        res = load.stop()
        try:
            rc = box2.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = 'still running'
        print('  /ready on a kept-alive connection while draining: %s; new connection %s' % (
            drain_ready, 'refused (503 or closed)' if refused else 'accepted'))
        check(refused, 'box2 stopped taking generations at once')
        check(not drain_ready.startswith('200'), 'box2 /ready no longer 200 once draining')
        check(rc == 0, 'box2 exited 0 after draining (got %s)' % rc)
        in_flight = [r for r in res if r.box == 'box2' and r.t0 < t_term <= r.t1]
        after = [r for r in res if r.t0 > t_term + 0.5]
        print('  %d requests; per box %s; on box2 in flight at SIGTERM: %d; sent after: %d, '
              'per box %s' % (len(res), per_box(res), len(in_flight), len(after), per_box(after)))
        for r in res:
            if not r.ok:
                print('    FAILED: %s on %s: %s' % (r.api, r.box, r.error))
        check(all(r.ok for r in res), 'no request failed, box2\'s in-flight streams finished')
        check(len(in_flight) > 0, 'box2 had streams in flight when it got SIGTERM')
        check(len(after) > 0 and all(r.box == 'box3' for r in after),
              'requests sent after the drain began all went to box3')
        log2 = open(box2.log).read()
        check('cancelling' not in log2, 'box2 cancelled nothing while draining')
        st = haproxy_stats(stats_port)
        print('  haproxy: %s; retries %s, redispatches %s' % (
            ', '.join('%s %s %s sessions' % (k, st[k]['status'], st[k]['stot'])
                      for k in ('box1', 'box2', 'box3')),
            st['BACKEND']['wretr'], st['BACKEND']['wredis']))
    finally:
        hap.terminate()
        hap.wait()
        for b in boxes:
            if b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
    print('fleet test: %.1f s' % (time.monotonic() - t_start))
    if failures:
        # What CI shows: the last lines of every log (all of them stay in tmp).
        for name in ['haproxy'] + [b.name for b in boxes]:
            with open(os.path.join(tmp, name + '.log')) as f:
                print('--- %s.log (end)\n%s' % (name, ''.join(f.readlines()[-15:])), end='')
        print('FAILED: %d check(s): %s; logs in %s' % (len(failures), '; '.join(failures), tmp))
        return 1
    subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
