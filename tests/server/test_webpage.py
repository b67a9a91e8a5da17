#!/usr/bin/env python3
"""The web page at GET / in headless Chromium. On the echo engine: choose a picture, ask, and
watch the answer stream in; a large picture is shrunk before upload; after some requests the
dashboard's charts show non-empty series. On the shipped demo model (when models/ has it):
click a sample picture and one of its questions, Ask, and get the model's right answer. Talks
to Chromium over the DevTools protocol with a minimal WebSocket client (standard library only).
Exits 77 (skipped) when Chromium is not installed.

usage: test_webpage.py PATH/TO/ternd
"""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import struct
import urllib.error
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
import test_ternd  # noqa: E402  (start_ternd)

IMAGE = os.path.join(HERE, 'data', 'shapes.jpg')
PROMPT = 'which colours are in this picture'
# Sample pictures the page offers, a question each lists, and the demo model's answer.
SAMPLE_ANSWERS = [('00000.jpg', 'How many shapes are there?', 'Two.'),
                  ('00002.png', 'What shape is the blue object?', 'A circle.')]


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client masking."""

    def __init__(self, url):
        m = re.match(r'ws://([^:/]+):(\d+)(/.*)', url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(('GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n'
                           'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n'
                           'Sec-WebSocket-Version: 13\r\n\r\n'
                           % (m.group(3), m.group(1), m.group(2), key)).encode())
        head = b''
        while b'\r\n\r\n' not in head:
            head += self.sock.recv(1)
        if b' 101 ' not in head.split(b'\r\n')[0]:
            raise RuntimeError('websocket handshake failed: %r' % head)
        self.next_id = 0
        self.events = []  # events that arrived while waiting for a reply

    def _recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError('devtools connection closed')
            buf += chunk
        return buf

    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + n.to_bytes(2, 'big') if n < 65536 else
                                bytes([0x80 | 127]) + n.to_bytes(8, 'big'))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        msg = b''
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7f
            if n == 126:
                n = int.from_bytes(self._recv_exact(2), 'big')
            elif n == 127:
                n = int.from_bytes(self._recv_exact(8), 'big')
            payload = self._recv_exact(n)
            if b0 & 0x0f in (0x1, 0x0):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.send({'id': my_id, 'method': method, 'params': params})
        while True:
            m = self.recv()
            if m.get('id') == my_id:
                if 'error' in m:
                    raise RuntimeError('%s: %s' % (method, m['error']))
                return m.get('result', {})
            if 'method' in m:
                self.events = self.events[-200:] + [m]

    def wait_event(self, name, timeout=20):
        for i, m in enumerate(self.events):
            if m['method'] == name:
                del self.events[:i + 1]
                return m
        self.events = []
        end = time.time() + timeout
        while time.time() < end:
            m = self.recv()
            if m.get('method') == name:
                return m
        raise TimeoutError(name)


def png(path, w, h):
    """A grey w x h PNG (8-bit greyscale), written with the standard library."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    raw = b''.join(b'\0' + bytes([128]) * w for _ in range(h))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) +
                chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b''))


