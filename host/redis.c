/* redis.c: host.redis, an async Redis client on the loop (hiredis 0.14 through the patched
 * libuv adapter in redis_uv.h). A client is a pool of connections; each connection is a
 * small state machine driven by one uv timer (reconnect backoff, connect timeout, command
 * watchdog). A request (one command or one pipeline) is answered by resuming its task. */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"
#include "listen.h"
#include "log.h"
#include "modules.h"
#include "redis_uv.h"
#include "sched.h"

#define CLIENT_MT "chathost.redis_client"
#define POOL_MAX 64
#define FREE_REQS_MAX 256      /* request structs kept for reuse */
#define WIRE_KEEP (256 * 1024) /* a format buffer grown beyond this is released after use */
#define BUSY_LOG_INTERVAL_MS 10000

/* Commands that would change one pooled connection's state behind the pool's back. */
static const char *const UNSUPPORTED[] = {
    "subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
    "punsubscribe", "sunsubscribe", "monitor",    "select",
    "quit",         "reset",        NULL};

enum conn_state {
    CONN_DOWN,       /* no context; the timer starts the next connect */
    CONN_CONNECTING, /* connect in progress; the timer abandons it */
    CONN_CONNECTED,  /* hiredis said connected; the timer (0 ms) sends the handshake */
    CONN_FAILED,     /* hiredis said refused (and frees the context); the timer handles it */
    CONN_HANDSHAKE,  /* AUTH / SELECT / PING sent; the timer is the command watchdog */
    CONN_READY,      /* takes commands; the timer is the command watchdog */
    CONN_BROKEN,     /* given up (muted, requests answered); the timer (0 ms) frees it */
    CONN_CLOSED,
};

enum req_kind { REQ_CALL, REQ_PIPELINE, REQ_AUTH, REQ_SELECT, REQ_PING };

typedef struct redis_opts {
    char host[INET_ADDRSTRLEN];
    char password[512]; /* "" when none */
    long long port, db, pool_size, max_pending;
    long long connect_timeout_ms, command_timeout_ms, reconnect_min_ms, reconnect_max_ms;
} redis_opts;

typedef struct redis_client redis_client;
typedef struct client_ud client_ud;

typedef struct redis_conn {
    redis_client *client;
    redisAsyncContext *ac; /* ours to free in CONNECTING..READY and BROKEN, else NULL */
    enum conn_state state;
    uv_timer_t timer;
    list_node pending;    /* requests sent on ac, oldest first */
    long long backoff_ms; /* delay before the next reconnect */
    int handshake_left;
    int had_failure; /* failed since it was last ready */
    char error[128]; /* why the connect failed (CONN_FAILED) */
    const void *overdue;       /* the request found overdue once (with its deadline): its */
    uint64_t overdue_deadline; /* reply may be unread in the socket, see conn_watchdog */
} redis_conn;

struct redis_client {
    tracked track;  /* clients made by host.redis.new only */
    list_node link; /* in the pool's list of open clients */
    struct app *app;
    redis_opts opts;
    redis_conn *conns;
    int next;          /* round-robin position */
    list_node waiting; /* requests held while the first connections come up */
    int starting;      /* no connection was ready yet and none failed */
    int outage;        /* a failure was logged and nothing recovered since */
    int lost;          /* in this outage a connection was lost or refused (not only a
                        * slow command): the server may have restarted empty */
    int config_logged; /* a handshake error was logged in this outage */
    uint64_t outage_since;
    uint64_t busy_logged_at;
    int closed, orphan; /* orphan: its Lua object is gone; closes once idle */
    int open_timers;
    int reqs_alive;    /* requests hiredis may still call back */
    long long pending; /* commands sent or held, not answered by the server yet */
    client_ud *ud;
    double commands, timeouts, reconnects, errors;
    char last_error[160];
};

struct client_ud {
    redis_client *client; /* NULL once the client is freed */
};

typedef struct redis_req {
    list_node link; /* in conn->pending, client->waiting, the free list or a local list */
    redis_client *client;
    redis_conn *conn;  /* set once sent */
    task_t *task;      /* NULL once answered or cancelled */
    uint64_t deadline; /* loop time by which the next reply is due */
    int ncmds, nreplies;
    int results_ref; /* pipeline: registry ref of the result table */
    enum req_kind kind;
    int sent;
    char *held; /* held requests: the command ends, then the commands */
} redis_req;

typedef struct wire_buf {
    buf_t bytes;
    size_t *ends; /* ends[i]: offset just past command i */
    int ncmds, cap_cmds;
} wire_buf;

struct redis_pool {
    struct app *app;
    redis_client *def; /* the process's default client, built on first use */
    list_node clients; /* every open client */
    wire_buf wire;     /* reused to format every command */
    list_node free_reqs;
    int nfree;
    char def_error[200];
    int on_reconnect_ref; /* host.redis.on_reconnect(fn): run when def is back after an outage */
};

static void conn_timer_fired(uv_timer_t *timer);
static void client_close(redis_client *c, const char *reason);

/* ---- the wire format (RESP), built in a reusable buffer ------------------------------ */

static void wire_append(wire_buf *w, const char *s, size_t n) {
    buf_append(&w->bytes, s, n);
}

static void wire_header(wire_buf *w, char mark, size_t n) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%c%zu\r\n", mark, n);
    wire_append(w, tmp, (size_t)k);
}

static void wire_bulk(wire_buf *w, const char *s, size_t n) {
    wire_header(w, '$', n);
    wire_append(w, s, n);
    wire_append(w, "\r\n", 2);
}

/* Ends a command. A NUL (not counted in len) follows the last one: hiredis 0.14 reads the
 * byte just past a command's first argument (nextArgument, `hasnext`), which is past the
 * end of a one-word command like PING. */
