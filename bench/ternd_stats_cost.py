#!/usr/bin/env python3
"""What a durable stats row costs per request: requests/s of short non-streaming requests with
the echo engine and a stats database, for each ternd given (e.g. before and after a change),
and with extra flags (e.g. --stats-sync-ms 0: rows written in the background, not waited for).

usage: bench/ternd_stats_cost.py [--clients N] [--seconds S] TERND[:FLAGS...] ...
  e.g. bench/ternd_stats_cost.py old/ternd build/src/server/ternd \\
         'build/src/server/ternd:--stats-sync-ms 0'
"""
import argparse
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request


def run_one(spec, clients, seconds):
    path, _, flags = spec.partition(':')
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    tmp = tempfile.mkdtemp(prefix='ternd-bench-')
    cmd = [path, '--config', '/dev/null', '--engine', 'echo', '--port', str(port), '--slots',
           str(clients), '--db', tmp + '/stats.db', '--log-level', 'warn'] + flags.split()
    d = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen('http://127.0.0.1:%d/health' % port)
                break
            except OSError:
                time.sleep(0.05)
        counts = [0] * clients

        def client(i):
            c = http.client.HTTPConnection('127.0.0.1', port)
            end = time.time() + seconds
            while time.time() < end:
                c.request('POST', '/generate', json.dumps({'prompt': 'a b c d', 'stream': False}))
                c.getresponse().read()
                counts[i] += 1
            c.close()
        ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        t0 = time.time()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rps = sum(counts) / (time.time() - t0)
        print('%-60s %8.0f req/s  %7.3f ms/request' % (spec, rps, 1e3 / rps * clients))
    finally:
        d.terminate()
        d.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--clients', type=int, default=1)
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('ternd', nargs='+')
    a = ap.parse_args()
    for spec in a.ternd:
        run_one(spec, a.clients, a.seconds)


if __name__ == '__main__':
    main()
