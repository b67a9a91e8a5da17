#!/usr/bin/env python3
"""What a durable stats row costs per request: requests/s of short non-streaming requests with
the echo engine and a stats database, for each ternd given (e.g. before and after a change),
and with extra flags (e.g. --stats-sync-ms 0: rows written in the background, not waited for).

usage: bench/ternd_stats_cost.py [--clients N] [--seconds S] TERND[:FLAGS...] ...
  e.g. bench/ternd_stats_cost.py old/ternd build/src/server/ternd \\
         'build/src/server/ternd:--stats-sync-ms 0'
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ternd_proc  # noqa: E402


def run_one(spec, clients, seconds):
    path, _, flags = spec.partition(':')
    tmp = tempfile.mkdtemp(prefix='ternd-bench-')
    cmd = [path, '--config', '/dev/null', '--engine', 'echo', '--slots', str(clients), '--db',
           tmp + '/stats.db', '--log-level', 'warn'] + flags.split()
    d, port = ternd_proc.start(cmd, stderr=subprocess.DEVNULL)
    try:
        ok, refused, wall = ternd_proc.closed_loop(
            port, json.dumps({'prompt': 'a b c d', 'stream': False}), clients, seconds)
        rps = ok / wall
        print('%-60s %8.0f req/s  %7.3f ms/request%s'
              % (spec, rps, 1e3 / rps * clients,
                 '  (%d refused, not counted)' % refused if refused else ''))
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
