/* http_client.c: host.http.request, an HTTP/1.1 client on the loop for scripts (the
 * terminal client talks to the gate with it). Keep-alive connections are pooled per
 * host:port (a few idle ones, closed after an idle time); responses are parsed with
 * http_parser; every request has a deadline covering connect, send and the whole
 * response. A request that finds a pooled connection closed by the server before any
 * byte of the answer is sent once more on a fresh connection. */
#include <http_parser.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

#define POOL_IDLE_MAX 8          /* idle keep-alive connections kept per host:port */
#define POOL_IDLE_MS 30000
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_RESPONSE (16u << 20)

typedef struct hc_request hc_request;

typedef struct hc_conn {
    list_node link;              /* in the idle pool while idle */
    struct app *app;
    char key[96];                /* "host:port" */
    uv_tcp_t tcp;
    uv_timer_t timer;            /* idle timeout while pooled */
    uv_connect_t connect_req;
    uv_write_t write_req;
    http_parser parser;
    hc_request *req;             /* the request on it, if any */
    int closing, reused, open_handles;
} hc_conn;

struct hc_request {
    task_t *task;                /* NULL once the caller is gone */
    hc_conn *conn;
    uv_timer_t *timer;
    char *out;                   /* the request bytes */
    size_t out_len;
    struct sockaddr_storage addr;
    char key[96];
    int status, complete, got_bytes, retried, no_reuse;
    char *hbuf;                  /* "name\0value\0" pairs */
    size_t hlen, hcap;
    int in_value;
    char *body;
    size_t blen, bcap;
};


/* ---- buffers ---------------------------------------------------------------------------- */

static int grow(char **buf, size_t *cap, size_t need) {
    if (need > MAX_RESPONSE) return -1;
    *buf = buf_grow(*buf, cap, need);
    return 0;
}

/* Keeps hbuf NUL-terminated (grow reserved the byte): push_response's strlen stops at hlen
 * even when the last value was not ended (a chunked response's trailers). */
static int add_hbuf(hc_request *r, const char *at, size_t len) {
    if (grow(&r->hbuf, &r->hcap, r->hlen + len + 1) != 0) return -1;
    memcpy(r->hbuf + r->hlen, at, len);
    r->hlen += len;
    r->hbuf[r->hlen] = '\0';
    return 0;
}

/* ---- parsing the response --------------------------------------------------------------- */

static hc_request *req_of(http_parser *p) { return ((hc_conn *)p->data)->req; }

