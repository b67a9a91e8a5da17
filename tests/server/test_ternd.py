#!/usr/bin/env python3
"""Integration tests for ternd over real HTTP (Python standard library only).

ternd runs with the echo backend, a deterministic test double that answers with the prompt's
own words (one per step, echo_delay_ms apart), so every path around the engine is exercised:
each API's streaming and non-streaming shapes, concurrency, queue overflow, cancellation on
disconnect, error statuses, auth, stats rows in SQLite, /metrics, drain on SIGTERM, SIGHUP.

usage: test_ternd.py PATH/TO/ternd
"""
import atexit
import base64
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

TERND = None
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


LISTENING = re.compile(r'listening on https?://\S+:(\d+) ')


def start_ternd(cmd, log, timeout=60, **popen):
    """Starts ternd (cmd: its command line without --port/--log-file) on port 0, so the kernel
    picks a free port as ternd binds and no test running beside this one can take it first.
    Returns (process, port), the port read from the log's "listening on" line. Raises with
    what ternd said if it exits or never listens."""
    proc = subprocess.Popen(list(cmd) + ['--port', '0', '--log-file', log], **popen)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(log, errors='replace') as f:
                m = LISTENING.search(f.read())
            if m:
                assert int(m.group(1)) > 0, 'ternd names port 0, not the one the kernel picked'
                return proc, int(m.group(1))
        except OSError:
            pass
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors='replace') if proc.stdout else ''
            try:
                with open(log, errors='replace') as f:
                    out += f.read()
            except OSError:
                pass
            raise RuntimeError('ternd exited: %s' % out)
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError('ternd did not start listening in %d s' % timeout)


def read_file(name):
    with open(os.path.join(DATA, name), 'rb') as f:
        return f.read()


def same_as_tern_run(test, d, model, mmproj, image_path, prompt, sampling):
    """`tern run` and ternd (/generate) answer the same request with the same tokens: the same
    text and the same count, by construction (engine/chat.h is the one prompt path)."""
    tern = os.environ.get('TERN_CLI')
    if not tern:
        test.skipTest('TERN_CLI not set')
    flags = {'temperature': '--temp', 'top_k': '--top-k', 'top_p': '--top-p', 'min_p': '--min-p',
             'repeat_penalty': '--repeat-penalty', 'seed': '--seed', 'max_tokens': '-n'}
    cmd = [tern, 'run', '-m', model, '--mmproj', mmproj, '-p', prompt, '-t', '1']
    if image_path:
        cmd += ['--image', image_path]
    for k, v in sampling.items():
        cmd += [flags[k], str(v)]
    p = subprocess.run(cmd, capture_output=True)
    test.assertEqual(p.returncode, 0, p.stderr.decode(errors='replace'))
    n_cli = int(p.stderr.decode().split('generation ')[1].split()[0])
    body = dict(sampling, prompt=prompt, stream=False)
    if image_path:
        with open(image_path, 'rb') as f:
            body['image'] = base64.b64encode(f.read()).decode()
    st, h, o = d.json('POST', '/generate', body)
    test.assertEqual(st, 200, o)
    test.assertEqual(o['usage']['completion_tokens'], n_cli)
    test.assertEqual(o['text'], p.stdout.decode(errors='replace')[:-1])   # run adds one '\n'
    return o['text']


def stripes_png(w, h):
    """A small RGB PNG of coloured stripes, made here (no imaging library needed)."""
    import struct
    import zlib
    raw = b''.join(b'\0' + b''.join(bytes(((x * 37 + y * 11) % 256, (x * 5) % 256, (y * 23) % 256))
                                      for x in range(w)) for y in range(h))

    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


class JSONConnection(http.client.HTTPConnection):
    """Sends Content-Type: application/json with a body unless a test says otherwise (ternd
    refuses generation requests of any other type with 415)."""

    def request(self, method, url, body=None, headers=None, **kw):
        headers = dict(headers or {})
        if body is not None and not any(k.lower() == 'content-type' for k in headers):
            headers['Content-Type'] = 'application/json'
        super().request(method, url, body=body, headers=headers, **kw)


