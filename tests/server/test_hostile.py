#!/usr/bin/env python3
"""ternd against a hostile LAN client (issue 14): admission before image work, bounded decodes,
every finished request's row on disk.

usage: test_hostile.py PATH/TO/ternd PATH/TO/mkjpeg
"""
import base64
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_ternd  # noqa: E402  (Daemon: one ternd with the echo engine)
from test_ternd import Daemon  # noqa: E402

MKJPEG = None
MB = 1 << 20


def big_png(w, h):
    """A w x h RGB PNG of stripes: small to send, w * h * 3 bytes to decode."""
    row = b'\0' + bytes((x * 7) % 256 for x in range(w * 3))
    raw = row * h

    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw, 1)) + chunk(b'IEND', b''))


def rss_kb(pid, field):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return 0


def sanitized():
    """ASan keeps freed memory in quarantine: RSS bounds mean nothing there."""
    with open(test_ternd.TERND, 'rb') as f:
        return b'__asan_init' in f.read()


class Flood(unittest.TestCase):
    """Requests of four 4096x4096 PNGs: each is ~48 MiB decoded."""

    @classmethod
    def setUpClass(cls):
        png = big_png(4096, 4096)
        cls.body = json.dumps({'prompt': 'what', 'stream': False,
                               'images': [base64.b64encode(png).decode()] * 4})
        cls.decoded = 4096 * 4096 * 3

    def flood(self, d, n):
        out = [None] * n

        def one(i):
            try:
                st, _, _ = d.request('POST', '/generate', self.body,
                                     {'Content-Type': 'application/json'})
                out[i] = st
            except OSError as e:
                out[i] = repr(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        return out

    def check_peak(self, d, idle, slots, decodes, max_pixels, n_requests):
        """The issue's bound: idle + KV + (slots + concurrent decodes) x one decoded image, an
        image being max_image_pixels x 3 bytes. The echo engine has no KV cache. A job reads
        its pictures one at a time and frees each before the next is decoded, so the pixels
        alive are at most one per slot plus those being decoded. Beside the pixels, each
        request in flight holds what the issue lets a queued job hold, its compressed bytes
        (the body's size is allowed for them), and its connection's thread (stack pages,
        malloc arena: 512 KiB allowed)."""
        peak = rss_kb(d.proc.pid, 'VmHWM')
        pixels = (slots + decodes) * max_pixels * 3 // 1024
        held = n_requests * (len(self.body) // 1024 + 512)
        bound = idle + pixels + held
        sys.stderr.write('flood: idle %d MiB, peak %d MiB, bound %d MiB (pixels %d, requests %d)\n'
                         % (idle // 1024, peak // 1024, bound // 1024, pixels // 1024,
                            held // 1024))
        if sanitized():
            return
        self.assertLess(peak, bound, 'peak RSS %d kB, bound %d kB' % (peak, bound))

    def daemon(self, slots, queue, decodes, *more):
        pixels = 4096 * 4096
        d = Daemon('--slots', str(slots), '--queue', str(queue), '--decode-concurrency',
                   str(decodes), '--max-image-pixels', str(pixels), *more)
        return d, rss_kb(d.proc.pid, 'VmRSS'), pixels

    def test_flood_queued(self):
        d, idle, pixels = self.daemon(2, 32, 1)
        res = self.flood(d, 10)
        self.assertEqual(res, [200] * 10)
        self.check_peak(d, idle, 2, 1, pixels, 10)
        # queue_ms is the wait for a slot; decoding counts as vision time
        rows = d.rows("SELECT queue_ms, vision_ms FROM requests WHERE endpoint = '/generate'")
        self.assertEqual(len(rows), 10)
        first = min(rows, key=lambda r: r[0])
        self.assertGreater(first[1], first[0])
        self.assertEqual(d.stop(), 0)

    def test_flood_two_decoders(self):
        """decode_concurrency 2: two jobs' pictures decode at once, still one held per job."""
        d, idle, pixels = self.daemon(4, 32, 2)
        res = self.flood(d, 12)
        self.assertEqual(res, [200] * 12)
        self.check_peak(d, idle, 4, 2, pixels, 12)
        self.assertEqual(d.stop(), 0)

    def test_flood_refused(self):
        d, idle, pixels = self.daemon(1, 0, 1, '--echo-delay-ms', '50')
        res = self.flood(d, 8)
        self.assertEqual(res.count(200), 1, res)
        self.assertEqual(res.count(503), 7, res)
        self.check_peak(d, idle, 1, 1, pixels, 8)
        self.assertEqual(d.stop(), 0)

    def test_too_many_pixels_refused_from_the_header(self):
        d = Daemon('--decode-max-bytes', str(64 * MB))
        st, _, o = d.json('POST', '/generate', self.body, {'Content-Type': 'application/json'})
        self.assertEqual(st, 413, o)
        self.assertIn('decode to', o['error']['message'])
        st, _, o = d.json('POST', '/generate', {'prompt': 'x', 'stream': False,
                                                'images': [base64.b64encode(big_png(64, 64)).decode()]})
        self.assertEqual(st, 200, o)
        self.assertEqual(o['text'], '[image 64x64] x')
        self.assertEqual(d.stop(), 0)


class Jpeg(unittest.TestCase):
    def test_many_scan_progressive_jpeg_refused(self):
        path = os.path.join(tempfile.mkdtemp(prefix='ternd-jpeg-'), 'scans.jpg')
        subprocess.run([MKJPEG, path, '2048', '2048', 'many-scans'], check=True)
        with open(path, 'rb') as f:
            img = base64.b64encode(f.read()).decode()
        d = Daemon()
        t0 = time.time()
        st, _, o = d.json('POST', '/generate', {'prompt': 'x', 'stream': False, 'image': img})
        self.assertEqual(st, 422, o)
        self.assertIn('more than 64 scans', o['error']['message'])
        self.assertLess(time.time() - t0, 10)
        # still serving; a stream gets the same error as its status
        st, _, lines = d.stream('/generate', {'prompt': 'x', 'image': img})
        self.assertEqual(st, 422, lines)
        st, _, o = d.json('POST', '/generate', {'prompt': 'still here', 'stream': False})
        self.assertEqual(o['text'], 'still here')
        self.assertEqual(d.stop(), 0)


def get_from(port, src, xffs, path='/api/version', body=None):
    """One request from address src with an X-Forwarded-For header line per entry of xffs;
    returns the status."""
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10, source_address=(src, 0))
    c.putrequest('POST' if body else 'GET', path)
    for x in xffs:
        c.putheader('X-Forwarded-For', x)
    if body:
        c.putheader('Content-Type', 'application/json')
        c.putheader('Content-Length', str(len(body)))
    c.endheaders(body.encode() if body else None)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


class TrustedProxy(unittest.TestCase):
    """Behind a balancer every connection comes from its address: with trusted_proxies the
    client is the last X-Forwarded-For entry, for the rate limit, the log and the stats."""

    def test_forwarded_client_is_limited_logged_and_stored(self):
        d = Daemon('--trusted-proxies', '10.9.9.9, 127.0.0.0/30', '--rate-limit', '1')
        port = d.port
        # 10.0.0.1 through the proxy: a burst of 2, then 429
        res = [get_from(port, '127.0.0.1', ['10.0.0.1']) for _ in range(6)]
        self.assertIn(429, res, res)
        self.assertEqual(res[0], 200, res)
        # entries before the last are the client's own words: still 10.0.0.1
        self.assertEqual(get_from(port, '127.0.0.1', ['10.0.0.2', '10.0.0.1']), 429)
        self.assertEqual(get_from(port, '127.0.0.1', ['10.0.0.2, 10.0.0.1']), 429)
        # another forwarded client has its own bucket
        self.assertEqual(get_from(port, '127.0.0.1', ['10.0.0.2']), 200)
        # its generation is stored and logged under the forwarded address
        body = json.dumps({'prompt': 'via proxy', 'stream': False})
        self.assertEqual(get_from(port, '127.0.0.1', ['10.0.0.3'], '/generate', body), 200)
        self.assertEqual(d.rows("SELECT client FROM requests WHERE endpoint = '/generate'"),
                         [('10.0.0.3',)])
        # not an address: the proxy itself is the client
        self.assertEqual(get_from(port, '127.0.0.1', ['10.0.0.4; rm -rf', 'x']), 200)
        self.assertEqual(d.stop(), 0)
        with open(d.log, errors='replace') as f:
            log = f.read()
        self.assertIn('10.0.0.1 via 127.0.0.1 GET /api/version 429', log)
        self.assertIn('10.0.0.3 via 127.0.0.1 POST /generate 200', log)

    def test_untrusted_peer_cannot_pick_its_address(self):
        d = Daemon('--trusted-proxies', '127.0.0.1', '--rate-limit', '1')
        # 127.0.0.5 is no proxy: a new X-Forwarded-For each time does not escape its bucket
        res = [get_from(d.port, '127.0.0.5', ['10.1.0.%d' % i]) for i in range(6)]
        self.assertIn(429, res, res)
        self.assertEqual(d.stop(), 0)
        with open(d.log, errors='replace') as f:
            log = f.read()
        self.assertIn('127.0.0.5 GET /api/version 429', log)
        self.assertNotIn('10.1.0.', log)

    def test_bad_entry_refused_at_start(self):
        p = subprocess.run([test_ternd.TERND, '--config', '/dev/null', '--engine', 'echo',
                            '--trusted-proxies', '10.0.0.0/8, haproxy.lan'],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("trusted_proxies: 'haproxy.lan' is not an IP address", p.stderr)


class Durable(unittest.TestCase):
    def test_kill9_at_the_done_line_keeps_the_row(self):
        for i in range(20):
            d = Daemon()
            c = d.conn()
            c.request('POST', '/generate', body=json.dumps({'prompt': 'a b c %d' % i}),
                      headers={'Content-Type': 'application/json'})
            r = c.getresponse()
            rid = r.getheader('X-Request-Id')
            lines = []
            while True:
                line = r.readline()
                if not line:
                    d.proc.kill()
                    out = d.proc.communicate()[0].decode(errors='replace')
                    self.fail('attempt %d: HTTP %d, stream ended without a done line after %r\n'
                              'ternd output:\n%s\nlog:\n%s'
                              % (i, r.status, lines[-5:], out[-3000:],
                                 open(d.log, errors='replace').read()[-3000:]))
                lines.append(line)
                if json.loads(line).get('done'):
                    break
            os.kill(d.proc.pid, signal.SIGKILL)
            d.proc.wait()
            c.close()
            rows = d.rows('SELECT status, http_status FROM requests WHERE request_id = ?', (rid,))
            self.assertEqual(rows, [('stop', 200)], 'attempt %d' % i)

    def test_wal_size_limited(self):
        """SQLite checkpoints the WAL every 1000 pages but never shrinks the file by itself: past
        the first checkpoint it stays >= 1000 frames (a frame: a 4 KiB page and its 24-byte
        header, after the file's 32-byte header). Where stats_wal_bytes is below that, ternd
        truncates it at each checkpoint, so it is under 1000 frames whenever the last commit
        falls. 3600 rows make about 1500-2500 frames (fewer when rows commit in larger batches):
        at least one checkpoint."""
        checkpoint_bytes = 32 + 1000 * (4096 + 24)
        sizes = {}
        for limit in (64 << 10, 1 << 34):
            d = Daemon('--stats-wal-bytes', str(limit))

            def client():
                c = d.conn()
                for _ in range(600):
                    c.request('POST', '/generate', json.dumps({'prompt': 'a b', 'stream': False}),
                              {'Content-Type': 'application/json'})
                    c.getresponse().read()
                c.close()
            ts = [threading.Thread(target=client) for _ in range(6)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            n = d.rows("SELECT count(*) FROM requests WHERE endpoint = '/generate'")[0][0]
            self.assertEqual(n, 3600)
            sizes[limit] = os.path.getsize(d.db + '-wal')
            self.assertEqual(d.stop(), 0)
        self.assertGreaterEqual(sizes[1 << 34], checkpoint_bytes, sizes)  # checkpoints happened
        self.assertLess(sizes[64 << 10], checkpoint_bytes, sizes)

    def test_schema_before_the_first_request(self):
        """Killed before any request: the requests table is there all the same."""
        dir = tempfile.mkdtemp(prefix='ternd-test-')
        db = os.path.join(dir, 'stats.db')
        p, _ = test_ternd.start_ternd([test_ternd.TERND, '--config', '/dev/null', '--engine', 'echo',
                                       '--db', db], os.path.join(dir, 'log'))
        p.kill()
        p.wait()
        import sqlite3
        c = sqlite3.connect(db)
        self.assertEqual(c.execute("SELECT count(*) FROM requests").fetchall(), [(0,)])
        c.close()


if __name__ == '__main__':
    test_ternd.TERND = os.path.abspath(sys.argv.pop(1))
    MKJPEG = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
