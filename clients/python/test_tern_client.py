#!/usr/bin/env python3
"""Tests for tern_client.py against a running ternd (standard library only).

usage: test_tern_client.py PATH/TO/ternd   (starts its own ternd with the echo test double)
   or: TERN_URL=http://host:port test_tern_client.py   (uses a running server)
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tern_client import TernClient, TernError  # noqa: E402

IMAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests', 'server', 'data', 'shapes.jpg')
URL = os.environ.get('TERN_URL')
PROC = None


def setUpModule():
    global URL, PROC
    if URL:
        return
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    db = os.path.join(tempfile.mkdtemp(), 'stats.db')
    PROC = subprocess.Popen([TERND, '--config', '/dev/null', '--engine', 'echo', '--port', str(port),
                             '--db', db, '--api-keys', 'k'], stderr=subprocess.DEVNULL)
    URL = 'http://127.0.0.1:%d' % port
    for _ in range(200):
        try:
            urllib.request.urlopen(URL + '/health')
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('ternd did not start')


def tearDownModule():
    if PROC:
        PROC.terminate()
        assert PROC.wait(20) == 0


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.tern = TernClient(URL, api_key=None if os.environ.get('TERN_URL') else 'k')
        self.echo = not os.environ.get('TERN_URL')

    def test_streaming_generate_with_image(self):
        pieces = list(self.tern.generate('what is it', image=IMAGE))
        self.assertGreater(len(pieces), 1)
        self.assertIn(self.tern.last['done_reason'], ('stop', 'length'))
        self.assertGreater(self.tern.last['usage']['image_tokens'], 0)
        if self.echo:
            self.assertEqual(''.join(pieces), '[image 64x48] what is it')

    def test_generate_nonstream(self):
        text = self.tern.generate('one two three', stream=False, max_tokens=2)
        self.assertEqual(self.tern.last['done_reason'], 'length')
        if self.echo:
            self.assertEqual(text, 'one two')

    def test_chat(self):
        reply = self.tern.chat([{'role': 'user', 'content': 'hello there'}])
        self.assertIsInstance(reply, str)
        if self.echo:
            self.assertEqual(reply, 'hello there')
        pieces = list(self.tern.chat([{'role': 'user', 'content': 'a b'}], stream=True, images=[IMAGE]))
        self.assertTrue(self.tern.last['done'])
        if self.echo:
            self.assertEqual(''.join(pieces), '[image 64x48] a b')

    def test_stats_and_models(self):
        self.tern.generate('x', stream=False)
        st = self.tern.stats(window=600)
        self.assertGreaterEqual(st['count'], 1)
        self.assertIn('p95', st['latency_ms'])
        self.assertEqual(len(self.tern.models()), 1)
        self.assertEqual(self.tern.health(), {'status': 'ok'})

    def test_errors_raise(self):
        with self.assertRaises(TernError) as cm:
            self.tern.generate('x', image=b'not an image', stream=False)
        self.assertEqual(cm.exception.status, 415)
        if self.echo:
            with self.assertRaises(TernError) as cm:
                TernClient(URL, api_key='wrong').models()
            self.assertEqual(cm.exception.status, 401)

    def test_command_line(self):
        args = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tern_client.py'),
                '--url', URL, '--image', IMAGE, 'describe']
        if self.echo:
            args[2:2] = ['--api-key', 'k']
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        if self.echo:
            self.assertEqual(p.stdout.strip(), '[image 64x48] describe')
        self.assertIn('tokens', p.stderr)


if __name__ == '__main__':
    TERND = sys.argv.pop(1) if len(sys.argv) > 1 else None
    unittest.main(verbosity=2)
