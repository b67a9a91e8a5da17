/* mkjpeg OUT W H [many-scans]: writes a test JPEG (jpegw.h) for the integration tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jpegw.h"

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: mkjpeg OUT W H [many-scans]\n");
        return 2;
    }
    unsigned char *buf;
    unsigned long len;
    if (jpegw_write(atoi(argv[2]), atoi(argv[3]), argc > 4 && strcmp(argv[4], "many-scans") == 0,
                    &buf, &len) != 0)
        return 1;
    FILE *f = fopen(argv[1], "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    free(buf);
    if (!ok) perror(argv[1]);
    return ok ? 0 : 1;
}