class Daemon:
    """One ternd process on a free loopback port with its own stats database."""

    def __init__(self, *args, env=None):
        self.dir = tempfile.mkdtemp(prefix='ternd-test-')
        self.db = os.path.join(self.dir, 'stats.db')
        self.log = os.path.join(self.dir, 'ternd.log')
        self.auth = {}   # headers for protected operations endpoints
        cmd = [TERND, '--config', '/dev/null', '--engine', 'echo', '--db', self.db,
               '--sample-interval', '1'] + list(args)
        self.proc, self.port = start_ternd(cmd, self.log, env=dict(os.environ, **(env or {})),
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        atexit.register(self._reap)   # a failed test must not leave a daemon behind

    def _reap(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def conn(self, timeout=30):
        return JSONConnection('127.0.0.1', self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers dict, body bytes)."""
        c = self.conn()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def json(self, method, path, body=None, headers=None):
        st, h, data = self.request(method, path, body, headers)
        return st, h, json.loads(data)

    def stream(self, path, body, headers=None):
        """Streams a response; returns (status, headers, list of lines)."""
        c = self.conn()
        c.request('POST', path, body=json.dumps(body), headers=headers or {})
        r = c.getresponse()
        lines = []
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip('\n')
            if line:
                lines.append(line)
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, lines

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.dump('did not exit %d s after signal %d' % (timeout, sig))
            raise
        if rc != 0:
            self.dump('exit status %d' % rc)
        return rc

    def dump(self, why):
        """Show what the daemon said, so a failed stop can be diagnosed from CI's log."""
        out = self.proc.stdout.read().decode(errors='replace') if self.proc.stdout else ''
        try:
            with open(self.log, errors='replace') as f:
                log = f.read()
        except OSError:
            log = ''
        sys.stderr.write('ternd %s\n--- output ---\n%s\n--- log (tail) ---\n%s\n'
                         % (why, out[-4000:], log[-4000:]))

    def rows(self, sql, args=()):
        db = sqlite3.connect(self.db, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def metric(self, name):
        st, _, data = self.request('GET', '/metrics', headers=self.auth)
        for line in data.decode().splitlines():
            if line.startswith(name + ' '):
                return float(line.split()[1])
        return None

    def wait_for(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return False


WORDS = 'the red circle is above the blue square'


class Main(unittest.TestCase):
    """Shared daemon: 4 slots, queue 16, 5 ms per step."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon('--slots', '4', '--queue', '16', '--echo-delay-ms', '5',
                       '--max-body-bytes', '1000000', '--max-image-bytes', '500000',
                       '--max-tokens', '512', '--max-prompt-tokens', '1000')
        cls.ids = []

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, 'ternd exit status %d' % rc

    def track(self, headers):
        self.assertIn('x-request-id', headers)
        type(self).ids.append(headers['x-request-id'])

    def assertError(self, status, headers, body, want_status, want_type=None):
        if status not in (401, 403, 404, 405, 429):   # strangers get no stats row
            self.track(headers)
        self.assertEqual(status, want_status, body)
        self.assertTrue(headers['content-type'].startswith('application/json'))
        err = json.loads(body)['error']
        if isinstance(err, str):   # Ollama's endpoints: {"error": "message"}, as its clients read it
            self.assertIsNone(want_type)
            return {'message': err}
        self.assertIsInstance(err['message'], str)
        if want_type:
            self.assertEqual(err['type'], want_type)
        return err

    # ---- each API streams ----

    def test_native_stream(self):
        st, h, lines = self.d.stream('/generate', {'prompt': WORDS})
        self.track(h)
        self.assertEqual(st, 200)
        self.assertEqual(h['content-type'], 'application/x-ndjson')
        objs = [json.loads(l) for l in lines]
        text = ''.join(o.get('token', '') for o in objs[:-1])
        self.assertEqual(text, WORDS)
        final = objs[-1]
        self.assertTrue(final['done'])
        self.assertEqual(final['done_reason'], 'stop')
        self.assertEqual(final['usage']['completion_tokens'], len(WORDS.split()))
        self.assertEqual(final['request_id'], h['x-request-id'])
        for k in ('queue_ms', 'prefill_ms', 'ttft_ms', 'decode_ms', 'total_ms'):
            self.assertGreaterEqual(final['timings'][k], 0)

    def test_native_nonstream_and_limits(self):
        st, h, o = self.d.json('POST', '/generate', {'prompt': WORDS, 'stream': False, 'max_tokens': 3})
        self.track(h)
        self.assertEqual(st, 200)
        self.assertEqual(o['text'], 'the red circle')
        self.assertEqual(o['done_reason'], 'length')

    def test_native_stop_string(self):
        st, h, o = self.d.json('POST', '/generate', {'prompt': WORDS, 'stream': False, 'stop': ['is ab']})
        self.track(h)
        self.assertEqual(o['text'], 'the red circle ')
        self.assertEqual(o['done_reason'], 'stop')

    def test_native_json_image(self):
        img = base64.b64encode(read_file('shapes.png')).decode()
        st, h, o = self.d.json('POST', '/generate', {'prompt': 'what', 'image': img, 'stream': False})
        self.track(h)
        self.assertEqual(st, 200, o)
        self.assertEqual(o['text'], '[image 64x48] what')
        self.assertEqual(o['usage']['image_tokens'], 64)

    def test_native_multipart(self):
        boundary = 'xTERNx'
        jpg = read_file('shapes.jpg')
        body = (b'--' + boundary.encode() + b'\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
                b'describe it\r\n--' + boundary.encode() +
                b'\r\nContent-Disposition: form-data; name="stream"\r\n\r\nfalse\r\n--' + boundary.encode() +
                b'\r\nContent-Disposition: form-data; name="image"; filename="shapes.jpg"\r\n'
                b'Content-Type: image/jpeg\r\n\r\n' + jpg + b'\r\n--' + boundary.encode() + b'--\r\n')
        st, h, data = self.d.request('POST', '/generate', body,
                                     {'Content-Type': 'multipart/form-data; boundary=' + boundary})
        self.track(h)
        self.assertEqual(st, 200, data)
        self.assertEqual(json.loads(data)['text'], '[image 64x48] describe it')

    def test_ollama_generate(self):
        img = base64.b64encode(read_file('shapes.jpg')).decode()
        st, h, lines = self.d.stream('/api/generate', {'model': 'x', 'prompt': 'a b c', 'images': [img]})
        self.track(h)
        self.assertEqual(st, 200)
        objs = [json.loads(l) for l in lines]
        self.assertEqual(''.join(o['response'] for o in objs), '[image 64x48] a b c')
        self.assertFalse(objs[0]['done'])
        final = objs[-1]
        self.assertTrue(final['done'])
        self.assertEqual(final['model'], 'x')
        self.assertTrue(final['created_at'].endswith('Z'))
        for k in ('total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration',
                  'eval_count', 'eval_duration'):
            self.assertIsInstance(final[k], int, k)
        self.assertEqual(final['eval_count'], 4)
        self.assertGreater(final['total_duration'], 1000)  # nanoseconds

    def test_ollama_generate_nonstream_options(self):
        st, h, o = self.d.json('POST', '/api/generate',
                               {'prompt': WORDS, 'stream': False, 'options': {'num_predict': 2, 'temperature': 0}})
        self.track(h)
        self.assertEqual(o['response'], 'the red')
        self.assertEqual(o['done_reason'], 'length')

    def test_ollama_chat(self):
        st, h, lines = self.d.stream('/api/chat', {'messages': [
            {'role': 'system', 'content': 'be brief'},
            {'role': 'user', 'content': 'hello there'}]})
        self.track(h)
        objs = [json.loads(l) for l in lines]
        self.assertEqual(''.join(o['message']['content'] for o in objs), 'hello there')
        self.assertEqual(objs[0]['message']['role'], 'assistant')
        self.assertTrue(objs[-1]['done'])
        st, h, o = self.d.json('POST', '/api/chat', {'messages': [{'role': 'user', 'content': 'x y'}],
                                                      'stream': False})
        self.track(h)
        self.assertEqual(o['message']['content'], 'x y')

    def test_openai_stream(self):
        img = base64.b64encode(read_file('shapes.png')).decode()
        body = {'model': 'tern', 'stream': True, 'stream_options': {'include_usage': True},
                'messages': [{'role': 'user', 'content': [
                    {'type': 'text', 'text': 'two words'},
                    {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,' + img}}]}]}
        st, h, lines = self.d.stream('/v1/chat/completions', body)
        self.track(h)
        self.assertEqual(st, 200)
        self.assertTrue(h['content-type'].startswith('text/event-stream'))
        self.assertEqual(lines[-1], 'data: [DONE]')
        events = [json.loads(l[6:]) for l in lines[:-1]]
        self.assertTrue(all(l.startswith('data: ') for l in lines))
        content = ''.join(e['choices'][0]['delta'].get('content', '') for e in events if e['choices'])
        self.assertEqual(content, '[image 64x48] two words')
        self.assertEqual(events[0]['choices'][0]['delta']['role'], 'assistant')
        self.assertEqual(events[0]['object'], 'chat.completion.chunk')
        finals = [e for e in events if e['choices'] and e['choices'][0]['finish_reason']]
        self.assertEqual(finals[0]['choices'][0]['finish_reason'], 'stop')
        usage = events[-1]
        self.assertEqual(usage['choices'], [])
        self.assertEqual(usage['usage']['completion_tokens'], 3)

    def test_openai_nonstream(self):
        st, h, o = self.d.json('POST', '/v1/chat/completions', {
            'messages': [{'role': 'user', 'content': WORDS}], 'max_tokens': 4})
        self.track(h)
        self.assertEqual(st, 200)
        self.assertEqual(o['object'], 'chat.completion')
        self.assertEqual(o['choices'][0]['message']['content'], 'the red circle is')
        self.assertEqual(o['choices'][0]['finish_reason'], 'length')
        self.assertEqual(o['usage']['completion_tokens'], 4)

    def test_listing_endpoints(self):
        st, h, o = self.d.json('GET', '/api/tags')
        self.assertEqual(st, 200)
        self.assertEqual(o['models'][0]['details']['format'], 'gguf')
        st, h, o = self.d.json('GET', '/api/version')
        self.assertRegex(o['version'], r'^\d+\.\d+\.\d+')
        st, h, o = self.d.json('GET', '/v1/models')
        self.assertEqual(o['object'], 'list')
        self.assertEqual(o['data'][0]['object'], 'model')
        st, h, o = self.d.json('GET', '/ready')
        self.assertEqual(st, 200)
        st, h, data = self.d.request('GET', '/')
        self.assertEqual(st, 200)
        self.assertIn(b'<html', data.lower())

    # ---- concurrency ----

    def test_eight_concurrent_streams(self):
        results = [None] * 8

        def run(i):
            prompt = ' '.join('w%d_%d' % (i, k) for k in range(20))
            st, h, lines = self.d.stream('/generate', {'prompt': prompt})
            text = ''.join(json.loads(l).get('token', '') for l in lines[:-1])
            results[i] = (st, text == prompt, json.loads(lines[-1])['done_reason'], h['x-request-id'])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in results:
            self.assertEqual(r[:3], (200, True, 'stop'))
            type(self).ids.append(r[3])

    # ---- errors: each gets the right status and a JSON body; the daemon keeps serving ----

    def test_errors(self):
        d = self.d
        self.assertError(*d.request('POST', '/generate', '{"prompt": "x"'), 400, 'invalid_request')
        self.assertError(*d.request('POST', '/generate', '[1,2]'), 400)
        self.assertError(*d.request('POST', '/generate', {'prompt': 5}), 400)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'max_tokens': 'ten'}), 400)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'stream': 'yes'}), 400)
        self.assertError(*d.request('POST', '/generate', {}), 400)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'image': 'not*base64!'}), 400)
        trunc = base64.b64encode(read_file('truncated.jpg')).decode()
        err = self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'image': trunc}), 422)
        self.assertIn('JPEG', err['message'])
        gif = base64.b64encode(b'GIF89a' + b'\0' * 20).decode()
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'image': gif}), 415)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'max_tokens': 100000}), 422)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x', 'temperature': -1}), 422)
        self.assertError(*d.request('POST', '/generate', {'prompt': 'x ' * 1200}), 422)
        # Declared too large: refused before the body is sent.
        s = socket.create_connection(('127.0.0.1', d.port))
        s.sendall(b'POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n'
                  b'Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n')
        resp = s.recv(4096).decode()
        s.close()
        self.assertTrue(resp.startswith('HTTP/1.1 413'), resp)
        self.assertIn('payload_too_large', resp)
        # Too large without a declared length (chunked): read, dropped, refused.
        c = d.conn()
        body = json.dumps({'prompt': 'x' * 1100000}).encode()
        c.request('POST', '/generate', body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                  encode_chunked=True, headers={'Content-Type': 'application/json'})
        r = c.getresponse()
        self.assertError(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), 413, 'payload_too_large')
        c.close()
        big_img = base64.b64encode(b'\xff\xd8\xff' + b'\0' * 600000).decode()
        self.assertError(*d.request('POST', '/v1/chat/completions', {'messages': [{'role': 'user', 'content': [
            {'type': 'image_url', 'image_url': {'url': 'data:image/jpeg;base64,' + big_img}}]}]}), 413)
        self.assertError(*d.request('POST', '/generate', 'x', {'Content-Type': 'application/xml'}), 415)
        self.assertError(*d.request('GET', '/nowhere'), 404, 'not_found')
        st, h, body = d.request('DELETE', '/generate')
        self.assertError(st, h, body, 405, 'method_not_allowed')
        self.assertEqual(h['allow'], 'POST')
        err = self.assertError(*d.request('POST', '/api/chat', {'messages': []}), 400)
        self.assertEqual(err, {'message': 'messages: expected a non-empty array'})
        self.assertError(*d.request('POST', '/api/chat', {'messages': [{'role': 'robot', 'content': 'x'}]}), 422)
        self.assertError(*d.request('POST', '/v1/chat/completions', {'messages': [{'role': 'user', 'content': [
            {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,@@@'}}]}]}), 400)
        self.assertError(*d.request('POST', '/v1/chat/completions', {'messages': 'hi'}), 400)
        self.assertError(*d.request('GET', '/stats?window=abc'), 400)
        # An engine failure: the echo backend fails decode when asked to.
        self.assertError(*d.request('POST', '/generate', {'prompt': '__fail__', 'stream': False}), 500, 'internal')
        # Still serving.
        st, h, o = d.json('POST', '/generate', {'prompt': 'still alive', 'stream': False})
        self.track(h)
        self.assertEqual(o['text'], 'still alive')

    # ---- observability ----

    def test_metrics_format(self):
        self.d.json('POST', '/generate', {'prompt': 'a b', 'stream': False})
        st, h, data = self.d.request('GET', '/metrics')
        self.assertEqual(st, 200)
        self.assertTrue(h['content-type'].startswith('text/plain'))
        text = data.decode()
        self.assertIn('# TYPE ternd_requests_total counter', text)
        self.assertIn('# TYPE ternd_time_to_first_token_seconds histogram', text)
        self.assertIn('ternd_time_to_first_token_seconds_bucket{le="+Inf"}', text)
        self.assertIn('ternd_queue_depth ', text)
        self.assertGreater(self.d.metric('ternd_completion_tokens_total'), 0)
        for line in text.splitlines():
            if line and not line.startswith('#'):
                name, value = line.rsplit(' ', 1)
                float(value)

    def test_zz_stats_rows(self):
        """Runs last (name order): every tracked request has a row with its timings."""
        st, h, o = self.d.json('GET', '/stats?window=600')
        self.assertEqual(st, 200)
        self.assertGreater(o['count'], 10)
        self.assertGreater(o['generations'], 5)
        self.assertGreater(o['errors'], 5)
        self.assertGreater(o['latency_ms']['p99'], 0)
        self.assertGreaterEqual(o['latency_ms']['p99'], o['latency_ms']['p50'])
        self.assertGreater(o['rss_peak_kb'], 0)
        ids = type(self).ids
        self.assertTrue(self.d.wait_for(lambda: len(self.d.rows(
            'SELECT request_id FROM requests WHERE request_id IN (%s)' % ','.join('?' * len(ids)), ids)) == len(ids)))
        rows = self.d.rows('SELECT request_id, http_status, status, total_ms, ttft_ms, completion_tokens '
                           'FROM requests')
        by_id = {r[0]: r for r in rows}
        for i in ids:
            self.assertIn(i, by_id)
            self.assertIsNotNone(by_id[i][3])
        gens = [r for r in rows if r[2] in ('stop', 'length')]
        self.assertGreater(len(gens), 10)
        for r in gens:
            self.assertEqual(r[1], 200)
            self.assertIsNotNone(r[4])
        self.assertTrue(any(r[1] == 400 for r in rows))
        self.assertTrue(any(r[1] == 500 and r[2] == 'error' for r in rows))
        self.assertEqual(self.d.rows('PRAGMA user_version')[0][0], 1)
        self.assertTrue(self.d.wait_for(lambda: self.d.rows('SELECT count(*) FROM samples')[0][0] > 0, 5))
        # `tern stats` prints the same aggregates as a table.
        tern = os.environ.get('TERN_CLI')
        if tern:
            p = subprocess.run([tern, 'stats', '--db', self.d.db, '--window', '600'],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn('latency (ms)', p.stdout)
            self.assertGreaterEqual(int(p.stdout.split('requests')[1].split()[0]), o['count'])


class Small(unittest.TestCase):
    """One slot, one queue place, slow steps, an API key: overflow, cancellation, auth."""

    KEY = {'Authorization': 'Bearer s3cret'}

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon('--slots', '1', '--queue', '1', '--echo-delay-ms', '40', '--api-keys', 's3cret,other')
        cls.d.auth = cls.KEY

    @classmethod
    def tearDownClass(cls):
        assert cls.d.stop() == 0

    def long_prompt(self, n=200):
        return ' '.join('w%d' % i for i in range(n))

    def test_auth(self):
        st, h, o = self.d.json('GET', '/v1/models')
        self.assertEqual(st, 401)
        self.assertEqual(o['error']['type'], 'authentication')
        self.assertEqual(h.get('www-authenticate'), 'Bearer')
        st, _, _ = self.d.json('GET', '/v1/models', headers={'Authorization': 'Bearer wrong'})
        self.assertEqual(st, 401)
        st, _, _ = self.d.json('GET', '/v1/models', headers=self.KEY)
        self.assertEqual(st, 200)
        st, _, _ = self.d.json('GET', '/v1/models', headers={'X-Api-Key': 'other'})
        self.assertEqual(st, 200)
        st, _, _ = self.d.json('GET', '/health')
        self.assertEqual(st, 200)

    def test_overflow_and_disconnect(self):
        d = self.d
        # 1: occupy the slot with a stream, read two tokens.
        c1 = d.conn()
        c1.request('POST', '/generate', json.dumps({'prompt': self.long_prompt()}), self.KEY)
        r1 = c1.getresponse()
        self.assertEqual(r1.status, 200)
        r1.readline(), r1.readline()
        # 2: fill the queue.
        c2 = d.conn()
        c2.request('POST', '/generate', json.dumps({'prompt': 'queued one', 'stream': False}), self.KEY)
        self.assertTrue(d.wait_for(lambda: d.json('GET', '/ready')[2]['queued'] == 1))
        # 3: no room: 503 with Retry-After.
        st, h, o = d.json('POST', '/generate', {'prompt': 'x'}, self.KEY)
        self.assertEqual(st, 503)
        self.assertEqual(o['error']['type'], 'overloaded')
        self.assertGreaterEqual(int(h['retry-after']), 1)
        st, _, _ = d.json('GET', '/ready')
        self.assertEqual(st, 503)
        rejected_id = h['x-request-id']
        # Disconnect 1 mid-stream: its slot goes to the queued request, which completes.
        cancelled_id = r1.getheader('X-Request-Id')
        cancelled_before = d.metric('ternd_cancelled_total')
        c1.sock.shutdown(socket.SHUT_RDWR)
        c1.close()
        r2 = c2.getresponse()
        self.assertEqual(r2.status, 200)
        self.assertEqual(json.loads(r2.read())['text'], 'queued one')
        c2.close()
        self.assertTrue(d.wait_for(lambda: d.json('GET', '/ready')[0] == 200))
        self.assertTrue(d.wait_for(lambda: d.metric('ternd_cancelled_total') == cancelled_before + 1))
        # The cancelled stream stopped early (~ a step after the disconnect), and rows exist.
        def row(i):
            rows = d.rows('SELECT status, completion_tokens, http_status FROM requests WHERE request_id=?', (i,))
            return rows[0] if rows else None
        self.assertTrue(d.wait_for(lambda: row(cancelled_id) is not None))
        status, tokens, _ = row(cancelled_id)
        self.assertEqual(status, 'cancelled')
        self.assertLess(tokens, 100)
        self.assertTrue(d.wait_for(lambda: row(rejected_id) is not None))
        self.assertEqual(row(rejected_id)[0], 'rejected')
        self.assertEqual(row(rejected_id)[2], 503)

    def test_disconnect_while_queued(self):
        d = self.d
        c1 = d.conn()
        c1.request('POST', '/generate', json.dumps({'prompt': self.long_prompt(30)}), self.KEY)
        r1 = c1.getresponse()
        r1.readline()
        c2 = d.conn()
        c2.request('POST', '/generate', json.dumps({'prompt': 'never'}), self.KEY)
        self.assertTrue(d.wait_for(lambda: d.json('GET', '/ready')[2]['queued'] == 1))
        c2.sock.shutdown(socket.SHUT_RDWR)
        c2.close()
        rest = r1.read().decode().strip().splitlines()
        self.assertTrue(json.loads(rest[-1])['done'])
        c1.close()
        self.assertTrue(d.wait_for(lambda: d.json('GET', '/ready')[2]['queued'] == 0))
        st, _, o = d.json('POST', '/generate', {'prompt': 'after', 'stream': False}, self.KEY)
        self.assertEqual(o['text'], 'after')


class Lifecycle(unittest.TestCase):

    def test_sigterm_drains_running_stream(self):
        d = Daemon('--echo-delay-ms', '20', '--drain-timeout', '10')
        c = d.conn()
        c.request('POST', '/generate', json.dumps({'prompt': ' '.join(['z'] * 30)}))
        r = c.getresponse()
        r.readline()
        d.proc.send_signal(signal.SIGTERM)
        lines = r.read().decode().strip().splitlines()
        final = json.loads(lines[-1])
        self.assertEqual(final['done_reason'], 'stop')
        self.assertEqual(final['usage']['completion_tokens'], 30)
        self.assertEqual(d.proc.wait(20), 0)
        # The stats were flushed before exit.
        self.assertEqual(d.rows('SELECT count(*) FROM requests WHERE status = ?', ('stop',))[0][0], 1)

    def test_sigterm_answers_request_whose_body_is_arriving(self):
        # The head arrives before SIGTERM, the body after it: the request was accepted before
        # the drain, so it gets a whole answer (its job ran, or 503 "shutting down"), never a
        # connection cut before any reply because no job or stream was counted yet.
        d = Daemon('--drain-timeout', '10')
        body = json.dumps({'prompt': 'late body', 'stream': False}).encode()
        s = socket.create_connection(('127.0.0.1', d.port), timeout=20)
        s.sendall(b'POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                  b'Content-Length: %d\r\n\r\n' % len(body))
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        s.sendall(body)
        r = http.client.HTTPResponse(s)
        r.begin()
        o = json.loads(r.read())
        s.close()
        if r.status == 200:
            self.assertEqual(o['text'], 'late body')
        else:
            self.assertEqual(r.status, 503, o)
            self.assertEqual(o['error']['type'], 'unavailable')
        self.assertEqual(d.proc.wait(20), 0)

    def test_sigterm_grace_cancels(self):
        d = Daemon('--echo-delay-ms', '50', '--drain-timeout', '0')
        c = d.conn()
        c.request('POST', '/generate', json.dumps({'prompt': ' '.join(['z'] * 400)}))
        r = c.getresponse()
        r.readline()
        d.proc.send_signal(signal.SIGTERM)
        lines = r.read().decode().strip().splitlines()
        self.assertEqual(json.loads(lines[-1])['done_reason'], 'cancelled')
        self.assertEqual(d.proc.wait(20), 0)

    def test_request_deadline(self):
        d = Daemon('--slots', '1', '--queue', '4', '--echo-delay-ms', '100', '--request-timeout', '1')
        c = d.conn()
        c.request('POST', '/generate', json.dumps({'prompt': ' '.join(['w'] * 100)}))
        self.assertTrue(d.wait_for(lambda: d.json('GET', '/ready')[2]['active_slots'] == 1))
        # A second request waits behind the first past its deadline: 503, never run.
        st, h, o = d.json('POST', '/generate', {'prompt': 'late', 'stream': False})
        self.assertEqual(st, 503, o)
        self.assertIn('deadline', o['error']['message'])
        self.assertIn('retry-after', h)
        r = c.getresponse()
        lines = r.read().decode().strip().splitlines()
        final = json.loads(lines[-1])
        self.assertEqual(final['done_reason'], 'timeout')
        self.assertLess(final['usage']['completion_tokens'], 100)
        self.assertEqual(d.stop(), 0)

    def test_slow_client_is_dropped(self):
        d = Daemon('--connection-timeout', '1')
        s = socket.create_connection(('127.0.0.1', d.port))
        s.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\n')   # never finishes its headers
        s.settimeout(10)
        t0 = time.time()
        self.assertEqual(s.recv(100), b'')                    # closed by the server
        self.assertLess(time.time() - t0, 9)
        s.close()
        self.assertEqual(d.request('GET', '/health')[0], 200)
        self.assertEqual(d.stop(), 0)

    def test_sighup_reopens_log(self):
        d = Daemon()
        os.rename(d.log, d.log + '.1')
        d.proc.send_signal(signal.SIGHUP)
        self.assertTrue(d.wait_for(lambda: os.path.exists(d.log)))
        self.assertEqual(d.request('GET', '/health')[0], 200)
        self.assertEqual(d.stop(), 0)
        with open(d.log) as f:
            self.assertIn('stopped', f.read())

    def test_unwritable_db_keeps_serving(self):
        d = Daemon('--db', '/proc/nonexistent/stats.db')
        st, h, o = d.json('POST', '/generate', {'prompt': 'a b', 'stream': False})
        self.assertEqual(o['text'], 'a b')
        self.assertTrue(d.wait_for(lambda: d.metric('ternd_stats_pending') >= 1))
        self.assertEqual(d.metric('ternd_stats_dropped_total'), 0)
        self.assertEqual(d.stop(), 0)
        with open(d.log) as f:
            log = f.read()
        self.assertEqual(log.count('rows are kept'), 1)
        self.assertNotIn('writable again', log)

    def test_sd_notify_ready_and_watchdog(self):
        path = os.path.join(tempfile.mkdtemp(prefix='ternd-notify-'), 'notify.sock')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        d = Daemon(env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '200000'})
        msgs = []
        while not any('WATCHDOG=1' in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        self.assertTrue(any('READY=1' in m for m in msgs), msgs)
        self.assertEqual(d.stop(), 0)
        while not any('STOPPING=1' in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        sock.close()

    def test_bad_config_names_key(self):
        for args, key in ((['--slots', 'many'], 'slots'), (['--port', '99999'], 'port'),
                          (['--engine', 'gpu'], 'engine'), (['--bogus', '1'], 'bogus')):
            p = subprocess.run([TERND, '--config', '/dev/null'] + args, capture_output=True, text=True)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(key, p.stderr)
        p = subprocess.run([TERND, '--config', '/dev/null'], env=dict(os.environ, TERND_QUEUE='-3'),
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn('TERND_QUEUE', p.stderr)
        with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as f:
            f.write('[scheduler]\nslots = 0\n')
        p = subprocess.run([TERND, '--config', f.name], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn('slots', p.stderr)
        os.unlink(f.name)
        p = subprocess.run([TERND, '--help'], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn('--api-key-file', p.stdout)


class RealEngine(unittest.TestCase):
    """The real engine behind the same HTTP paths, on a tiny random-weight SmolVLM-shaped
    model built at test time (tests/make_hf_fixture.py + tern convert). Its answers are
    gibberish; what is checked is the plumbing: image -> vision encoder -> batched decode ->
    stream, token accounting, greedy determinism under batching."""

    @classmethod
    def setUpClass(cls):
        tern, fixture = os.environ.get('TERN_CLI'), os.environ.get('TERN_HF_FIXTURE')
        if not tern or not fixture:
            raise unittest.SkipTest('TERN_CLI / TERN_HF_FIXTURE not set')
        if subprocess.run(['/usr/bin/python3', '-c', 'import numpy'], capture_output=True).returncode:
            raise unittest.SkipTest('/usr/bin/python3 has no numpy')
        cls.tmp = tempfile.mkdtemp(prefix='ternd-model-')
        subprocess.run(['/usr/bin/python3', fixture, cls.tmp + '/hf'], check=True, capture_output=True)
        subprocess.run([tern, 'convert', cls.tmp + '/hf', cls.tmp + '/tiny'], check=True, capture_output=True)
        cls.d = Daemon('--engine', 'model', '--model', cls.tmp + '/tiny.gguf',
                       '--mmproj', cls.tmp + '/tiny-mmproj.gguf', '--ctx-size', '512',
                       '--max-prompt-tokens', '400', '--slots', '3', '--threads', '1')

    @classmethod
    def tearDownClass(cls):
        assert cls.d.stop() == 0

    def test_stream_with_image(self):
        # shapes.png: a picture no other test of this daemon sends, so it is encoded, not cached
        img = base64.b64encode(read_file('shapes.png')).decode()
        st, h, lines = self.d.stream('/generate', {'prompt': 'what color', 'image': img, 'max_tokens': 6})
        self.assertEqual(st, 200)
        objs = [json.loads(l) for l in lines]
        final = objs[-1]
        self.assertTrue(final['done'])
        self.assertIn(final['done_reason'], ('stop', 'length'))
        self.assertGreater(final['usage']['image_tokens'], 0)
        self.assertGreater(final['usage']['prompt_tokens'], final['usage']['image_tokens'])
        self.assertGreater(final['timings']['vision_ms'], 0)
        self.assertLessEqual(final['usage']['completion_tokens'], 6)

    def test_greedy_is_deterministic_under_batching(self):
        body = {'prompt': 'the red circle', 'max_tokens': 12, 'temperature': 0, 'stream': False}
        alone = self.d.json('POST', '/generate', body)[2]['text']
        out = [None] * 5

        def run(i):
            out[i] = self.d.json('POST', '/generate', body)[2]['text']
        ts = [threading.Thread(target=run, args=(i,)) for i in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(out, [alone] * 5)

    def test_compat_apis_and_limits(self):
        st, h, lines = self.d.stream('/v1/chat/completions', {
            'stream': True, 'max_tokens': 3, 'messages': [{'role': 'user', 'content': 'hi'}]})
        self.assertEqual(lines[-1], 'data: [DONE]')
        st, h, o = self.d.json('POST', '/api/chat', {'stream': False, 'options': {'num_predict': 3},
                                                     'messages': [{'role': 'user', 'content': 'hi'}]})
        self.assertEqual(st, 200)
        self.assertLessEqual(o['eval_count'], 3)
        st, h, o = self.d.json('POST', '/generate', {'prompt': 'the ' * 500})
        self.assertEqual(st, 422)
        st, h, o = self.d.json('GET', '/api/tags')
        self.assertEqual(o['models'][0]['details']['family'], 'llama')
        self.assertGreater(o['models'][0]['size'], 0)

    def test_same_tokens_as_tern_run(self):
        # The fixture's processor splits pictures into crops (longest_edge 64 > tile 32).
        image = os.path.join(DATA, 'shapes.jpg')
        for sampling in ({'temperature': 0, 'max_tokens': 10},
                         {'temperature': 1.5, 'top_k': 0, 'top_p': 1, 'min_p': 0, 'seed': 11,
                          'repeat_penalty': 1.3, 'max_tokens': 12}):
            same_as_tern_run(self, self.d, self.tmp + '/tiny.gguf', self.tmp + '/tiny-mmproj.gguf',
                             image, 'what color', sampling)

    def cold_daemon(self):
        """The same model without either cache: the reference answers."""
        return Daemon('--engine', 'model', '--model', self.tmp + '/tiny.gguf',
                      '--mmproj', self.tmp + '/tiny-mmproj.gguf', '--ctx-size', '512',
                      '--max-prompt-tokens', '400', '--threads', '1',
                      '--image-cache-bytes', '0', '--prefix-cache', '0')

    def chat(self, d, messages):
        st, h, o = d.json('POST', '/api/chat', {'stream': False, 'messages': messages,
                                                'options': {'temperature': 0, 'num_predict': 8}})
        self.assertEqual(st, 200, o)
        return o

    def test_repeated_image_is_not_encoded_again(self):
        data = stripes_png(40, 30)   # a picture no other test of this daemon sends
        hits, misses = self.d.metric('ternd_image_cache_hits_total'), self.d.metric('ternd_image_cache_misses_total')
        body = {'prompt': 'what shape', 'max_tokens': 8, 'temperature': 0, 'stream': False,
                'image': base64.b64encode(data).decode()}
        first = self.d.json('POST', '/generate', dict(body, prompt='which shape'))[2]
        self.assertGreater(first['timings']['vision_ms'], 0)
        again = self.d.json('POST', '/generate', body)[2]      # same picture, other question
        self.assertEqual(again['timings']['vision_ms'], 0)
        self.assertGreater(again['usage']['cached_tokens'], again['usage']['image_tokens'])
        same = self.d.json('POST', '/generate', body)[2]       # the same request again
        self.assertEqual(same['timings']['vision_ms'], 0)
        self.assertEqual(same['usage']['cached_tokens'], same['usage']['prompt_tokens'] - 1)
        self.assertEqual(same['text'], again['text'])
        self.assertEqual(self.d.metric('ternd_image_cache_hits_total'), hits + 2)
        self.assertEqual(self.d.metric('ternd_image_cache_misses_total'), misses + 1)
        self.assertGreaterEqual(self.d.metric('ternd_prefix_tokens_reused_total'),
                                again['usage']['cached_tokens'] + same['usage']['cached_tokens'])
        # The answer equals a cold daemon's (no caches): reused rows and KV change nothing.
        cold = self.cold_daemon()
        try:
            ref = cold.json('POST', '/generate', body)[2]
            self.assertGreater(ref['timings']['vision_ms'], 0)
            self.assertEqual(ref['usage']['cached_tokens'], 0)
            self.assertEqual(ref['text'], same['text'])
        finally:
            self.assertEqual(cold.stop(), 0)

    def test_follow_up_turn_reuses_the_prefix(self):
        img = base64.b64encode(read_file('shapes.jpg')).decode()
        turn = [{'role': 'system', 'content': 'You answer in one word.'},
                {'role': 'user', 'content': 'what is red', 'images': [img]}]
        first = self.chat(self.d, turn)
        turn2 = turn + [first['message'], {'role': 'user', 'content': 'and what is blue'}]
        reused = self.d.metric('ternd_prefix_tokens_reused_total')
        second = self.chat(self.d, turn2)
        gained = self.d.metric('ternd_prefix_tokens_reused_total') - reused
        self.assertGreater(gained, 0)
        cold = self.cold_daemon()
        try:
            ref = self.chat(cold, turn2)
            self.assertEqual(cold.metric('ternd_prefix_tokens_reused_total'), 0)
            self.assertEqual(ref['message']['content'], second['message']['content'])
            self.assertEqual(ref['eval_count'], second['eval_count'])
        finally:
            self.assertEqual(cold.stop(), 0)


class PhiModel(unittest.TestCase):
    """moondream2's family (Phi decoder, SigLIP + MLP projector, Question/Answer prompt) behind
    the same HTTP paths: a tiny random-weight pair from `tern mkmodel --like phi-tiny`.
    The answers are gibberish; what is checked is that ternd serves the family with a picture
    exactly as `tern run` does."""

    @classmethod
    def setUpClass(cls):
        tern = os.environ.get('TERN_CLI')
        if not tern:
            raise unittest.SkipTest('TERN_CLI not set')
        cls.tmp = tempfile.mkdtemp(prefix='ternd-phi-')
        cls.model, cls.mmproj = cls.tmp + '/phi.gguf', cls.tmp + '/phi-mmproj.gguf'
        subprocess.run([tern, 'mkmodel', '--like', 'phi-tiny', '--type', 'tq2_0', '-o', cls.model,
                        '--mmproj', cls.mmproj], check=True, capture_output=True)
        cls.d = Daemon('--engine', 'model', '--model', cls.model, '--mmproj', cls.mmproj,
                       '--threads', '1', '--slots', '2')

    @classmethod
    def tearDownClass(cls):
        assert cls.d.stop() == 0

    def test_served_like_tern_run(self):
        image = os.path.join(DATA, 'shapes.jpg')
        same_as_tern_run(self, self.d, self.model, self.mmproj, image, 'what color',
                         {'temperature': 0, 'max_tokens': 8})
        same_as_tern_run(self, self.d, self.model, self.mmproj, image, 'what shape',
                         {'temperature': 1.5, 'top_k': 0, 'top_p': 1, 'min_p': 0, 'seed': 5,
                          'max_tokens': 8})

    def test_family_reported(self):
        st, h, o = self.d.json('GET', '/api/tags')
        self.assertEqual(st, 200)
        self.assertEqual(o['models'][0]['details']['family'], 'phi2')
        img = base64.b64encode(read_file('shapes.png')).decode()
        st, h, o = self.d.json('POST', '/generate', {'prompt': 'what', 'image': img,
                                                     'max_tokens': 4, 'stream': False})
        self.assertEqual(st, 200, o)
        self.assertGreater(o['usage']['image_tokens'], 0)
        self.assertGreater(o['timings']['vision_ms'], 0)


class DemoModel(unittest.TestCase):
    """The shipped demo model (models/tern-demo-tq2_0.gguf) answering questions about held-out
    test pictures (tests/data/shapes) that it answers correctly with greedy decoding: each API
    must give exactly the reference answer, alone and with 8 streams at once."""

    ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
    KNOWN = [('test/00000.jpg', 'How many shapes are there?', 'Two.'),
             ('test/00000.jpg', 'What colour is the circle?', 'Red.'),
             ('test/00000.jpg', 'What does the image show?', 'A red circle on the right and a small black cross at the bottom right.'),
             ('test/00002.png', 'What shape is the blue object?', 'A circle.'),
             ('test/00000.jpg', 'Where is the circle?', 'On the right.'),
             ('test/00001.jpg', 'What color is the hexagon?', 'Black.'),
             ('test/00000.jpg', 'Is there a black cross in the image?', 'Yes.'),
             ('test/00001.jpg', 'Where is the hexagon?', 'At the bottom.')]

    @classmethod
    def setUpClass(cls):
        model = os.path.join(cls.ROOT, 'models', 'tern-demo-tq2_0.gguf')
        mmproj = os.path.join(cls.ROOT, 'models', 'tern-demo-mmproj-tq2_0.gguf')
        if not os.path.exists(model):
            raise unittest.SkipTest('demo model not in models/')
        cls.d = Daemon('--engine', 'model', '--model', model, '--mmproj', mmproj,
                       '--slots', '8', '--queue', '16', '--threads', '1')

    @classmethod
    def tearDownClass(cls):
        assert cls.d.stop() == 0

    def image(self, name):
        with open(os.path.join(self.ROOT, 'tests', 'data', 'shapes', name), 'rb') as f:
            return base64.b64encode(f.read()).decode()

    def test_same_tokens_as_tern_run(self):
        model = os.path.join(self.ROOT, 'models', 'tern-demo-tq2_0.gguf')
        mmproj = os.path.join(self.ROOT, 'models', 'tern-demo-mmproj-tq2_0.gguf')
        img, prompt, answer = self.KNOWN[2]
        path = os.path.join(self.ROOT, 'tests', 'data', 'shapes', img)
        text = same_as_tern_run(self, self.d, model, mmproj, path, prompt, {'temperature': 0})
        self.assertEqual(text.strip(), answer)
        # Hot enough that each seed draws a different answer, so the sampler is really compared.
        sampled = {same_as_tern_run(self, self.d, model, mmproj, path, prompt,
                                    {'temperature': 3, 'top_k': 0, 'top_p': 1, 'min_p': 0,
                                     'repeat_penalty': 1.1, 'seed': seed, 'max_tokens': 24})
                   for seed in (1, 2, 3)}
        self.assertEqual(len(sampled), 3)

    def test_native_stream(self):
        img, prompt, answer = self.KNOWN[0]
        st, h, lines = self.d.stream('/generate', {'prompt': prompt, 'image': self.image(img)})
        self.assertEqual(st, 200)
        objs = [json.loads(l) for l in lines]
        self.assertEqual(''.join(o.get('token', '') for o in objs).strip(), answer)
        self.assertEqual(objs[-1]['done_reason'], 'stop')

    def test_ollama_and_openai(self):
        img, prompt, answer = self.KNOWN[1]
        st, h, o = self.d.json('POST', '/api/generate', {'prompt': prompt, 'images': [self.image(img)],
                                                         'stream': False})
        self.assertEqual(st, 200)
        self.assertEqual(o['response'].strip(), answer)
        img, prompt, answer = self.KNOWN[3]
        st, h, o = self.d.json('POST', '/v1/chat/completions', {'messages': [{'role': 'user', 'content': [
            {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,' + self.image(img)}},
            {'type': 'text', 'text': prompt}]}]})
        self.assertEqual(st, 200)
        self.assertEqual(o['choices'][0]['message']['content'].strip(), answer)

    # The second renderer's pictures (tests/data/ood: training/data_ood.py draws them with cairo,
    # its own layouts and colours; never trained on), answers as the generator wrote them.
    # The floors sit a few points under what the shipped TQ2_0 file scores with greedy decoding
    # (`tern perplexity --data tests/data/ood/test.jsonl`: exact match is greedy's by
    # construction), so a regression on pictures unlike the training data fails here.
    OOD_MIN = 0.85           # the whole set (278 questions; TQ2_0 scores 0.885)
    OOD_SINGLE_COLOR_MIN = 0.89  # colour of a single filled shape on a plain background (0.947)

    def wrong_answers(self, folder, name):
        """Every question of tests/data/FOLDER/NAME (JSONL: image, prompt, answer) asked greedily
        over 8 connections; returns the number of questions and the ones answered otherwise."""
        base = os.path.join(self.ROOT, 'tests', 'data', folder)
        with open(os.path.join(base, name)) as f:
            cases = [json.loads(l) for l in f if l.strip()]
        got = [None] * len(cases)

        def ask(k):
            for i in range(k, len(cases), 8):
                c = cases[i]
                with open(os.path.join(base, c['image']), 'rb') as f:
                    img = base64.b64encode(f.read()).decode()
                st, h, o = self.d.json('POST', '/generate', {'prompt': c['prompt'], 'image': img,
                                                             'stream': False, 'temperature': 0})
                got[i] = o['text'].strip() if st == 200 else 'HTTP %d' % st
        ts = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        return len(cases), [(c['image'], c['prompt'], c['answer'], g)
                            for c, g in zip(cases, got) if g != c['answer']]

    def test_ood_pictures(self):
        n, wrong = self.wrong_answers('ood', 'test.jsonl')
        self.assertGreaterEqual(1 - len(wrong) / n, self.OOD_MIN, wrong[:10])
        n, wrong = self.wrong_answers('ood', 'test_single_color.jsonl')
        self.assertGreaterEqual(1 - len(wrong) / n, self.OOD_SINGLE_COLOR_MIN, wrong)

    def test_readme_examples(self):
        """The README's pictures drawn by hand (tests/data/examples: SVG written by hand,
        rendered by librsvg; no generator of ours drew them) and the shipped model's answers
        to them, as the README shows them."""
        n, wrong = self.wrong_answers('examples', 'examples.jsonl')
        self.assertGreaterEqual(n, 6)
        self.assertEqual(wrong, [])

    def test_eight_concurrent_streams(self):
        out = [None] * len(self.KNOWN)

        def ask(i):
            img, prompt, _ = self.KNOWN[i]
            st, h, lines = self.d.stream('/generate', {'prompt': prompt, 'image': self.image(img)})
            out[i] = ''.join(json.loads(l).get('token', '') for l in lines).strip()
        ts = [threading.Thread(target=ask, args=(i,)) for i in range(len(self.KNOWN))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(out, [k[2] for k in self.KNOWN])


if __name__ == '__main__':
    TERND = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
