#!/usr/bin/env python3
"""Turn files into a C header holding their bytes (used to embed the web page and its sample
pictures in ternd).

  embed.py SRC DST NAME            NAME[] and NAME_len: the bytes of SRC
  embed.py --table DST NAME SRC... NAME[] (NAME_count entries): {file name, bytes, length}
"""
import os
import sys


def byte_array(f, name, data):
    f.write('static const unsigned char %s[] = {\n' % name)
    for i in range(0, len(data), 16):
        f.write('  ' + ', '.join('0x%02x' % b for b in data[i:i + 16]) + ',\n')
    f.write('};\n')


def main(argv):
    table = argv[1] == '--table'
    if table:
        dst, name, srcs = argv[2], argv[3], argv[4:]
    else:
        srcs, dst, name = [argv[1]], argv[2], argv[3]
    with open(dst, 'w') as f:
        f.write('/* generated from %s by embed.py; do not edit */\n'
                % ', '.join(os.path.basename(s) for s in srcs))
        f.write('#include <stddef.h>\n')
        if not table:
            data = open(srcs[0], 'rb').read()
            byte_array(f, name, data)
            f.write('static const size_t %s_len = %d;\n' % (name, len(data)))
            return 0
        for i, src in enumerate(srcs):
            byte_array(f, '%s_%d' % (name, i), open(src, 'rb').read())
        f.write('static const struct {\n  const char *name;\n  const unsigned char *data;\n'
                '  size_t len;\n} %s[] = {\n' % name)
        for i, src in enumerate(srcs):
            f.write('  {"%s", %s_%d, %d},\n' % (os.path.basename(src), name, i, os.path.getsize(src)))
        f.write('};\nstatic const size_t %s_count = %d;\n' % (name, len(srcs)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
