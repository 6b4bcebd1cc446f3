/* redis.c: host.redis, an async Redis client on the loop (hiredis 0.14 through the patched
 * libuv adapter in redis_uv.h). A client is a pool of connections; each connection is a
 * small state machine driven by one uv timer (reconnect backoff, connect timeout, command
 * watchdog). A request (one command or one pipeline) is answered by resuming its task.
 *
 * Sentinel mode (sentinels and a master name instead of host/port; hiredis 0.14 knows no
 * Sentinel, so this file does the small part needed): before a connection (re)connects
 * after a failure, the sentinels are asked in turn for the master (SENTINEL
 * get-master-addr-by-name, on the thread pool with a bounded timeout per sentinel); each
 * connection's handshake checks with ROLE that the server is a master; a subscription to
 * +switch-master on one sentinel moves the pool to the new master at once; a READONLY
 * reply or a lost connection means "ask again". */
#include <arpa/inet.h>
#include <errno.h>
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
#define SENTINELS_MAX 16

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
    CONN_RESOLVING, /* sentinel mode: waiting for the sentinels' answer; no timer */
};

enum req_kind { REQ_CALL, REQ_PIPELINE, REQ_AUTH, REQ_SELECT, REQ_PING, REQ_ROLE };

/* The +switch-master subscription: DOWN (the timer connects), CONNECTING (the timer is the
 * connect timeout), ON, FAILED (the context is gone; the timer moves to the next sentinel). */
enum sub_state { SUB_DOWN, SUB_CONNECTING, SUB_ON, SUB_FAILED, SUB_CLOSED };

typedef struct redis_addr {
    char host[INET_ADDRSTRLEN];
    long long port; /* 0: unknown */
} redis_addr;

