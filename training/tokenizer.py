"""Byte-level BPE tokenizer, trained here and saved as a Hugging Face tokenizer.json.

Encoding follows HF `tokenizers` with SmolLM2's settings:
  1. added (special) tokens are matched first, anywhere in the text, longest first;
  2. the remaining text is pre-tokenized: Digits(individual_digits=True) splits off every
     numeric character, then each piece is split by the GPT-2 pattern
        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
  3. each pre-token's UTF-8 bytes are mapped to printable characters (GPT-2 byte-to-unicode)
     and merged by BPE, lowest merge rank first.

Python's `re` has no \\p{L}/\\p{N}; we build the two character classes from unicodedata
(categories L* and N*), so they are exact up to the Unicode version of this Python versus the
one compiled into Rust's regex crate (only code points assigned between the two versions
differ). Digits uses the same N* class, as Rust's char::is_numeric does. \\s is Python's
Unicode whitespace, which matches Rust regex's \\s (White_Space) except for U+001C..U+001F
(Python counts them as whitespace; Rust does not): we remove those four from \\s.
"""

import json
import re
import sys
import unicodedata
from collections import Counter

SPECIAL_TOKENS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>",
                   "<image>", "<fake_token_around_image>", "<global-img>"] +
                  [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)])


def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}


def _class(pred):
    """A regex character class (without brackets) of the code points where pred(cat) holds."""
    out, start, prev = [], None, None
    for cp in range(0x110000):
        ok = pred(unicodedata.category(chr(cp)))
        if ok and start is None:
            start = cp
        if not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))

    def esc(c):
        return "\\U%08x" % c
    return "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in out)


_L = _class(lambda c: c[0] == "L")
_N = _class(lambda c: c[0] == "N")
_S = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PAT = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_S}{_L}{_N}]+|[{_S}]+(?![^{_S}])|[{_S}]+")
DIGIT = re.compile(rf"[{_N}]")


def pre_tokenize(text):
    pieces, last = [], 0
    for m in DIGIT.finditer(text):
        if m.start() > last:
            pieces.append(text[last:m.start()])
        pieces.append(m.group())
        last = m.end()
    if last < len(text):
        pieces.append(text[last:])
    words = []
    for p in pieces:
        words.extend(PAT.findall(p))
    return words


def to_byte_chars(word):
    return "".join(BYTE_ENC[b] for b in word.encode("utf-8"))


class Tokenizer:
    def __init__(self, vocab, merges, specials):
        self.vocab = vocab                      # token string -> id (BPE tokens)
        self.merges = merges                    # list of (a, b)
        self.rank = {m: i for i, m in enumerate(merges)}
        self.specials = specials                # special token -> id
        self.id_to_tok = {i: t for t, i in vocab.items()}
        self.id_to_tok.update({i: t for t, i in specials.items()})
        alts = sorted(specials, key=len, reverse=True)
        self.special_re = re.compile("(" + "|".join(map(re.escape, alts)) + ")")
        self.cache = {}

    def __len__(self):
        return len(self.id_to_tok)

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        sym = list(word)
        while len(sym) > 1:
            best, bi = None, -1
            for i in range(len(sym) - 1):
                r = self.rank.get((sym[i], sym[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = self.merges[best]
            out, i = [], 0
            while i < len(sym):
                if i < len(sym) - 1 and sym[i] == a and sym[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            sym = out
        ids = [self.vocab[s] for s in sym]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for part in self.special_re.split(text):
            if not part:
                continue
            if part in self.specials:
                ids.append(self.specials[part])
                continue
            for w in pre_tokenize(part):
                ids.extend(self.bpe(to_byte_chars(w)))
        return ids

    def decode(self, ids, skip_special=False):
        out, buf = [], bytearray()
        for i in ids:
            t = self.id_to_tok[int(i)]
            if t in self.specials:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special:
                    out.append(t)
            else:
                buf.extend(BYTE_DEC[c] for c in t)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_id(self, special):
        return self.specials[special]

    # -- HF tokenizer.json ----------------------------------------------------------------------

    def to_json(self):
        added = [{"id": i, "content": t, "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True}
                 for t, i in sorted(self.specials.items(), key=lambda x: x[1])]
        vocab = dict(self.specials)
        vocab.update(self.vocab)
        vocab = dict(sorted(vocab.items(), key=lambda x: x[1]))
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": True}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": [f"{a} {b}" for a, b in self.merges]},
        }

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            j = json.load(f)
        specials = {a["content"]: a["id"] for a in j["added_tokens"]}
        vocab = {t: i for t, i in j["model"]["vocab"].items() if t not in specials}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in j["model"]["merges"]]
        return cls(vocab, merges, specials)


def train(texts, vocab_size=1024, min_count=2, forced=(("Ċ", "Ċ"),)):
    """Train merges on `texts` until vocab_size tokens or no pair occurs min_count times.
    Ids: special tokens first, then the 256 byte tokens (in byte order), then merges. `forced`
    merges come first (ĊĊ makes "\\n\\n" one token; "\\n" is the byte token Ċ)."""
    specials = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab = {}
    for b in range(256):
        vocab[BYTE_ENC[b]] = len(specials) + b
    words = Counter()
    for t in texts:
        for part in re.split("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")", t):
            if part and part not in specials:
                for w in pre_tokenize(part):
                    words[tuple(to_byte_chars(w))] += 1
    merges = []

    def apply(a, b):
        nonlocal words
        nw = Counter()
        for w, c in words.items():
            nw[tuple(_merge(w, a, b)) if len(w) > 1 else w] += c
        words = nw
        merges.append((a, b))
        if a + b not in vocab:  # the same string may come from two merge orders: one id
            vocab[a + b] = len(specials) + len(vocab)

    for a, b in forced:
        apply(a, b)
    while len(specials) + len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for i in range(len(w) - 1):
                pairs[(w[i], w[i + 1])] += c
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda x: (x[1], x[0]))
        if c < min_count:
            break
        apply(a, b)
    return Tokenizer(vocab, merges, specials)


def _merge(w, a, b):
    out, i = [], 0
    while i < len(w):
        if i < len(w) - 1 and w[i] == a and w[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(w[i])
            i += 1
    return out


if __name__ == "__main__":
    tok = Tokenizer.load(sys.argv[1])
    for line in sys.argv[2:]:
        ids = tok.encode(line)
        print(ids, repr(tok.decode(ids)))
