#!/usr/bin/env python3
"""Image flood throughput and memory: CLIENTS clients send, back to back, requests of IMAGES
large PNGs each (the echo engine answers at once, so decoding is the whole cost), for each
decode_concurrency given. Prints requests/s, pictures/s, ternd's CPU use (above 100 % when
decodes run in parallel) and the peak RSS (VmHWM) against the bound
idle + (slots + decode_concurrency) x one decoded image.

usage: bench/ternd_image_flood.py [--ternd PATH] [--slots N] [--clients N] [--images N]
                                  [--side PX] [--seconds S] [--concurrency 1,2]
"""
import argparse
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ternd_proc  # noqa: E402


def png(side):
    """A side x side RGB PNG of stripes: small to send, side^2 x 3 bytes to decode."""
    row = b'\0' + bytes((x * 7) % 256 for x in range(side * 3))

    def chunk(kind, body):
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body)))
    return (b'\x89PNG\r\n\x1a\n'
            + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(row * side, 1)) + chunk(b'IEND', b''))


def rss_kb(pid, field):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """User + system CPU seconds the process has used."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def run_one(a, conc, body):
    tmp = tempfile.mkdtemp(prefix='ternd-flood-')
    pixels = a.side * a.side
    cmd = [a.ternd, '--config', '/dev/null', '--engine', 'echo', '--slots', str(a.slots), '--queue', str(a.clients), '--decode-concurrency', str(conc),
           '--max-image-pixels', str(pixels), '--db', '', '--log-level', 'warn']
    d, port = ternd_proc.start(cmd, stderr=subprocess.DEVNULL)
    try:
        idle = rss_kb(d.pid, 'VmRSS')
        c0 = cpu_s(d.pid)
        n, errors, wall = ternd_proc.closed_loop(port, body, a.clients, a.seconds)
        cpu = cpu_s(d.pid) - c0
        peak = rss_kb(d.pid, 'VmHWM')
        bound = idle + (a.slots + conc) * pixels * 3 // 1024
        print('decode_concurrency %d: %6.2f req/s  %6.2f pictures/s  (%d requests, %d errors, '
              '%.1f s, ternd CPU %.0f %%)  peak RSS %d MiB, bound %d MiB (idle %d MiB)'
              % (conc, n / wall, n * a.images / wall, n, errors, wall, 100 * cpu / wall,
                 peak // 1024, bound // 1024, idle // 1024))
    finally:
        d.terminate()
        d.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--ternd', default='build/src/server/ternd')
    ap.add_argument('--slots', type=int, default=4)
    ap.add_argument('--clients', type=int, default=8)
    ap.add_argument('--images', type=int, default=4)
    ap.add_argument('--side', type=int, default=4096)
    ap.add_argument('--seconds', type=float, default=20)
    ap.add_argument('--concurrency', default='1,2')
    a = ap.parse_args()
    img = base64.b64encode(png(a.side)).decode()
    body = json.dumps({'prompt': 'what', 'stream': False, 'images': [img] * a.images})
    for conc in (int(x) for x in a.concurrency.split(',')):
        run_one(a, conc, body)


if __name__ == '__main__':
    main()
