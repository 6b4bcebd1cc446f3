/* tcp_client.c: host.tcp.connect, an outgoing TCP stream for scripts and specs (the
 * terminal client, raw-socket tests of the gate and chat servers). Reads are buffered in C
 * up to a bound (reading pauses beyond it) and served by mode: some bytes, exactly n, a
 * line, up to a delimiter, or everything until the peer closes. Every wait has a timeout.
 * With tls = true the stream is TLS (tls_stream.c): the socket's bytes go through it, the
 * read buffer holds plaintext, and the connect ends once the handshake did. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "frame.h"
#include "hostobj.h"
#include "log.h"
#include "modules.h"
#include "sched.h"
#include "tls_stream.h"

#define CONN_MT "chathost.tcp"
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BUFFER (16 << 20)
#define TLS_READ_CHUNK 65536 /* ciphertext per socket read; plaintext per decrypt step */

enum read_mode { READ_SOME, READ_EXACT, READ_UNTIL, READ_ALL, READ_FRAME };

typedef struct tcp_conn {
    hostobj obj;            /* users: the Lua handle, the socket and timer, each write */
    struct app *app;
    uv_tcp_t handle;
    uv_timer_t timer;       /* the current read's (or connect's) timeout */
    uv_connect_t connect_req;
    uv_getaddrinfo_t resolve_req; /* a host name, resolved on libuv's thread pool */
    int resolving;
    char *name;             /* the host name dialled (for errors), NULL for an IP */
    char *buf;
    size_t len, cap, max_buffer;
    int eof, error;         /* peer closed / last read error (negative errno) */
    int connected, reading;
    int ready;              /* connected, and TLS's handshake done: the script has it */
    tls_stream *tls;        /* NULL for plain TCP */
    char *cipher;           /* TLS: the socket's read buffer (TLS_READ_CHUNK) */
    int raw_eof;            /* TLS: the socket ended; eof once the plaintext is read */
    int tls_failed;         /* TLS: error is the stream's (tls_stream_error) */
    /* one pending read (or connect) and one pending send, each with its timeout */
    task_t *waiter;
    enum read_mode mode;
    size_t want;            /* bytes for READ_SOME/EXACT */
    char *delim;
    size_t delim_len;
    struct write_req *pending_write; /* the send a task waits for (its task: the writer) */
    int connect_ref;        /* the Lua object, anchored until the connect completes */
    int timeout_ms;
    enum frame_kind kind;   /* the frame format of read_frame / send_frame */
} tcp_conn;

typedef struct write_req {
    uv_write_t req;
    tcp_conn *c;
    task_t *task; /* NULL once nobody waits for it */
    char data[];
} write_req;

static void detach_write(tcp_conn *c) {
    if (!c->pending_write) return;
    c->pending_write->task = NULL;
    c->pending_write = NULL;
}

static void conn_free(hostobj *o) {
    tcp_conn *c = HOSTOBJ_OF(o, tcp_conn, obj);
    tls_stream_free(c->tls);
    free(c->cipher);
    free(c->name);
    free(c->buf);
    free(c->delim);
    free(c);
}

static void handle_closed(uv_handle_t *h) {
    tcp_conn *c = h->data;
    hostobj_release(&c->obj);
}

/* ---- waiting --------------------------------------------------------------------------- */

/* Why the connection cannot go on: its socket error or its TLS failure. */
static const char *conn_error(tcp_conn *c) {
    return c->tls_failed ? tls_stream_error(c->tls) : uv_strerror(c->error);
}

static void wait_end(tcp_conn *c) {
    c->waiter = NULL;
    uv_timer_stop(&c->timer);
    free(c->delim);
    c->delim = NULL;
}

static void conn_close(tcp_conn *c) { hostobj_close(&c->obj); }

/* The waiting task was cancelled. During the connect nobody else will ever get the
 * socket (a TLS peer that never answers the hello would hold it, its SSL and its anchor
 * for good): it is closed now. */
static void wait_cancel(void *op) {
    tcp_conn *c = op;
    wait_end(c);
    if (!c->ready) conn_close(c);
}

