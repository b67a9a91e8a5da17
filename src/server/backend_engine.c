/* The real engine behind the backend interface. Until src/engine/engine.h lands this only
 * reports that the engine is not built in; the scheduler and HTTP layer are complete and run
 * with the echo test double (engine = echo). */
#include <stdio.h>

#include "backend.h"

struct backend *backend_engine_create(const struct backend_options *o, char *err, size_t errlen)
{
    snprintf(err, errlen, "model %s: the inference engine is not built into this ternd yet "
             "(run with --engine echo for the test double)", o->model_path);
    return NULL;
}
