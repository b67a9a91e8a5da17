#!/usr/bin/env python3
"""DNS-SD: ternd's Avahi service file and tern_client.py --discover (make test-dnssd).

    test_dnssd.py PATH/TO/ternd

Always: the service file (config/avahi/ternd.service) is well-formed and says what clients
rely on; --discover parses recorded `avahi-browse -rpt` output, and says what to do when
avahi-browse is missing or fails. Then, where the machine allows (root, unshare, avahi-daemon,
avahi-browse, dbus-daemon, ip), for real: avahi-daemon publishes the file in a private network
namespace (nothing reaches the LAN) next to a ternd on the advertised port, and --discover
finds that ternd, whose URL then answers. Otherwise that part is skipped with the reason.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, '..', '..'))
SERVICE = os.path.join(ROOT, 'config', 'avahi', 'ternd.service')
CLIENT = os.path.join(ROOT, 'clients', 'python', 'tern_client.py')
RECORDED = os.path.join(HERE, 'data', 'avahi-browse-ternd.txt')
sys.path.insert(0, os.path.dirname(CLIENT))
import tern_client  # noqa: E402

TERND = None


def read(path):
    with open(path) as f:
        return f.read()


def txt_records(service):
    return dict(t.text.split('=', 1) for t in service.findall('txt-record'))


class ServiceFile(unittest.TestCase):
    def setUp(self):
        self.text = read(SERVICE)
        self.root = ET.fromstring(self.text)
        self.services = {s.findtext('type'): s for s in self.root.findall('service')}

    def test_structure(self):
        self.assertIn('<!DOCTYPE service-group SYSTEM "avahi-service.dtd">', self.text)
        self.assertEqual(self.root.tag, 'service-group')
        name = self.root.find('name')
        self.assertEqual(name.get('replace-wildcards'), 'yes')
        self.assertIn('%h', name.text)  # each box named after its host
        self.assertEqual(sorted(self.services), ['_http._tcp', '_ternd._tcp'])

    def test_ports_and_records_match_ternd_defaults(self):
        # The advertised port and model are ternd's defaults (config/ternd.conf, ternd --help).
        conf = read(os.path.join(ROOT, 'config', 'ternd.conf'))
        self.assertIn('#port = 8080', conf)
        self.assertIn('#model = models/tern-demo-tq2_0.gguf', conf)
        for s in self.services.values():
            self.assertEqual(s.findtext('port'), '8080')
        txt = txt_records(self.services['_ternd._tcp'])
        self.assertEqual(txt, {'path': '/generate', 'api': 'native,ollama,openai',
                               'model': 'tern-demo-tq2_0', 'version': '@VERSION@'})
        self.assertEqual(txt_records(self.services['_http._tcp']), {'path': '/'})


class Discover(unittest.TestCase):
    def test_parse_recorded_output(self):
        boxes = tern_client.parse_avahi_browse(read(RECORDED))
        self.assertEqual([b['name'] for b in boxes],
                         ['ternd on jetson #2', 'ternd on pi-kitchen', 'ternd on vm'])
        jetson, pi, vm = boxes
        self.assertEqual(vm['url'], 'http://127.0.0.1:8080')
        self.assertEqual(vm['txt'], {'version': '0.1.0', 'model': 'tern-demo-tq2_0',
                                     'api': 'native,ollama,openai', 'path': '/generate'})
        # Seen over IPv4 and IPv6 link-local: one box, IPv4 preferred, the interface kept.
        self.assertEqual(pi['addresses'], ['192.168.1.21', 'fe80::dea6:32ff:fe01:2345%eth0'])
        self.assertEqual(pi['url'], 'http://192.168.1.21:8080')
        self.assertEqual(pi['host'], 'pi-kitchen.local')
        self.assertEqual((jetson['port'], jetson['url']), (9000, 'http://192.168.1.30:9000'))
        self.assertEqual(jetson['txt']['model'], 'a"quoted\\name')
        self.assertEqual(tern_client.parse_avahi_browse(''), [])

    def run_cli(self, script):
        """--discover with PATH holding only a fake avahi-browse (or none when script is None)."""
        with tempfile.TemporaryDirectory() as d:
            if script is not None:
                with open(os.path.join(d, 'avahi-browse'), 'w') as f:
                    f.write('#!/bin/sh\n' + script)
                os.chmod(os.path.join(d, 'avahi-browse'), 0o755)
            return subprocess.run([sys.executable, CLIENT, '--discover'], capture_output=True,
                                  text=True, timeout=60, env={'PATH': d})

    def test_cli_lists_boxes(self):
        # Shell built-ins only: PATH holds nothing else.
        p = self.run_cli('[ "$*" = "-rpt _ternd._tcp" ] || exit 9\n'
                         'while IFS= read -r l; do printf "%%s\\n" "$l"; done < %s\n' % RECORDED)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 3, p.stdout)
        self.assertRegex(lines[1], r'^ternd on pi-kitchen +http://192\.168\.1\.21:8080 +'
                                   r'model=smolvlm-256m-tq2_0 version=0\.1\.0 ')
        self.assertIn('http://127.0.0.1:8080', lines[2])

    def test_cli_none_found(self):
        p = self.run_cli('exit 0\n')
        self.assertEqual((p.returncode, p.stdout), (0, ''))
        self.assertIn('no ternd box found', p.stderr)

    def test_cli_without_avahi_browse(self):
        p = self.run_cli(None)
        self.assertEqual(p.returncode, 1)
        self.assertIn('avahi-browse not found: install avahi-utils', p.stderr)

    def test_cli_avahi_daemon_not_running(self):
        p = self.run_cli('echo "Failed to create client object: Daemon not running" >&2\nexit 1\n')
        self.assertEqual(p.returncode, 1)
        self.assertIn('avahi-browse failed: Failed to create client object: Daemon not running',
                      p.stderr)


def live_missing():
    if os.geteuid() != 0:
        return 'not root'
    for exe in ('unshare', 'avahi-daemon', 'avahi-browse', 'dbus-daemon', 'ip', 'curl'):
        if not shutil.which(exe):
            return exe + ' not installed'
    if not TERND:
        return 'no ternd given'
    if subprocess.run(['unshare', '-mn', 'true']).returncode != 0:
        return 'unshare -mn not permitted here'
    return None


class Live(unittest.TestCase):
    def test_discovered_through_avahi_daemon(self):
        why = live_missing()
        if why:
            self.skipTest('live avahi-daemon test skipped: ' + why)
        version = subprocess.run([TERND, '--version'], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]
        with tempfile.TemporaryDirectory() as work:
            os.mkdir(os.path.join(work, 'services'))
            # As the Debian package builds it: the version filled in.
            with open(os.path.join(work, 'services', 'ternd.service'), 'w') as f:
                f.write(read(SERVICE).replace('@VERSION@', version))
            p = subprocess.run(['unshare', '-mn', os.path.join(HERE, 'dnssd_netns.sh'), work,
                                TERND], capture_output=True, text=True, timeout=180)
            print(p.stdout, end='', file=sys.stderr)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = p.stdout.split('== avahi-browse -rpt _http._tcp\n')
        found = [l for l in out[0].splitlines() if l.startswith('ternd on ')]
        self.assertEqual(len(found), 1, p.stdout)
        self.assertRegex(found[0], r'^ternd on \S+ +http://127\.0\.0\.1:8080 +model=tern-demo-tq2_0 '
                                   r'version=%s api=native,ollama,openai ' % version.replace('.', r'\.'))
        self.assertRegex(out[1], r'=;lo;IPv4;ternd\\032on\\032[^;]+;Web Site;local;[^;]+;127\.0\.0\.1;'
                                 r'8080;"path=/"')
        self.assertRegex(out[1], r'== the discovered box answers\nhttp://127\.0\.0\.1:8080 '
                                 r'\{"status":"ready","model":"tern-demo-tq2_0"')


if __name__ == '__main__':
    TERND = sys.argv.pop(1) if len(sys.argv) > 1 else None
    unittest.main(verbosity=2)
