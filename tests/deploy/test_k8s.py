#!/usr/bin/env python3
"""config/k8s/ternd.yaml is valid YAML and a consistent Deployment + Service for ternd.

    test_k8s.py PATH/TO/ternd

Parsed with python3-yaml (make deps installs it); without it, only a plain-text check runs
(with a note). What kubectl would only find at apply time is checked here: the Service selects
the Deployment's pods and targets the named port, the probes hit /ready and /health on it,
resources are set, and every ternd flag and TERND_ variable used is one `ternd --help` lists.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
PATH = os.path.join(ROOT, 'config', 'k8s', 'ternd.yaml')


def main():
    ternd = sys.argv[1]
    with open(PATH) as f:
        text = f.read()
    assert '\t' not in text, 'tabs in YAML'
    try:
        import yaml
    except ImportError:
        for key in ('kind: Deployment', 'kind: Service', 'path: /ready', 'path: /health',
                    'resources:'):
            assert key in text, 'missing ' + key
        print('python3-yaml not installed: config/k8s/ternd.yaml checked as text only')
        return 0
    docs = {d['kind']: d for d in yaml.safe_load_all(text)}
    assert sorted(docs) == ['Deployment', 'Service'], sorted(docs)
    dep, svc = docs['Deployment'], docs['Service']
    assert dep['apiVersion'] == 'apps/v1' and svc['apiVersion'] == 'v1'
    labels = dep['spec']['template']['metadata']['labels']
    assert dep['spec']['selector']['matchLabels'].items() <= labels.items(), 'selector'
    assert svc['spec']['selector'].items() <= labels.items(), 'Service selects no pod'
    (c,) = dep['spec']['template']['spec']['containers']
    ports = {p['name']: p['containerPort'] for p in c['ports']}
    assert svc['spec']['ports'][0]['targetPort'] in ports, 'Service targets an unknown port'
    assert c['readinessProbe']['httpGet'] == {'path': '/ready', 'port': 'http'}
    assert c['livenessProbe']['httpGet'] == {'path': '/health', 'port': 'http'}
    for kind in ('requests', 'limits'):
        assert {'cpu', 'memory'} <= c['resources'][kind].keys(), kind
    args = c['args']
    assert args[args.index('--port') + 1] == str(ports['http']), '--port is not the pod port'
    grace = dep['spec']['template']['spec']['terminationGracePeriodSeconds']
    assert grace > 10, 'shorter than ternd\'s drain_timeout'
    helptext = subprocess.run([ternd, '--help'], capture_output=True, text=True).stdout
    flags = set(re.findall(r'^  (--[a-z-]+)', helptext, re.M))
    used = [a for a in args if a.startswith('--')]
    used += ['--' + e['name'][len('TERND_'):].lower().replace('_', '-') for e in c['env']]
    unknown = [f for f in used if f not in flags]
    assert not unknown, 'not ternd flags: %s' % unknown
    print('config/k8s/ternd.yaml: Deployment (%d replicas, probes /ready and /health, '
          'requests %s, limits %s) + Service on port %d: ok' % (
              dep['spec']['replicas'], c['resources']['requests'], c['resources']['limits'],
              svc['spec']['ports'][0]['port']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