static void wire_end_command(wire_buf *w) {
    if (w->ncmds == w->cap_cmds) {
        w->cap_cmds = w->cap_cmds ? w->cap_cmds * 2 : 16;
        w->ends = xrealloc(w->ends, (size_t)w->cap_cmds * sizeof *w->ends);
    }
    w->ends[w->ncmds++] = w->bytes.len;
    wire_append(w, "", 1);
    w->bytes.len--;
}

static void wire_reset(wire_buf *w) {
    w->bytes.len = 0;
    w->ncmds = 0;
}

/* Called once the formatted commands were handed on: trims a buffer a huge value grew. */
static void wire_done(wire_buf *w) {
    wire_reset(w);
    if (w->bytes.cap > WIRE_KEEP) buf_free(&w->bytes);
}

/* Appends the string or number at idx as one bulk string; -1 for any other type. */
static int wire_lua_arg(wire_buf *w, lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        wire_bulk(w, s, n);
        return 0;
    }
    if (lua_type(L, idx) == LUA_TNUMBER) {
        char tmp[40];
        wire_bulk(w, tmp, json_format_number(tmp, sizeof tmp, lua_tonumber(L, idx)));
        return 0;
    }
    return -1;
}

/* ---- argument checking and formatting (raises on misuse) ----------------------------- */

/* NULL when the value at idx is a usable command name, else why not (on L's stack). */
static const char *command_problem(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING) return "the command name must be a string";
    const char *name = lua_tostring(L, idx);
    for (const char *const *u = UNSUPPORTED; *u; u++)
        if (strcasecmp(name, *u) == 0)
            return lua_pushfstring(L, "%s is not supported on pooled connections", name);
    return NULL;
}

/* Formats arguments first..top as one command. */
static void format_call(lua_State *L, wire_buf *w, int first) {
    int top = lua_gettop(L);
    wire_reset(w);
    if (top < first) luaL_argerror(L, first, "expected a command name");
    const char *problem = command_problem(L, first);
    if (problem) luaL_argerror(L, first, problem);
    wire_header(w, '*', (size_t)(top - first + 1));
    for (int i = first; i <= top; i++)
        if (wire_lua_arg(w, L, i) != 0)
            luaL_argerror(
                L, i,
                lua_pushfstring(L, "expected a string or a number, got %s", luaL_typename(L, i)));
    wire_end_command(w);
}

/* Formats the command table on top of the stack (command number i of the pipeline). */
static void format_pipeline_entry(lua_State *L, wire_buf *w, int arg, int i) {
    if (!lua_istable(L, -1))
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "command %d: expected a table {name, args...}", i));
    int argc = (int)lua_objlen(L, -1);
    if (argc == 0) luaL_argerror(L, arg, lua_pushfstring(L, "command %d is empty", i));
    wire_header(w, '*', (size_t)argc);
    for (int j = 1; j <= argc; j++) {
        lua_rawgeti(L, -1, j);
        const char *problem = j == 1 ? command_problem(L, -1) : NULL;
        if (problem) luaL_argerror(L, arg, lua_pushfstring(L, "command %d: %s", i, problem));
        if (wire_lua_arg(w, L, -1) != 0)
            luaL_argerror(L, arg,
                          lua_pushfstring(L,
                                          "command %d, argument %d: expected a string "
                                          "or a number, got %s",
                                          i, j, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    wire_end_command(w);
}

static void format_pipeline(lua_State *L, wire_buf *w, int arg) {
    luaL_checktype(L, arg, LUA_TTABLE);
    wire_reset(w);
    int n = (int)lua_objlen(L, arg);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, arg, i);
        format_pipeline_entry(L, w, arg, i);
        lua_pop(L, 1);
    }
}

/* ---- replies to Lua values -------------------------------------------------------------- */

/* Pushes reply as a Lua value. Nested: nil becomes host.null and an error {err = text}. */
static void reply_push(lua_State *L, const redisReply *r, int nested) {
    lua_checkstack(L, 4);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            reply_push(L, r->element[i], 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default: /* REDIS_REPLY_NIL */
        if (nested)
            lua_pushlightuserdata(L, NULL); /* host.null (cjson.null) */
        else
            lua_pushnil(L);
    }
}

/* ---- requests -------------------------------------------------------------------------- */

static void client_maybe_free(redis_client *c);

static redis_req *req_new(redis_client *c, enum req_kind kind, int ncmds) {
    struct redis_pool *p = c->app->redis;
    redis_req *r;
    if (p->nfree > 0) {
        r = LIST_ENTRY(list_pop_front(&p->free_reqs), redis_req, link);
        p->nfree--;
    } else {
        r = xrealloc(NULL, sizeof *r);
    }
    memset(r, 0, sizeof *r);
    list_init(&r->link);
    r->client = c;
    r->kind = kind;
    r->ncmds = ncmds;
    r->results_ref = LUA_NOREF;
    c->reqs_alive++;
    if (kind <= REQ_PIPELINE) c->pending += ncmds;
    return r;
}

static void req_unref_results(redis_req *r) {
    if (r->results_ref == LUA_NOREF) return;
    luaL_unref(r->client->app->L, LUA_REGISTRYINDEX, r->results_ref);
    r->results_ref = LUA_NOREF;
}

/* Releases r. May free its client (the last thing keeping a closed client alive) or close
 * an orphaned one; never runs Lua. */
static void req_free(redis_req *r) {
    redis_client *c = r->client;
    struct redis_pool *p = c->app->redis;
    list_remove(&r->link);
    req_unref_results(r);
    free(r->held);
    if (r->kind <= REQ_PIPELINE) c->pending -= r->ncmds;
    c->reqs_alive--;
    if (p->nfree < FREE_REQS_MAX && !c->app->stopping) {
        list_push_back(&p->free_reqs, &r->link);
        p->nfree++;
    } else {
        free(r);
    }
    client_maybe_free(c);
}

