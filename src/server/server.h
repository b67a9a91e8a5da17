/* The daemon's shared state, built by main.c and handed to the HTTP layer and the routes. */
#ifndef TERN_SERVER_SERVER_H
#define TERN_SERVER_SERVER_H

#include "auth.h"
#include "backend.h"
#include "codec.h"
#include "config.h"
#include "metrics.h"
#include "sched.h"
#include "stats.h"

struct server {
    const struct config *cfg;
    struct backend *backend;
    struct backend_info info;
    struct sched *sched;
    struct metrics *metrics;
    struct stats *stats; /* NULL when stats are off */
    struct auth *auth;
    struct api_limits limits;
    double started_wall;
    int ready; /* accepting (atomic): 0 once draining */
};

#endif
