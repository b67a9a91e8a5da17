/* libFuzzer target: arbitrary bytes as a request body through every API family's JSON
 * parser (the same code path as POST /generate, /api/generate, /api/chat and
 * /v1/chat/completions), including base64 and image decoding. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct api_limits lim = {1 << 16, 1 << 16, 2, 64, 16, 0};
    static const struct api_gen *gens[] = {&api_native_generate, &api_ollama_generate,
                                           &api_ollama_chat, &api_openai_chat};
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (!root) return 0;
    if (!cJSON_IsObject(root)) { /* http.c answers 400 before any parser sees it */
        cJSON_Delete(root);
        return 0;
    }
    for (size_t g = 0; g < sizeof gens / sizeof *gens; g++) {
        struct job *j = job_create();
        if (!j) break;
        struct api_ctx c;
        struct api_error e;
        memset(&c, 0, sizeof c);
        memset(&e, 0, sizeof e);
        int stream = 0;
        if (gens[g]->parse(root, &lim, j, &c, &stream, &e) == 0) {
            struct sbuf out = {0};
            gens[g]->chunk(&c, "x", 1, &out);
            j->done = DONE_STOP;
            gens[g]->final(&c, j, &out);
            cJSON_Delete(gens[g]->whole(&c, j));
            sbuf_free(&out);
        }
        job_unref(j);
    }
    cJSON_Delete(root);
    return 0;
}
