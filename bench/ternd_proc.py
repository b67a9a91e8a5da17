"""Starting a ternd for a benchmark: the one helper every bench script uses.

The tests start ternd on --port 0 and read the port from its "listening on" log line
(tests/server/test_ternd.py start_ternd). That line is logged at info, and at info every request
also writes an access-log line, which would then be part of what a throughput figure measures.
A benchmark runs ternd at --log-level warn, so the port is picked here instead: bound, read and
released, then given to ternd. Another program could take it in between; a benchmark runs alone.
Python 3 standard library only.
"""
import http.client
import socket
import subprocess
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, timeout=60, **popen):
    """Starts ternd (cmd: its command line without --port) on a free port and waits until GET
    /ready answers 200. Returns (process, port). Raises RuntimeError with what ternd wrote on a
    piped stderr if it exits first, or after `timeout` seconds (ternd killed)."""
    port = free_port()
    proc = subprocess.Popen(list(cmd) + ['--port', str(port)], **popen)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors='replace').strip() if proc.stderr else ''
            raise RuntimeError('ternd exited with %d: %s' % (proc.returncode, err))
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
            c.request('GET', '/ready')
            if c.getresponse().status == 200:
                c.close()
                return proc, port
            c.close()
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError('ternd did not answer /ready with 200 in %d s' % timeout)


def closed_loop(port, body, clients, seconds, path='/generate'):
    """`clients` threads each POST `body` (JSON) back to back for `seconds`, each on its own
    kept-alive connection. Returns (answered with 200, answered otherwise, wall seconds)."""
    ok, refused = [0] * clients, [0] * clients

    def client(i):
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
        end = time.time() + seconds
        while time.time() < end:
            c.request('POST', path, body, {'Content-Type': 'application/json'})
            r = c.getresponse()
            r.read()
            if r.status == 200:
                ok[i] += 1
            else:
                refused[i] += 1
        c.close()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(ok), sum(refused), time.time() - t0