static void wait_timeout(uv_timer_t *t) {
    tcp_conn *c = t->data;
    task_t *w = c->waiter;
    int handshaking = c->connected && !c->ready;
    wait_end(c);
    if (!c->ready) conn_close(c); /* a connect that timed out: nobody gets the socket */
    if (w) sched_resume_error(w, handshaking ? "tls: handshake timed out" : "timeout");
}

static void wait_begin(lua_State *L, tcp_conn *c, task_t *t, int timeout_ms) {
    c->waiter = t;
    uv_timer_start(&c->timer, wait_timeout, (uint64_t)timeout_ms, 0);
    sched_suspend(t, wait_cancel, c);
}

static void write_wait_cancel(void *op) { detach_write(op); }

static void buf_consume(tcp_conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void reading_resume(tcp_conn *c);

/* If the buffered data satisfies the read mode, pushes the result onto L (consuming it)
 * and returns the number of values; 0 when it must wait. */
static int try_read(tcp_conn *c, lua_State *L, enum read_mode mode, size_t want,
                    const char *delim, size_t dlen) {
    size_t take = 0;
    switch (mode) {
    case READ_SOME:
        if (c->len == 0) break;
        take = c->len < want ? c->len : want;
        break;
    case READ_EXACT:
        if (c->len >= want) take = want;
        break;
    case READ_UNTIL: {
        if (c->len < dlen) break;
        for (size_t i = 0; i + dlen <= c->len; i++)
            if (memcmp(c->buf + i, delim, dlen) == 0) {
                take = i + dlen;
                break;
            }
        break;
    }
    case READ_FRAME: { /* the chat frame format, parsed by the server's own code */
        frame f;
        size_t used;
        enum frame_status st =
            frame_parse(c->kind, (const uint8_t *)c->buf, c->len, want, &f, &used);
        if (st == FRAME_TOO_BIG) {
            lua_pushnil(L);
            lua_pushfstring(L, "frame of %f bytes above the limit", (double)f.len);
            return 2;
        }
        if (st == FRAME_MORE && c->len >= c->max_buffer) { /* it can never complete */
            lua_pushnil(L);
            lua_pushliteral(L, "frame larger than max_buffer");
            return 2;
        }
        if (st == FRAME_OK) {
            lua_pushinteger(L, f.id);
            lua_pushlstring(L, (const char *)f.body, f.len);
            buf_consume(c, used);
            reading_resume(c);
            return 2;
        }
        break;
    }
    case READ_ALL:
        if (!c->eof && !c->error) return 0;
        lua_pushlstring(L, c->buf ? c->buf : "", c->len);
        buf_consume(c, c->len);
        return 1;
    }
    if (take > 0) {
        size_t keep = mode == READ_UNTIL ? take - dlen : take; /* the delimiter is dropped */
        lua_pushlstring(L, c->buf, keep);
        buf_consume(c, take);
        reading_resume(c);
        return 1;
    }
    if (c->error || c->eof) {
        lua_pushnil(L);
        lua_pushstring(L, c->error ? conn_error(c) : "closed");
        if (c->len > 0) { /* what arrived before the end, for diagnostics */
            lua_pushlstring(L, c->buf, c->len);
            return 3;
        }
        return 2;
    }
    return 0;
}

static void wake_reader(tcp_conn *c) {
    task_t *w = c->waiter;
    if (!w) return;
    int n = try_read(c, w->co, c->mode, c->want, c->delim, c->delim_len);
    if (n == 0) return;
    wait_end(c);
    sched_resume(w, n);
}

/* ---- reading ------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    tcp_conn *c = h->data;
    if (c->tls) { /* ciphertext, decrypted into buf (tls_pump) before the next read */
        *b = uv_buf_init(c->cipher, TLS_READ_CHUNK);
        return;
    }
    c->buf = buf_grow(c->buf, &c->cap, c->len + 65536);
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void reading_stop(tcp_conn *c) {
    uv_read_stop((uv_stream_t *)&c->handle);
    c->reading = 0;
}

