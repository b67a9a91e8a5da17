/* Unit tests: JSON request codecs of each API family, base64, images. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/codec.h"

#include "../testutil.h"

static const struct api_limits lim = {1 << 20, 1 << 20, 2, 100, 20, 0};

/* Parses body with gen; returns 0 or the error status. */
static int parse(const struct api_gen *gen, const char *body, struct job **out, int *stream,
                 struct api_ctx *c, struct api_error *e)
{
    cJSON *root = cJSON_Parse(body);
    ck_assert_ptr_nonnull(root);
    struct job *j = job_create();
    memset(c, 0, sizeof *c);
    memset(e, 0, sizeof *e);
    *stream = gen->stream_default;
    int rc = gen->parse(root, &lim, j, c, stream, e);
    cJSON_Delete(root);
    if (rc != 0) {
        job_unref(j);
        *out = NULL;
        ck_assert_int_ne(e->status, 0);
        return e->status;
    }
    *out = j;
    return 0;
}

/* A 1x1 PNG. */
static const char *png_b64 =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

START_TEST(native)
{
    struct job *j;
    struct api_ctx c;
    struct api_error e;
    int stream;
    char body[512];
    snprintf(body, sizeof body,
             "{\"prompt\":\"hi\",\"system\":\"sys\",\"image\":\"%s\",\"max_tokens\":7,"
             "\"temperature\":0.5,\"top_k\":3,\"top_p\":0.9,\"min_p\":0.1,\"repeat_penalty\":1.1,"
             "\"seed\":42,\"stop\":[\"a\",\"bc\"],\"stream\":false}",
             png_b64);
    ck_assert_int_eq(parse(&api_native_generate, body, &j, &stream, &c, &e), 0);
    ck_assert_int_eq(stream, 0);
    ck_assert_int_eq(j->n_msgs, 2);
    ck_assert_int_eq(j->msgs[0].role, ROLE_SYSTEM);
    ck_assert_str_eq(j->msgs[1].text, "hi");
    ck_assert_int_eq(j->msgs[1].n_images, 1);
    ck_assert_int_eq(j->n_images, 1);
    ck_assert_int_eq(j->images[0].w, 1);
    ck_assert_int_eq(j->params.max_tokens, 7);
    ck_assert_float_eq_tol(j->params.temperature, 0.5, 1e-6);
    ck_assert_int_eq(j->params.top_k, 3);
    ck_assert_int_eq(j->params.has_seed, 1);
    ck_assert_uint_eq(j->params.seed, 42);
    ck_assert_int_eq(j->params.n_stop, 2);
    ck_assert_str_eq(j->params.stop[1], "bc");
    job_unref(j);

    ck_assert_int_eq(parse(&api_native_generate, "{\"prompt\":\"x\"}", &j, &stream, &c, &e), 0);
    ck_assert_int_eq(stream, 1);
    ck_assert_int_eq(j->params.max_tokens, 20); /* default_max_tokens */
    job_unref(j);
}
END_TEST

START_TEST(native_errors)
{
    struct job *j;
    struct api_ctx c;
    struct api_error e;
    int s;
    ck_assert_int_eq(parse(&api_native_generate, "{}", &j, &s, &c, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.message, "prompt"));
    ck_assert_int_eq(parse(&api_native_generate, "{\"prompt\":1}", &j, &s, &c, &e), 400);
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"max_tokens\":1.5}", &j, &s, &c, &e), 400);
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"max_tokens\":101}", &j, &s, &c, &e), 422);
    ck_assert_int_eq(parse(&api_native_generate, "{\"prompt\":\"x\",\"top_p\":2}", &j, &s, &c, &e),
                     422);
    ck_assert_int_eq(parse(&api_native_generate, "{\"prompt\":\"x\",\"stop\":[1]}", &j, &s, &c, &e),
                     400);
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"stop\":[\"\"]}", &j, &s, &c, &e), 422);
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"image\":\"%%%\"}", &j, &s, &c, &e), 400);
    ck_assert_ptr_nonnull(strstr(e.message, "base64"));
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"image\":\"aGVsbG8=\"}", &j, &s, &c, &e),
        415);
    ck_assert_int_eq(
        parse(&api_native_generate, "{\"prompt\":\"x\",\"images\":{}}", &j, &s, &c, &e), 400);
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\":\"x\",\"images\":[\"%s\",\"%s\",\"%s\"]}", png_b64,
             png_b64, png_b64);
    ck_assert_int_eq(parse(&api_native_generate, body, &j, &s, &c, &e), 422); /* max_images = 2 */
}
END_TEST