def post(port, path, body, ctype='application/json'):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=body,
                                 headers={'Content-Type': ctype})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ternd = sys.argv[1]
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium:
        print('chromium not installed: skipped')
        return 77
    tmp = tempfile.mkdtemp(prefix='ternd-webpage-')
    d, port = test_ternd.start_ternd([ternd, '--config', '/dev/null', '--engine', 'echo',
                                      '--echo-delay-ms', '60', '--db', tmp + '/stats.db',
                                      '--sample-interval', '1'], tmp + '/ternd.log')
    demo = None
    browser = None
    try:
        browser = subprocess.Popen([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                                    '--disable-background-networking', '--disable-component-update',
                                    '--disable-sync', '--disable-dev-shm-usage',
                                    '--user-data-dir=' + tmp + '/profile', '--remote-debugging-port=0',
                                    'about:blank'], stderr=subprocess.PIPE, text=True)
        ws_url = None
        end = time.time() + 60
        while time.time() < end and not ws_url:
            line = browser.stderr.readline()
            if not line and browser.poll() is not None:
                raise RuntimeError('chromium exited')
            m = re.search(r'DevTools listening on (ws://\S+)', line)
            if m:
                ws_url = m.group(1)
        devport = int(re.match(r'ws://[^:]+:(\d+)/', ws_url).group(1))
        targets = json.loads(urllib.request.urlopen('http://127.0.0.1:%d/json/list' % devport).read())
        page = next(t for t in targets if t['type'] == 'page')
        ws = WebSocket(page['webSocketDebuggerUrl'])
        ws.call('Page.enable')

        def js(expr):
            r = ws.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
            if 'exceptionDetails' in r:
                raise RuntimeError('%s: %s' % (expr, r['exceptionDetails']))
            return r['result'].get('value')

        def wait_js(expr, timeout=30):
            end = time.time() + timeout
            while time.time() < end:
                v = js(expr)
                if v:
                    return v
                time.sleep(0.1)
            raise TimeoutError(expr)

        def goto(p):
            ws.call('Page.navigate', url='http://127.0.0.1:%d/' % p)
            ws.wait_event('Page.loadEventFired')
            assert js('document.title') == 'tern', js('document.title')

        def choose_file(path):
            doc = ws.call('DOM.getDocument')
            node = ws.call('DOM.querySelector', nodeId=doc['root']['nodeId'], selector='#image')['nodeId']
            ws.call('DOM.setFileInputFiles', files=[os.path.abspath(path)], nodeId=node)
            js("document.getElementById('image').dispatchEvent(new Event('change')); 1")

        def ask(prompt=None):
            """Clicks Ask (with prompt, if given); returns the answer, its timings and the
            partial answers seen while it streamed."""
            if prompt is not None:
                js("document.getElementById('prompt').value = %s" % json.dumps(prompt))
            js("document.getElementById('ask').click(); 1")
            partial, answer, timings = set(), '', ''
            end = time.time() + 30
            while time.time() < end:
                answer = js("document.getElementById('answer').textContent")
                timings = js("document.getElementById('timings').textContent")
                if 'stop' in timings:
                    # The answer was read before the timings: a short answer may have
                    # arrived and finished in between, so read it again.
                    answer = js("document.getElementById('answer').textContent")
                    break
                if answer:
                    partial.add(answer)
                time.sleep(0.03)
            return answer, timings, partial

        goto(port)
        # 0. Both picture buttons open a file chooser (the camera one asks for the camera).
        ws.call('Page.setInterceptFileChooserDialog', enabled=True)
        for inp in ('camera', 'image'):
            ws.call('Runtime.evaluate', userGesture=True,
                    expression="document.getElementById('%s').parentNode.click()" % inp)
            ws.wait_event('Page.fileChooserOpened', 10)
        ws.call('Page.setInterceptFileChooserDialog', enabled=False)
        assert js("document.getElementById('camera').getAttribute('capture')") == 'environment'
        assert js("document.getElementById('camera').accept") == 'image/*'

        # 1. A picture from a file, streamed answer (the echo engine names the picture's size).
        choose_file(IMAGE)
        wait_js("document.getElementById('picinfo').textContent.includes('KB sent')")
        answer, timings, partial = ask(PROMPT)
        want = '[image 64x48] ' + PROMPT
        assert answer == want, 'answer %r, timings %r' % (answer, timings)
        assert 'tokens/s' in timings and 'first token' in timings, timings
        assert any(want.startswith(p) and p != want for p in partial), \
            'no partial text seen: not streamed? %r' % partial
        assert js("document.getElementById('preview').style.display") == 'block'
        print('web page: picture sent, %d partial states seen, answer %r, %s' % (len(partial), answer, timings))

        # 2. A large picture (a phone photo's size) is shrunk to 1024 px before it is sent.
        png(tmp + '/big.png', 2000, 1000)
        choose_file(tmp + '/big.png')
        info = wait_js("document.getElementById('picinfo').textContent.includes('resized') &&"
                       " document.getElementById('picinfo').textContent")
        assert '2000×1000 to 1024×512' in info, info
        answer, timings, _ = ask('size')
        assert answer == '[image 1024x512] size', answer
        print('web page: large picture shrunk before upload: %s' % info)

        # 3. The dashboard: after more requests (and one refused), its next polls draw them. As
        # on a busy server, the polls ask for the last minutes only and merge them in.
        js('fullMs = 1e9; polls = 1')
        for i in range(6):
            assert post(port, '/generate', json.dumps({'prompt': 'a b c %d' % i}).encode()) == 200
        assert post(port, '/generate', b'{not json') == 400
        drawn = ("(() => { const pts = (sel) => [...document.querySelectorAll(sel)]"
                 ".map((p) => +p.dataset.points);"
                 " const sum = (a) => a.reduce((x, y) => x + (y || 0), 0);"
                 " return series && sum(series.generations) >= 8 && sum(series.errors) >= 1 &&"
                 " ['rate', 'ttft', 'token', 'tps', 'queue', 'rss', 'errors'].every((c) =>"
                 " pts('#chart-' + c + ' path.line').some((n) => n > 0)) &&"
                 " pts('#chart-ttft path.line').length === 3 && pts('#chart-token path.line').length === 3"
                 " && pts('#chart-rss path.line')[0] })()")
        t0 = time.time()
        wait_js(drawn, 40)
        tiles = js("document.getElementById('tiles').textContent")
        print('web page: dashboard drew the requests %.1f s after them; every chart has a series (tiles: %s)'
              % (time.time() - t0, tiles))

        # The JSON behind the charts: index-aligned columns on minute boundaries; bad asks 400.
        o = json.loads(urllib.request.urlopen('http://127.0.0.1:%d/stats?series=1&window=600&step=60' % port).read())
        ser = o['series']
        assert ser['step'] == 60 and ser['start'] % 60 == 0 and ser['start'] <= ser['now'] - 600, ser
        cols = [ser[k] for k in ser if isinstance(ser[k], list)] + \
            [v for k in ('ttft_ms', 'token_ms') for v in ser[k].values()]
        assert len(cols) == 16 and all(len(c) == len(ser['t']) == 11 for c in cols), ser
        assert sum(ser['requests']) <= o['count'] and sum(ser['generations']) >= 8, (o, ser)
        assert 'series' not in json.loads(urllib.request.urlopen(
            'http://127.0.0.1:%d/stats?window=600' % port).read())
        for bad in ('series=2', 'series=1&step=0', 'series=1&step=abc', 'series=1&window=3600&step=1'):
            try:
                urllib.request.urlopen('http://127.0.0.1:%d/stats?%s' % (port, bad))
                raise AssertionError(bad + ': not refused')
            except urllib.error.HTTPError as e:
                assert e.code == 400, (bad, e.code)
        names = json.loads(urllib.request.urlopen('http://127.0.0.1:%d/samples' % port).read())['samples']
        assert set(n for n, _, _ in SAMPLE_ANSWERS) <= set(names), names
        for name in names:
            r = urllib.request.urlopen('http://127.0.0.1:%d/samples?name=%s' % (port, name))
            with open(os.path.join(ROOT, 'tests', 'data', 'shapes', 'test', name), 'rb') as f:
                assert r.read() == f.read(), name
            assert r.headers['Content-Type'] == ('image/png' if name.endswith('.png') else 'image/jpeg')
        try:
            urllib.request.urlopen('http://127.0.0.1:%d/samples?name=../../etc/passwd' % port)
            raise AssertionError('unknown sample served')
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code

        # 4. The demo model: click a sample picture and one of its questions, get its answer.
        model = os.path.join(ROOT, 'models', 'tern-demo-tq2_0.gguf')
        if not os.path.exists(model):
            print('demo model not in models/: sample-picture answers not checked')
            return 0
        demo, dport = test_ternd.start_ternd(
            [ternd, '--config', '/dev/null', '--engine', 'model', '--model', model,
             '--mmproj', os.path.join(ROOT, 'models', 'tern-demo-mmproj-tq2_0.gguf'), '--threads', '1'],
            tmp + '/demo.log')
        goto(dport)
        for name, question, right in SAMPLE_ANSWERS:
            js("document.querySelector('.sample[data-name=\"%s\"]').click(); 1" % name)
            wait_js("document.getElementById('picinfo').textContent.includes(%s)" % json.dumps(name))
            assert js("document.getElementById('preview').src").endswith('/samples?name=' + name)
            chips = js("[...document.querySelectorAll('#questions .q')].map((b) => b.textContent)")
            assert question in chips, chips
            js("[...document.querySelectorAll('#questions .q')].find((b) => b.textContent === %s).click(); 1"
               % json.dumps(question))
            answer, timings, _ = ask()
            assert answer.strip() == right, 'sample %s: %r: answer %r, timings %r' % (name, question, answer, timings)
            print('web page: sample %s, %r -> %r (%s)' % (name, question, answer.strip(), timings))
        return 0
    finally:
        if browser:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        for p in (d, demo):
            if p:
                p.terminate()
                p.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
