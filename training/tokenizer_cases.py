"""Record reference encodings for the C tokenizer's tests.

  python3 tokenizer_cases.py TOKENIZER_JSON OUT_JSON

OUT_JSON = {"tokenizer": <file name>, "cases": [{"text": str, "ids": [int], "decoded": str}]}
for a few hundred varied strings: the demo prompts and answers, unicode letters and marks,
digits of several scripts, whitespace runs, emoji (with ZWJ and skin tones), contractions,
punctuation, control characters, and special tokens and look-alikes typed as plain text (a
special token's exact text is matched as that token anywhere, as HF tokenizers does).
"""

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402
from tokenizer import SPECIAL_TOKENS, Tokenizer  # noqa: E402

FIXED = [
    "", " ", "  ", "\n", "\n\n", "\n\n\n", "\r\n", "\t", " \t\n ", "a", "A", "Hello, world!",
    "Describe the image.", "What color is the circle?", "What shape is the red object?",
    "How many shapes are there?", "Where is the square?", "Is there a blue triangle?",
    " Red.", " Three.", " Yes.", " A red circle on the left and a small blue square at the top right.",
    "<|im_start|>User:<fake_token_around_image><global-img><image><image><fake_token_around_image>"
    "What color is the star?<end_of_utterance>\nAssistant: Blue.<end_of_utterance>",
    "<|im_start|>User: hi<end_of_utterance>\nAssistant:",
    "<row_1_col_1><row_6_col_6><row_3_col_4>", "<row_7_col_1>", "<row_1_col_0>",
    "<image", "image>", "< image>", "<Image>", "<imag>", "<<image>>", "<image><image>",
    "<|im_start|", "|im_start|>", "<|im_start |>", "<|endoftext|>", "<|im_end|>",
    "<end_of_utterance", "end_of_utterance>", "<global-img >", "<fake_token_around_image",
    "it's", "IT'S", "we're", "they've", "I'm", "you'll", "he'd", "don't", "'s", "''", "'",
    "rock'n'roll", "l'été",
    "0", "7", "12", "123", "1234567890", "3.14159", "1,000,000", "-42", "+1e-10", "v2.0.1",
    "2026-11-24T02:40:00Z", "x²", "½", "Ⅻ", "٣٤٥", "१२३", "１２３", "七", "0x7f",
    "café", "naïve", "Ångström", "straße", "Ελληνικά", "русский язык", "עברית", "العربية",
    "हिन्दी", "日本語のテキスト", "中文字符", "한국어", "ไทย", "e\u0301", "a\u0308\u0304",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "a😀b", " 😀 ", "emoji🙂🙃", "\u200b", "\u00a0x",
    "x\u3000y", "tab\there", "trailing   ", "   leading", "multi   space", "a\n b\n\n c",
    "line1\r\nline2", "\x00", "\x01\x02", "\x7f", "\x1c\x1d", "\ufeffbom", "\ufffd",
    "!!!", "...", "?!", "—", "–", "“quoted”", "«guillemets»", "(parens) [brackets] {braces}",
    "a+b=c", "50%", "$100", "€5", "#hashtag", "@user", "user@example.com",
    "https://example.com/path?q=1&r=2", "C:\\path\\file.txt", "snake_case_name", "camelCaseName",
    "ALLCAPS", "MiXeD", "The quick brown fox jumps over the lazy dog.",
    "    def f(x):\n        return x + 1\n", "{\"key\": [1, 2, 3]}", "<b>bold</b>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0001f600" * 5, "a" * 100, " " * 17, "\n" * 7,
]


def generated(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n // 2):
        objs = D.sample_scene(rng)
        for q, a in list(D.questions(objs, rng).values())[:2]:
            out.append(q)
            out.append(" " + a)
    alphabet = ("abcXYZ 019 \n\t.,'!?-_éß中😀" + "".join(SPECIAL_TOKENS[:4]))
    for _ in range(n // 2):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(alphabet) if rng.random() < 0.9
                           else rng.choice(SPECIAL_TOKENS) for _ in range(k)))
    return out[:n]


def main():
    tok = Tokenizer.load(sys.argv[1])
    cases = []
    for text in FIXED + generated(200):
        ids = tok.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})
    with open(sys.argv[2], "w") as f:
        json.dump({"tokenizer": os.path.basename(sys.argv[1]), "cases": cases}, f,
                  ensure_ascii=False, indent=0)
    bad = [c for c in cases if c["decoded"] != c["text"]]
    print(f"{len(cases)} cases, {len(bad)} do not round-trip (lone surrogates/invalid)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
