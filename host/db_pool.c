/* db_pool.c: host.db's pools on the loop thread. Acquisition is FIFO: a job runs on an idle
 * worker or waits, at most mysql.acquire_timeout_ms and behind at most mysql.max_waiting
 * others; beyond either: nil, "busy". Workers (db_worker.c) hand finished jobs back through
 * a completion queue and one uv_async_t; the waiting task is resumed here. A transaction
 * leases one worker from BEGIN to COMMIT/ROLLBACK. db.c holds the Lua side. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "log.h"
#include "modules.h"

#define BUSY_WARNING_INTERVAL_MS 10000

static void pool_maybe_finish(db_pool *p);

void db_job_free(db_job *j) {
    buf_free(&j->result);
    free(j);
}

db_job *db_job_new(db_job_kind kind) {
    db_job *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    return j;
}

/* ---- transactions -------------------------------------------------------------------- */

static void tx_free(db_tx *tx) {
    track_del(&tx->track);
    if (tx->handle) tx->handle->tx = NULL;
    free(tx);
}

static void post_on_lease(db_tx *tx, db_job *j) {
    j->pool = tx->pool;
    j->tx = tx;
    j->start_tx = tx->unstarted;
    tx->unstarted = 0;
    j->worker = tx->worker;
    tx->worker->running = 1;
    db_worker_post(tx->worker, j);
}

static db_job *tx_post_finish(db_tx *tx, db_job_kind kind, task_t *task) {
    db_job *j = db_job_new(kind);
    j->task = task;
    tx->ended = tx->finishing = 1;
    post_on_lease(tx, j);
    return j;
}

void db_tx_abandon(db_tx *tx) {
    if (tx->ended) return;
    tx->ended = 1;
    track_del(&tx->track);
    if (tx->handle) tx->handle->tx = NULL;
    tx->handle = NULL;
    if (!tx->worker->running) tx_post_finish(tx, DB_JOB_ROLLBACK, NULL);
}

static void tx_track_close(tracked *t) { db_tx_abandon(LIST_ENTRY(t, db_tx, track)); }

static void worker_release(db_pool *p, db_worker *w);

static void tx_end(db_tx *tx) {
    db_worker *w = tx->worker;
    w->lease = NULL;
    db_pool *p = tx->pool;
    tx_free(tx);
    worker_release(p, w);
}

/* After each job of a transaction: a failed BEGIN or a finished COMMIT/ROLLBACK ends the
 * lease; an abandoned transaction rolls back as soon as its worker is free. */
static void tx_job_done(db_tx *tx, db_job *j) {
    if (j->kind == DB_JOB_COMMIT || j->kind == DB_JOB_ROLLBACK ||
        (j->kind == DB_JOB_BEGIN && j->failed)) {
        tx_end(tx);
    } else if (tx->ended && !tx->finishing) {
        tx_post_finish(tx, DB_JOB_ROLLBACK, NULL);
    }
}

/* ---- acquisition --------------------------------------------------------------------- */

/* An idle worker taken off the idle list (there is one). */
static db_worker *idle_pop(db_pool *p) {
    p->nidle--;
    return LIST_ENTRY(list_pop_front(&p->idle), db_worker, idle_link);
}

/* tx holds w until its COMMIT or ROLLBACK (a tracked resource meanwhile). */
static void lease(db_pool *p, db_tx *tx, db_worker *w) {
    w->lease = tx;
    tx->worker = w;
    track_add(p->app, &tx->track, "mysql transaction", tx_track_close);
}

/* Starts j on w, which is not idle any more (the caller took it from the idle list or from
 * a completed job). */
static void dispatch(db_pool *p, db_job *j, db_worker *w) {
    j->worker = w;
    w->running = 1;
    if (j->kind == DB_JOB_BEGIN) lease(p, j->tx, w);
    db_worker_post(w, j);
}

static void expire_waiters(uv_timer_t *timer);

static void arm_timer(db_pool *p) {
    if (list_empty(&p->waiters) || p->finishing) {
        if (!p->finishing) uv_timer_stop(&p->timer);
        return;
    }
    db_job *head = LIST_ENTRY(p->waiters.next, db_job, link);
    uint64_t now = uv_now(p->app->loop), due = head->queued_at + p->cfg.acquire_timeout_ms;
    uv_timer_start(&p->timer, expire_waiters, due > now ? due - now : 0, 0);
}

static db_job *waiter_pop(db_pool *p) {
    db_job *j = LIST_ENTRY(list_pop_front(&p->waiters), db_job, link);
    j->queued = 0;
    p->nwaiting--;
    return j;
}

/* Ends a job that never reached a worker: its task (if any) gets nil, why. */
static void waiter_fail(db_job *j, const char *why) {
    task_t *t = j->task;
    if (j->tx) tx_free(j->tx);
    db_job_free(j);
    if (t) sched_resume_error(t, why);
}

