#!/usr/bin/env python3
"""ternd over HTTPS (issue 14, item 5): a self-signed pair made with openssl, /health and a
streamed /generate over TLS, plain HTTP refused on the TLS port, SIGHUP after the files are
replaced (new connections get the new certificate, an open one keeps working), a bad key at
start-up named in the error, a bad pair at reload logged while the old one keeps serving.
The echo engine stands in for the model.

usage: test_tls.py PATH/TO/ternd
"""
import atexit
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_ternd  # noqa: E402  (start_ternd)

TERND = None


def make_pair(d, name):
    cert, key = os.path.join(d, name + '.crt'), os.path.join(d, name + '.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost', '-addext',
                    'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1',
                    '-keyout', key, '-out', cert], check=True, capture_output=True)
    return cert, key


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


def fingerprint(port, cafile):
    """SHA-256 of the certificate a fresh connection is shown (verified against cafile)."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        with context(cafile).wrap_socket(s, server_hostname='localhost') as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def pem_fingerprint(path):
    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


class TLSDaemon:
    def __init__(self, cert, key, wait=True):
        self.dir = tempfile.mkdtemp(prefix='ternd-tls-')
        self.log = os.path.join(self.dir, 'ternd.log')
        self.cert = cert
        cmd = [TERND, '--config', '/dev/null', '--engine', 'echo',
               '--db', os.path.join(self.dir, 'stats.db'), '--tls-cert', cert, '--tls-key', key]
        atexit.register(self.kill)
        if not wait:   # a bad pair: ternd is expected to exit; the caller reads why
            self.proc = subprocess.Popen(cmd + ['--port', '0', '--log-file', self.log],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            return
        self.proc, self.port = test_ternd.start_ternd(cmd, self.log, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT)

    def conn(self, cafile):
        return http.client.HTTPSConnection('localhost', self.port, timeout=30,
                                           context=context(cafile))

    def request(self, method, path, body=None, cafile=None):
        c = self.conn(cafile or self.cert)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={'Content-Type': 'application/json'} if body is not None else {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


class TLS(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='ternd-tls-pem-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_https_health_stream_and_no_plain_http(self):
        cert, key = make_pair(self.tmp, 'a')
        d = TLSDaemon(cert, key)
        st, body = d.request('GET', '/health')
        self.assertEqual(st, 200)
        # streamed generation over TLS, with curl as a user would
        out = subprocess.run(['curl', '-sS', '-N', '--cacert', cert,
                              'https://localhost:%d/generate' % d.port,
                              '-H', 'Content-Type: application/json',
                              '-d', json.dumps({'prompt': 'over tls', 'stream': True})],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [json.loads(x) for x in out.stdout.decode().splitlines() if x]
        self.assertGreater(len(lines), 1)
        self.assertTrue(lines[-1].get('done'))
        self.assertEqual(''.join(x.get('token', '') for x in lines[:-1]), 'over tls')
        # plain HTTP to the TLS port gets no HTTP reply
        c = http.client.HTTPConnection('127.0.0.1', d.port, timeout=10)
        with self.assertRaises((OSError, http.client.HTTPException)):
            c.request('GET', '/health')
            c.getresponse().read()
        c.close()
        self.assertIn('https://', d.log_text())
        self.assertEqual(d.stop(), 0)

    def test_sighup_swaps_the_certificate(self):
        cert, key = make_pair(self.tmp, 'live')
        old_copy = os.path.join(self.tmp, 'old.crt')
        shutil.copy(cert, old_copy)
        d = TLSDaemon(cert, key)
        old_fp = pem_fingerprint(cert)
        self.assertEqual(fingerprint(d.port, old_copy), old_fp)
        # a kept-alive connection opened with the old certificate
        keep = d.conn(old_copy)
        keep.request('GET', '/health')
        self.assertEqual(keep.getresponse().read() and 200, 200)
        ncert, nkey = make_pair(self.tmp, 'next')
        os.replace(ncert, cert)
        os.replace(nkey, key)
        new_fp = pem_fingerprint(cert)
        self.assertNotEqual(old_fp, new_fp)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        seen = None
        while time.time() < deadline:
            try:
                seen = fingerprint(d.port, cert)
                break
            except (OSError, ssl.SSLError):
                time.sleep(0.1)
        self.assertEqual(seen, new_fp)
        # the connection made before the reload still works until it is closed
        keep.request('GET', '/health')
        r = keep.getresponse()
        self.assertEqual(r.status, 200)
        r.read()
        keep.close()
        self.assertIn('certificate reloaded', d.log_text())
        # a broken pair at reload: logged, and the current one keeps serving
        with open(key, 'w') as f:
            f.write('-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n')
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and 'previous certificate' not in d.log_text():
            time.sleep(0.1)
        self.assertIn('previous certificate', d.log_text())
        self.assertIn(key, d.log_text())
        self.assertEqual(fingerprint(d.port, cert), new_fp)
        self.assertEqual(d.request('GET', '/health')[0], 200)
        self.assertEqual(d.stop(), 0)

    def test_bad_key_at_startup_names_the_file(self):
        cert, key = make_pair(self.tmp, 'a')
        bad = os.path.join(self.tmp, 'bad.key')
        with open(bad, 'w') as f:
            f.write('this is not a key\n')
        d = TLSDaemon(cert, bad, wait=False)
        rc = d.proc.wait(20)
        self.assertNotEqual(rc, 0)
        msg = d.proc.stdout.read().decode() + d.log_text()
        self.assertIn(bad, msg)
        # a PEM that GnuTLS refuses (a certificate where the key should be)
        d = TLSDaemon(cert, cert, wait=False)
        self.assertNotEqual(d.proc.wait(20), 0)
        self.assertIn('tls_key ' + cert, d.proc.stdout.read().decode() + d.log_text())
        # a missing file
        d = TLSDaemon(cert, os.path.join(self.tmp, 'missing.key'), wait=False)
        self.assertNotEqual(d.proc.wait(20), 0)
        self.assertIn('missing.key', d.proc.stdout.read().decode() + d.log_text())


if __name__ == '__main__':
    TERND = sys.argv.pop(1)
    unittest.main(verbosity=2)
