/* crypto.c: host.crypto. Random tokens and codes from libsodium, and argon2id password
 * hashing on libuv's thread pool: at most crypto.max_concurrent hashes run at once (each
 * takes crypto.argon2_memlimit_kib of memory), at most crypto.max_waiting wait for a turn,
 * and none waits longer than crypto.wait_timeout_ms; beyond those limits: nil, "busy". */
#include <lauxlib.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sched.h"

struct crypto_pool {
    struct app *app;
    int active, max_active;
    size_t waiting, max_waiting;
    unsigned long long opslimit;
    size_t memlimit;
    uint64_t wait_timeout_ms;
    list_node queue;
    uv_timer_t timer; /* expires waiting jobs */
    unsigned long hashes, verifies, busy;
};

typedef struct hash_job {
    uv_work_t work;
    list_node link;
    struct crypto_pool *pool;
    task_t *task;           /* NULL once cancelled */
    int verify;
    uint64_t queued_at;
    char *password;
    size_t password_len;
    char hash[crypto_pwhash_STRBYTES];
    int rc;
} hash_job;

static struct crypto_pool *pool_get(struct app *app) {
    if (app->crypto) return app->crypto;
    struct crypto_pool *p = calloc(1, sizeof *p);
    p->app = app;
    p->max_active = (int)cfg_int(app, "crypto.max_concurrent", 2);
    p->max_waiting = (size_t)cfg_int(app, "crypto.max_waiting", 1000);
    p->opslimit = (unsigned long long)cfg_int(app, "crypto.argon2_opslimit", 2);
    p->memlimit = (size_t)cfg_int(app, "crypto.argon2_memlimit_kib", 19456) * 1024;
    p->wait_timeout_ms = (uint64_t)cfg_int(app, "crypto.wait_timeout_ms", 5000);
    list_init(&p->queue);
    uv_timer_init(app->loop, &p->timer);
    p->timer.data = p;
    app->crypto = p;
    return p;
}

static void job_free(hash_job *j) {
    if (j->password) {
        sodium_memzero(j->password, j->password_len);
        free(j->password);
    }
    sodium_memzero(j->hash, sizeof j->hash);
    free(j);
}

static void work_run(uv_work_t *w) {
    hash_job *j = w->data;
    struct crypto_pool *p = j->pool;
    if (j->verify)
        j->rc = crypto_pwhash_str_verify(j->hash, j->password, j->password_len);
    else
        j->rc = crypto_pwhash_str(j->hash, j->password, j->password_len, p->opslimit, p->memlimit);
}

static void pool_next(struct crypto_pool *p);

static void work_done(uv_work_t *w, int status) {
    hash_job *j = w->data;
    struct crypto_pool *p = j->pool;
    p->active--;
    task_t *t = j->task;
    if (t) {
        if (j->verify) {
            lua_pushboolean(t->co, j->rc == 0);
            sched_resume(t, 1);
        } else if (j->rc == 0) {
            lua_pushstring(t->co, j->hash);
            sched_resume(t, 1);
        } else {
            sched_resume_error(t, "out of memory while hashing");
        }
    }
    job_free(j);
    if (!p->app->stopping) pool_next(p);
}

static void job_start(struct crypto_pool *p, hash_job *j) {
    p->active++;
    j->verify ? p->verifies++ : p->hashes++;
    j->work.data = j;
    uv_queue_work(p->app->loop, &j->work, work_run, work_done);
}

static void expire_waiting(uv_timer_t *timer);

static void arm_timer(struct crypto_pool *p) {
    if (list_empty(&p->queue)) {
        uv_timer_stop(&p->timer);
        return;
    }
    hash_job *head = LIST_ENTRY(p->queue.next, hash_job, link);
    uint64_t now = uv_now(p->app->loop), due = head->queued_at + p->wait_timeout_ms;
    uv_timer_start(&p->timer, expire_waiting, due > now ? due - now : 0, 0);
}

static void pool_next(struct crypto_pool *p) {
    while (p->active < p->max_active && !list_empty(&p->queue)) {
        hash_job *j = LIST_ENTRY(list_pop_front(&p->queue), hash_job, link);
        p->waiting--;
        job_start(p, j);
    }
    arm_timer(p);
}

static void expire_waiting(uv_timer_t *timer) {
    struct crypto_pool *p = timer->data;
    uint64_t now = uv_now(p->app->loop);
    while (!list_empty(&p->queue)) {
        hash_job *j = LIST_ENTRY(p->queue.next, hash_job, link);
        if (j->queued_at + p->wait_timeout_ms > now) break;
        list_remove(&j->link);
        p->waiting--;
        p->busy++;
        task_t *t = j->task;
        job_free(j);
        if (t) sched_resume_error(t, "busy");
    }
    arm_timer(p);
}

static void job_cancel(void *op) {
    hash_job *j = op;
    if (j->link.next != &j->link) { /* still waiting for a turn */
        list_remove(&j->link);
        j->pool->waiting--;
        job_free(j);
        return;
    }
    j->task = NULL; /* running on a worker: dropped when it completes */
}

