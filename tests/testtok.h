/* The test vocabulary shared by the tokenizer and prompt tests. */
#ifndef TERN_TESTS_TESTTOK_H
#define TERN_TESTS_TESTTOK_H

#include "engine/tokenizer.h"

#define TT_N_SPECIAL 13
#define TT_BYTE0 TT_N_SPECIAL /* byte b is token TT_BYTE0 + b */

tok *tt_make(void);                /* aborts on failure */
tok *tt_make_pre(const char *pre); /* with another tokenizer.ggml.pre */

#endif
