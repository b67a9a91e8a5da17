#!/usr/bin/env python3
"""ternd attacked as a stranger on the LAN would (issue 14): slowloris, DNS rebinding, CSRF
from web pages, CORS, unauthenticated floods kept out of the stats database, forged log
lines, half-closing clients, refused bodies, drain and stray signals. The echo engine stands
in for the model.

usage: test_attack.py PATH/TO/ternd
"""
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_ternd  # noqa: E402  (its Daemon helper)
from test_ternd import Daemon  # noqa: E402


def raw(port, data, src='127.0.0.1', half_close=False, timeout=10):
    """Sends data on a fresh socket and returns everything the server sends back."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(('127.0.0.1', port))
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    out = b''
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


class Slowloris(unittest.TestCase):

    def test_slow_heads_do_not_starve_others(self):
        d = Daemon('--header-timeout', '2', '--max-connections', '64')
        stop = threading.Event()
        socks, lock = [], threading.Lock()

        def trickle(i):
            # 127.0.0.2: another address on loopback, so the per-address limit applies to it.
            try:
                s = socket.socket()
                s.bind(('127.0.0.2', 0))
                s.settimeout(1)
                s.connect(('127.0.0.1', d.port))
            except OSError:
                return
            with lock:
                socks.append(s)
            for ch in b'GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + b'a' * 1000:
                if stop.is_set():
                    break
                try:
                    s.send(bytes([ch]))
                except OSError:
                    return
                stop.wait(1)

        threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(300)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        t0 = time.time()
        for _ in range(5):   # legitimate requests keep being served
            st, _, o = d.json('POST', '/generate', {'prompt': 'still here', 'stream': False})
            self.assertEqual(st, 200)
            self.assertEqual(o['text'], 'still here')
        self.assertLess(time.time() - t0, 10)
        # The slow heads are cut after header_timeout: their sockets read end-of-file.
        time.sleep(3)
        cut = 0
        with lock:
            for s in socks[:20]:
                try:
                    s.settimeout(0.2)
                    if s.recv(10) == b'':
                        cut += 1
                except ConnectionResetError:
                    cut += 1
                except (socket.timeout, OSError):
                    pass
        self.assertGreater(cut, 0)
        stop.set()
        with lock:
            for s in socks:
                s.close()
        for _ in range(50):  # the watchdog logs once per sweep; a loaded machine is slow
            if 'too slow to send a request' in open(d.log).read():
                break
            time.sleep(0.1)
        self.assertIn('too slow to send a request', open(d.log).read())


    def test_slow_body_is_cut(self):
        """A body trickled a byte at a time is cut after body_timeout, not when it ends."""
        d = Daemon('--body-timeout', '2')
        s = socket.create_connection(('127.0.0.1', d.port))
        s.sendall(b'POST /generate HTTP/1.1\r\nHost: localhost\r\n'
                  b'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{')
        got, sent = None, 1
        for _ in range(60):  # 200 bytes at this pace would take 30 s
            r, _, _ = select.select([s], [], [], 0.5)
            if r:
                try:
                    got = s.recv(4096)
                except ConnectionResetError:
                    got = b''
                break
            try:
                s.send(b' ')
                sent += 1
            except OSError:
                got = b''
                break
        s.close()
        self.assertIsNotNone(got, 'the slow body was never cut')
        self.assertLess(sent, 200)
        self.assertNotIn(b' 200 ', got)
        st, _, o = d.json('POST', '/generate', {'prompt': 'fine', 'stream': False})
        self.assertEqual((st, o['text']), (200, 'fine'))
        self.assertIn('too slow to send a request', open(d.log).read())
        self.assertEqual(d.stop(), 0)

    def test_connections_per_address(self):
        d = Daemon('--max-connections-per-client', '3')
        held = []
        for _ in range(3):
            c = socket.socket()
            c.bind(('127.0.0.3', 0))
            c.connect(('127.0.0.1', d.port))
            held.append(c)
        time.sleep(0.3)
        # the fourth from that address is closed unanswered; other addresses are served
        out = raw(d.port, b'GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n', src='127.0.0.3',
                  timeout=5)
        self.assertEqual(out, b'')
        self.assertEqual(d.request('GET', '/health')[0], 200)
        held.pop().close()
        time.sleep(0.3)
        out = raw(d.port, b'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
                  src='127.0.0.3')
        self.assertTrue(out.startswith(b'HTTP/1.1 200'), out[:80])
        for c in held:
            c.close()
        self.assertEqual(d.stop(), 0)


class Browsers(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon('--allowed-hosts', 'tern.lan, box.example', '--cors-origins',
                       'http://app.lan:3000')

    def test_simple_requests_refused(self):
        # What a page on any site can send without a preflight: 415, no job runs.
        for ct in ('text/plain', 'application/x-www-form-urlencoded', 'text/plain; charset=utf-8'):
            st, _, o = self.d.json('POST', '/generate', '{"prompt": "csrf"}', {'Content-Type': ct})
            self.assertEqual(st, 415, ct)
            self.assertEqual(o['error']['type'], 'unsupported_media_type')
        out = raw(self.d.port, b'POST /api/generate HTTP/1.1\r\nHost: localhost\r\n'
                  b'Content-Length: 14\r\nConnection: close\r\n\r\n{"prompt":"x"}')
        self.assertTrue(out.startswith(b'HTTP/1.1 415'), out)

    def test_host_allow_list(self):
        for host, want in (('evil.example', 403), ('evil.example:%d', 403),
                           ('localhost:%d', 200), ('127.0.0.1:%d', 200), ('[::1]:%d', 200),
                           ('tern.lan:%d', 200), ('BOX.example', 200), ('10.1.2.3', 200),
                           ('app.localhost', 200), ('tern.lan.evil.example', 403)):
            if '%d' in host:
                host = host % self.d.port
            st, _, body = self.d.request('GET', '/v1/models', headers={'Host': host})
            self.assertEqual(st, want, host)
            if want == 403:
                self.assertEqual(json.loads(body)['error']['type'], 'forbidden')

    def test_cors(self):
        d = self.d
        ok = {'Origin': 'http://app.lan:3000', 'Access-Control-Request-Method': 'POST',
              'Access-Control-Request-Headers': 'content-type'}
        st, h, _ = d.request('OPTIONS', '/generate', headers=ok)
        self.assertEqual(st, 204)
        self.assertEqual(h['access-control-allow-origin'], 'http://app.lan:3000')
        self.assertIn('POST', h['access-control-allow-methods'])
        self.assertIn('Content-Type', h['access-control-allow-headers'])
        st, h, _ = d.request('OPTIONS', '/generate', headers=dict(ok, Origin='http://evil.example'))
        self.assertEqual(st, 403)
        self.assertNotIn('access-control-allow-origin', h)
        st, _, _ = d.request('OPTIONS', '/nowhere', headers=ok)
        self.assertEqual(st, 404)
        st, h, o = d.json('POST', '/generate', {'prompt': 'hi', 'stream': False},
                          {'Origin': 'http://app.lan:3000'})
        self.assertEqual(st, 200)
        self.assertEqual(h['access-control-allow-origin'], 'http://app.lan:3000')
        self.assertEqual(h['vary'], 'Origin')
        st, h, _ = d.json('GET', '/health', headers={'Origin': 'http://evil.example'})
        self.assertNotIn('access-control-allow-origin', h)

    def test_no_cors_by_default(self):
        d = Daemon()
        st, h, _ = d.request('OPTIONS', '/generate', headers={'Origin': 'http://app.lan:3000'})
        self.assertEqual(st, 403)
        self.assertNotIn('access-control-allow-origin', h)


class Strangers(unittest.TestCase):

    def test_not_stored_counted_and_escaped(self):
        d = Daemon('--api-keys', 'k1')
        key = {'Authorization': 'Bearer k1'}
        for _ in range(30):
            self.assertEqual(d.request('GET', '/v1/models')[0], 401)
            self.assertEqual(d.request('GET', '/nope')[0], 404)
        st, h, _ = d.json('POST', '/generate', {'prompt': 'member', 'stream': False}, key)
        self.assertEqual(st, 200)
        member = h['x-request-id']
        # A forged log line and terminal escapes, through the path of a 404 (once the log's
        # rate limit has refilled).
        time.sleep(2.5)
        raw(d.port, b'GET /x%0aFORGED%1b[31m\\ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
        time.sleep(2.5)   # two writer intervals
        self.assertEqual(d.rows('SELECT count(*) FROM requests WHERE http_status IN (401, 404)')[0][0], 0)
        self.assertEqual(len(d.rows('SELECT 1 FROM requests WHERE request_id = ?', (member,))), 1)
        st, _, body = d.request('GET', '/metrics', headers=key)
        text = body.decode()
        self.assertIn('ternd_requests_total{endpoint="/v1/models",code="401"} 30', text)
        self.assertIn('code="404"} 31', text)
        log = open(d.log, encoding='utf-8', errors='replace').read()
        self.assertIn('\\x0aFORGED\\x1b[31m\\x5c', log)
        for line in log.splitlines():
            self.assertFalse(line.startswith('FORGED'), line)
        self.assertNotIn('\x1b', log)

    def test_probes_not_stored(self):
        """Health checks, scrapes and the dashboard's polls are counted, not stored: a page
        left open polls /stats every 5 s."""
        d = Daemon()
        for path in ('/health', '/ready', '/metrics', '/stats', '/stats?series=1', '/',
                     '/samples'):
            for _ in range(5):
                self.assertEqual(d.request('GET', path)[0], 200, path)
        st, h, _ = d.json('POST', '/generate', {'prompt': 'member', 'stream': False})
        self.assertEqual(st, 200)
        self.assertEqual(d.request('GET', '/samples?name=no-such')[0], 404)
        time.sleep(2.5)   # two writer intervals
        rows = d.rows('SELECT endpoint, http_status FROM requests')
        self.assertEqual(sorted(rows), sorted([('/generate', 200), ('/samples', 404)]))
        text = d.request('GET', '/metrics')[2].decode()
        self.assertIn('ternd_requests_total{endpoint="/ready",code="200"} 5', text)

    def test_strangers_log_lines_limited(self):
        """A flood of 404s writes about 20 log lines a second, not one per request."""
        d = Daemon()
        for _ in range(300):
            self.assertEqual(d.request('GET', '/nope')[0], 404)
        time.sleep(0.2)
        self.assertEqual(d.request('GET', '/nope')[0], 404)
        self.assertEqual(d.stop(), 0)
        log = open(d.log, encoding='utf-8', errors='replace').read()
        lines = [ln for ln in log.splitlines() if 'GET unknown 404' in ln or ' /nope 404' in ln]
        self.assertGreater(len(lines), 20)
        self.assertLess(len(lines), 200, 'log lines for 301 refused requests')
        self.assertIn('earlier lines about refused requests suppressed', log)

    def test_rate_limit(self):
        d = Daemon('--rate-limit', '5')
        codes = [d.request('GET', '/health')[0] for _ in range(40)]
        self.assertIn(429, codes)
        self.assertEqual(codes[0], 200)
        time.sleep(1.2)
        self.assertEqual(d.request('GET', '/health')[0], 200)

    def test_refused_body_not_read(self):
        d = Daemon('--api-keys', 'k1')
        # 401 with a large declared body: answered at once, the body is never awaited.
        out = raw(d.port, b'POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                  b'Content-Length: 10000000\r\n\r\n' + b'x' * 1000, timeout=5)
        self.assertTrue(out.startswith(b'HTTP/1.1 401'), out)
        # A refused body that keeps coming (chunked) is cut off after a bounded amount.
        s = socket.create_connection(('127.0.0.1', d.port))
        s.sendall(b'POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                  b'Transfer-Encoding: chunked\r\n\r\n')
        sent = 0
        try:
            for _ in range(2000):
                s.sendall(b'4000\r\n' + b'x' * 0x4000 + b'\r\n')
                sent += 0x4000
        except OSError:
            pass
        s.close()
        self.assertLess(sent, 20 * 1024 * 1024)
        self.assertEqual(d.request('GET', '/health')[0], 200)


class Clients(unittest.TestCase):

    def test_half_close_gets_its_answer(self):
        d = Daemon('--echo-delay-ms', '20')
        body = json.dumps({'prompt': 'one two three', 'stream': False}).encode()
        out = raw(d.port, b'POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                  b'Connection: close\r\nContent-Length: %d\r\n\r\n' % len(body) + body, half_close=True)
        self.assertTrue(out.startswith(b'HTTP/1.1 200'), out)
        self.assertEqual(json.loads(out.split(b'\r\n\r\n', 1)[1])['text'], 'one two three')
        body = json.dumps({'prompt': 'four five'}).encode()   # streamed
        out = raw(d.port, b'POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                  b'Connection: close\r\nContent-Length: %d\r\n\r\n' % len(body) + body, half_close=True)
        self.assertIn(b'"done":true', out)
        self.assertIn(b'"done_reason":"stop"', out)

    def test_drain_keeps_listening_and_sigusr1(self):
        d = Daemon('--echo-delay-ms', '50', '--drain-timeout', '10')
        d.proc.send_signal(signal.SIGUSR1)   # logged and ignored, no drain
        time.sleep(0.3)
        self.assertIsNone(d.proc.poll())
        self.assertEqual(d.request('GET', '/health')[0], 200)
        c = d.conn()
        c.request('POST', '/v1/chat/completions', json.dumps(
            {'stream': True, 'messages': [{'role': 'user', 'content': ' '.join(['w'] * 40)}]}))
        r = c.getresponse()
        r.readline()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        st, _, o = d.json('GET', '/ready')
        self.assertEqual((st, o['status']), (503, 'draining'))
        st, _, o = d.json('POST', '/generate', {'prompt': 'late'})
        self.assertEqual((st, o['error']['type']), (503, 'unavailable'))
        rest = r.read().decode()
        self.assertIn('"finish_reason":"stop"', rest)
        self.assertEqual(d.proc.wait(20), 0)

    def test_openai_stream_cut_is_not_stop(self):
        d = Daemon('--echo-delay-ms', '50', '--drain-timeout', '0')
        c = d.conn()
        c.request('POST', '/v1/chat/completions', json.dumps(
            {'stream': True, 'messages': [{'role': 'user', 'content': ' '.join(['w'] * 60)}]}))
        r = c.getresponse()
        r.readline()
        d.proc.send_signal(signal.SIGTERM)
        events = [json.loads(line[6:]) for line in r.read().decode().splitlines()
                  if line.startswith('data: {')]
        finals = [e['choices'][0]['finish_reason'] for e in events
                  if e.get('choices') and e['choices'][0].get('finish_reason')]
        self.assertEqual(finals, ['length'])
        self.assertTrue(any('error' in e for e in events))
        d.proc.wait(20)


if __name__ == '__main__':
    test_ternd.TERND = sys.argv.pop(1)
    unittest.main(verbosity=2)