static void tls_on_read(tcp_conn *c, ssize_t n, const uv_buf_t *b);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    tcp_conn *c = s->data;
    if (c->tls) {
        tls_on_read(c, n, b);
        return;
    }
    if (n > 0) {
        c->len += (size_t)n;
        if (c->len >= c->max_buffer) reading_stop(c); /* the script is not reading: wait */
    } else if (n == UV_EOF) {
        c->eof = 1;
    } else if (n < 0) {
        c->error = (int)n;
    }
    if (n < 0) reading_stop(c);
    wake_reader(c);
}

static void tls_pump(tcp_conn *c);

static void reading_resume(tcp_conn *c) {
    if (c->obj.closing || !c->connected) return;
    if (c->tls && c->ready) tls_pump(c); /* what the stream holds comes before the socket */
    if (c->reading || c->eof || c->error || c->raw_eof) return;
    if (c->len >= c->max_buffer) return;
    if (uv_read_start((uv_stream_t *)&c->handle, on_alloc, on_read) == 0) c->reading = 1;
}

/* ---- writing ------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    tcp_conn *c = w->c;
    task_t *t = w->task;
    if (c->pending_write == w) c->pending_write = NULL;
    free(w);
    if (t && status == 0) {
        lua_pushboolean(t->co, 1);
        sched_resume(t, 1);
    } else if (t) {
        sched_resume_error(t, uv_strerror(status));
    }
    hostobj_release(&c->obj);
}

static write_req *write_new(tcp_conn *c, size_t len) {
    write_req *w = xmalloc(sizeof *w + (len ? len : 1));
    w->c = c;
    w->task = NULL;
    return w;
}

/* Queues the first len bytes of w on the socket; t (or nobody, when NULL) is resumed once
 * they are written. 0, or a libuv error (w is then freed). */
static int write_start(tcp_conn *c, write_req *w, size_t len, task_t *t) {
    w->task = t;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->handle, &b, 1, on_write);
    if (rc != 0) {
        free(w);
        return rc;
    }
    hostobj_hold(&c->obj); /* until on_write, which may come after the close */
    return 0;
}

/* ---- TLS ------------------------------------------------------------------------------ */

static void connect_done(tcp_conn *c, const char *err);

/* Sends what the TLS stream has for the peer (handshake flights, alerts), with nobody
 * waiting for it; a write that fails shows as the socket's error on the next read. */
static void tls_flush(tcp_conn *c) {
    size_t n = tls_stream_pending(c->tls);
    if (n == 0 || c->obj.closing) return;
    write_req *w = write_new(c, n);
    n = tls_stream_take(c->tls, w->data, n);
    write_start(c, w, n, NULL);
}

/* Decrypts what the stream holds into the read buffer, up to max_buffer (the rest waits in
 * the stream for the script to read). A socket that ended without the peer's close_notify
 * counts as closed once everything before is read. */
static void tls_pump(tcp_conn *c) {
    while (c->len < c->max_buffer && !c->eof && !c->error) {
        c->buf = buf_grow(c->buf, &c->cap, c->len + TLS_READ_CHUNK);
        ssize_t n = tls_stream_read(c->tls, c->buf + c->len, TLS_READ_CHUNK);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == TLS_STREAM_CLOSED || (n == 0 && c->raw_eof)) c->eof = 1;
        if (n == -1) {
            c->error = UV_EPROTO;
            c->tls_failed = 1;
        }
        break;
    }
    tls_flush(c); /* reading may answer the peer (a key update) */
}

/* One step of the handshake, after connecting or reading: the connect ends once it is done
 * or cannot be. */
static void tls_handshake_step(tcp_conn *c) {
    int rc = tls_stream_handshake(c->tls);
    tls_flush(c);
    if (rc == 1) {
        tls_pump(c); /* application data that came with the server's last flight */
        connect_done(c, NULL);
    } else if (rc < 0) {
        c->error = UV_EPROTO;
        c->tls_failed = 1;
        connect_done(c, tls_stream_error(c->tls));
    } else if (c->error || c->raw_eof) {
        char why[128];
        snprintf(why, sizeof why, "tls: the peer %s during the handshake; does it speak TLS?",
                 c->raw_eof ? "closed the connection" : uv_strerror(c->error));
        connect_done(c, why);
    }
}

