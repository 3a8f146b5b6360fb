/*
 * The supervision policy of every tsgi supervisor, in C for mod_tsgi. These
 * numbers mirror core/src/node/policy.ts (EXIT_STARTUP, BACKOFF_FIRST_MS,
 * BACKOFF_MAX_MS, BACKOFF_RESET_MS and Backoff.next), and test/policy.test.ts
 * checks this function against that class. Plain C99, no APR, so the test
 * library can load it.
 */
#ifndef TSGI_POLICY_H
#define TSGI_POLICY_H

#include <stdint.h>

/* Exit status of a worker that cannot start (EX_CONFIG). */
#define TSGI_EXIT_STARTUP 78
/* Restart delays after a crash, in µs: 0 the first time, then 0.1 s doubling to 5 s... */
#define TSGI_BACKOFF_FIRST_US INT64_C(100000)
#define TSGI_BACKOFF_MAX_US INT64_C(5000000)
/* ...and a worker that lived longer than 10 s starts the count again. */
#define TSGI_BACKOFF_RESET_US INT64_C(10000000)

/*
 * The delay before restarting a worker that was started at `started` and died
 * at `now` (µs); `*crashes` counts the deaths in a row so far and is updated.
 */
static inline int64_t tsgi_backoff_next(int *crashes, int64_t started, int64_t now)
{
    int64_t delay = 0;
    int i;
    if (now - started > TSGI_BACKOFF_RESET_US)
        *crashes = 0;
    if (*crashes > 0) {
        delay = TSGI_BACKOFF_FIRST_US;
        for (i = 1; i < *crashes && delay < TSGI_BACKOFF_MAX_US; i++)
            delay *= 2;
        if (delay > TSGI_BACKOFF_MAX_US)
            delay = TSGI_BACKOFF_MAX_US;
    }
    if (*crashes < 1000)
        (*crashes)++;
    return delay;
}

#endif