START_TEST(ollama)
{
    struct job *j;
    struct api_ctx c;
    struct api_error e;
    int s;
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"m:latest\",\"prompt\":\"p\",\"images\":[\"%s\"],"
             "\"options\":{\"num_predict\":5,\"temperature\":0.2,\"stop\":\"x\"}}",
             png_b64);
    ck_assert_int_eq(parse(&api_ollama_generate, body, &j, &s, &c, &e), 0);
    ck_assert_int_eq(s, 1);
    ck_assert_str_eq(c.model, "m:latest");
    ck_assert_int_eq(j->params.max_tokens, 5);
    ck_assert_int_eq(j->params.n_stop, 1);
    ck_assert_int_eq(j->msgs[0].n_images, 1);
    job_unref(j);
    ck_assert_int_eq(parse(&api_ollama_generate,
                           "{\"prompt\":\"p\",\"options\":{\"num_predict\":-1}}", &j, &s, &c, &e),
                     0);
    ck_assert_int_eq(j->params.max_tokens, 100); /* unlimited = the server cap */
    job_unref(j);
    ck_assert_int_eq(
        parse(&api_ollama_generate, "{\"prompt\":\"p\",\"options\":[]}", &j, &s, &c, &e), 400);

    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
             "{\"role\":\"user\",\"content\":\"u\",\"images\":[\"%s\"]},{\"role\":\"assistant\","
             "\"content\":\"a\"},"
             "{\"role\":\"user\",\"content\":\"again\"}],\"stream\":false}",
             png_b64);
    ck_assert_int_eq(parse(&api_ollama_chat, body, &j, &s, &c, &e), 0);
    ck_assert_int_eq(s, 0);
    ck_assert_int_eq(j->n_msgs, 4);
    ck_assert_int_eq(j->msgs[1].n_images, 1);
    ck_assert_int_eq(j->msgs[3].n_images, 0);
    ck_assert_int_eq(j->msgs[2].role, ROLE_ASSISTANT);
    job_unref(j);
    ck_assert_int_eq(
        parse(&api_ollama_chat, "{\"messages\":[{\"content\":\"x\"}]}", &j, &s, &c, &e), 400);
    ck_assert_int_eq(parse(&api_ollama_chat,
                           "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", &j, &s, &c, &e),
                     422);
    ck_assert_str_eq(e.message, "messages[0].role: 'bot' is not system, user or assistant");
    /* "developer" is OpenAI's word; Ollama's chat does not know it */
    ck_assert_int_eq(parse(&api_ollama_chat,
                           "{\"messages\":[{\"role\":\"developer\",\"content\":\"x\"}]}", &j, &s,
                           &c, &e),
                     422);
    ck_assert_int_eq(parse(&api_ollama_chat,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},7]}", &j, &s, &c,
                           &e),
                     400);
    ck_assert_str_eq(e.message, "messages[1]: expected an object");
}
END_TEST