static int on_header_field(http_parser *p, const char *at, size_t len) {
    hc_request *r = req_of(p);
    if (r->in_value || r->hlen == 0) {
        if (r->hlen) add_hbuf(r, "", 1); /* end of the previous value */
        r->in_value = 0;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = at[i] >= 'A' && at[i] <= 'Z' ? (char)(at[i] + 32) : at[i];
        if (add_hbuf(r, &ch, 1) != 0) return 1;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    hc_request *r = req_of(p);
    if (!r->in_value) {
        if (add_hbuf(r, "", 1) != 0) return 1; /* end of the name */
        r->in_value = 1;
    }
    return add_hbuf(r, at, len);
}

static int on_headers_complete(http_parser *p) {
    hc_request *r = req_of(p);
    if (r->hlen) add_hbuf(r, "", 1);
    r->in_value = 0; /* the value is ended: a trailer's name starts right after it */
    r->status = p->status_code;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    hc_request *r = req_of(p);
    if (grow(&r->body, &r->bcap, r->blen + len + 1) != 0) return 1;
    memcpy(r->body + r->blen, at, len);
    r->blen += len;
    return 0;
}

static int on_message_complete(http_parser *p) {
    req_of(p)->complete = 1;
    http_parser_pause(p, 1);
    return 0;
}

static http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connections ------------------------------------------------------------------------ */

static void conn_handle_closed(uv_handle_t *h) {
    hc_conn *c = h->data;
    if (--c->open_handles == 0) free(c);
}

static void conn_close(hc_conn *c) {
    if (c->closing) return;
    c->closing = 1;
    list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void idle_timeout(uv_timer_t *t) { conn_close(t->data); }

static void pool_put(hc_conn *c) {
    int n = 0;
    list_node *idle = &c->app->http_idle;
    for (list_node *x = idle->next; x != idle; x = x->next)
        n += strcmp(LIST_ENTRY(x, hc_conn, link)->key, c->key) == 0;
    if (n >= POOL_IDLE_MAX || c->app->stopping) {
        conn_close(c);
        return;
    }
    c->req = NULL;
    list_push_back(idle, &c->link);
    uv_timer_start(&c->timer, idle_timeout, POOL_IDLE_MS, 0);
}

static hc_conn *pool_take(struct app *app, const char *key) {
    list_node *idle = &app->http_idle;
    for (list_node *x = idle->next; x != idle; x = x->next) {
        hc_conn *c = LIST_ENTRY(x, hc_conn, link);
        if (strcmp(c->key, key) != 0) continue;
        list_remove(&c->link);
        uv_timer_stop(&c->timer);
        c->reused = 1;
        return c;
    }
    return NULL;
}

/* ---- finishing a request ---------------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) { free(h); }

static void req_free(hc_request *r) {
    if (r->timer) uv_close((uv_handle_t *)r->timer, timer_closed);
    free(r->out);
    free(r->hbuf);
    free(r->body);
    free(r);
}

/* Pushes {status=, headers=, body=} onto co. */
static void push_response(lua_State *co, hc_request *r) {
    lua_createtable(co, 0, 4);
    lua_pushinteger(co, r->status);
    lua_setfield(co, -2, "status");
    lua_newtable(co);
    for (size_t off = 0; off < r->hlen;) {
        const char *name = r->hbuf + off;
        size_t nl = strlen(name);
        const char *value = name + nl + 1;
        if (off + nl + 1 >= r->hlen) break;
        size_t vl = strlen(value);
        lua_pushstring(co, name);
        lua_pushlstring(co, value, vl);
        lua_rawset(co, -3);
        off += nl + 1 + vl + 1;
    }
    lua_setfield(co, -2, "headers");
    lua_pushlstring(co, r->body ? r->body : "", r->blen);
    lua_setfield(co, -2, "body");
}

static void req_finish(hc_request *r, const char *err) {
    task_t *t = r->task;
    hc_conn *c = r->conn;
    r->conn = NULL;
    if (c) {
        c->req = NULL;
        if (!err && !r->no_reuse && http_should_keep_alive(&c->parser))
            pool_put(c);
        else
            conn_close(c);
    }
    if (t) {
        if (err) {
            sched_resume_error(t, err);
        } else {
            push_response(t->co, r);
            sched_resume(t, 1);
        }
    }
    req_free(r);
}

static void req_cancel(void *op) {
    hc_request *r = op;
    r->task = NULL;
    req_finish(r, "cancelled");
}

static void req_timeout(uv_timer_t *t) { req_finish(t->data, "timeout"); }

/* ---- the exchange ----------------------------------------------------------------------- */

static int start_on(hc_request *r, hc_conn *c);
static hc_conn *conn_new(struct app *app, const char *key);
static int conn_connect(hc_conn *c, hc_request *r);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    hc_conn *c = s->data;
    hc_request *r = c->req;
    if (n == 0) {
        free(b->base);
        return;
    }
    if (!r) { /* not expected: reading stops before a connection is pooled */
        free(b->base);
        conn_close(c);
        return;
    }
    if (n < 0) {
        free(b->base);
        uv_read_stop(s);
        if (n == UV_EOF && !r->complete) http_parser_execute(&c->parser, &settings, NULL, 0);
        if (r->complete) {
            req_finish(r, NULL);
        } else if (c->reused && !r->got_bytes && !r->retried) {
            /* the server had closed the pooled connection: once more on a fresh one */
            r->retried = 1;
            c->req = NULL;
            r->conn = NULL;
            conn_close(c);
            if (conn_connect(conn_new(c->app, r->key), r) != 0) req_finish(r, "cannot connect");
        } else {
            req_finish(r, n == UV_EOF ? "connection closed before the whole response" : uv_strerror((int)n));
        }
        return;
    }
    r->got_bytes = 1;
    size_t used = http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    free(b->base);
    if (r->complete) {
        uv_read_stop(s);
        r->no_reuse = used < (size_t)n; /* bytes after the response: not a clean stream */
        req_finish(r, NULL);
        return;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        uv_read_stop(s);
        req_finish(r, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    *b = uv_buf_init(xmalloc(65536), 65536);
}

static void on_written(uv_write_t *w, int status) {
    hc_conn *c = w->data;
    if (status < 0 && c->req) req_finish(c->req, uv_strerror(status));
}

/* Sends r on c. Returns 0, or a negative errno when the request could not be written (r is
 * not finished then: the caller does it, without resuming a task that has not yielded yet). */
static int start_on(hc_request *r, hc_conn *c) {
    r->conn = c;
    c->req = r;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    uv_buf_t b = uv_buf_init(r->out, (unsigned)r->out_len);
    c->write_req.data = c;
    return uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void on_connect(uv_connect_t *req, int status) {
    hc_conn *c = req->data;
    hc_request *r = c->req;
    if (status == UV_ECANCELED || !r) return;
    if (status < 0) {
        req_finish(r, uv_strerror(status));
        return;
    }
    if (start_on(r, c) != 0) req_finish(r, "cannot send the request");
}

static hc_conn *conn_new(struct app *app, const char *key) {
    hc_conn *c = xcalloc(1, sizeof *c);
    c->app = app;
    snprintf(c->key, sizeof c->key, "%s", key);
    list_init(&c->link);
    uv_tcp_init(app->loop, &c->tcp);
    uv_timer_init(app->loop, &c->timer);
    c->tcp.data = c->timer.data = c->connect_req.data = c;
    c->open_handles = 2;
    return c;
}

/* Starts connecting c for r. Returns 0, or a negative errno when the connect failed at once
 * (r is not finished then: the caller does it). */
static int conn_connect(hc_conn *c, hc_request *r) {
    r->conn = c;
    c->req = r;
    uv_tcp_nodelay(&c->tcp, 1);
    return uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&r->addr, on_connect);
}

/* ---- Lua -------------------------------------------------------------------------------- */

/* "http://host:port/path" -> host, port, path; 0 or -1. */
static int parse_url(const char *url, char *host, size_t hl, int *port, const char **path) {
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, strlen(url), 0, &u) != 0) return -1;
    if (!(u.field_set & (1 << UF_HOST)) || !(u.field_set & (1 << UF_SCHEMA))) return -1;
    if (u.field_data[UF_SCHEMA].len != 4 || strncmp(url + u.field_data[UF_SCHEMA].off, "http", 4) != 0)
        return -1;
    snprintf(host, hl, "%.*s", (int)u.field_data[UF_HOST].len, url + u.field_data[UF_HOST].off);
    *port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
    *path = (u.field_set & (1 << UF_PATH)) ? url + u.field_data[UF_PATH].off : "/";
    return 0;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss) {
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    return -1;
}

static void out_add(hc_request *r, size_t *cap, const char *data, size_t n) {
    r->out = buf_grow(r->out, cap, r->out_len + n);
    memcpy(r->out + r->out_len, data, n);
    r->out_len += n;
}

static void out_str(hc_request *r, size_t *cap, const char *s) { out_add(r, cap, s, strlen(s)); }

/* The request bytes: request line, Host, the caller's headers (lines with CR/LF dropped),
 * Content-Length when there is a body, the body. */
static void build_request(lua_State *L, hc_request *r, const char *method, const char *host,
                          int port, const char *path, int opts) {
    size_t cap = 0, blen = 0;
    char line[512];
    out_str(r, &cap, method); /* method and path are not bounded: not through line */
    out_str(r, &cap, " ");
    out_str(r, &cap, path);
    snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: chathost\r\n", host,
             port);
    out_str(r, &cap, line);
    lua_getfield(L, opts, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            /* lua_tostring on a number key would change it and break lua_next */
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            const char *v = lua_tostring(L, -1);
            if (k && v && !strpbrk(k, "\r\n:") && !strpbrk(v, "\r\n") &&
                strcasecmp(k, "content-length") != 0 && strcasecmp(k, "host") != 0) {
                out_str(r, &cap, k);
                out_str(r, &cap, ": ");
                out_str(r, &cap, v);
                out_str(r, &cap, "\r\n");
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, opts, "body");
    const char *body = lua_isstring(L, -1) ? lua_tolstring(L, -1, &blen) : NULL;
    if (body) {
        snprintf(line, sizeof line, "Content-Length: %zu\r\n", blen);
        out_str(r, &cap, line);
    }
    out_str(r, &cap, "\r\n");
    if (body) out_add(r, &cap, body, blen);
    lua_pop(L, 1);
}

/* request{url=, method="GET", headers=?, body=?, timeout_ms=?}
 *   -> {status=, headers=, body=} | nil, err   (yields) */
static int l_request(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "url");
    const char *url = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, 1, "timeout_ms");
    lua_Integer timeout = luaL_optinteger(L, -1, DEFAULT_TIMEOUT_MS);
    char host[64];
    int port;
    const char *path;
    if (parse_url(url, host, sizeof host, &port, &path) != 0)
        return luaL_argerror(L, 1, "url must be http://host[:port]/path");
    task_t *t = sched_need(L, "host.http.request");
    hc_request *r = xcalloc(1, sizeof *r);
    if (resolve(host, port, &r->addr) != 0) {
        free(r);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: expected an IP address or localhost", host);
        return 2;
    }
    snprintf(r->key, sizeof r->key, "%s:%d", host, port);
    int top = lua_gettop(L);
    build_request(L, r, method, host, port, path, 1);
    lua_settop(L, top);
    r->task = t;
    r->timer = xmalloc(sizeof *r->timer);
    uv_timer_init(app->loop, r->timer);
    r->timer->data = r;
    uv_timer_start(r->timer, req_timeout, (uint64_t)timeout, 0);
    hc_conn *c = pool_take(app, r->key);
    const char *err = NULL;
    if (c && start_on(r, c) != 0)
        err = "cannot send the request";
    else if (!c && conn_connect(conn_new(app, r->key), r) != 0)
        err = "cannot connect";
    if (err) { /* failed before the task yielded: answer now, nothing to resume */
        r->task = NULL;
        req_finish(r, err);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    sched_suspend(t, req_cancel, r);
    return lua_yield(L, 0);
}

/* Closes the idle pooled connections (shutdown). */
void http_client_shutdown(struct app *app) {
    list_node *idle = &app->http_idle;
    while (!list_empty(idle)) conn_close(LIST_ENTRY(idle->next, hc_conn, link));
}

int http_client_open(lua_State *L) {
    list_init(&((struct app *)lua_touserdata(L, -1))->http_idle);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_request, 1);
    return 1;
}
