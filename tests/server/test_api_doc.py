#!/usr/bin/env python3
"""Runs clients/curl.sh and every ```sh example of docs/api.md against a live ternd (echo test double) and checks
its HTTP status: 200, or the one a leading "# expect: NNN" comment names.

usage: test_api_doc.py PATH/TO/ternd docs/api.md tests/server/data/shapes.jpg
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_ternd  # noqa: E402  (start_ternd)


def check_field_tables(text, docdir):
    """Every field the Ollama and OpenAI codecs know (supported, ignored or neutral-only) has a
    row in docs/api.md's tables, so the documented surface is the real one."""
    src = os.path.join(docdir, '..', 'src', 'server')
    missing = []
    for name, tables in (('api_ollama.c', ('ollama_options', 'ollama_supported', 'ollama_request')),
                         ('api_openai.c', ('openai_neutral', 'openai_supported'))):
        code = open(os.path.join(src, name)).read()
        for t in tables:
            m = re.search(r'\b%s\[\] = \{(.*?)\n\};' % t, code, re.S)
            assert m, '%s: table %s not found' % (name, t)
            for field in re.findall(r'"([a-z_]+)"', m.group(1)):
                if not re.search(r'\|[^\n]*`%s`[^\n]*\|' % re.escape(field), text):
                    missing.append('%s (%s)' % (field, t))
    print('%s field tables: %s' % ('FAIL' if missing else 'ok  ', ', '.join(missing) or 'every field has a row'))
    return 1 if missing else 0


def main():
    ternd, doc, photo = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix='ternd-doc-')
    d, port = test_ternd.start_ternd([ternd, '--config', '/dev/null', '--engine', 'echo',
                                      '--db', os.path.join(tmp, 'stats.db')], os.path.join(tmp, 'ternd.log'))
    url = 'http://127.0.0.1:%d' % port
    try:
        text = open(doc).read()
        blocks = re.findall(r'```sh\n(.*?)```', text, re.S)
        assert len(blocks) >= 14, 'only %d examples found' % len(blocks)
        failures = 0
        body = os.path.join(tmp, 'body')
        for b in blocks:
            m = re.match(r'# expect: (\d+)', b)
            want = m.group(1) if m else '200'
            script = b.replace('http://localhost:8080', url).replace('photo.jpg', os.path.abspath(photo))
            wrapper = 'curl() { command curl -sS -o "%s" -w "%%{http_code}\\n" "$@"; }\n' % body
            if os.path.exists(body):
                os.unlink(body)
            p = subprocess.run(['sh', '-c', wrapper + script], capture_output=True, text=True, timeout=60)
            got = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ''
            ok = p.returncode == 0 and got == want
            if ok and want == '200' and os.path.exists(body):
                ok = os.path.getsize(body) > 0
            print('%s %s -> %s' % ('ok  ' if ok else 'FAIL', b.strip().splitlines()[-1][:90], got))
            if not ok:
                print(p.stderr)
                failures += 1
        failures += check_field_tables(text, os.path.dirname(os.path.abspath(doc)))
        # clients/curl.sh: every endpoint, each must succeed.
        curl_sh = os.path.join(os.path.dirname(os.path.abspath(doc)), '..', 'clients', 'curl.sh')
        p = subprocess.run(['sh', curl_sh], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, TERN_URL=url, TERN_IMAGE=os.path.abspath(photo)))
        n = p.stdout.count('\n== ') + p.stdout.startswith('== ')
        print('%s clients/curl.sh: %d endpoints' % ('ok  ' if p.returncode == 0 else 'FAIL', n))
        if p.returncode != 0 or n < 13:
            print(p.stdout[-2000:], p.stderr[-2000:])
            failures += 1
        return 1 if failures else 0
    finally:
        d.terminate()
        d.wait(20)


if __name__ == '__main__':
    sys.exit(main())
