#!/usr/bin/env python3
"""The demo model's table: one row per shipped file pair, measured through the C engine.

For each type: size of text + mmproj, bits per weight of the linear layers (the re-typed
matrices), peak RSS and generation tokens/s (`tern bench -m`), perplexity and exact match per
question type (`tern perplexity` on tests/data/shapes/test.jsonl), side by side with the
out-of-distribution split drawn by the second renderer (training/data_ood.py: --ood, and its
colour questions on single filled shapes on plain backgrounds: --ood-single) and, when given,
the wider world's held-out split (--wide, training/data.py's test_wide.jsonl). A second table
gives the OOD split by question type. Standard library only.

    python3 bench/demo_table.py [--tern build/src/cli/tern] [--threads 1] [--reps 3]
                                [--data T.jsonl] [--ood O.jsonl --ood-single S.jsonl] [--wide W.jsonl]
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

TYPES = ['f16', 'q8_0', 'tq2_0', 'tq1_0', 'q1_0']
QTYPES = ['count', 'color', 'shape', 'where', 'exists', 'describe']


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def linear_bpw(tern, paths):
    """Bits per weight over the 2-D weight matrices that quantize re-types (not embeddings)."""
    bits = params = 0
    for p in paths:
        info = json.loads(run([tern, 'inspect', '--json', p]).stdout)
        for t in info['tensors']:
            name = t['name']
            if len(t['shape']) != 2 or 'embd' in name or name == 'output.weight':
                continue
            n = t['shape'][0] * t['shape'][1]
            params += n
            bits += t['bytes'] * 8
    return bits / params


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tern', default='build/src/cli/tern')
    ap.add_argument('--models', default='models')
    ap.add_argument('--data', default='tests/data/shapes/test.jsonl')
    ap.add_argument('--ood', default='tests/data/ood/test.jsonl',
                    help="the second renderer's split ('' to leave out)")
    ap.add_argument('--ood-single', default='tests/data/ood/test_single_color.jsonl',
                    help='its colour questions on single filled shapes, plain backgrounds')
    ap.add_argument('--wide', default='', help="training/data.py's test_wide.jsonl")
    ap.add_argument('--threads', default='1')
    ap.add_argument('--reps', default='3')
    ap.add_argument('--json', default='',
                    help='also write the rows as JSON here (training/figures.py plots them)')
    ap.add_argument('--post-training', action='store_true',
                    help='also rows for the f16 file re-typed to tq2_0 / q1_0 without fine-tuning')
    a = ap.parse_args()

    extra = [('OOD exact %', a.ood), ('OOD single colour %', a.ood_single),
             ('wide exact %', a.wide)]
    extra = [(h, p) for h, p in extra if p]
    head = ('| file | MB (text + mmproj) | linear bits/weight | peak RSS MB | generation tok/s '
            '| perplexity | exact % | ' + ''.join(h + ' | ' for h, _ in extra) +
            ' | '.join(QTYPES) + ' |')
    print(head)
    print('|' + '---|' * (7 + len(extra) + len(QTYPES)))
    ood_rows, records = [], []
    for t in TYPES:
        text = os.path.join(a.models, 'tern-demo-%s.gguf' % t)
        mm = os.path.join(a.models, 'tern-demo-mmproj-%s.gguf' % t)
        if os.path.exists(text):
            line, by_q = row(a, t, text, mm, extra, records)
            print(line, flush=True)
            ood_rows.append((t, by_q))
    if a.post_training:
        # Not shipped: the float file re-typed by `tern quantize` alone (per-block k-means
        # ternary / sign binary, no fine-tuning), to show what the fine-tuning buys.
        with tempfile.TemporaryDirectory() as tmp:
            for t in ('tq2_0', 'q1_0'):
                pair = []
                for part in ('', '-mmproj'):
                    src = os.path.join(a.models, 'tern-demo%s-f16.gguf' % part)
                    dst = os.path.join(tmp, 'ptq%s-%s.gguf' % (part, t))
                    run([a.tern, 'quantize', src, dst, '--type', t])
                    pair.append(dst)
                line, by_q = row(a, '%s post-training only (f16 re-typed)' % t, *pair, extra,
                                 records)
                print(line, flush=True)
                ood_rows.append(('%s post-training only' % t, by_q))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'threads': a.threads, 'reps': a.reps, 'data': a.data, 'ood': a.ood,
                       'rows': records}, f, indent=1)
    if a.ood:
        print('\nOOD split (second renderer, %s) by question type, exact %%:\n' % a.ood)
        print('| file | perplexity | exact % | ' + ' | '.join(QTYPES) + ' |')
        print('|' + '---|' * (3 + len(QTYPES)))
        for label, r in ood_rows:
            print('| %s | %.3f | %.1f | %s |' % (
                label, r['all'][0], 100 * r['all'][1],
                ' | '.join('%.0f' % (100 * r[q][1]) if q in r else '-' for q in QTYPES)))


def exact(a, text, mm, data):
    """{qtype or 'all': (perplexity, exact match)} of `tern perplexity` on a JSONL split."""
    ppl = run([a.tern, 'perplexity', '-m', text, '--mmproj', mm, '--data', data,
               '-t', a.threads])
    rows = {}
    for line in (ppl.stdout + ppl.stderr).splitlines():
        m = re.match(r'(\w+)\s+examples\s+\d+.*perplexity ([\d.]+)\s+exact ([\d.]+)', line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


def row(a, label, text, mm, extra=(), records=None):
    """A table line, and the OOD split's exact match by question type (or None); appends the
    numbers to `records` (for --json)."""
    mb = (os.path.getsize(text) + os.path.getsize(mm)) / 1e6
    bench = json.loads(run([a.tern, 'bench', '-m', text, '--mmproj', mm, '-t', a.threads,
                            '-r', a.reps, '-p', '64', '-n', '64', '--json']).stdout)
    tg = next(r['mean'] for r in bench['results'] if r['test'].startswith('tg'))
    rss = bench['peak_rss_mb']
    rows = exact(a, text, mm, a.data)
    cells = ' | '.join('%.0f' % (100 * rows[q][1]) if q in rows else '-' for q in QTYPES)
    more, by_q = '', None
    rec = {'file': label, 'mb': mb, 'bpw': linear_bpw(a.tern, [text, mm]), 'peak_rss_mb': rss,
           'tg_tok_s': tg, 'perplexity': rows['all'][0],
           'exact': {'in_distribution': rows['all'][1]}}
    for head, path in extra:
        r = exact(a, text, mm, path)
        more += '%.1f | ' % (100 * r['all'][1])
        rec['exact'][head] = r['all'][1]
        if path == a.ood:
            by_q = r
            rec['ood_perplexity'] = r['all'][0]
    if records is not None:
        records.append(rec)
    return ('| %s | %.1f | %.3f | %.1f | %.0f | %.3f | %.1f | %s%s |'
            % (label, mb, rec['bpw'], rss, tg, rows['all'][0],
               100 * rows['all'][1], more, cells)), by_q


if __name__ == '__main__':
    main()
