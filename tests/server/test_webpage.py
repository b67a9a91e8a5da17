#!/usr/bin/env python3
"""The web page at GET / in headless Chromium: load it, choose a picture, ask, and watch the
answer stream in. Talks to Chromium over the DevTools protocol with a minimal WebSocket
client (standard library only). Exits 77 (skipped) when Chromium is not installed.

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
import urllib.request

IMAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'shapes.jpg')
PROMPT = 'which colours are in this picture'


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

    def wait_event(self, name, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            m = self.recv()
            if m.get('method') == name:
                return m
        raise TimeoutError(name)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ternd = sys.argv[1]
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium:
        print('chromium not installed: skipped')
        return 77
    port = free_port()
    d = subprocess.Popen([ternd, '--config', '/dev/null', '--engine', 'echo', '--port', str(port),
                          '--echo-delay-ms', '60'], stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix='ternd-chromium-')
    browser = None
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen('http://127.0.0.1:%d/health' % port)
                break
            except OSError:
                time.sleep(0.05)
        browser = subprocess.Popen([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                                    '--disable-background-networking', '--disable-component-update',
                                    '--disable-sync', '--disable-dev-shm-usage',
                                    '--user-data-dir=' + profile, '--remote-debugging-port=0',
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
        ws.call('Page.navigate', url='http://127.0.0.1:%d/' % port)
        ws.wait_event('Page.loadEventFired')

        def js(expr):
            r = ws.call('Runtime.evaluate', expression=expr, returnByValue=True)
            return r['result'].get('value')

        assert js('document.title') == 'tern', js('document.title')
        doc = ws.call('DOM.getDocument')
        node = ws.call('DOM.querySelector', nodeId=doc['root']['nodeId'], selector='#image')['nodeId']
        ws.call('DOM.setFileInputFiles', files=[os.path.abspath(IMAGE)], nodeId=node)
        js("document.getElementById('image').dispatchEvent(new Event('change'))")
        js("document.getElementById('prompt').value = %s; document.getElementById('ask').click(); 1"
           % json.dumps(PROMPT))
        want = '[image 64x48] ' + PROMPT
        partial, answer, timings = set(), '', ''
        end = time.time() + 30
        while time.time() < end:
            answer = js("document.getElementById('answer').textContent")
            timings = js("document.getElementById('timings').textContent")
            if answer and answer != want:
                partial.add(answer)
            if 'stop' in timings:
                break
            time.sleep(0.03)
        assert answer == want, 'answer %r, timings %r' % (answer, timings)
        assert 'tokens/s' in timings and 'first token' in timings, timings
        assert any(want.startswith(p) for p in partial), 'no partial text seen: not streamed? %r' % partial
        assert js("document.getElementById('preview').style.display") == 'block'
        print('web page: picture sent, %d partial states seen, answer %r, %s' % (len(partial), answer, timings))
        return 0
    finally:
        if browser:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        d.terminate()
        d.wait(20)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