/* The task waiting on r was cancelled: its reply, when it comes, is dropped. */
static void req_cancel(void *op) {
    redis_req *r = op;
    r->task = NULL;
    req_unref_results(r);
    if (!r->sent) req_free(r); /* held: hiredis never saw it */
}

/* Answers every request in list with nil, msg. Runs Lua: callers call it last, with msg in
 * their own buffer. Requests hiredis knows about stay allocated until it calls back. */
static void reqs_fail(list_node *list, const char *msg) {
    list_node *n;
    while ((n = list_pop_front(list))) {
        redis_req *r = LIST_ENTRY(n, redis_req, link);
        task_t *t = r->task;
        r->task = NULL;
        req_unref_results(r);
        if (!r->sent) req_free(r);
        if (t) sched_resume_error(t, msg);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Hands r's commands (formatted in data, command i ending at ends[i]) to conn's context
 * and starts watching for the replies. Returns 0, or -1 when the context took none. */
static int req_send(redis_conn *conn, redis_req *r, const char *data, const size_t *ends) {
    size_t start = 0;
    for (int i = 0; i < r->ncmds; i++) {
        if (redisAsyncFormattedCommand(conn->ac, on_reply, r, data + start, ends[i] - start) !=
            REDIS_OK) {
            if (i == 0) return -1;
            log_error("redis: internal: a pipeline was cut after %d commands", i);
            if (r->kind <= REQ_PIPELINE) conn->client->pending -= r->ncmds - i;
            r->ncmds = i; /* the replies still owed */
            break;
        }
        start = ends[i];
    }
    r->sent = 1;
    r->conn = conn;
    r->deadline = uv_now(conn->client->app->loop) + (uint64_t)conn->client->opts.command_timeout_ms;
    list_push_back(&conn->pending, &r->link);
    if (!uv_is_active((uv_handle_t *)&conn->timer))
        uv_timer_start(&conn->timer, conn_timer_fired,
                       (uint64_t)conn->client->opts.command_timeout_ms, 0);
    return 0;
}

/* Keeps a copy of the formatted commands (and the NUL after them) in r until a connection
 * is ready. */
static void req_hold(redis_client *c, redis_req *r, const wire_buf *w) {
    size_t ends_size = (size_t)w->ncmds * sizeof *w->ends;
    r->held = xrealloc(NULL, ends_size + w->bytes.len + 1);
    memcpy(r->held, w->ends, ends_size);
    memcpy(r->held + ends_size, w->bytes.data, w->bytes.len + 1);
    list_push_back(&c->waiting, &r->link);
}

/* ---- clients: failures, recovery, logging --------------------------------------------- */

static const char *client_name(redis_client *c, char *buf, size_t size) {
    snprintf(buf, size, "redis %s:%lld", c->opts.host, c->opts.port);
    return buf;
}

/* Records a failure (err: what happened; config: a handshake error such as a wrong
 * password). Logs the first failure of an outage, not every retry. When it ends the
 * starting phase, the held requests move to `held` for the caller to fail. */
static void client_note_failure(redis_client *c, const char *err, int config, list_node *held) {
    char name[96];
    snprintf(c->last_error, sizeof c->last_error, "%s", err);
    c->errors++;
    if (config && !c->config_logged) {
        c->config_logged = 1;
        log_error("%s: %s (check the redis settings); retrying with backoff",
                  client_name(c, name, sizeof name), err);
    } else if (!c->outage && !config) {
        log_warn("%s: %s; reconnecting with backoff", client_name(c, name, sizeof name), err);
    }
    if (!c->outage) c->outage_since = uv_now(c->app->loop);
    c->outage = 1;
    if (c->starting) {
        c->starting = 0;
        list_splice_tail(&c->waiting, held);
    }
}

/* Runs the on_reconnect function in a task of its own (the server behind the default
 * client may have restarted empty: the scripts put back what they keep there). */
static void run_on_reconnect(redis_client *c) {
    struct redis_pool *p = c->app->redis;
    if (c != p->def || p->on_reconnect_ref == LUA_NOREF || c->app->stopping) return;
    lua_State *L = c->app->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->on_reconnect_ref);
    sched_spawn(c->app, L, 0, "redis on_reconnect", NULL, NULL);
}

static void client_note_ready(redis_client *c) {
    char name[96];
    c->starting = 0;
    if (!c->outage) return;
    log_info("%s: connected again after %llu ms", client_name(c, name, sizeof name),
             (unsigned long long)(uv_now(c->app->loop) - c->outage_since));
    c->outage = 0;
    c->config_logged = 0;
    if (c->lost) run_on_reconnect(c); /* a command timeout alone says nothing about the data */
    c->lost = 0;
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_arm(redis_conn *conn, uint64_t ms) {
    uv_timer_start(&conn->timer, conn_timer_fired, ms, 0);
}

static void conn_wait_retry(redis_conn *conn) {
    redis_opts *o = &conn->client->opts;
    conn->state = CONN_DOWN;
    conn->had_failure = 1;
    conn_arm(conn, (uint64_t)conn->backoff_ms);
    conn->backoff_ms =
        conn->backoff_ms * 2 < o->reconnect_max_ms ? conn->backoff_ms * 2 : o->reconnect_max_ms;
}

/* The connection went down (state already updated): answers what was sent on it with
 * nil, req_msg and, if this ends the starting phase, the held requests with
 * nil, "redis unavailable: ...". Runs Lua: callers call it last. */
static void conn_answer_all(redis_conn *conn, const char *err, const char *req_msg, int config,
                            int timeout) {
    redis_client *c = conn->client;
    list_node lost, held;
    list_init(&lost);
    list_init(&held);
    list_splice_tail(&conn->pending, &lost);
    for (list_node *n = lost.next; timeout && n != &lost; n = n->next)
        if (LIST_ENTRY(n, redis_req, link)->kind <= REQ_PIPELINE) c->timeouts++;
    client_note_failure(c, err, config, &held);
    char lost_msg[200], held_msg[200];
    snprintf(lost_msg, sizeof lost_msg, "%s", req_msg);
    snprintf(held_msg, sizeof held_msg, "redis unavailable: %s", err);
    reqs_fail(&lost, lost_msg);
    reqs_fail(&held, held_msg);
}

/* Gives up on a connected context (a timeout, a failed handshake): it is muted at once and
 * freed from the timer, outside any hiredis callback. Runs Lua. */
static void conn_break(redis_conn *conn, const char *why, int config) {
    char err[160];
    snprintf(err, sizeof err, "%s", why);
    conn->state = CONN_BROKEN;
    redis_uv_mute(conn->ac);
    conn_arm(conn, 0);
    int timeout = strcmp(err, "timeout") == 0;
    conn_answer_all(conn, err, err, config, timeout);
}

/* hiredis is freeing conn's context on its own (server closed, read error): forget it. */
static void conn_lost(redis_conn *conn, redisAsyncContext *ac) {
    char err[160], msg[200];
    snprintf(err, sizeof err, "connection lost: %s",
             ac->c.errstr[0] ? ac->c.errstr : "closed by the server");
    snprintf(msg, sizeof msg, "redis %s", err);
    ac->data = NULL;
    conn->ac = NULL;
    conn->client->lost = 1;
    conn_wait_retry(conn);
    conn_answer_all(conn, err, msg, 0, 0);
}

/* A connect attempt failed (message in conn->error); the context is already gone. */
static void conn_failed(redis_conn *conn) {
    char err[160];
    snprintf(err, sizeof err, "%s", conn->error);
    conn->client->lost = 1;
    conn_wait_retry(conn);
    conn_answer_all(conn, err, err, 0, 0);
}

static void conn_send_held(redis_conn *conn) {
    redis_client *c = conn->client;
    list_node failed;
    list_init(&failed);
    list_node *n;
    while ((n = list_pop_front(&c->waiting))) {
        redis_req *r = LIST_ENTRY(n, redis_req, link);
        size_t *ends = (size_t *)r->held;
        const char *data = r->held + (size_t)r->ncmds * sizeof *ends;
        if (req_send(conn, r, data, ends) != 0) {
            list_push_back(&failed, &r->link);
            continue;
        }
        free(r->held);
        r->held = NULL;
    }
    reqs_fail(&failed, "redis unavailable: the connection refused the command");
}

static void conn_ready(redis_conn *conn) {
    redis_client *c = conn->client;
    conn->state = CONN_READY;
    conn->backoff_ms = c->opts.reconnect_min_ms;
    if (conn->had_failure) c->reconnects++;
    conn->had_failure = 0;
    client_note_ready(c);
    conn_send_held(conn);
}

static void on_connect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redis_conn *conn = ac->data;
    if (!conn) return;
    if (status != REDIS_OK) {
        snprintf(conn->error, sizeof conn->error, "%s",
                 ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        ac->data = NULL;
        conn->ac = NULL; /* hiredis frees it when we return */
        conn->state = CONN_FAILED;
    } else {
        conn->state = CONN_CONNECTED;
    }
    conn_arm(conn, 0); /* the rest runs from the timer: this callback may not run Lua */
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redis_conn *conn = ac->data;
    if (!conn || conn->ac != ac) return;
    if (conn->state == CONN_BROKEN) { /* hiredis beat our timer to it */
        ac->data = NULL;
        conn->ac = NULL;
        return;
    }
    conn_lost(conn, ac);
}

static void conn_connect(redis_conn *conn) {
    redis_client *c = conn->client;
    redisAsyncContext *ac = redisAsyncConnect(c->opts.host, (int)c->opts.port);
    const char *err = !ac ? "out of memory" : ac->err ? ac->errstr : NULL;
    if (!err && redis_uv_attach(ac, c->app->loop) != REDIS_OK) err = "cannot watch the socket";
    if (err) {
        snprintf(conn->error, sizeof conn->error, "%s", err);
        if (ac) redisAsyncFree(ac);
        conn_failed(conn);
        return;
    }
    set_cloexec(ac->c.fd); /* hiredis opens it without: children must not inherit it */
    ac->data = conn;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn->ac = ac;
    conn->state = CONN_CONNECTING;
    conn_arm(conn, (uint64_t)c->opts.connect_timeout_ms);
}

static void conn_abandon_connect(redis_conn *conn) {
    redisAsyncContext *ac = conn->ac;
    conn->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac); /* never connected: no callbacks */
    snprintf(conn->error, sizeof conn->error, "connect timeout (%lld ms)",
             conn->client->opts.connect_timeout_ms);
    conn_failed(conn);
}

/* Sends one handshake command (arg may be NULL); returns 0 or -1. */
static int handshake_send(redis_conn *conn, enum req_kind kind, const char *cmd, const char *arg) {
    wire_buf *w = &conn->client->app->redis->wire;
    wire_reset(w);
    wire_header(w, '*', arg ? 2 : 1);
    wire_bulk(w, cmd, strlen(cmd));
    if (arg) wire_bulk(w, arg, strlen(arg));
    wire_end_command(w);
    redis_req *r = req_new(conn->client, kind, 1);
    int rc = req_send(conn, r, w->bytes.data, w->ends);
    wire_done(w);
    if (rc != 0) req_free(r);
    if (rc == 0) conn->handshake_left++;
    return rc;
}

/* AUTH and SELECT when configured, else PING: a connection counts as ready only once the
 * server has answered (the kernel accepts connects even for a stopped server). */
static void conn_handshake(redis_conn *conn) {
    redis_opts *o = &conn->client->opts;
    char db[24];
    int rc = 0;
    conn->state = CONN_HANDSHAKE;
    conn->handshake_left = 0;
    if (o->password[0]) rc = handshake_send(conn, REQ_AUTH, "AUTH", o->password);
    snprintf(db, sizeof db, "%lld", o->db);
    if (rc == 0 && o->db != 0) rc = handshake_send(conn, REQ_SELECT, "SELECT", db);
    if (rc == 0 && conn->handshake_left == 0) rc = handshake_send(conn, REQ_PING, "PING", NULL);
    if (rc != 0) conn_break(conn, "cannot send the handshake", 0);
}

static void handshake_reply(redis_conn *conn, redis_req *r, const redisReply *reply) {
    if (reply->type == REDIS_REPLY_ERROR) {
        const char *what = r->kind == REQ_AUTH ? "AUTH" : r->kind == REQ_SELECT ? "SELECT" : "PING";
        char err[160];
        snprintf(err, sizeof err, "%s failed: %.*s", what, (int)reply->len, reply->str);
        conn_break(conn, err, 1);
        return;
    }
    if (--conn->handshake_left == 0) conn_ready(conn);
}

/* The command watchdog: the oldest request on the connection is overdue -> broken. But
 * libuv runs timers before it polls: after a loop iteration that ran longer than the
 * command timeout (a busy process on a loaded machine), the reply may be in the socket
 * unread. So an overdue request is given one poll first (the timer fires again after it)
 * and the connection is broken only when that request is still waiting then; otherwise
 * one slow iteration failed every command on the connection at once. */
static void conn_watchdog(redis_conn *conn) {
    if (list_empty(&conn->pending)) return;
    redis_req *head = LIST_ENTRY(conn->pending.next, redis_req, link);
    uint64_t now = uv_now(conn->client->app->loop);
    if (head->deadline > now) {
        conn_arm(conn, head->deadline - now);
        return;
    }
    if (conn->overdue != head || conn->overdue_deadline != head->deadline) {
        conn->overdue = head;
        conn->overdue_deadline = head->deadline;
        conn_arm(conn, 1);
        return;
    }
    conn_break(conn, "timeout", 0);
}

/* Frees a broken context from the timer. State first: freeing calls back into us and may
 * close the client. */
static void conn_reap(redis_conn *conn) {
    redisAsyncContext *ac = conn->ac;
    conn->ac = NULL;
    conn_wait_retry(conn);
    if (!ac) return;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void conn_timer_fired(uv_timer_t *timer) {
    redis_conn *conn = timer->data;
    switch (conn->state) {
    case CONN_DOWN:
        conn_connect(conn);
        break;
    case CONN_CONNECTING:
        conn_abandon_connect(conn);
        break;
    case CONN_CONNECTED:
        conn_handshake(conn);
        break;
    case CONN_FAILED:
        conn_failed(conn);
        break;
    case CONN_HANDSHAKE:
    case CONN_READY:
        conn_watchdog(conn);
        break;
    case CONN_BROKEN:
        conn_reap(conn);
        break;
    case CONN_CLOSED:
        break;
    }
}

static void call_reply(redis_req *r, const redisReply *reply) {
    task_t *t = r->task;
    r->task = NULL;
    int n = 1;
    if (t && reply->type == REDIS_REPLY_ERROR) {
        lua_checkstack(t->co, 2);
        lua_pushnil(t->co);
        lua_pushlstring(t->co, reply->str, reply->len);
        n = 2;
    } else if (t) {
        reply_push(t->co, reply, 0);
    }
    req_free(r);
    if (t) sched_resume(t, n);
}

static void pipeline_reply(redis_req *r, const redisReply *reply) {
    task_t *t = r->task;
    if (t) {
        lua_checkstack(t->co, 2);
        lua_rawgeti(t->co, LUA_REGISTRYINDEX, r->results_ref);
        reply_push(t->co, reply, 1);
        lua_rawseti(t->co, -2, r->nreplies);
        lua_pop(t->co, 1);
    }
    r->deadline = uv_now(r->client->app->loop) + (uint64_t)r->client->opts.command_timeout_ms;
    if (r->nreplies < r->ncmds) return;
    r->task = NULL;
    if (t) lua_rawgeti(t->co, LUA_REGISTRYINDEX, r->results_ref);
    req_free(r);
    if (t) sched_resume(t, 1);
}

/* hiredis calls this once per command: with the reply, or with NULL when the context is
 * being freed (by us, or by hiredis after an I/O error). */
static void on_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata) {
    redis_req *r = privdata;
    const redisReply *reply = reply_ptr;
    redis_conn *conn = ac->data;
    int live =
        conn && conn->ac == ac && (conn->state == CONN_HANDSHAKE || conn->state == CONN_READY);
    r->nreplies++;
    if (!reply || !live) {
        if (!reply && live) conn_lost(conn, ac);
        if (r->nreplies >= r->ncmds) req_free(r);
        return;
    }
    if (r->kind >= REQ_AUTH) {
        list_remove(&r->link);
        handshake_reply(conn, r, reply);
        req_free(r);
        return;
    }
    if (r->kind == REQ_PIPELINE) {
        pipeline_reply(r, reply);
        return;
    }
    call_reply(r, reply);
}

/* ---- clients --------------------------------------------------------------------------- */

static void conn_timer_closed(uv_handle_t *h) {
    redis_conn *conn = h->data;
    redis_client *c = conn->client;
    c->open_timers--;
    client_maybe_free(c);
}

static void conn_init(redis_client *c, redis_conn *conn) {
    conn->client = c;
    conn->state = CONN_DOWN;
    conn->backoff_ms = c->opts.reconnect_min_ms;
    list_init(&conn->pending);
    uv_timer_init(c->app->loop, &conn->timer);
    conn->timer.data = conn;
    c->open_timers++;
    conn_arm(conn, 0);
}

static redis_client *client_new(struct app *app, const redis_opts *o) {
    redis_client *c = xcalloc(1, sizeof *c);
    c->app = app;
    c->opts = *o;
    c->conns = xcalloc((size_t)o->pool_size, sizeof *c->conns);
    c->starting = 1;
    list_init(&c->waiting);
    list_init(&c->track.link);
    snprintf(c->last_error, sizeof c->last_error, "not connected");
    list_push_back(&app->redis->clients, &c->link);
    for (int i = 0; i < o->pool_size; i++)
        conn_init(c, &c->conns[i]);
    return c;
}

/* Frees c once it is closed and nothing (timer, request hiredis holds) refers to it; closes
 * an orphaned client once it is idle. */
static void client_maybe_free(redis_client *c) {
    if (c->orphan && !c->closed && c->pending == 0) {
        client_close(c, "redis client closed");
        return;
    }
    if (!c->closed || c->open_timers > 0 || c->reqs_alive > 0) return;
    if (c->ud) c->ud->client = NULL;
    if (c->app->redis->def == c) c->app->redis->def = NULL;
    memset(c->opts.password, 0, sizeof c->opts.password);
    free(c->conns);
    free(c);
}

/* Detaches conn's context (returned for the caller to free) and its requests. */
static redisAsyncContext *conn_close(redis_conn *conn, list_node *lost) {
    redisAsyncContext *ac = conn->ac;
    conn->state = CONN_CLOSED;
    conn->ac = NULL;
    uv_timer_stop(&conn->timer);
    uv_close((uv_handle_t *)&conn->timer, conn_timer_closed);
    list_splice_tail(&conn->pending, lost);
    if (ac) ac->data = NULL;
    return ac;
}

/* Closes c: its requests get nil, reason; its contexts are freed (by hiredis after the
 * current callback when called from one of theirs); c is freed when the last handle closes. */
static void client_close(redis_client *c, const char *reason) {
    if (c->closed) return;
    c->closed = 1;
    track_del(&c->track);
    list_remove(&c->link);
    list_node lost;
    list_init(&lost);
    redisAsyncContext *acs[POOL_MAX];
    int nacs = 0;
    for (int i = 0; i < c->opts.pool_size; i++) {
        redisAsyncContext *ac = conn_close(&c->conns[i], &lost);
        if (ac) acs[nacs++] = ac;
    }
    list_splice_tail(&c->waiting, &lost);
    char msg[160];
    snprintf(msg, sizeof msg, "%s", c->app->stopping ? "shutting down" : reason);
    reqs_fail(&lost, msg);
    for (int i = 0; i < nacs; i++)
        redisAsyncFree(acs[i]);
}

static void client_track_close(tracked *t) {
    client_close(LIST_ENTRY(t, redis_client, track), "redis client closed");
}

static redis_conn *client_pick(redis_client *c) {
    for (int i = 0; i < c->opts.pool_size; i++) {
        int k = (c->next + i) % (int)c->opts.pool_size;
        if (c->conns[k].state != CONN_READY) continue;
        c->next = (k + 1) % (int)c->opts.pool_size;
        return &c->conns[k];
    }
    return NULL;
}

static int push_error(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Warns (at most every BUSY_LOG_INTERVAL_MS) that the in-flight commands near max_pending,
 * or reached it (busy). */
static void client_warn_pending(redis_client *c, int busy) {
    uint64_t now = uv_now(c->app->loop);
    if (c->busy_logged_at != 0 && now - c->busy_logged_at < BUSY_LOG_INTERVAL_MS) return;
    char name[96];
    c->busy_logged_at = now;
    log_warn("%s: %lld commands in flight, max_pending is %lld%s",
             client_name(c, name, sizeof name), c->pending, c->opts.max_pending,
             busy ? ": answering busy" : "");
}

/* Sends the commands formatted in the pool's buffer as one request on c and yields; or
 * returns nil, err at once ("busy", "redis unavailable: ..."). */
static int client_request(lua_State *L, redis_client *c, task_t *t, enum req_kind kind) {
    wire_buf *w = &c->app->redis->wire;
    redis_conn *conn = client_pick(c);
    if (c->pending + w->ncmds > c->opts.max_pending) {
        wire_done(w);
        client_warn_pending(c, 1);
        return push_error(L, "busy");
    }
    if (!conn && !c->starting) {
        wire_done(w);
        lua_pushnil(L);
        lua_pushfstring(L, "redis unavailable: %s", c->last_error);
        return 2;
    }
    redis_req *r = req_new(c, kind, w->ncmds);
    if (kind == REQ_PIPELINE) {
        lua_createtable(L, w->ncmds, 0);
        r->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (!conn)
        req_hold(c, r, w);
    else if (req_send(conn, r, w->bytes.data, w->ends) != 0) {
        wire_done(w);
        req_free(r);
        return push_error(L, "redis unavailable: the connection refused the command");
    }
    c->commands += w->ncmds;
    if (c->pending * 5 >= c->opts.max_pending * 4) client_warn_pending(c, 0);
    wire_done(w);
    r->task = t;
    sched_suspend(t, req_cancel, r);
    return lua_yield(L, 0);
}

/* ---- options --------------------------------------------------------------------------- */

/* Copies host as an IPv4 literal ("localhost" becomes 127.0.0.1); -1 for anything else:
 * hiredis would resolve a name with a blocking getaddrinfo on the loop thread. */
static int host_normalise(const char *host, char *out, size_t size) {
    struct in_addr a;
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &a) != 1) return -1;
    snprintf(out, size, "%s", host);
    return 0;
}

static const struct int_option {
    const char *name;
    size_t offset;
    long long min, max;
} INT_OPTIONS[] = {
    {"port", offsetof(redis_opts, port), 1, 65535},
    {"db", offsetof(redis_opts, db), 0, 255},
    {"pool_size", offsetof(redis_opts, pool_size), 1, POOL_MAX},
    {"max_pending", offsetof(redis_opts, max_pending), 1, 10000000},
    {"connect_timeout_ms", offsetof(redis_opts, connect_timeout_ms), 1, 600000},
    {"command_timeout_ms", offsetof(redis_opts, command_timeout_ms), 1, 3600000},
    {"reconnect_min_ms", offsetof(redis_opts, reconnect_min_ms), 1, 600000},
    {"reconnect_max_ms", offsetof(redis_opts, reconnect_max_ms), 1, 3600000},
    {NULL, 0, 0, 0},
};

#define OPT_INT(o, opt) (*(long long *)((char *)(o) + (opt)->offset))

/* Fills o from the config's redis section. Returns 0, or -1 with err set. */
static int opts_from_config(struct app *app, redis_opts *o, char *err, size_t errlen) {
    char path[64];
    memset(o, 0, sizeof *o);
    for (const struct int_option *opt = INT_OPTIONS; opt->name; opt++) {
        snprintf(path, sizeof path, "redis.%s", opt->name);
        OPT_INT(o, opt) = cfg_int(app, path, opt->min);
    }
    char *password = cfg_str(app, "redis.password", "");
    snprintf(o->password, sizeof o->password, "%s", password);
    free(password);
    char *host = cfg_str(app, "redis.host", "127.0.0.1");
    int rc = host_normalise(host, o->host, sizeof o->host);
    if (rc != 0)
        snprintf(err, errlen,
                 "config redis.host '%s' is not an IPv4 "
                 "address or localhost (names are not resolved)",
                 host);
    free(host);
    return rc;
}

static void opt_set(lua_State *L, int arg, redis_opts *o, const char *key) {
    if (strcmp(key, "host") == 0) {
        if (lua_type(L, -1) != LUA_TSTRING ||
            host_normalise(lua_tostring(L, -1), o->host, sizeof o->host) != 0)
            luaL_argerror(L, arg,
                          "host must be an IPv4 address or \"localhost\" (names are "
                          "not resolved)");
        return;
    }
    if (strcmp(key, "password") == 0) { /* false: none */
        size_t len = 0;
        const char *pw = "";
        if (lua_type(L, -1) == LUA_TSTRING)
            pw = lua_tolstring(L, -1, &len);
        else if (lua_toboolean(L, -1))
            luaL_argerror(L, arg, "password must be a string or false");
        if (len >= sizeof o->password || strlen(pw) != len)
            luaL_argerror(L, arg, "password must be under 512 bytes, without NUL");
        memcpy(o->password, pw, len + 1);
        return;
    }
    for (const struct int_option *opt = INT_OPTIONS; opt->name; opt++) {
        if (strcmp(key, opt->name) != 0) continue;
        OPT_INT(o, opt) = vm_check_int_option(L, arg, key, opt->min, opt->max);
        return;
    }
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", key));
}

/* Overrides o with the fields of the table at arg; raises on a bad field. */
static void opts_from_table(lua_State *L, int arg, redis_opts *o) {
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, arg, "option names must be strings");
        opt_set(L, arg, o, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    if (o->reconnect_max_ms < o->reconnect_min_ms)
        luaL_argerror(L, arg, "reconnect_max_ms must be >= reconnect_min_ms");
}

/* ---- Lua: host.redis -------------------------------------------------------------------- */

/* The default client, built from config on first use; NULL with *err set when there is
 * none (shutting down, unusable config). */
static redis_client *default_client(struct app *app, const char **err) {
    struct redis_pool *p = app->redis;
    if (app->stopping) {
        *err = "shutting down";
        return NULL;
    }
    if (p->def) return p->def;
    redis_opts o;
    char why[160];
    if (opts_from_config(app, &o, why, sizeof why) != 0) {
        snprintf(p->def_error, sizeof p->def_error, "redis unavailable: %s", why);
        *err = p->def_error;
        return NULL;
    }
    p->def = client_new(app, &o);
    return p->def;
}

/* call(cmd, ...) -> reply | nil, err   (yields) */
static int l_call(lua_State *L) {
    struct app *app = app_from(L);
    task_t *t = sched_need(L, "host.redis.call");
    format_call(L, &app->redis->wire, 1);
    const char *err;
    redis_client *c = default_client(app, &err);
    if (!c) {
        wire_done(&app->redis->wire);
        return push_error(L, err);
    }
    return client_request(L, c, t, REQ_CALL);
}

/* pipeline({{cmd, ...}, ...}) -> {reply, ...} | nil, err   (yields) */
static int l_pipeline(lua_State *L) {
    struct app *app = app_from(L);
    task_t *t = sched_need(L, "host.redis.pipeline");
    format_pipeline(L, &app->redis->wire, 1);
    if (app->redis->wire.ncmds == 0) {
        lua_newtable(L);
        return 1;
    }
    const char *err;
    redis_client *c = default_client(app, &err);
    if (!c) {
        wire_done(&app->redis->wire);
        return push_error(L, err);
    }
    return client_request(L, c, t, REQ_PIPELINE);
}

static void push_stats(lua_State *L, redis_client *c, long long pool_size) {
    int connected = 0;
    for (int i = 0; c && i < c->opts.pool_size; i++)
        connected += c->conns[i].state == CONN_READY;
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, connected);
    lua_setfield(L, -2, "connected");
    lua_pushnumber(L, (lua_Number)pool_size);
    lua_setfield(L, -2, "pool_size");
    lua_pushnumber(L, c ? (lua_Number)c->pending : 0);
    lua_setfield(L, -2, "pending");
    lua_pushnumber(L, c ? c->commands : 0);
    lua_setfield(L, -2, "commands");
    lua_pushnumber(L, c ? c->timeouts : 0);
    lua_setfield(L, -2, "timeouts");
    lua_pushnumber(L, c ? c->reconnects : 0);
    lua_setfield(L, -2, "reconnects");
    lua_pushnumber(L, c ? c->errors : 0);
    lua_setfield(L, -2, "errors");
}

