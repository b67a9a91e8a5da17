#!/usr/bin/env python3
"""Server overhead of ternd with the echo test double (no model): requests/s for short
non-streaming requests and tokens/s delivered over streams, with N concurrent clients.
The engine costs nothing here, so this measures HTTP + JSON + scheduler + streaming.

usage: bench/ternd_http.py build/src/server/ternd [CLIENTS] [SECONDS]
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ternd_proc  # noqa: E402


def main():
    ternd = sys.argv[1]
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5
    d, port = ternd_proc.start([ternd, '--config', '/dev/null', '--engine', 'echo', '--slots',
                                str(clients), '--log-level', 'warn'], stderr=subprocess.DEVNULL)
    try:
        def run(kind, counts, i):
            c = http.client.HTTPConnection('127.0.0.1', port)
            end = time.time() + seconds
            while time.time() < end:
                if kind == 'short':
                    c.request('POST', '/generate', json.dumps({'prompt': 'a b c d', 'stream': False}),
                              {'Content-Type': 'application/json'})
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        raise RuntimeError('/generate: HTTP %d' % r.status)
                    counts[i] += 1
                else:
                    c.request('POST', '/generate',
                              json.dumps({'prompt': ' '.join(['w'] * 500), 'max_tokens': 500}),
                              {'Content-Type': 'application/json'})
                    r = c.getresponse()
                    if r.status != 200:
                        raise RuntimeError('/generate: HTTP %d' % r.status)
                    for line in r:
                        counts[i] += 1
            c.close()

        for kind in ('short', 'stream'):
            counts = [0] * clients
            ts = [threading.Thread(target=run, args=(kind, counts, i)) for i in range(clients)]
            t0 = time.time()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            dt = time.time() - t0
            if kind == 'short':
                print('%d clients, non-streaming 4-token requests: %.0f requests/s' % (clients, sum(counts) / dt))
            else:
                print('%d clients, streaming 500-token answers: %.0f tokens/s delivered' % (clients, sum(counts) / dt))
    finally:
        d.terminate()
        d.wait(20)


if __name__ == '__main__':
    main()