static void tls_on_read(tcp_conn *c, ssize_t n, const uv_buf_t *b) {
    if (n > 0)
        tls_stream_feed(c->tls, b->base, (size_t)n);
    else if (n == UV_EOF)
        c->raw_eof = 1;
    else if (n < 0)
        c->error = (int)n;
    if (n < 0) reading_stop(c);
    if (!c->ready) {
        tls_handshake_step(c);
        return;
    }
    tls_pump(c);
    if (c->len >= c->max_buffer && c->reading) reading_stop(c); /* the script is not reading */
    wake_reader(c);
}

/* A write of data's *len bytes encrypted (*len becomes the ciphertext's length), or NULL
 * when the stream refused them. */
static write_req *tls_encrypt(tcp_conn *c, const char *data, size_t *len) {
    if (tls_stream_write(c->tls, data, *len) != 0) return NULL;
    size_t n = tls_stream_pending(c->tls);
    write_req *w = write_new(c, n);
    *len = tls_stream_take(c->tls, w->data, n);
    return w;
}

/* Our close_notify, if the socket takes it at once: closing does not wait for the peer. */
static void tls_goodbye(tcp_conn *c) {
    char bye[256];
    tls_stream_close_notify(c->tls);
    size_t n = tls_stream_take(c->tls, bye, sizeof bye);
    uv_buf_t b = uv_buf_init(bye, (unsigned)n);
    if (n > 0) uv_try_write((uv_stream_t *)&c->handle, &b, 1);
}

/* ---- connecting ------------------------------------------------------------------------ */

static void unref_connect(tcp_conn *c) {
    if (c->connect_ref == LUA_NOREF) return;
    luaL_unref(c->app->L, LUA_REGISTRYINDEX, c->connect_ref);
    c->connect_ref = LUA_NOREF;
}


/* Closes the socket and timer; a read or send in progress fails with "closed". */
static void conn_on_close(hostobj *o) {
    tcp_conn *c = HOSTOBJ_OF(o, tcp_conn, obj);
    task_t *w = c->waiter, *wr = c->pending_write ? c->pending_write->task : NULL;
    if (w) wait_end(c);
    detach_write(c);
    unref_connect(c);
    if (c->resolving) uv_cancel((uv_req_t *)&c->resolve_req); /* on_resolved lets go */
    if (c->tls && c->ready && !c->error) tls_goodbye(c);
    uv_close((uv_handle_t *)&c->handle, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (w) sched_resume_error(w, "closed");
    if (wr) sched_resume_error(wr, "closed");
}

/* The end of a connect: the script gets the connection, or err and the socket is closed
 * now (it is useless), not at collection. */
static void connect_done(tcp_conn *c, const char *err) {
    task_t *w = c->waiter;
    if (w) wait_end(c);
    if (err) {
        char why[256];
        snprintf(why, sizeof why, "%s", err); /* err may live in c, which closing may free */
        conn_close(c);
        if (w) sched_resume_error(w, why);
        return;
    }
    c->ready = 1;
    if (w) lua_rawgeti(w->co, LUA_REGISTRYINDEX, c->connect_ref);
    unref_connect(c);
    if (w) sched_resume(w, 1);
}

static void on_connect(uv_connect_t *req, int status) {
    tcp_conn *c = req->data;
    if (status == UV_ECANCELED) return; /* closed while connecting */
    if (status != 0) {
        c->error = status;
        connect_done(c, uv_strerror(status));
        return;
    }
    c->connected = 1;
    reading_resume(c);
    if (c->tls)
        tls_handshake_step(c); /* our first flight; the connect waits for the handshake */
    else
        connect_done(c, NULL);
}

/* ---- resolving ------------------------------------------------------------------------- */

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    tcp_conn *c = req->data;
    c->resolving = 0;
    if (!c->obj.closing) { /* else cancelled, or too late: the connect is over */
        int rc = status == 0 ? uv_tcp_connect(&c->connect_req, &c->handle, res->ai_addr, on_connect)
                             : status;
        if (rc != 0) {
            char why[300];
            if (status)
                snprintf(why, sizeof why, "cannot resolve %s: %s", c->name, uv_strerror(rc));
            else
                snprintf(why, sizeof why, "%s", uv_strerror(rc));
            c->error = rc;
            connect_done(c, why);
        }
    }
    uv_freeaddrinfo(res);
    hostobj_release(&c->obj);
}