/* Queues the job or runs it now; returns lua_yield's value, or pushes nil, "busy". */
static int job_submit(lua_State *L, hash_job *j, const char *fname) {
    struct crypto_pool *p = j->pool;
    if (p->app->stopping || (p->active >= p->max_active && p->waiting >= p->max_waiting)) {
        p->busy++;
        job_free(j);
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    j->task = sched_need(L, fname);
    list_init(&j->link);
    if (p->active < p->max_active) {
        job_start(p, j);
    } else {
        j->queued_at = uv_now(p->app->loop);
        list_push_back(&p->queue, &j->link);
        p->waiting++;
        if (p->waiting == 1) arm_timer(p);
    }
    sched_suspend(j->task, job_cancel, j);
    return lua_yield(L, 0);
}

static hash_job *job_new(lua_State *L, int pw_idx) {
    size_t len;
    const char *pw = luaL_checklstring(L, pw_idx, &len);
    hash_job *j = calloc(1, sizeof *j);
    j->pool = pool_get(app_from(L));
    j->password = malloc(len + 1);
    memcpy(j->password, pw, len + 1);
    j->password_len = len;
    return j;
}

/* hash_password(pw) -> "$argon2id$..." | nil, err   (yields) */
static int l_hash_password(lua_State *L) {
    sched_need(L, "host.crypto.hash_password");
    return job_submit(L, job_new(L, 1), "host.crypto.hash_password");
}

/* verify_password(hash, pw) -> true | false | nil, err   (yields) */
static int l_verify_password(lua_State *L) {
    size_t hlen;
    const char *hash = luaL_checklstring(L, 1, &hlen);
    sched_need(L, "host.crypto.verify_password");
    if (hlen >= crypto_pwhash_STRBYTES || strncmp(hash, "$argon2id$", 10) != 0) {
        luaL_checkstring(L, 2);
        lua_pushboolean(L, 0); /* not an argon2id hash: never matches */
        return 1;
    }
    hash_job *j = job_new(L, 2);
    j->verify = 1;
    memcpy(j->hash, hash, hlen + 1);
    return job_submit(L, j, "host.crypto.verify_password");
}

/* needs_rehash(hash) -> bool: made with other cost parameters than the configured ones */
static int l_needs_rehash(lua_State *L) {
    struct crypto_pool *p = pool_get(app_from(L));
    const char *hash = luaL_checkstring(L, 1);
    lua_pushboolean(L, crypto_pwhash_str_needs_rehash(hash, p->opslimit, p->memlimit) != 0);
    return 1;
}

/* random_hex(nbytes) -> 2*nbytes hex characters from the OS's CSPRNG */
static int l_random_hex(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "must be 1..4096 bytes");
    unsigned char bin[4096];
    char hex[8193];
    randombytes_buf(bin, (size_t)n);
    sodium_bin2hex(hex, sizeof hex, bin, (size_t)n);
    lua_pushlstring(L, hex, (size_t)n * 2);
    return 1;
}

/* random_uniform(n) -> an integer in [0, n), uniformly distributed */
static int l_random_uniform(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 0xffffffffLL, 1, "must be 1..2^32-1");
    lua_pushinteger(L, (lua_Integer)randombytes_uniform((uint32_t)n));
    return 1;
}

/* constant_time_equal(a, b) -> bool, for comparing secrets (tokens, codes) */
static int l_equal(lua_State *L) {
    size_t la, lb;
    const char *a = luaL_checklstring(L, 1, &la), *b = luaL_checklstring(L, 2, &lb);
    lua_pushboolean(L, la == lb && sodium_memcmp(a, b, la) == 0);
    return 1;
}

static int l_stats(lua_State *L) {
    struct crypto_pool *p = pool_get(app_from(L));
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, p->active);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, (lua_Integer)p->waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushnumber(L, (lua_Number)p->hashes);
    lua_setfield(L, -2, "hashes");
    lua_pushnumber(L, (lua_Number)p->verifies);
    lua_setfield(L, -2, "verifies");
    lua_pushnumber(L, (lua_Number)p->busy);
    lua_setfield(L, -2, "busy");
    return 1;
}

void crypto_shutdown(struct app *app) {
    struct crypto_pool *p = app->crypto;
    if (!p) return;
    while (!list_empty(&p->queue)) {
        hash_job *j = LIST_ENTRY(list_pop_front(&p->queue), hash_job, link);
        task_t *t = j->task;
        job_free(j);
        if (t) sched_resume_error(t, "shutting down");
    }
    uv_close((uv_handle_t *)&p->timer, NULL);
    /* running jobs finish on the thread pool; uv_run waits for them; p is freed with the
     * process */
}

int crypto_open(lua_State *L) {
    if (sodium_init() < 0) return luaL_error(L, "libsodium failed to initialise");
    static const luaL_Reg fns[] = {{"hash_password", l_hash_password},
                                   {"verify_password", l_verify_password},
                                   {"needs_rehash", l_needs_rehash},
                                   {"random_hex", l_random_hex},
                                   {"random_uniform", l_random_uniform},
                                   {"constant_time_equal", l_equal},
                                   {"stats", l_stats},
                                   {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