typedef struct redis_opts {
    char host[INET_ADDRSTRLEN];
    char password[512]; /* "" when none */
    long long port, db, pool_size, max_pending;
    long long connect_timeout_ms, command_timeout_ms, reconnect_min_ms, reconnect_max_ms;
    redis_addr sentinels[SENTINELS_MAX];
    int nsentinels;       /* 0: host/port is the server; else sentinel mode */
    char master_name[64]; /* the name the sentinels monitor the master under */
    char sentinel_password[512];
    long long sentinel_timeout_ms; /* per sentinel: connect, AUTH and the question each */
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
    char error[200]; /* why the connect failed (CONN_FAILED) */
    int redial_now;  /* broken by a master switch: reconnect without backoff */
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
    char last_error[200];
    /* sentinel mode */
    redis_addr master;      /* where connections go (port 0: not known yet) */
    int master_stale;       /* ask the sentinels again before the next connect */
    int resolving;          /* a question to the sentinels runs on the thread pool */
    unsigned switches;      /* +switch-master messages followed: a question asked before
                             * the latest one may have an older answer */
    int sentinel_first;     /* the sentinel asked first: the last one that answered */
    double failovers;       /* times the master's address changed */
    redisAsyncContext *sub; /* the +switch-master subscription */
    enum sub_state sub_state;
    uv_timer_t sub_timer;
    int sub_next; /* the sentinel the subscription tries next */
    long long sub_backoff_ms;
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

/* "<mark><n>\r\n", written by hand: every argument of every command has one, and snprintf
 * cost ~600 instructions each (a tenth of a chat server's Redis client per message). */
static void wire_header(wire_buf *w, char mark, size_t n) {
    char tmp[32];
    char *end = tmp + sizeof tmp, *p = end;
    *--p = '\n';
    *--p = '\r';
    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    *--p = mark;
    wire_append(w, p, (size_t)(end - p));
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
    if (c->opts.nsentinels == 0)
        snprintf(buf, size, "redis %s:%lld", c->opts.host, c->opts.port);
    else if (c->master.port == 0)
        snprintf(buf, size, "redis master '%s'", c->opts.master_name);
    else
        snprintf(buf, size, "redis master '%s' at %s:%lld", c->opts.master_name, c->master.host,
                 c->master.port);
    return buf;
}

/* Records a failure (err: what happened; config: a handshake error such as a wrong
 * password). Logs the first failure of an outage, not every retry. When it ends the
 * starting phase, the held requests move to `held` for the caller to fail. */
static void client_note_failure(redis_client *c, const char *err, int config, list_node *held) {
    char name[192];
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
    char name[192];
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
    if (o->nsentinels) conn->client->master_stale = 1; /* the master may have moved */
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
    char err[200];
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

static void client_resolve(redis_client *c);

/* Starts connecting to the server (sentinel mode: the master last named). */
static void conn_dial(redis_conn *conn) {
    redis_client *c = conn->client;
    const redis_addr *m = &c->master;
    redisAsyncContext *ac = c->opts.nsentinels ? redisAsyncConnect(m->host, (int)m->port)
                                               : redisAsyncConnect(c->opts.host, (int)c->opts.port);
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

/* Connects, or in sentinel mode first asks where the master is when that is not known or
 * may have changed (after any failure); the answer resumes the connection. */
static void conn_connect(redis_conn *conn) {
    redis_client *c = conn->client;
    if (c->opts.nsentinels && (c->master_stale || c->master.port == 0)) {
        conn->state = CONN_RESOLVING;
        client_resolve(c);
        return;
    }
    conn_dial(conn);
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
    if (rc == 0 && o->nsentinels) /* never write to a replica the sentinels named by mistake */
        rc = handshake_send(conn, REQ_ROLE, "ROLE", NULL);
    if (rc == 0 && conn->handshake_left == 0) rc = handshake_send(conn, REQ_PING, "PING", NULL);
    if (rc != 0) conn_break(conn, "cannot send the handshake", 0);
}

/* NULL when a ROLE reply says master, else why the server may not be used. */
static const char *role_problem(const redisReply *reply, char *buf, size_t size) {
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(reply->element[0]->str, "master") == 0)
        return NULL;
    int known = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                reply->element[0]->type == REDIS_REPLY_STRING;
    snprintf(buf, size, "the server is not a master (ROLE says %.40s)",
             known ? reply->element[0]->str : "nothing usable");
    return buf;
}

static void handshake_reply(redis_conn *conn, redis_req *r, const redisReply *reply) {
    if (reply->type == REDIS_REPLY_ERROR) {
        const char *what = r->kind == REQ_AUTH     ? "AUTH"
                           : r->kind == REQ_SELECT ? "SELECT"
                           : r->kind == REQ_ROLE   ? "ROLE"
                                                   : "PING";
        char err[160];
        snprintf(err, sizeof err, "%s failed: %.*s", what, (int)reply->len, reply->str);
        conn_break(conn, err, 1);
        return;
    }
    char why[96];
    if (r->kind == REQ_ROLE && role_problem(reply, why, sizeof why)) {
        conn_break(conn, why, 0); /* the failure asks the sentinels again */
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
    if (conn->redial_now) { /* the master switched: the new one is known, go there now */
        conn->redial_now = 0;
        conn->state = CONN_DOWN;
        conn->had_failure = 1;
        conn_arm(conn, 0);
    } else {
        conn_wait_retry(conn);
    }
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
    case CONN_RESOLVING:
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
    /* a master demoted behind our back (a failover we did not hear of): ask again */
    int readonly = conn->client->opts.nsentinels && reply->type == REDIS_REPLY_ERROR &&
                   strncmp(reply->str, "READONLY", 8) == 0;
    if (r->kind == REQ_PIPELINE)
        pipeline_reply(r, reply);
    else
        call_reply(r, reply);
    if (readonly && conn->ac == ac && conn->state == CONN_READY) {
        conn->client->lost = 1;
        conn_break(conn, "the server is a replica now (READONLY)", 0);
    }
}

/* ---- sentinel mode: where the master is ------------------------------------------------ */

/* Copies host as an IPv4 literal ("localhost" becomes 127.0.0.1); -1 for anything else:
 * hiredis would resolve a name with a blocking getaddrinfo on the loop thread. */
static int host_normalise(const char *host, char *out, size_t size) {
    struct in_addr a;
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &a) != 1) return -1;
    snprintf(out, size, "%s", host);
    return 0;
}

/* Parses an IPv4 address (or localhost) and a port 1..65535 given apart; -1 if unusable. */
static int addr_set(redis_addr *a, const char *host, const char *port) {
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (end == port || *end || errno || p < 1 || p > 65535) return -1;
    if (host_normalise(host, a->host, sizeof a->host) != 0) return -1;
    a->port = p;
    return 0;
}

/* Parses "host:port"; -1 if unusable. */
static int addr_parse(redis_addr *a, const char *s) {
    const char *colon = strrchr(s, ':');
    char host[64];
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host) return -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - s), s);
    return addr_set(a, host, colon + 1);
}