/* Resolves name off the loop, then connects to its first address. 0 or a libuv error. */
static int resolve_start(tcp_conn *c, const char *name, int port) {
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    c->name = xstrdup(name);
    c->resolve_req.data = c;
    int rc = uv_getaddrinfo(c->app->loop, &c->resolve_req, on_resolved, name, service, &hints);
    if (rc != 0) return rc;
    c->resolving = 1;
    hostobj_hold(&c->obj); /* until on_resolved, which comes even when cancelled */
    return 0;
}

/* Binds the connection's source address to opts.bind (an IP; port chosen by the kernel),
 * so one process can speak from several loopback addresses. 0 or a libuv error. */
static int bind_source(lua_State *L, uv_tcp_t *h) {
    if (!lua_istable(L, 3)) return 0;
    lua_getfield(L, 3, "bind");
    const char *ip = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (!ip) return 0;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(ip, 0, &a4) == 0) return uv_tcp_bind(h, (const struct sockaddr *)&a4, 0);
    if (uv_ip6_addr(ip, 0, &a6) == 0) return uv_tcp_bind(h, (const struct sockaddr *)&a6, 0);
    return UV_EINVAL;
}

/* A connection not yet connected (TLS over ts unless NULL), its socket and timer open. */
static tcp_conn *conn_new(struct app *app, tls_stream *ts) {
    tcp_conn *c = xcalloc(1, sizeof *c);
    c->app = app;
    c->tls = ts;
    if (ts) c->cipher = xmalloc(TLS_READ_CHUNK);
    uv_tcp_init(app->loop, &c->handle);
    uv_timer_init(app->loop, &c->timer);
    c->handle.data = c->timer.data = c->connect_req.data = c;
    hostobj_init(app, &c->obj, "socket", conn_on_close, conn_free);
    c->obj.close_on_collect = 1; /* nobody can read or send on it any more */
    hostobj_hold(&c->obj);       /* the socket and the timer, until their close callbacks */
    hostobj_hold(&c->obj);
    c->connect_ref = LUA_NOREF;
    uv_tcp_nodelay(&c->handle, 1);
    return c;
}

/* The string option k of the options at 3, NULL when absent; raises unless a string. */
static const char *opt_string(lua_State *L, const char *k) {
    if (!lua_istable(L, 3)) return NULL;
    lua_getfield(L, 3, k);
    int type = lua_type(L, -1);
    const char *s = lua_tostring(L, -1); /* the options table keeps the string alive */
    lua_pop(L, 1);
    if (type != LUA_TNIL && type != LUA_TSTRING)
        luaL_argerror(L, 3, lua_pushfstring(L, "%s must be a string", k));
    return s;
}

typedef struct tls_opts {
    int on;
    const char *ca_file, *server_name;
} tls_opts;

/* tls=, ca_file=, server_name= of the options at 3 (raises on a wrong type); the name
 * checked defaults to the host dialled. */
static tls_opts tls_options(lua_State *L, const char *dialled) {
    tls_opts o = {0, NULL, NULL};
    if (!lua_istable(L, 3)) return o;
    lua_getfield(L, 3, "tls");
    int type = lua_type(L, -1);
    o.on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (type != LUA_TNIL && type != LUA_TBOOLEAN) luaL_argerror(L, 3, "tls must be a boolean");
    o.ca_file = opt_string(L, "ca_file");
    o.server_name = opt_string(L, "server_name");
    if (!o.server_name) o.server_name = dialled;
    return o;
}

