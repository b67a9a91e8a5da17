#!/usr/bin/env python3
"""A small client for ternd, the tern daemon (Python standard library only).

    from tern_client import TernClient
    tern = TernClient("http://127.0.0.1:8080")          # api_key="..." if the server wants one
    for piece in tern.generate("What is in the picture?", image="photo.jpg"):
        print(piece, end="", flush=True)
    print(tern.last)                                     # usage, timings, done_reason
    print(tern.chat([{"role": "user", "content": "Hello"}]))
    print(tern.stats(window=3600))

Command line:  python3 tern_client.py [--url URL] [--image FILE] PROMPT
               python3 tern_client.py --stats [--window S]
               python3 tern_client.py --discover      (ternd boxes on the LAN, via avahi-browse)
"""
import argparse
import base64
import http.client
import json
import re
import shutil
import subprocess
import sys
import urllib.parse

__all__ = ["TernClient", "TernError", "discover", "parse_avahi_browse"]


class TernError(Exception):
    """An error response: .status (HTTP), .type and .message from the JSON body."""

    def __init__(self, status, type_, message):
        super().__init__("%d %s: %s" % (status, type_, message))
        self.status, self.type, self.message = status, type_, message


class TernClient:
    def __init__(self, url="http://127.0.0.1:8080", api_key=None, timeout=300):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", ""):
            raise ValueError("only http:// URLs are supported")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.api_key, self.timeout = api_key, timeout
        self.last = None  # the final object of the last generate/chat call

    # ---- plumbing ----

    def _open(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        if resp.status >= 400:
            data = resp.read()
            conn.close()
            try:
                err = json.loads(data)["error"]
                if isinstance(err, str):  # Ollama's endpoints: {"error": "message"}
                    raise TernError(resp.status, "", err)
                raise TernError(resp.status, err.get("type", ""), err.get("message", ""))
            except (ValueError, KeyError, TypeError):
                raise TernError(resp.status, "http", data.decode(errors="replace")) from None
        return conn, resp

    def _json(self, method, path, body=None):
        conn, resp = self._open(method, path, body)
        try:
            return json.loads(resp.read())
        finally:
            conn.close()

    def _ndjson(self, path, body):
        conn, resp = self._open("POST", path, body)
        try:
            for line in resp:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    @staticmethod
    def _image_b64(image):
        if image is None:
            return None
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        else:
            with open(image, "rb") as f:
                data = f.read()
        return base64.b64encode(data).decode("ascii")

    # ---- API ----

    def generate(self, prompt, image=None, stream=True, **params):
        """Native /generate. image: a path or bytes (JPEG/PNG). params: max_tokens,
        temperature, top_k, top_p, min_p, repeat_penalty, seed, stop, system.
        stream=True yields text pieces as they are made; stream=False returns the text.
        Either way self.last holds the final object (usage, timings, done_reason)."""
        body = dict(params, prompt=prompt, stream=stream)
        img = self._image_b64(image)
        if img:
            body["image"] = img
        if not stream:
            self.last = self._json("POST", "/generate", body)
            return self.last["text"]
        return self._stream_generate(body)

    def _stream_generate(self, body):
        for obj in self._ndjson("/generate", body):
            if obj.get("done"):
                self.last = obj
                if obj.get("done_reason") == "error":
                    raise TernError(500, "internal", obj.get("error", "generation failed"))
            elif "token" in obj:
                yield obj["token"]

    def chat(self, messages, stream=False, images=None, **options):
        """Ollama-style /api/chat. messages: [{"role": ..., "content": ...}]; images (paths or
        bytes) are attached to the last message. Returns the reply text (stream=False) or
        yields pieces."""
        messages = [dict(m) for m in messages]
        if images:
            messages[-1]["images"] = [self._image_b64(i) for i in images]
        body = {"messages": messages, "stream": stream, "options": options}
        if not stream:
            self.last = self._json("POST", "/api/chat", body)
            return self.last["message"]["content"]
        return self._stream_chat(body)

    def _stream_chat(self, body):
        for obj in self._ndjson("/api/chat", body):
            if obj.get("done"):
                self.last = obj
            else:
                yield obj["message"]["content"]

    def stats(self, window=3600):
        return self._json("GET", "/stats?window=%g" % window)

    def health(self):
        return self._json("GET", "/health")

    def models(self):
        return [m["id"] for m in self._json("GET", "/v1/models")["data"]]


# ---- finding boxes on the LAN (DNS-SD) ----
#
# A ternd box advertises the _ternd._tcp type (config/avahi/ternd.service) with TXT records
# path, api, model and version. avahi-browse, not a DNS-SD library of our own, does the
# multicast DNS: it is what Debian and Raspberry Pi OS ship, and it asks the avahi-daemon
# already running on the machine.

SERVICE_TYPE = "_ternd._tcp"


def _avahi_unescape(s):
    """avahi-browse -p writes bytes outside [A-Za-z0-9-_ ] of names as \\DDD (decimal)."""
    raw = re.sub(rb"\\(\d{3})", lambda m: bytes([int(m.group(1))]), s.encode())
    return re.sub(rb"\\(.)", rb"\1", raw).decode("utf-8", "replace")


def parse_avahi_browse(text):
    """The boxes in `avahi-browse -rpt _ternd._tcp` output: a list of dicts with name, host,
    port, addresses (IPv4 first), txt (a dict) and url (an http:// URL for TernClient). A box
    seen on several interfaces or over IPv4 and IPv6 is listed once."""
    boxes = {}
    for line in text.splitlines():
        # Resolved entries: =;iface;proto;name;type;domain;host;address;port;txt
        f = line.split(";", 9)
        if len(f) < 9 or f[0] != "=":
            continue
        name, host, addr = _avahi_unescape(f[3]), f[6], f[7]
        try:
            port = int(f[8])
        except ValueError:
            continue
        if addr.startswith("fe80:"):
            addr += "%" + f[1]  # a link-local address means nothing without its interface
        txt = {}
        for item in re.findall(r'"((?:[^"\\]|\\.)*)"', f[9] if len(f) > 9 else ""):
            k, _, v = _avahi_unescape(item).partition("=")
            txt[k] = v
        b = boxes.setdefault((name, host, port), {"name": name, "host": host, "port": port,
                                                  "addresses": [], "txt": txt})
        if addr not in b["addresses"]:
            b["addresses"].append(addr)
    out = []
    for b in boxes.values():
        b["addresses"].sort(key=lambda a: (":" in a, a))  # IPv4 first: simplest to use
        a = b["addresses"][0]
        b["url"] = "http://%s:%d" % ("[%s]" % a if ":" in a else a, b["port"])
        out.append(b)
    return sorted(out, key=lambda b: b["name"])


def discover(timeout=10):
    """ternd boxes advertised on the LAN (see parse_avahi_browse). Raises OSError with a
    message saying what to install or start when avahi-browse is missing or fails."""
    exe = shutil.which("avahi-browse")
    if not exe:
        raise OSError("avahi-browse not found: install avahi-utils (and run avahi-daemon), "
                      "e.g. sudo apt install avahi-utils avahi-daemon")
    try:
        p = subprocess.run([exe, "-rpt", SERVICE_TYPE], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError("avahi-browse did not finish within %g s" % timeout) from None
    if p.returncode != 0:
        raise OSError("avahi-browse failed: %s" % (p.stderr.strip() or "exit %d" % p.returncode))
    return parse_avahi_browse(p.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Ask ternd about a picture.")
    ap.add_argument("prompt", nargs="?")
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key")
    ap.add_argument("--image")
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--stats", action="store_true", help="print the server's stats instead")
    ap.add_argument("--window", type=float, default=3600)
    ap.add_argument("--discover", action="store_true",
                    help="list the ternd boxes on the LAN (DNS-SD, via avahi-browse)")
    a = ap.parse_args(argv)
    tern = TernClient(a.url, a.api_key)
    try:
        if a.discover:
            boxes = discover()
            for b in boxes:
                t = b["txt"]
                print("%-30s %-28s model=%s version=%s api=%s host=%s" % (
                    b["name"], b["url"], t.get("model", "?"), t.get("version", "?"),
                    t.get("api", "?"), b["host"]))
            if not boxes:
                print("no ternd box found on the LAN (_ternd._tcp)", file=sys.stderr)
            return 0
        if a.stats:
            print(json.dumps(tern.stats(a.window), indent=2))
            return 0
        if not a.prompt:
            ap.error("a PROMPT is required (or --stats)")
        params = {"max_tokens": a.max_tokens} if a.max_tokens else {}
        for piece in tern.generate(a.prompt, image=a.image, **params):
            print(piece, end="", flush=True)
        t = tern.last["timings"]
        print("\n[%s, %d tokens, first token %.0f ms, %.1f tokens/s]" % (
            tern.last["done_reason"], tern.last["usage"]["completion_tokens"],
            t["ttft_ms"] or 0, t["decode_tokens_per_s"] or 0), file=sys.stderr)
        return 0
    except (TernError, OSError) as e:
        print("tern_client: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