static void warn_busy(db_pool *p, const char *what) {
    uint64_t now = uv_now(p->app->loop);
    if (p->last_busy_warning && now - p->last_busy_warning < BUSY_WARNING_INTERVAL_MS) return;
    p->last_busy_warning = now;
    log_warn("mysql pool %s:%u: %s (%lu busy rejections so far; see mysql.pool_size, "
             "mysql.acquire_timeout_ms, mysql.max_waiting)",
             p->nodes[0].host, p->nodes[0].port, what, p->busy_rejections);
}

static void expire_waiters(uv_timer_t *timer) {
    db_pool *p = timer->data;
    uint64_t now = uv_now(p->app->loop);
    while (!list_empty(&p->waiters)) {
        db_job *head = LIST_ENTRY(p->waiters.next, db_job, link);
        if (head->queued_at + p->cfg.acquire_timeout_ms > now) break;
        waiter_pop(p);
        p->busy_rejections++;
        warn_busy(p, "no connection became free within mysql.acquire_timeout_ms");
        waiter_fail(head, "busy");
    }
    arm_timer(p);
}

static void worker_release(db_pool *p, db_worker *w) {
    if (!p->closed_reason && !list_empty(&p->waiters)) {
        dispatch(p, waiter_pop(p), w);
        arm_timer(p);
        return;
    }
    list_push_back(&p->idle, &w->idle_link);
    p->nidle++;
    pool_maybe_finish(p);
}

static void job_cancel(void *op) {
    db_job *j = op;
    db_pool *p = j->pool;
    j->task = NULL;
    if (j->queued) {
        list_remove(&j->link);
        j->queued = 0;
        p->nwaiting--;
        waiter_fail(j, NULL);
        arm_timer(p);
    } else if (j->tx) {
        db_tx_abandon(j->tx); /* rolls back once the running job is done */
    }
}

/* Why p takes no new work right now (closed, or busy beyond its limits), or NULL. */
static const char *pool_refusal(db_pool *p) {
    if (p->closed_reason) return p->closed_reason;
    if (!list_empty(&p->idle)) return NULL;
    if (p->nwaiting >= p->cfg.max_waiting || p->cfg.acquire_timeout_ms == 0) {
        p->busy_rejections++;
        warn_busy(p, "mysql.max_waiting requests are already waiting");
        return "busy";
    }
    if (p->cfg.max_waiting >= 4 && p->nwaiting + 1 == p->cfg.max_waiting - p->cfg.max_waiting / 4)
        log_warn("mysql pool %s:%u: %zu requests wait for a connection (limit %zu)",
                 p->nodes[0].host, p->nodes[0].port, p->nwaiting + 1, p->cfg.max_waiting);
    return NULL;
}