/* connect(host, port, {timeout_ms=, read_timeout_ms=, max_buffer=, bind=, frame=, tls=,
 * ca_file=, server_name=}?) -> conn | nil, err   (yields). host: an IP address or a name
 * (resolved within timeout_ms; its first address is dialled). frame: "u16u16" (default) |
 * "u16u32", the format of read_frame and send_frame. tls: the stream is TLS, its handshake
 * done within timeout_ms, the certificate checked against ca_file (else the system's CAs)
 * and server_name (default: host; an IP address is checked as one). */
static int l_connect(lua_State *L) {
    struct app *app = app_from(L);
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    int timeout = (int)vm_opt_int(L, 3, "timeout_ms", DEFAULT_TIMEOUT_MS);
    int read_timeout = (int)vm_opt_int(L, 3, "read_timeout_ms", timeout);
    size_t max_buffer = (size_t)vm_opt_int(L, 3, "max_buffer", DEFAULT_MAX_BUFFER);
    enum frame_kind kind = frame_opt_kind(L, 3);
    tls_opts tls = tls_options(L, host);
    task_t *t = sched_need(L, "host.tcp.connect");
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    const struct sockaddr *addr = NULL; /* NULL: a name, resolved first */
    if (uv_ip4_addr(host, port, &a4) == 0)
        addr = (const struct sockaddr *)&a4;
    else if (uv_ip6_addr(host, port, &a6) == 0)
        addr = (const struct sockaddr *)&a6;
    char err[256];
    tls_stream *ts =
        tls.on ? tls_stream_client(tls.ca_file, tls.server_name, err, sizeof err) : NULL;
    if (tls.on && !ts) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    tcp_conn *c = conn_new(app, ts);
    c->timeout_ms = read_timeout;
    c->max_buffer = max_buffer;
    c->kind = kind;
    hostobj_push(L, &c->obj, CONN_MT);
    int rc = bind_source(L, &c->handle);
    if (rc == 0)
        rc = addr ? uv_tcp_connect(&c->connect_req, &c->handle, addr, on_connect)
                  : resolve_start(c, host, port);
    if (rc != 0) {
        conn_close(c);
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushvalue(L, -1);
    c->connect_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pushed as the result on connect */
    wait_begin(L, c, t, timeout);
    return lua_yield(L, 0);
}

/* ---- methods ------------------------------------------------------------------------- */

static tcp_conn *check_conn(lua_State *L) {
    tcp_conn *c = HOSTOBJ_OF(hostobj_check(L, 1, CONN_MT), tcp_conn, obj);
    if (c->obj.closing) luaL_error(L, "tcp connection is closed");
    return c;
}

/* conn:send(data) -> true | nil, err: waits until the kernel took the data */
static int l_send(lua_State *L) {
    tcp_conn *c = check_conn(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    task_t *t = sched_need(L, "conn:send");
    if (c->error || !c->connected) {
        lua_pushnil(L);
        lua_pushstring(L, c->error ? conn_error(c) : "not connected");
        return 2;
    }
    if (c->pending_write) return luaL_error(L, "conn:send: another send is pending");
    write_req *w = c->tls ? tls_encrypt(c, data, &len) : write_new(c, len);
    if (!w) {
        lua_pushnil(L);
        lua_pushstring(L, tls_stream_error(c->tls));
        return 2;
    }
    if (!c->tls) memcpy(w->data, data, len);
    int rc = write_start(c, w, len, t);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    c->pending_write = w;
    sched_suspend_timeout(t, write_wait_cancel, c, c->timeout_ms); /* a peer that never reads */
    return lua_yield(L, 0);
}

static int read_common(lua_State *L, tcp_conn *c, enum read_mode mode, size_t want,
                       const char *delim, size_t dlen, int timeout_arg) {
    int timeout = (int)luaL_optinteger(L, timeout_arg, c->timeout_ms);
    if (c->waiter) return luaL_error(L, "conn: another read is pending");
    int n = try_read(c, L, mode, want, delim, dlen);
    if (n > 0) return n;
    reading_resume(c); /* TLS: the stream may hold what a full buffer left there */
    n = try_read(c, L, mode, want, delim, dlen);
    if (n > 0) return n;
    task_t *t = sched_need(L, "conn:read");
    c->mode = mode;
    c->want = want;
    c->delim = NULL;
    c->delim_len = dlen;
    if (delim) {
        c->delim = xmalloc(dlen);
        memcpy(c->delim, delim, dlen);
    }
    wait_begin(L, c, t, timeout);
    return lua_yield(L, 0);
}

/* conn:read(max?, timeout_ms?) -> 1..max bytes as soon as any arrived | nil, err */
static int l_read(lua_State *L) {
    tcp_conn *c = check_conn(L);
    size_t max = (size_t)luaL_optinteger(L, 2, 65536);
    luaL_argcheck(L, max > 0, 2, "must be > 0");
    return read_common(L, c, READ_SOME, max, NULL, 0, 3);
}

/* conn:read_exactly(n, timeout_ms?) -> n bytes | nil, err, partial */
static int l_read_exactly(lua_State *L) {
    tcp_conn *c = check_conn(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0, 2, "must be > 0");
    return read_common(L, c, READ_EXACT, (size_t)n, NULL, 0, 3);
}

/* conn:read_until(delim, timeout_ms?) -> data before delim (delim consumed) | nil, err */
static int l_read_until(lua_State *L) {
    tcp_conn *c = check_conn(L);
    size_t dlen;
    const char *delim = luaL_checklstring(L, 2, &dlen);
    luaL_argcheck(L, dlen > 0, 2, "must not be empty");
    return read_common(L, c, READ_UNTIL, 0, delim, dlen, 3);
}

/* conn:read_all(timeout_ms?) -> everything until the peer closes */
static int l_read_all(lua_State *L) {
    tcp_conn *c = check_conn(L);
    return read_common(L, c, READ_ALL, 0, NULL, 0, 2);
}

static void shutdown_done(uv_shutdown_t *req, int status) { free(req); }

/* conn:read_frame(timeout_ms?, max_body?) -> msg_id, body | nil, err: one frame of the
 * connection's format (max_body defaults to the largest the format carries) */
static int l_read_frame(lua_State *L) {
    tcp_conn *c = check_conn(L);
    lua_Integer max = luaL_optinteger(L, 3, (lua_Integer)frame_max_body(c->kind));
    return read_common(L, c, READ_FRAME, (size_t)max, NULL, 0, 2);
}

/* conn:send_frame(msg_id, body) -> true | nil, err */
static int l_send_frame(lua_State *L) {
    frame_push_encoded(L, check_conn(L)->kind, 2, 3);
    lua_replace(L, 2);
    lua_settop(L, 2);
    return l_send(L);
}

/* conn:shutdown() -> true: no more sends (the peer sees EOF: over TLS our close_notify,
 * then the socket's end); reading goes on */
static int l_shutdown(lua_State *L) {
    tcp_conn *c = check_conn(L);
    if (c->tls) {
        tls_stream_close_notify(c->tls);
        tls_flush(c);
    }
    uv_shutdown_t *req = xmalloc(sizeof *req);
    if (uv_shutdown(req, (uv_stream_t *)&c->handle, shutdown_done) != 0) free(req);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:closed() -> true once the peer closed or the connection failed */
static int l_closed(lua_State *L) {
    tcp_conn *c = HOSTOBJ_OF(hostobj_check(L, 1, CONN_MT), tcp_conn, obj);
    lua_pushboolean(L, c->obj.closing || c->eof || c->error);
    return 1;
}

int tcp_client_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"send", l_send},         {"read", l_read},   {"read_exactly", l_read_exactly},
        {"read_until", l_read_until}, {"read_all", l_read_all}, {"shutdown", l_shutdown},
        {"close", hostobj_l_close}, {"closed", l_closed}, {"read_frame", l_read_frame},
        {"send_frame", l_send_frame}, {NULL, NULL}};
    hostobj_class(L, CONN_MT, methods, NULL);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_connect, 1);
    lua_setfield(L, -2, "connect");
    return 1;
}