START_TEST(openai)
{
    struct job *j;
    struct api_ctx c;
    struct api_error e;
    int s;
    char body[768];
    snprintf(body, sizeof body,
             "{\"model\":\"gpt\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
             "\"max_completion_tokens\":9,\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"one\"},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}},"
             "{\"type\":\"text\",\"text\":\"two\"}]}]}",
             png_b64);
    ck_assert_int_eq(parse(&api_openai_chat, body, &j, &s, &c, &e), 0);
    ck_assert_int_eq(s, 1);
    ck_assert_int_eq(c.include_usage, 1);
    ck_assert_int_eq(j->params.max_tokens, 9);
    ck_assert_int_eq(j->msgs[0].role, ROLE_SYSTEM);
    ck_assert_str_eq(j->msgs[1].text, "one\ntwo");
    ck_assert_int_eq(j->msgs[1].n_images, 1);
    job_unref(j);
    ck_assert_int_eq(parse(&api_openai_chat,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &j, &s, &c,
                           &e),
                     0);
    ck_assert_int_eq(s, 0); /* OpenAI does not stream unless asked */
    job_unref(j);
    ck_assert_int_eq(
        parse(&api_openai_chat,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", &j, &s, &c,
              &e),
        422);
    ck_assert_int_eq(parse(&api_openai_chat,
                           "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                           "\"image_url\":{\"url\":\"https://x/y.png\"}}]}]}",
                           &j, &s, &c, &e),
                     422);
    ck_assert_int_eq(parse(&api_openai_chat,
                           "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                           "\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
                           &j, &s, &c, &e),
                     400);
    ck_assert_int_eq(
        parse(&api_openai_chat,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"content\":\"y\"}]}", &j, &s,
              &c, &e),
        400);
    ck_assert_str_eq(e.message, "messages[1].role: required");
    ck_assert_int_eq(parse(&api_openai_chat,
                           "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", &j, &s, &c,
                           &e),
                     422);
    ck_assert_str_eq(e.message,
                     "messages[0].role: 'tool' is not system, developer, user or assistant");
    ck_assert_int_eq(parse(&api_openai_chat,
                           "{\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &j, &s,
                           &c, &e),
                     400);
    ck_assert_str_eq(e.message, "n: 2 choices asked; ternd answers with exactly 1");
}
END_TEST

START_TEST(formatters)
{
    struct job *j = job_create();
    struct api_ctx c = {"m", "req-0123456789abcdef", 1700000000.5, 1, 0};
    struct sbuf out = {0};
    api_openai_chat.chunk(&c, "hi \"there\"", 10, &out);
    ck_assert_ptr_nonnull(strstr(out.p, "data: {"));
    ck_assert_ptr_nonnull(strstr(out.p, "\"role\":\"assistant\""));
    ck_assert_ptr_nonnull(strstr(out.p, "hi \\\"there\\\""));
    ck_assert_ptr_nonnull(strstr(out.p, "\"id\":\"chatcmpl-0123456789abcdef\""));
    ck_assert(out.len > 2 && out.p[out.len - 1] == '\n' && out.p[out.len - 2] == '\n');
    out.len = 0;
    j->done = DONE_LENGTH;
    j->prompt_tokens = 3;
    j->completion_tokens = 4;
    api_openai_chat.final(&c, j, &out);
    ck_assert_ptr_nonnull(strstr(out.p, "\"finish_reason\":\"length\""));
    ck_assert_ptr_nonnull(strstr(out.p, "\"total_tokens\":7"));
    ck_assert_str_eq(out.p + out.len - 14, "data: [DONE]\n\n");
    out.len = 0;
    j->t.total_ms = 1.5;
    j->t.decode_ms = 1.0;
    api_ollama_generate.final(&c, j, &out);
    cJSON *o = cJSON_Parse(out.p);
    ck_assert_ptr_nonnull(o);
    ck_assert_double_eq(cJSON_GetObjectItem(o, "total_duration")->valuedouble, 1500000);
    ck_assert_double_eq(cJSON_GetObjectItem(o, "eval_count")->valuedouble, 4);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "done")));
    cJSON_Delete(o);
    out.len = 0;
    api_native_generate.chunk(&c, "a\nb", 3, &out);
    ck_assert_str_eq(out.p, "{\"token\":\"a\\nb\"}\n");
    sbuf_free(&out);
    job_unref(j);
}
END_TEST