/* on_reconnect(fn | nil): fn runs in a task of its own each time the default client is
 * connected again after an outage in which a connection was lost or refused (not after
 * command timeouts alone, nor at its first connect); nil removes it. One function
 * per process, kept by the host: it outlives script reloads. */
static int l_on_reconnect(lua_State *L) {
    struct redis_pool *p = app_from(L)->redis;
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, p->on_reconnect_ref);
    p->on_reconnect_ref = LUA_NOREF;
    if (lua_isfunction(L, 1)) {
        lua_pushvalue(L, 1);
        p->on_reconnect_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

/* stats() -> {connected=, pool_size=, pending=, commands=, timeouts=, reconnects=, errors=}
 * of the default client (all zero before its first use) */
static int l_stats(lua_State *L) {
    struct app *app = app_from(L);
    redis_client *c = app->redis->def;
    push_stats(L, c, c ? c->opts.pool_size : cfg_int(app, "redis.pool_size", 1));
    return 1;
}

/* new{host=, port=, ...} -> client; missing fields come from the config's redis section */
static int l_new(lua_State *L) {
    struct app *app = app_from(L);
    redis_opts o;
    char err[200];
    int config_ok = opts_from_config(app, &o, err, sizeof err) == 0;
    int has_host = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_getfield(L, 1, "host");
        has_host = !lua_isnil(L, -1);
        lua_pop(L, 1);
        opts_from_table(L, 1, &o);
    }
    if (!config_ok && !has_host) return luaL_error(L, "host.redis.new: %s", err);
    if (app->stopping) return push_error(L, "shutting down");
    client_ud *ud = lua_newuserdata(L, sizeof *ud);
    ud->client = NULL;
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);
    redis_client *c = client_new(app, &o);
    ud->client = c;
    c->ud = ud;
    track_add(app, &c->track, "redis client", client_track_close);
    return 1;
}

