/* workq.h: a bounded queue of blocking jobs for libuv's thread pool, shared by crypto.c
 * (argon2id) and mail.c (SMTP). At most max_active jobs run at once; at most max_waiting
 * wait for a turn, none longer than wait_timeout_ms; beyond those limits the caller gets
 * nil, "busy" (nil, "timeout" when a job's own earlier wait_until passed). The task that submitted a job waits (yields) until the job is done; if it is
 * cancelled meanwhile, a waiting job is dropped and a running one finishes unobserved. */
#ifndef CHATHOST_WORKQ_H
#define CHATHOST_WORKQ_H

#include "sched.h"

typedef struct workq_job workq_job;

typedef struct workq {
    struct app *app;
    int active, max_active;
    size_t waiting, max_waiting;
    uint64_t wait_timeout_ms;
    list_node queue;
    uv_timer_t timer; /* expires waiting jobs */
    unsigned long started, busy;
    int closed;
} workq;

struct workq_job {
    uv_work_t work;
    list_node link;
    workq *q;
    task_t *task;          /* NULL once the waiting task was cancelled */
    uint64_t queued_at;
    uint64_t wait_until;   /* uv_now() by which a waiting job gives up ("timeout") when that
                              comes before the queue's wait_timeout_ms; 0: none of its own */
    void (*run)(workq_job *j);                 /* on a pool thread */
    void (*finish)(workq_job *j, task_t *t);   /* on the loop: push results, sched_resume */
    void (*release)(workq_job *j);             /* frees the job */
};

void workq_init(workq *q, struct app *app, int max_active, size_t max_waiting,
                uint64_t wait_timeout_ms);
/* Queues j (its run/finish/release set) for the task running on L and yields; or, over
 * the limits, releases j and returns 2 with nil, "busy" pushed. Call as the return value
 * of a Lua C function. */
int workq_submit(lua_State *L, workq *q, workq_job *j, const char *fname);
/* Fails every waiting job with "shutting down" and closes the timer; running jobs finish. */
void workq_close(workq *q);
/* Pushes {active=, waiting=, started=, busy=} */
void workq_push_stats(lua_State *L, workq *q);

#endif
