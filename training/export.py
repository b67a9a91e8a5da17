"""Write an HF model directory again with f16 tensors (for shipping; the ternary and binary
exports are already f16, where t*scale is exact).

  python3 export.py SRC_DIR DST_DIR
"""

import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402


def main():
    src, dst = sys.argv[1:3]
    m = M.load_hf(src)
    extra = {k: v for k, v in m.config.items() if k == "quantization"}
    M.save_hf(m, dst, os.path.join(src, "tokenizer.json"), dtype=torch.float16,
              extra_config=extra or None)
    for extra_file in ("README.md",):
        if os.path.exists(os.path.join(src, extra_file)):
            shutil.copy(os.path.join(src, extra_file), dst)


if __name__ == "__main__":
    main()
