/* The scheduler: one engine thread, `slots` sequences at once, a bounded queue.
 * Each step: drop cancelled/expired work, admit waiting jobs into free slots (a job with
 * images waits while the backend's vision thread encodes them; the other slots go on),
 * prefill one chunk, then advance every decoding slot by one token in ONE batched backend
 * call and push the text to each job's stream. The thread sleeps on a condvar when idle. */
#ifndef TERN_SERVER_SCHED_H
#define TERN_SERVER_SCHED_H

#include <stddef.h>

#include "backend.h"
#include "job.h"
#include "metrics.h"

struct sched_options {
    int slots;
    int queue_max;
    int prefill_chunk;
};

enum { SCHED_OK = 0, SCHED_FULL = 1, SCHED_DRAINING = 2 };

struct sched;

struct sched *sched_create(const struct sched_options *o, struct backend *b, struct metrics *m,
                           char *err, size_t errlen);
/* Queue a job (the scheduler takes its own reference). SCHED_FULL past queue_max. */
int sched_submit(struct sched *s, struct job *j);
void sched_snapshot(struct sched *s, int *active, int *queued);
/* Monotonic time the engine thread last finished a step or went idle (for the watchdog). */
double sched_heartbeat(struct sched *s, int *busy);
/* Stop accepting; wait up to grace_s for running and queued work; cancel what is left;
 * returns when the engine is idle. */
void sched_drain(struct sched *s, double grace_s);
void sched_destroy(struct sched *s);

/* Stop-string handling, exposed for tests. pend holds text not yet sent. Returns how many
 * leading bytes of pend may be sent now; *hit = 1 when a stop string was found (send the
 * returned bytes, then stop). */
size_t sched_stop_scan(const char *pend, size_t len, char *const *stop, int n_stop, int *hit);

#endif