/* ---- Lua: client methods ------------------------------------------------------------------ */

/* The open client at argument 1; raises when it was closed. */
static redis_client *check_client(lua_State *L) {
    client_ud *ud = luaL_checkudata(L, 1, CLIENT_MT);
    if (!ud->client || ud->client->closed) luaL_error(L, "redis client is closed");
    return ud->client;
}

static int l_client_call(lua_State *L) {
    struct app *app = app_from(L);
    if (app->stopping) return push_error(L, "shutting down");
    redis_client *c = check_client(L);
    task_t *t = sched_need(L, "redis client:call");
    format_call(L, &app->redis->wire, 2);
    return client_request(L, c, t, REQ_CALL);
}

static int l_client_pipeline(lua_State *L) {
    struct app *app = app_from(L);
    if (app->stopping) return push_error(L, "shutting down");
    redis_client *c = check_client(L);
    task_t *t = sched_need(L, "redis client:pipeline");
    format_pipeline(L, &app->redis->wire, 2);
    if (app->redis->wire.ncmds == 0) {
        lua_newtable(L);
        return 1;
    }
    return client_request(L, c, t, REQ_PIPELINE);
}

static int l_client_stats(lua_State *L) {
    client_ud *ud = luaL_checkudata(L, 1, CLIENT_MT);
    redis_client *c = ud->client;
    push_stats(L, c, c ? c->opts.pool_size : 0);
    return 1;
}