/* Content reader for codec_messages: the "text" field, and a fixed 2 on the first message. */
static int text_field(const cJSON *m, const char *where, const struct api_limits *l, struct job *j,
                      struct sbuf *text, struct api_error *e)
{
    (void)l;
    const char *t = NULL;
    if (codec_get_string(m, "text", where, &t, e) < 0) return -1;
    if (t) sbuf_add(text, t, strlen(t));
    if (!strcmp(where, "messages[0].")) j->n_images += 2; /* as if it had added two images */
    return 0;
}

START_TEST(shared_fields)
{
    struct api_error e = {0};
    cJSON *root = cJSON_Parse("{\"model\":\"\",\"o\":{\"a\":1},\"s\":\"x\",\"n\":null,"
                              "\"messages\":[{\"role\":\"user\",\"text\":\"one\"},"
                              "{\"role\":\"assistant\"}]}");
    const cJSON *o = NULL;
    ck_assert_int_eq(codec_get_object(root, "o", "", &o, &e), 1);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "a"));
    ck_assert_int_eq(codec_get_object(root, "n", "", &o, &e), 0); /* null = absent */
    ck_assert_int_eq(codec_get_object(root, "missing", "", &o, &e), 0);
    ck_assert_int_eq(codec_get_object(root, "s", "x.", &o, &e), -1);
    ck_assert_str_eq(e.message, "x.s: expected an object");

    char model[8] = "keep";
    ck_assert_int_eq(codec_get_model(root, model, sizeof model, &e), 0);
    ck_assert_str_eq(model, "keep"); /* an empty model leaves the default */

    struct job *j = job_create();
    ck_assert_int_eq(codec_messages(root, 0, text_field, &lim, j, &e), 0);
    ck_assert_int_eq(j->n_msgs, 2);
    ck_assert_str_eq(j->msgs[0].text, "one");
    ck_assert_int_eq(j->msgs[0].n_images, 2);
    ck_assert_str_eq(j->msgs[1].text, "");
    ck_assert_int_eq(j->msgs[1].role, ROLE_ASSISTANT);
    ck_assert_int_eq(j->msgs[1].n_images, 0);
    j->n_images = 0; /* none were decoded */
    job_unref(j);
    cJSON_Delete(root);

    root = cJSON_Parse("{\"messages\":[],\"images\":\"x\"}");
    j = job_create();
    ck_assert_int_eq(codec_messages(root, 0, text_field, &lim, j, &e), -1);
    ck_assert_str_eq(e.message, "messages: expected a non-empty array");
    ck_assert_int_eq(codec_add_images(root, "m.", 0, &lim, j, &e), -1);
    ck_assert_str_eq(e.message, "m.images: expected an array of base64 strings");
    job_unref(j);
    cJSON_Delete(root);
}
END_TEST

START_TEST(base64)
{
    unsigned char *o;
    size_t n;
    ck_assert_int_eq(codec_base64_decode("aGVsbG8=", 8, &o, &n), 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(memcmp(o, "hello", 5), 0);
    free(o);
    ck_assert_int_eq(codec_base64_decode("aGVsbG8", 7, &o, &n), 0); /* padding optional */
    ck_assert_uint_eq(n, 5);
    free(o);
    ck_assert_int_eq(codec_base64_decode("", 0, &o, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(o);
    /* Wrapped as MIME and `base64` write it: whitespace anywhere is skipped. */
    ck_assert_int_eq(codec_base64_decode("aGVs bG8g\r\nd29y\nbGQ=\n", 21, &o, &n), 0);
    ck_assert_uint_eq(n, 11);
    ck_assert_int_eq(memcmp(o, "hello world", 11), 0);
    free(o);
    ck_assert_int_eq(codec_base64_decode("aGV*sbG8", 8, &o, &n), -1);
    ck_assert_int_eq(codec_base64_decode("a", 1, &o, &n), -1);
    ck_assert_int_eq(codec_base64_decode("aGVs\nb", 6, &o, &n), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, native);
    tcase_add_test(tc, native_errors);
    tcase_add_test(tc, ollama);
    tcase_add_test(tc, openai);
    tcase_add_test(tc, formatters);
    tcase_add_test(tc, shared_fields);
    tcase_add_test(tc, base64);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