/* Moves the client to the master at a (learnt from how); logs and counts a change. */
static void client_set_master(redis_client *c, const redis_addr *a, const char *how) {
    char name[192];
    if (c->master.port == a->port && strcmp(c->master.host, a->host) == 0) return;
    if (c->master.port != 0) {
        c->failovers++;
        log_warn("redis master '%s': moved from %s:%lld to %s:%lld (%s)", c->opts.master_name,
                 c->master.host, c->master.port, a->host, a->port, how);
    }
    c->master = *a;
    log_info("%s: the current master (%s)", client_name(c, name, sizeof name), how);
}

typedef struct resolve_job {
    uv_work_t work;
    redis_client *client;
    redis_opts opts; /* a copy: the pool thread reads nothing the loop changes */
    int first;       /* the sentinel asked first */
    unsigned switches;
    int answered; /* the sentinel that answered, -1: none */
    redis_addr master;
    char error[200];
} resolve_job;

static struct timeval ms_timeval(long long ms) {
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* Asks one sentinel (blocking, on a pool thread; every step bounded by
 * sentinel_timeout_ms) where the master is; 0, or -1 with j->error set. */
static int sentinel_ask(resolve_job *j, const redis_addr *s) {
    struct timeval tv = ms_timeval(j->opts.sentinel_timeout_ms);
    redisContext *rc = redisConnectWithTimeout(s->host, (int)s->port, tv);
    redisReply *r = NULL;
    const char *why = NULL;
    int rc_ok = -1;
    if (!rc || rc->err) {
        why = !rc ? "out of memory" : rc->errstr;
        goto done;
    }
    set_cloexec(rc->fd);
    redisSetTimeout(rc, tv);
    if (j->opts.sentinel_password[0]) {
        r = redisCommand(rc, "AUTH %s", j->opts.sentinel_password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            why = !r ? rc->errstr : "AUTH refused (check redis.sentinel_password)";
            goto done;
        }
        freeReplyObject(r);
    }
    r = redisCommand(rc, "SENTINEL get-master-addr-by-name %s", j->opts.master_name);
    if (!r) {
        why = rc->errstr;
    } else if (r->type == REDIS_REPLY_NIL) {
        why = "does not know that master";
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING ||
               addr_set(&j->master, r->element[0]->str, r->element[1]->str) != 0) {
        why = r->type == REDIS_REPLY_ERROR ? r->str : "answered no usable IPv4 address";
    } else {
        rc_ok = 0;
    }
done:
    if (why)
        snprintf(j->error, sizeof j->error, "sentinel %s:%lld: %s%s", s->host, s->port,
                 errno == EAGAIN && rc && rc->err == REDIS_ERR_IO ? "timeout, " : "", why);
    if (r) freeReplyObject(r);
    if (rc) redisFree(rc);
    return rc_ok;
}

static void resolve_run(uv_work_t *w) {
    resolve_job *j = w->data;
    for (int k = 0; k < j->opts.nsentinels; k++) {
        int i = (j->first + k) % j->opts.nsentinels;
        if (sentinel_ask(j, &j->opts.sentinels[i]) == 0) {
            j->answered = i;
            return;
        }
    }
}

/* The answer is back: connections waiting for it connect, or fail (with backoff) when no
 * sentinel answered. Runs Lua (failed connections answer their requests). */
static void resolve_done(uv_work_t *w, int status) {
    resolve_job *j = w->data;
    redis_client *c = j->client;
    c->resolving = 0;
    int ok = 0;
    if (c->closed) {
        /* nothing waits for it */
    } else if (j->switches != c->switches && c->master.port != 0) {
        ok = 1; /* a +switch-master came meanwhile: its address is newer than the answer */
    } else if (status == 0 && j->answered >= 0) {
        ok = 1;
        c->sentinel_first = j->answered;
        client_set_master(c, &j->master, "asked the sentinels");
    } else if (status != 0) {
        snprintf(j->error, sizeof j->error, "the question to the sentinels was cancelled");
    }
    if (ok) c->master_stale = 0;
    for (int i = 0; !c->closed && i < c->opts.pool_size; i++) {
        redis_conn *conn = &c->conns[i];
        if (conn->state != CONN_RESOLVING) continue;
        if (ok) {
            conn_dial(conn);
        } else {
            snprintf(conn->error, sizeof conn->error, "no sentinel named master '%s' (%.100s)",
                     c->opts.master_name, j->error);
            conn_failed(conn);
        }
    }
    memset(&j->opts, 0, sizeof j->opts); /* the passwords */
    free(j);
    client_maybe_free(c);
}

/* Asks the sentinels in turn on the thread pool, unless a question is under way. */
static void client_resolve(redis_client *c) {
    if (c->resolving || c->closed || c->app->stopping) return;
    resolve_job *j = xcalloc(1, sizeof *j);
    j->work.data = j;
    j->client = c;
    j->opts = c->opts;
    j->first = c->sentinel_first;
    j->switches = c->switches;
    j->answered = -1;
    snprintf(j->error, sizeof j->error, "no sentinel answered");
    c->resolving = 1;
    if (uv_queue_work(c->app->loop, &j->work, resolve_run, resolve_done) != 0) {
        c->resolving = 0;
        free(j);
        for (int i = 0; !c->closed && i < c->opts.pool_size; i++)
            if (c->conns[i].state == CONN_RESOLVING) {
                snprintf(c->conns[i].error, sizeof c->conns[i].error, "cannot ask the sentinels");
                conn_failed(&c->conns[i]);
            }
    }
}

/* ---- sentinel mode: following +switch-master --------------------------------------------- */

static void sub_arm(redis_client *c, uint64_t ms);

/* The master moved: every connection to the old one is dropped (what it had in flight
 * gets nil, err) and made again to the new one without backoff. Runs Lua. */
static void client_follow_switch(redis_client *c, const redis_addr *to) {
    c->switches++;
    c->master_stale = 0;
    client_set_master(c, to, "+switch-master");
    c->lost = 1; /* writes the old master had not passed on are gone: on_reconnect */
    for (int i = 0; !c->closed && i < c->opts.pool_size; i++) {
        redis_conn *conn = &c->conns[i];
        if (conn->state == CONN_CONNECTING || conn->state == CONN_CONNECTED ||
            conn->state == CONN_HANDSHAKE || conn->state == CONN_READY) {
            conn->redial_now = 1;
            conn_break(conn, "the master switched", 0);
        } else if (conn->state == CONN_DOWN) { /* waiting out a backoff for the old master */
            conn->backoff_ms = c->opts.reconnect_min_ms;
            conn_arm(conn, 0);
        }
    }
}

/* A message on +switch-master: "<name> <old ip> <old port> <new ip> <new port>". */
static void sub_message(redisAsyncContext *ac, void *reply_ptr, void *privdata) {
    (void)privdata;
    redis_client *c = ac->data;
    const redisReply *r = reply_ptr;
    if (!c || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    char name[64], oip[64], oport[8], nip[64], nport[8];
    redis_addr to;
    if (sscanf(r->element[2]->str, "%63s %63s %7s %63s %7s", name, oip, oport, nip, nport) != 5 ||
        strcmp(name, c->opts.master_name) != 0)
        return;
    if (addr_set(&to, nip, nport) != 0) {
        log_warn("redis master '%s': +switch-master names %s:%s, not an IPv4 address; asking "
                 "the sentinels",
                 name, nip, nport);
        c->master_stale = 1;
        return;
    }
    client_follow_switch(c, &to);
}

static void sub_auth_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata) {
    (void)privdata;
    const redisReply *r = reply_ptr;
    redis_client *c = ac->data;
    if (c && r && r->type == REDIS_REPLY_ERROR)
        log_warn("redis master '%s': a sentinel refused AUTH: %s (check "
                 "redis.sentinel_password)",
                 c->opts.master_name, r->str);
}

/* The subscription's context is gone (hiredis frees it): try the next sentinel later. */
static void sub_lost(redis_client *c) {
    c->sub = NULL;
    if (c->sub_state == SUB_CLOSED) return;
    c->sub_state = SUB_FAILED;
    sub_arm(c, 0);
}

static void sub_on_connect(const redisAsyncContext *cac, int status) {
    redis_client *c = cac->data;
    if (!c) return;
    if (status != REDIS_OK) {
        ((redisAsyncContext *)cac)->data = NULL;
        sub_lost(c);
        return;
    }
    c->sub_state = SUB_ON;
    c->sub_backoff_ms = c->opts.reconnect_min_ms;
    uv_timer_stop(&c->sub_timer);
}

static void sub_on_disconnect(const redisAsyncContext *cac, int status) {
    (void)status;
    redis_client *c = cac->data;
    if (!c || c->sub != cac) return;
    ((redisAsyncContext *)cac)->data = NULL;
    sub_lost(c);
}

static void sub_connect(redis_client *c) {
    const redis_addr *s = &c->opts.sentinels[c->sub_next];
    redisAsyncContext *ac = redisAsyncConnect(s->host, (int)s->port);
    if (!ac || ac->err || redis_uv_attach(ac, c->app->loop) != REDIS_OK) {
        if (ac) redisAsyncFree(ac);
        c->sub_state = SUB_FAILED;
        sub_arm(c, 0);
        return;
    }
    set_cloexec(ac->c.fd);
    ac->data = c;
    redisAsyncSetConnectCallback(ac, sub_on_connect);
    redisAsyncSetDisconnectCallback(ac, sub_on_disconnect);
    if (c->opts.sentinel_password[0])
        redisAsyncCommand(ac, sub_auth_reply, NULL, "AUTH %s", c->opts.sentinel_password);
    redisAsyncCommand(ac, sub_message, NULL, "SUBSCRIBE +switch-master");
    c->sub = ac;
    c->sub_state = SUB_CONNECTING;
    sub_arm(c, (uint64_t)c->opts.connect_timeout_ms);
}

static void sub_timer_fired(uv_timer_t *t) {
    redis_client *c = t->data;
    switch (c->sub_state) {
    case SUB_DOWN:
        sub_connect(c);
        break;
    case SUB_CONNECTING: { /* connect timeout: give this sentinel up */
        redisAsyncContext *ac = c->sub;
        c->sub = NULL;
        ac->data = NULL;
        redisAsyncFree(ac); /* never connected: no callbacks */
        c->sub_state = SUB_FAILED;
        sub_arm(c, 0);
        break;
    }
    case SUB_FAILED: /* the next sentinel, after a backoff */
        c->sub_next = (c->sub_next + 1) % c->opts.nsentinels;
        c->sub_state = SUB_DOWN;
        sub_arm(c, (uint64_t)c->sub_backoff_ms);
        c->sub_backoff_ms = c->sub_backoff_ms * 2 < c->opts.reconnect_max_ms
                                ? c->sub_backoff_ms * 2
                                : c->opts.reconnect_max_ms;
        break;
    case SUB_ON:
    case SUB_CLOSED:
        break;
    }
}

static void sub_arm(redis_client *c, uint64_t ms) {
    uv_timer_start(&c->sub_timer, sub_timer_fired, ms, 0);
}

static void sub_timer_closed(uv_handle_t *h) {
    redis_client *c = h->data;
    c->open_timers--;
    client_maybe_free(c);
}

static void sub_start(redis_client *c) {
    uv_timer_init(c->app->loop, &c->sub_timer);
    c->sub_timer.data = c;
    c->open_timers++;
    c->sub_state = SUB_DOWN;
    c->sub_backoff_ms = c->opts.reconnect_min_ms;
    sub_arm(c, 0);
}

/* Stops the subscription; returns its context for the caller to free (or NULL). */
static redisAsyncContext *sub_close(redis_client *c) {
    redisAsyncContext *ac = c->sub;
    c->sub_state = SUB_CLOSED;
    c->sub = NULL;
    uv_timer_stop(&c->sub_timer);
    uv_close((uv_handle_t *)&c->sub_timer, sub_timer_closed);
    if (ac) ac->data = NULL;
    return ac;
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
    if (o->nsentinels) sub_start(c);
    return c;
}

/* Frees c once it is closed and nothing (timer, request hiredis holds) refers to it; closes
 * an orphaned client once it is idle. */
static void client_maybe_free(redis_client *c) {
    if (c->orphan && !c->closed && c->pending == 0) {
        client_close(c, "redis client closed");
        return;
    }
    if (!c->closed || c->open_timers > 0 || c->reqs_alive > 0 || c->resolving) return;
    if (c->ud) c->ud->client = NULL;
    if (c->app->redis->def == c) c->app->redis->def = NULL;
    memset(c->opts.password, 0, sizeof c->opts.password);
    memset(c->opts.sentinel_password, 0, sizeof c->opts.sentinel_password);
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
    redisAsyncContext *acs[POOL_MAX + 1];
    int nacs = 0;
    for (int i = 0; i < c->opts.pool_size; i++) {
        redisAsyncContext *ac = conn_close(&c->conns[i], &lost);
        if (ac) acs[nacs++] = ac;
    }
    if (c->opts.nsentinels) {
        redisAsyncContext *ac = sub_close(c);
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
    char name[192];
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
    {"sentinel_timeout_ms", offsetof(redis_opts, sentinel_timeout_ms), 1, 600000},
    {NULL, 0, 0, 0},
};

/* Fills o's sentinels from the list of "host:port" strings at idx; NULL, or what is wrong
 * (in buf). An empty list leaves sentinel mode off. */
static const char *sentinels_from_lua(lua_State *L, int idx, redis_opts *o, char *buf,
                                      size_t size) {
    if (!lua_istable(L, idx)) return "sentinels must be a list of \"host:port\" strings";
    int n = (int)lua_objlen(L, idx);
    if (n > SENTINELS_MAX) {
        snprintf(buf, size, "at most %d sentinels", SENTINELS_MAX);
        return buf;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        const char *a = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int bad = !a || addr_parse(&o->sentinels[i - 1], a) != 0;
        lua_pop(L, 1);
        if (bad) {
            snprintf(buf, size,
                     "sentinels[%d] is not \"IPv4-address:port\" (names are not resolved)", i);
            return buf;
        }
    }
    o->nsentinels = n;
    return NULL;
}

/* Copies a password option (string, or false/nil for none) into out[size]; raises on arg. */
static void password_opt(lua_State *L, int arg, const char *key, char *out, size_t size) {
    size_t len = 0;
    const char *pw = "";
    if (lua_type(L, -1) == LUA_TSTRING)
        pw = lua_tolstring(L, -1, &len);
    else if (lua_toboolean(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string or false", key));
    if (len >= size || strlen(pw) != len)
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "%s must be under %d bytes, without NUL", key, (int)size));
    memcpy(out, pw, len + 1);
}

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
    password = cfg_str(app, "redis.sentinel_password", "");
    snprintf(o->sentinel_password, sizeof o->sentinel_password, "%s", password);
    free(password);
    char *name = cfg_str(app, "redis.master_name", "");
    snprintf(o->master_name, sizeof o->master_name, "%s", name);
    free(name);
    /* config.lua checked the list and that it comes with a master name */
    lua_State *L = app->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->config_ref);
    lua_getfield(L, -1, "redis");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "sentinels");
        const char *bad =
            lua_istable(L, -1) ? sentinels_from_lua(L, lua_gettop(L), o, err, errlen) : NULL;
        lua_pop(L, 1);
        if (bad && bad != err) snprintf(err, errlen, "%s", bad);
        if (bad) {
            lua_pop(L, 2);
            return -1;
        }
    }
    lua_pop(L, 2);
    if (o->nsentinels && !o->master_name[0]) {
        snprintf(err, errlen, "config redis.sentinels needs redis.master_name");
        return -1;
    }
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
        password_opt(L, arg, key, o->password, sizeof o->password);
        return;
    }
    if (strcmp(key, "sentinel_password") == 0) {
        password_opt(L, arg, key, o->sentinel_password, sizeof o->sentinel_password);
        return;
    }
    if (strcmp(key, "master_name") == 0) {
        size_t len = 0;
        const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!name || len == 0 || len >= sizeof o->master_name || strlen(name) != len ||
            strpbrk(name, " \t\r\n"))
            luaL_argerror(L, arg, "master_name must be a word under 64 bytes");
        memcpy(o->master_name, name, len + 1);
        return;
    }
    if (strcmp(key, "sentinels") == 0) {
        char buf[120];
        o->nsentinels = 0;
        const char *bad = sentinels_from_lua(L, lua_gettop(L), o, buf, sizeof buf);
        if (bad) luaL_argerror(L, arg, lua_pushfstring(L, "%s", bad));
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
    if (o->nsentinels && !o->master_name[0]) luaL_argerror(L, arg, "sentinels need master_name");
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
    lua_pushnumber(L, c ? c->failovers : 0);
    lua_setfield(L, -2, "failovers");
    if (c && c->opts.nsentinels && c->master.port) {
        lua_pushfstring(L, "%s:%d", c->master.host, (int)c->master.port);
        lua_setfield(L, -2, "master");
    }
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

/* stats() -> {connected=, pool_size=, pending=, commands=, timeouts=, reconnects=, errors=,
 * failovers=, master=} of the default client (all zero before its first use); failovers:
 * the times the master's address changed; master ("ip:port"): sentinel mode, once known */
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
    int has_host = 0, has_sentinels = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_getfield(L, 1, "host");
        has_host = !lua_isnil(L, -1);
        lua_getfield(L, 1, "sentinels");
        has_sentinels = !lua_isnil(L, -1);
        lua_pop(L, 2);
        /* an address given here means that server, whatever sentinels the config names */
        if (has_host && !has_sentinels) o.nsentinels = 0;
        opts_from_table(L, 1, &o);
    }
    if (!config_ok && !has_host && !has_sentinels) return luaL_error(L, "host.redis.new: %s", err);
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