/* client:close(): waiting calls get nil, "redis client closed"; later calls raise */
static int l_client_close(lua_State *L) {
    client_ud *ud = luaL_checkudata(L, 1, CLIENT_MT);
    if (ud->client) client_close(ud->client, "redis client closed");
    return 0;
}

/* A collected client finishes the commands in flight (their tasks hold no reference to the
 * object), then closes. Runs no Lua. */
static int l_client_gc(lua_State *L) {
    client_ud *ud = luaL_checkudata(L, 1, CLIENT_MT);
    redis_client *c = ud->client;
    if (!c) return 0;
    ud->client = NULL;
    c->ud = NULL;
    c->orphan = 1;
    client_maybe_free(c);
    return 0;
}

/* Stops every client: waiting calls get nil, "shutting down"; contexts are freed and
 * timers closed, so the loop can end. The pool itself stays (later calls see app->stopping). */
void redis_shutdown(struct app *app) {
    struct redis_pool *p = app->redis;
    if (!p) return;
    while (!list_empty(&p->clients))
        client_close(LIST_ENTRY(p->clients.next, redis_client, link), "shutting down");
    list_node *n;
    while ((n = list_pop_front(&p->free_reqs)))
        free(LIST_ENTRY(n, redis_req, link));
    p->nfree = 0;
    buf_free(&p->wire.bytes);
    free(p->wire.ends);
    memset(&p->wire, 0, sizeof p->wire);
}

/* Builds the host.redis table; expects the app (lightuserdata) on top of the stack. The
 * pool is created here, the default client on first use (the config is not loaded yet). */
int redis_open(lua_State *L) {
    struct app *app = lua_touserdata(L, -1);
    struct redis_pool *p = xcalloc(1, sizeof *p);
    p->app = app;
    p->on_reconnect_ref = LUA_NOREF;
    list_init(&p->clients);
    list_init(&p->free_reqs);
    app->redis = p;
    static const luaL_Reg methods[] = {{"call", l_client_call},
                                       {"pipeline", l_client_pipeline},
                                       {"stats", l_client_stats},
                                       {"close", l_client_close},
                                       {NULL, NULL}};
    vm_class(L, CLIENT_MT, methods, NULL, l_client_gc);
    static const luaL_Reg fns[] = {{"call", l_call},
                                   {"pipeline", l_pipeline},
                                   {"new", l_new},
                                   {"stats", l_stats},
                                   {"on_reconnect", l_on_reconnect},
                                   {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