int db_pool_submit(lua_State *L, db_pool *p, db_job *j, task_t *t) {
    const char *why = pool_refusal(p);
    if (why) {
        if (j->tx) tx_free(j->tx);
        db_job_free(j);
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    j->pool = p;
    j->task = t;
    if (!list_empty(&p->idle)) {
        dispatch(p, j, idle_pop(p));
    } else {
        j->queued = 1;
        j->queued_at = uv_now(p->app->loop);
        list_push_back(&p->waiters, &j->link);
        if (++p->nwaiting == 1) arm_timer(p);
    }
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

/* ---- completions --------------------------------------------------------------------- */

static void count(db_pool *p, db_job *j) {
    p->queries += j->ran;
    p->errors += j->failed != 0;
    p->reconnects += j->reconnected;
}

static void job_completed(db_job *j) {
    db_pool *p = j->pool;
    task_t *t = j->task;
    int n = 0;
    j->worker->running = 0;
    count(p, j);
    if (t) n = db_push_result(t->co, j);
    if (j->tx)
        tx_job_done(j->tx, j);
    else
        worker_release(p, j->worker);
    db_job_free(j);
    if (t) sched_resume(t, n);
}

static void on_completions(uv_async_t *async) {
    db_pool *p = async->data;
    list_node done;
    list_init(&done);
    uv_mutex_lock(&p->done_mu);
    list_splice_tail(&p->done, &done); /* take the whole queue */
    uv_mutex_unlock(&p->done_mu);
    list_node *n;
    while ((n = list_pop_front(&done)) != NULL)
        job_completed(LIST_ENTRY(n, db_job, link));
}

/* ---- pool lifecycle ------------------------------------------------------------------ */

void db_config_free(db_config *c) {
    free(c->host);
    free(c->user);
    free(c->password);
    free(c->database);
    free(c->nodes);
    free(c->policy);
}

/* ---- nodes --------------------------------------------------------------------------- */

static void nodes_free(db_node *nodes, int n) {
    for (int i = 0; i < n; i++)
        free(nodes[i].host);
    free(nodes);
}

/* One "host:port" entry of len bytes (spaces around it allowed) into nd. */
static int node_parse(const char *s, size_t len, db_node *nd) {
    while (len && *s == ' ')
        s++, len--;
    while (len && s[len - 1] == ' ')
        len--;
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':') colon = s + i; /* the last one */
    if (!colon || colon == s || colon == s + len - 1) return -EINVAL;
    unsigned long port = 0;
    for (const char *c = colon + 1; c < s + len; c++) {
        if (*c < '0' || *c > '9' || port > 65535) return -EINVAL;
        port = port * 10 + (unsigned long)(*c - '0');
    }
    if (port < 1 || port > 65535) return -EINVAL;
    nd->host = xmalloc((size_t)(colon - s) + 1);
    memcpy(nd->host, s, (size_t)(colon - s));
    nd->host[colon - s] = '\0';
    nd->port = (unsigned)port;
    return 0;
}

int db_nodes_parse(const char *spec, db_node **out) {
    int n = 1;
    for (const char *c = spec; *c; c++)
        n += *c == ',';
    db_node *nodes = xcalloc((size_t)n, sizeof *nodes);
    const char *start = spec;
    for (int i = 0; i < n; i++) {
        const char *end = strchr(start, ',');
        if (!end) end = start + strlen(start);
        if (node_parse(start, (size_t)(end - start), &nodes[i]) != 0) {
            nodes_free(nodes, i);
            return -EINVAL;
        }
        start = end + 1;
    }
    *out = nodes;
    return n;
}

/* mysql.nodes when given, else the one node host:port. */
static void pool_set_nodes(db_pool *p) {
    const db_config *c = &p->cfg;
    p->policy =
        c->policy && !strcmp(c->policy, "spread") ? DB_POLICY_SPREAD : DB_POLICY_PREFER_FIRST;
    if (c->nodes && *c->nodes) {
        int n = db_nodes_parse(c->nodes, &p->nodes);
        if (n > 0) {
            p->nnodes = n;
            return;
        }
        log_error("mysql.nodes: cannot parse '%s': using %s:%u", c->nodes, c->host, c->port);
    }
    p->nodes = xcalloc(1, sizeof *p->nodes);
    p->nodes[0].host = xstrdup(c->host);
    p->nodes[0].port = c->port;
    p->nnodes = 1;
}

static void pool_join(db_pool *p) {
    if (p->joined) return;
    for (int i = 0; i < p->size; i++)
        db_worker_stop(&p->workers[i]);
    p->joined = 1;
}

/* Frees p once its threads have ended, its handles are closed and no Lua object refers
 * to it. */
static void pool_maybe_free(db_pool *p) {
    if (!p->joined || p->handles_open > 0 || p->handle) return;
    list_remove(&p->all_link);
    if (p->app->db == p) p->app->db = NULL;
    uv_mutex_destroy(&p->done_mu);
    uv_mutex_destroy(&p->nodes_mu);
    nodes_free(p->nodes, p->nnodes);
    db_config_free(&p->cfg);
    free(p->workers);
    free(p);
}

static void pool_handle_closed(uv_handle_t *h) {
    db_pool *p = h->data;
    if (--p->handles_open > 0) return;
    pool_join(p); /* idle threads: they only close their connections */
    pool_maybe_free(p);
}

/* Once closing and every worker is idle: no completion can come any more, so the async
 * handle and the timer close, and then the threads end. */
static void pool_maybe_finish(db_pool *p) {
    if (!p->closed_reason || p->finishing || p->nidle < p->size) return;
    p->finishing = 1;
    uv_mutex_lock(&p->done_mu);
    p->async_closed = 1;
    uv_mutex_unlock(&p->done_mu);
    uv_close((uv_handle_t *)&p->async, pool_handle_closed);
    uv_close((uv_handle_t *)&p->timer, pool_handle_closed);
}

void db_pool_close(db_pool *p, const char *why) {
    if (p->closed_reason) return;
    p->closed_reason = why;
    track_del(&p->track);
    uv_timer_stop(&p->timer);
    while (!list_empty(&p->waiters))
        waiter_fail(waiter_pop(p), why);
    pool_maybe_finish(p);
}

static void pool_track_close(tracked *t) {
    db_pool *p = LIST_ENTRY(t, db_pool, track);
    db_pool_close(p, p->app->stopping ? "shutting down" : "pool closed");
}

static void pool_start_workers(db_pool *p) {
    p->workers = xcalloc((size_t)p->cfg.pool_size, sizeof *p->workers);
    for (int i = 0; i < p->cfg.pool_size; i++) {
        db_worker *w = &p->workers[p->size];
        w->index = p->size;
        w->node = -1;
        int rc = db_worker_start(w, p);
        if (rc != 0) {
            log_error("host.db: cannot start a worker thread: %s", uv_strerror(rc));
            break;
        }
        list_push_back(&p->idle, &w->idle_link);
        p->nidle++;
        p->size++;
    }
}

db_pool *db_pool_new(struct app *app, db_config *cfg) {
    db_pool *p = xcalloc(1, sizeof *p);
    p->app = app;
    p->cfg = *cfg;
    list_init(&p->idle);
    list_init(&p->waiters);
    list_init(&p->done);
    list_init(&p->track.link);
    uv_mutex_init(&p->done_mu);
    uv_mutex_init(&p->nodes_mu);
    pool_set_nodes(p);
    uv_async_init(app->loop, &p->async, on_completions);
    uv_timer_init(app->loop, &p->timer);
    p->async.data = p->timer.data = p;
    p->handles_open = 2;
    list_push_back(&app->db_pools, &p->all_link);
    pool_start_workers(p);
    if (p->size == 0) {
        db_pool_close(p, "no worker thread");
        return NULL;
    }
    return p;
}

void db_pool_track(db_pool *p) { track_add(p->app, &p->track, "mysql pool", pool_track_close); }

void db_pool_drop_handle(db_pool *p) {
    p->handle = NULL;
    db_pool_close(p, "pool closed");
    pool_maybe_free(p);
}

/* ---- transactions, Lua side ---------------------------------------------------------- */

/* With an idle worker the transaction is leased at once, without a job: its first job
 * (a statement, or COMMIT/ROLLBACK, then nothing to do) sends START TRANSACTION before
 * itself, so that a transaction costs no round trip of its own to the worker and the
 * server. Else a BEGIN job waits for a worker and starts it there. */
int db_tx_begin(lua_State *L, db_pool *p, task_t *t) {
    db_tx *tx = xcalloc(1, sizeof *tx);
    tx->pool = p;
    list_init(&tx->track.link);
    if (!p->closed_reason && !list_empty(&p->idle)) {
        db_worker *w = idle_pop(p);
        lease(p, tx, w);
        tx->unstarted = 1;
        db_push_tx(L, tx);
        return 1;
    }
    db_job *j = db_job_new(DB_JOB_BEGIN);
    j->tx = tx;
    return db_pool_submit(L, p, j, t);
}

int db_tx_submit(lua_State *L, db_tx *tx, db_job *j, task_t *t) {
    if (tx->pool->closed_reason) {
        db_job_free(j);
        lua_pushnil(L);
        lua_pushstring(L, tx->pool->closed_reason);
        return 2;
    }
    j->task = t;
    post_on_lease(tx, j);
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

int db_tx_finish(lua_State *L, db_tx *tx, int commit, task_t *t) {
    db_job *j = tx_post_finish(tx, commit ? DB_JOB_COMMIT : DB_JOB_ROLLBACK, t);
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

/* ---- shutdown ------------------------------------------------------------------------ */

/* Every pool refuses new work and fails its waiters with "shutting down"; each closes its
 * handles once its running jobs (bounded by mysql.read_timeout_s) are done. Transactions
 * were rolled back when app_stop closed the tracked resources. */
void db_shutdown(struct app *app) {
    for (list_node *n = app->db_pools.next; n != &app->db_pools; n = n->next)
        db_pool_close(LIST_ENTRY(n, db_pool, all_link), "shutting down");
}

/* Forgets what the loop can no longer deliver: completed jobs, waiters, leases. */
static void pool_drop_leftovers(db_pool *p) {
    list_node *n;
    while ((n = list_pop_front(&p->done)) != NULL)
        db_job_free(LIST_ENTRY(n, db_job, link));
    while (!list_empty(&p->waiters)) {
        db_job *j = waiter_pop(p);
        if (j->tx) tx_free(j->tx);
        db_job_free(j);
    }
    for (int i = 0; i < p->size; i++) {
        if (p->workers[i].lease) tx_free(p->workers[i].lease);
        p->workers[i].lease = NULL;
    }
}

/* After the loop: joins every thread (a job still running ends within the read timeout),
 * closes the connections, frees what no Lua object refers to (the rest goes with the
 * objects' __gc in vm_close). */
void db_free(struct app *app) {
    list_node *n = app->db_pools.next;
    while (n != &app->db_pools) {
        db_pool *p = LIST_ENTRY(n, db_pool, all_link);
        n = n->next;
        if (!p->closed_reason) p->closed_reason = "shutting down";
        p->finishing = 1;
        uv_mutex_lock(&p->done_mu);
        p->async_closed = 1;
        uv_mutex_unlock(&p->done_mu);
        pool_join(p);
        pool_drop_leftovers(p);
        p->handles_open = 0; /* the loop has ended: every handle is closed */
        pool_maybe_free(p);
    }
    mysql_library_end();
}
