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
"""
import argparse
import base64
import http.client
import json
import sys
import urllib.parse

__all__ = ["TernClient", "TernError"]


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


def main(argv=None):
    ap = argparse.ArgumentParser(description="Ask ternd about a picture.")
    ap.add_argument("prompt", nargs="?")
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key")
    ap.add_argument("--image")
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--stats", action="store_true", help="print the server's stats instead")
    ap.add_argument("--window", type=float, default=3600)
    a = ap.parse_args(argv)
    tern = TernClient(a.url, a.api_key)
    try:
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
