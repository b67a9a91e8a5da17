/* Writes test JPEGs with libjpeg: baseline, or progressive with many scans (one scan per DCT
 * coefficient per component, 1 + 63 * 3 = 190 for colour), the shape of a file built to make a
 * decoder work. Header-only, like testutil.h; used by test_image.c and mkjpeg.c. */
#ifndef TERN_TESTS_JPEGW_H
#define TERN_TESTS_JPEGW_H

#include <stdio.h> /* before jpeglib.h */
#include <stdlib.h>

#include <jpeglib.h>

/* A w x h colour picture (a smooth gradient with some noise), into *out (free()). */
static inline int jpegw_write(int w, int h, int many_scans, unsigned char **out, unsigned long *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    *out = NULL;
    *len = 0;
    jpeg_mem_dest(&c, out, len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    static jpeg_scan_info scans[1 + 63 * 3];
    if (many_scans) {
        int n = 0;
        scans[n++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 0, 0};
        for (int comp = 0; comp < 3; comp++)
            for (int k = 1; k < 64; k++)
                scans[n++] = (jpeg_scan_info){1, {comp, 0, 0, 0}, k, k, 0, 0};
        c.scan_info = scans;
        c.num_scans = n;
    }
    unsigned char *row = malloc((size_t)w * 3);
    if (!row) return -1;
    unsigned seed = 1;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        int y = (int)c.next_scanline;
        for (int x = 0; x < w; x++) {
            seed = seed * 1103515245u + 12345u;
            int noise = (int)(seed >> 28) - 8;
            row[3 * x] = (unsigned char)((x * 255 / (w > 1 ? w - 1 : 1) + noise) & 255);
            row[3 * x + 1] = (unsigned char)((y * 255 / (h > 1 ? h - 1 : 1) + noise) & 255);
            row[3 * x + 2] = (unsigned char)(128 + noise);
        }
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    return 0;
}

#endif
