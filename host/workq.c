/* workq.c: bounded blocking jobs on libuv's thread pool (see workq.h). */
#include "workq.h"

#include <lauxlib.h>

void workq_init(workq *q, struct app *app, int max_active, size_t max_waiting,
                uint64_t wait_timeout_ms) {
    q->app = app;
    q->max_active = max_active;
    q->max_waiting = max_waiting;
    q->wait_timeout_ms = wait_timeout_ms;
    list_init(&q->queue);
    uv_timer_init(app->loop, &q->timer);
    q->timer.data = q;
}

static void work_run(uv_work_t *w) {
    workq_job *j = w->data;
    j->run(j);
}

static void queue_next(workq *q);

static void work_done(uv_work_t *w, int status) {
    workq_job *j = w->data;
    workq *q = j->q;
    q->active--;
    if (j->task) j->finish(j, j->task);
    j->release(j);
    if (!q->closed) queue_next(q);
}

static void job_start(workq *q, workq_job *j) {
    q->active++;
    q->started++;
    j->work.data = j;
    uv_queue_work(q->app->loop, &j->work, work_run, work_done);
}

static void expire_waiting(uv_timer_t *timer);

/* When waiting job j gives up: the queue's wait timeout, or its own earlier deadline. */
static uint64_t job_due(workq *q, workq_job *j) {
    uint64_t due = j->queued_at + q->wait_timeout_ms;
    return j->wait_until && j->wait_until < due ? j->wait_until : due;
}

static void arm_timer(workq *q) {
    if (list_empty(&q->queue)) {
        uv_timer_stop(&q->timer);
        return;
    }
    uint64_t now = uv_now(q->app->loop), due = UINT64_MAX;
    for (list_node *n = q->queue.next; n != &q->queue; n = n->next) {
        uint64_t d = job_due(q, LIST_ENTRY(n, workq_job, link));
        if (d < due) due = d;
    }
    uv_timer_start(&q->timer, expire_waiting, due > now ? due - now : 0, 0);
}

static void queue_next(workq *q) {
    while (q->active < q->max_active && !list_empty(&q->queue)) {
        workq_job *j = LIST_ENTRY(list_pop_front(&q->queue), workq_job, link);
        q->waiting--;
        job_start(q, j);
    }
    arm_timer(q);
}

/* Fails the waiting job j with msg (resuming its task last: that runs Lua). */
static void job_fail(workq *q, workq_job *j, const char *msg) {
    list_remove(&j->link);
    q->waiting--;
    task_t *t = j->task;
    j->release(j);
    if (t) sched_resume_error(t, msg);
}

static void expire_waiting(uv_timer_t *timer) {
    workq *q = timer->data;
    uint64_t now = uv_now(q->app->loop);
    /* jobs with deadlines of their own can expire out of order: look at every one */
    for (list_node *n = q->queue.next, *next; n != &q->queue; n = next) {
        next = n->next;
        workq_job *j = LIST_ENTRY(n, workq_job, link);
        if (job_due(q, j) > now) continue;
        int own = j->wait_until && j->wait_until < j->queued_at + q->wait_timeout_ms;
        if (!own) q->busy++;
        /* job_fail resumes Lua, which may submit or cancel jobs: start over */
        job_fail(q, j, own ? "timeout" : "busy");
        next = q->queue.next;
    }
    if (!q->closed) arm_timer(q);
}

static void job_cancel(void *op) {
    workq_job *j = op;
    if (j->link.next != &j->link) { /* still waiting for a turn */
        list_remove(&j->link);
        j->q->waiting--;
        j->release(j);
        return;
    }
    j->task = NULL; /* running on a worker: dropped when it completes */
}

int workq_submit(lua_State *L, workq *q, workq_job *j, const char *fname) {
    task_t *t = sched_current(q->app, L);
    if (!t) {
        j->release(j);
        return luaL_error(L, "%s must be called from a host coroutine (a handler, a timer or "
                             "host.spawn)", fname);
    }
    if (q->closed || (q->active >= q->max_active && q->waiting >= q->max_waiting)) {
        q->busy++;
        j->release(j);
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    j->q = q;
    j->task = t;
    list_init(&j->link);
    if (q->active < q->max_active) {
        job_start(q, j);
    } else {
        j->queued_at = uv_now(q->app->loop);
        list_push_back(&q->queue, &j->link);
        if (++q->waiting == 1) arm_timer(q);
    }
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

void workq_close(workq *q) {
    if (q->closed) return;
    q->closed = 1;
    while (!list_empty(&q->queue))
        job_fail(q, LIST_ENTRY(q->queue.next, workq_job, link), "shutting down");
    uv_close((uv_handle_t *)&q->timer, NULL);
}

void workq_push_stats(lua_State *L, workq *q) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, q->active);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, (lua_Integer)q->waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushnumber(L, (lua_Number)q->started);
    lua_setfield(L, -2, "started");
    lua_pushnumber(L, (lua_Number)q->busy);
    lua_setfield(L, -2, "busy");
}
