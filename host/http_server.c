/* http_server.c: host.http.serve, an HTTP/1.1 server on the loop. Keep-alive and
 * pipelining with one request handled at a time per connection, in order; each request
 * runs its route's Lua handler in a task of its own. Limits (header, target and body size,
 * read, idle and handler timeouts, connections) come from the caller; every violation gets
 * a JSON answer with its status before the close, never a silent close. A handler may
 * return a file (req:send_file): it is streamed 64 KiB at a time, each read on the thread
 * pool and each write awaited before the next read, so memory stays bounded whatever the
 * file's size and the client's speed. Parsing lives in http_parse.c; Lua's view of a
 * request (req) in host/lua/http.lua. */
#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "errors.h"
#include "file.h"
#include "hostobj.h"
#include "http_parse.h"
#include "json.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "modules.h"
#include "peer_count.h"
#include "sched.h"

#define SERVER_MT "chathost.http_server"
#define STREAM_CHUNK (64 * 1024) /* a file response is read and written this much at a time */

/* Metric series of one route, found once and kept (a hash lookup with string building per
 * request was a measurable share of a trivial request). */
#define ROUTE_STATS 64
#define ROUTE_STATUSES 4
typedef struct route_stat {
    char key[160];
    metric *latency;
    struct {
        int status;
        metric *count;
    } by_status[ROUTE_STATUSES];
} route_stat;

typedef struct http_server {
    hostobj obj;            /* users: the Lua handle, the listener, each connection */
    struct app *app;
    uv_tcp_t listener;
    int port;
    char name[32];          /* metrics label: "gate", "admin" */
    int routes_ref;         /* a routes table, or a function returning the current one */
    int req_mt_ref;
    int file_mt_ref;        /* marks a handler's file response (chathost.http's file_mt) */
    int streams;            /* file responses being sent */
    size_t stream_bytes, stream_peak; /* their buffers now, and at most so far */
    hreq_limits limits;
    uint64_t read_timeout_ms, idle_timeout_ms, handler_timeout_ms, first_byte_timeout_ms;
    int max_connections, nconns;
    int max_per_ip;         /* connections from one address; 0: no cap */
    peer_count *per_ip;
    char (*exempt)[64];     /* addresses the per-address cap spares (trusted proxies) */
    int nexempt;
    int access_log;
    list_node conns;
    metric *m_conns;
    route_stat *stats[ROUTE_STATS];
} http_server;

enum conn_state { C_READING, C_HANDLING, C_WRITING, C_LINGERING, C_CLOSING };

/* A file response under way: one buffer, one read or one write at a time. */
typedef struct file_stream {
    file_t *file;           /* held (file_take) until the stream ends */
    int64_t offset;         /* of the next read */
    uint64_t left;          /* bytes still to send */
    size_t chunk;           /* bytes in buf being written */
    int head_sent, reading;
    uv_fs_t req;
    char buf[STREAM_CHUNK];
} file_stream;

/* After an error answer that ends the connection, the client may still be sending (a
 * body we refused): closing at once would reset the connection before it reads our
 * answer. So the write side is shut (FIN) and input is read and dropped for a while. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (16u << 20)

typedef struct http_conn {
    list_node link;
    http_server *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    hreq req;
    char *in;               /* received bytes; [in_off, in_len) not parsed yet */
    size_t in_off, in_len, in_cap;
    enum conn_state state;
    int reading, eof;
    int keep_alive, close_after, sent_continue, timed_out;
    int deadline_set;       /* the read timer counts down the request under way */
    int counted;            /* counted in srv->per_ip */
    int served;             /* requests answered on this connection */
    int processing, again;  /* conn_process runs; asked to run once more (see there) */
    task_t *task;
    uint64_t t0;            /* hrtime when the request was complete */
    char peer[64];
    char route[160];        /* the route key, or "unmatched", for logs and metrics */
    uv_write_t wreq;
    char *out;
    size_t out_len, out_cap;
    uv_write_t creq;        /* 100 Continue */
    uv_shutdown_t shutdown_req;
    size_t lingered;        /* bytes dropped while lingering */
    file_stream *stream;    /* a file response being sent, or NULL */
} http_conn;

static void conn_process(http_conn *c);
static void conn_close(http_conn *c);
static void conn_release(http_conn *c);
static void conn_resume_reading(http_conn *c);

/* ---- response bytes -------------------------------------------------------------------- */

static void out_reserve(http_conn *c, size_t more) {
    c->out = buf_grow(c->out, &c->out_cap, c->out_len + more);
}

static void out_add(http_conn *c, const char *s, size_t n) {
    out_reserve(c, n);
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void out_str(http_conn *c, const char *s) { out_add(c, s, strlen(s)); }

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The Date header value, formatted at most once a second. */
static const char *http_date(void) {
    static char buf[64];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

static void out_size(http_conn *c, size_t v) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_reserve(c, (size_t)n);
    while (n > 0) c->out[c->out_len++] = digits[--n];
}

/* Starts the response: status line and the standard headers. extra: more header lines. */
static void out_head(http_conn *c, int status, const char *ctype, size_t body_len,
                     const char *extra, size_t extra_len) {
    c->out_len = 0;
    out_str(c, "HTTP/1.1 ");
    out_size(c, (size_t)status);
    out_add(c, " ", 1);
    out_str(c, reason(status));
    out_str(c, "\r\nDate: ");
    out_str(c, http_date());
    out_str(c, "\r\nContent-Type: ");
    out_str(c, ctype);
    out_str(c, "\r\nContent-Length: ");
    out_size(c, body_len);
    out_add(c, "\r\n", 2);
    if (!c->keep_alive || c->close_after) out_str(c, "Connection: close\r\n");
    if (extra_len) out_add(c, extra, extra_len);
    out_add(c, "\r\n", 2);
}

/* ---- writing ---------------------------------------------------------------------------- */

static unsigned route_hash(const char *key) {
    unsigned h = 2166136261u;
    for (const char *p = key; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

/* The route's cached series (NULL when the cache is full: looked up the slow way). */
static route_stat *route_stats(http_server *s, const char *key) {
    unsigned h = route_hash(key);
    for (unsigned i = 0; i < ROUTE_STATS; i++) {
        route_stat **slot = &s->stats[(h + i) % ROUTE_STATS];
        if (*slot && strcmp((*slot)->key, key) == 0) return *slot;
        if (*slot) continue;
        route_stat *st = xcalloc(1, sizeof *st);
        snprintf(st->key, sizeof st->key, "%s", key);
        char labels[320];
        snprintf(labels, sizeof labels, "server=\"%s\",route=\"%s\"", s->name, key);
        st->latency = metrics_get(METRIC_HISTOGRAM, "chathost_http_request_duration_seconds",
                                  labels, "Time from a complete request to its response.");
        *slot = st;
        return st;
    }
    return NULL;
}

static metric *status_counter(http_server *s, route_stat *st, const char *key, int status) {
    for (int i = 0; st && i < ROUTE_STATUSES; i++) {
        if (st->by_status[i].status == status) return st->by_status[i].count;
        if (st->by_status[i].status == 0) {
            st->by_status[i].status = status;
            return st->by_status[i].count = status_counter(s, NULL, key, status);
        }
    }
    char labels[320];
    snprintf(labels, sizeof labels, "server=\"%s\",route=\"%s\",status=\"%d\"", s->name, key,
             status);
    return metrics_get(METRIC_COUNTER, "chathost_http_requests_total", labels,
                       "HTTP requests by server, route and status.");
}

static void observe(http_conn *c, int status, size_t bytes) {
    http_server *s = c->srv;
    double secs = (double)(uv_hrtime() - c->t0) / 1e9;
    route_stat *st = route_stats(s, c->route);
    metric_add(status_counter(s, st, c->route, status), 1);
    if (st) {
        metric_observe(st->latency, secs);
    } else {
        char labels[320];
        snprintf(labels, sizeof labels, "server=\"%s\",route=\"%s\"", s->name, c->route);
        metric_observe(metrics_get(METRIC_HISTOGRAM, "chathost_http_request_duration_seconds",
                                   labels, "Time from a complete request to its response."), secs);
    }
    if (s->access_log && log_enabled(LOG_INFO)) /* the route key holds the method and path */
        log_info("%s %d %zuB %.1fms %s", c->route, status, bytes, secs * 1e3, c->peer);
}

static void linger_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
    http_conn *c = req->data;
    if (status < 0 && c->state == C_LINGERING) conn_close(c);
}

/* Ends the connection gracefully (see LINGER_MS). */
static void conn_linger(http_conn *c) {
    if (c->eof) {
        conn_close(c);
        return;
    }
    c->state = C_LINGERING;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_resume_reading(c);
    uv_timer_start(&c->timer, linger_timeout, LINGER_MS, 0);
}

static void on_written(uv_write_t *w, int status) {
    http_conn *c = LIST_ENTRY(w, http_conn, wreq);
    if (c->state == C_CLOSING) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after || !c->keep_alive || c->srv->obj.closing) {
        conn_linger(c);
        return;
    }
    hreq_reset(&c->req);
    c->state = C_READING;
    c->served++;
    c->sent_continue = c->deadline_set = 0;
    c->route[0] = '\0';
    conn_resume_reading(c);
    conn_process(c); /* pipelined requests already received */
}

static void write_timeout(uv_timer_t *t) {
    conn_close(t->data); /* the client does not read its response */
}

/* Sends the response in c->out; the connection goes on (or closes) when it is written.
 * Most responses fit the socket buffer: written at once, with no write request or timer. */
static void conn_send(http_conn *c, int status, size_t body_len) {
    if (c->state == C_CLOSING) return;
    observe(c, status, body_len);
    /* an answer to HEAD has the headers of the body, not the body (RFC 9110 9.3.2) */
    if (c->req.complete && c->req.parser.method == HTTP_HEAD && c->out_len >= body_len)
        c->out_len -= body_len;
    c->state = C_WRITING;
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->out_len) {
        on_written(&c->wreq, 0);
        return;
    }
    if (n > 0) b = uv_buf_init(c->out + n, (unsigned)(c->out_len - (size_t)n));
    else if (n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, write_timeout, c->srv->read_timeout_ms, 0);
}

/* A JSON error answer from the server itself: {"error":code,"message":msg}. */
static void send_error(http_conn *c, int status, int code, const char *msg, const char *extra) {
    if (c->state == C_READING) c->t0 = uv_hrtime(); /* no complete request: timed from now */
    char body[512];
    int n = snprintf(body, sizeof body, "{\"error\":%d,\"message\":\"%s\"}", code, msg);
    out_head(c, status, "application/json", (size_t)n, extra, extra ? strlen(extra) : 0);
    out_add(c, body, (size_t)n);
    conn_send(c, status, (size_t)n);
}

/* ---- handing requests to Lua -------------------------------------------------------- */

static void push_req(lua_State *L, http_conn *c) {
    hreq *r = &c->req;
    lua_createtable(L, 0, 8);
    lua_pushstring(L, hreq_method(r));
    lua_setfield(L, -2, "method");
    const char *url = r->hbuf;
    const char *q = memchr(url, '?', r->url_len);
    size_t plen = q ? (size_t)(q - url) : r->url_len;
    lua_pushlstring(L, url, plen);
    lua_setfield(L, -2, "path");
    if (q) {
        lua_pushlstring(L, q + 1, r->url_len - plen - 1);
        lua_setfield(L, -2, "query_string");
    }
    lua_createtable(L, 0, (int)r->nheaders);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const hreq_header *h = &r->headers[i];
        lua_pushlstring(L, r->hbuf + h->name, h->name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isstring(L, -1)) { /* a repeated header: values joined with ", " */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, r->hbuf + h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, r->hbuf + h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, c->peer);
    lua_setfield(L, -2, "peer");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->srv->req_mt_ref);
    lua_setmetatable(L, -2);
}

/* Pushes the current routes table (the routes function is called for it). */
static void push_routes(lua_State *L, http_server *s) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->routes_ref);
    if (!lua_isfunction(L, -1)) return;
    if (lua_pcall(L, 0, 1, 0) != 0) {
        log_error("http: looking up routes: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* With the routes table on top: the handler of "METHOD /dir/" followed by "*" for a request of
 * "METHOD /dir/name" (one path segment after the prefix, not empty), pushed in place of the
 * table, and c->route becomes that key, so metrics and logs get one series per route, not
 * one per file (the resource role's GET /files/<id>). Returns 0 (table left) if none. */
static int find_wildcard(lua_State *L, http_conn *c, size_t mlen) {
    char key[sizeof c->route + 2];
    const char *path = c->route + mlen + 1;
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path || slash[1] == '\0') return 0;
    int n = snprintf(key, sizeof key, "%.*s*", (int)(slash + 1 - c->route), c->route);
    if (n <= 0 || (size_t)n >= sizeof c->route) return 0;
    lua_getfield(L, -1, key);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_remove(L, -2);
    memcpy(c->route, key, (size_t)n + 1);
    return 1;
}

/* Finds the handler for c's request; pushes it, or answers 404/405 and returns 0. */
static int find_handler(lua_State *L, http_conn *c, size_t path_len) {
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    http_server *s = c->srv;
    const char *method = hreq_method(&c->req);
    size_t mlen = strlen(method);
    if (mlen + 1 + path_len >= sizeof c->route) path_len = sizeof c->route - mlen - 2;
    memcpy(c->route, method, mlen);
    c->route[mlen] = ' ';
    memcpy(c->route + mlen + 1, c->req.hbuf, path_len);
    c->route[mlen + 1 + path_len] = '\0';
    push_routes(L, s);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, c->route);
        if (lua_isfunction(L, -1)) {
            lua_remove(L, -2);
            return 1;
        }
        lua_pop(L, 1);
        if (find_wildcard(L, c, mlen)) return 1;
    }
    char allow[128] = "";
    size_t alen = 0;
    for (size_t i = 0; lua_istable(L, -1) && i < sizeof methods / sizeof *methods; i++) {
        lua_pushfstring(L, "%s %s", methods[i], c->route + strlen(method) + 1);
        lua_rawget(L, -2);
        if (lua_isfunction(L, -1))
            alen += (size_t)snprintf(allow + alen, sizeof allow - alen, "%s%s", alen ? ", " : "",
                                     methods[i]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (alen) {
        char extra[160];
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        send_error(c, 405, 405, "method not allowed", extra);
    } else {
        snprintf(c->route, sizeof c->route, "unmatched");
        send_error(c, 404, 404, "not found", NULL);
    }
    return 0;
}

/* The body value at idx as bytes: strings as they are, tables as JSON. Returns the content
 * type, or NULL when the value cannot be encoded (message pushed instead). */
static const char *body_of(lua_State *L, int idx, const char *ctype, const char **body,
                           size_t *len) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        *body = lua_tolstring(L, idx, len);
        return ctype ? ctype : "text/plain; charset=utf-8";
    }
    *body = json_encode_pcall(L, idx, len);
    if (!*body) return NULL;
    return ctype ? ctype : "application/json";
}

/* Extra header lines from a {name = value} table at idx into buf (at most cap bytes);
 * content-type is returned apart. Lines with CR/LF or that do not fit are dropped. */
static size_t collect_headers(lua_State *L, int idx, char *buf, size_t cap, const char **ctype) {
    size_t len = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* lua_tostring on a number key would change it and break lua_next */
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        const char *v = lua_tostring(L, -1);
        if (k && v && !strpbrk(k, "\r\n:") && !strpbrk(v, "\r\n")) {
            if (strcasecmp(k, "content-type") == 0) {
                *ctype = v; /* stays alive: the table is on the stack */
            } else if (strcasecmp(k, "content-length") != 0 && strcasecmp(k, "connection") != 0 &&
                       strcasecmp(k, "date") != 0) {
                int n = snprintf(buf + len, cap - len, "%s: %s\r\n", k, v);
                if (n > 0 && (size_t)n < cap - len) len += (size_t)n;
                else log_warn("http: response header %s dropped: headers too large", k);
                buf[len] = '\0';
            }
        }
        lua_pop(L, 1);
    }
    return len;
}

/* ---- file responses ----------------------------------------------------------------- */

/* Ends c's file response (if any) and closes its file; a read in flight ends it later. */
static void stream_end(http_conn *c) {
    file_stream *fs = c->stream;
    if (!fs || fs->reading) return;
    file_finish(fs->file);
    c->srv->streams--;
    c->srv->stream_bytes -= sizeof *fs;
    free(fs);
    c->stream = NULL;
}

static void stream_read(http_conn *c);

static void stream_written(uv_write_t *w, int status) {
    http_conn *c = LIST_ENTRY(w, http_conn, wreq);
    if (c->state == C_CLOSING) return;
    uv_timer_stop(&c->timer);
    if (status < 0) {
        conn_close(c);
        return;
    }
    file_stream *fs = c->stream;
    fs->left -= fs->chunk;
    fs->offset += (int64_t)fs->chunk;
    if (fs->left > 0) {
        stream_read(c);
        return;
    }
    stream_end(c);
    on_written(&c->wreq, 0); /* the next request, or the close */
}

/* Writes the chunk just read, after the head when it has not gone yet. */
static void stream_write(http_conn *c) {
    file_stream *fs = c->stream;
    uv_buf_t b[2];
    unsigned n = 0;
    if (!fs->head_sent) b[n++] = uv_buf_init(c->out, (unsigned)c->out_len);
    b[n++] = uv_buf_init(fs->buf, (unsigned)fs->chunk);
    fs->head_sent = 1;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, n, stream_written) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, write_timeout, c->srv->read_timeout_ms, 0); /* a client that stops reading */
}

/* A read that failed or came short (the file shrank): before the head, a 500 can still
 * go; after it, only the close tells the client its body is incomplete. */
static void stream_failed(http_conn *c, ssize_t result) {
    file_stream *fs = c->stream;
    log_warn("http: %s: reading %s at %lld failed (%s): %s", c->route, file_path(fs->file),
             (long long)fs->offset, result < 0 ? uv_strerror((int)result) : "the file is shorter",
             fs->head_sent ? "connection closed" : "answered 500");
    int head_sent = fs->head_sent;
    stream_end(c);
    if (head_sent) {
        conn_close(c);
        return;
    }
    c->close_after = 1;
    send_error(c, 500, ERR_Internal, "internal error", NULL);
}

static void stream_read_done(uv_fs_t *r) {
    http_conn *c = r->data;
    file_stream *fs = c->stream;
    ssize_t n = r->result;
    uv_fs_req_cleanup(r);
    fs->reading = 0;
    if (c->state != C_CLOSING) {
        if (n <= 0) {
            stream_failed(c, n);
        } else {
            fs->chunk = (size_t)n;
            stream_write(c);
        }
    }
    conn_release(c); /* the read's hold: c may go now (then with its stream) */
}

/* Reads the next chunk on the thread pool. */
static void stream_read(http_conn *c) {
    file_stream *fs = c->stream;
    size_t want = fs->left < STREAM_CHUNK ? (size_t)fs->left : STREAM_CHUNK;
    uv_buf_t b = uv_buf_init(fs->buf, (unsigned)want);
    fs->req.data = c;
    int rc = uv_fs_read(c->srv->app->loop, &fs->req, file_fd(fs->file), &b, 1, fs->offset,
                        stream_read_done);
    if (rc != 0) {
        stream_failed(c, rc);
        return;
    }
    fs->reading = 1;
    c->open_handles++; /* c stays until the read's callback */
}

/* The numeric field k of the table at idx (def when absent). */
static double number_field(lua_State *L, int idx, const char *k, double def) {
    lua_getfield(L, idx, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

/* Starts sending the file response at idx on co (made by req:send_file). */
static void respond_file(http_conn *c, lua_State *co, int idx) {
    lua_getfield(co, idx, "file");
    file_t *f = file_take(co, -1);
    lua_pop(co, 1);
    if (!f) {
        log_error("http: %s returned a file response whose file is closed", c->route);
        send_error(c, 500, ERR_Internal, "internal error", NULL);
        return;
    }
    int status = (int)number_field(co, idx, "status", 200);
    if (status < 200 || status > 599) status = 500;
    double offset = number_field(co, idx, "offset", 0), length = number_field(co, idx, "length", 0);
    lua_getfield(co, idx, "content_type");
    const char *ctype = lua_tostring(co, -1); /* stays on the stack while used */
    lua_getfield(co, idx, "headers");
    char extra[4096];
    size_t elen = lua_istable(co, -1) ? collect_headers(co, lua_gettop(co), extra, sizeof extra, &ctype) : 0;
    out_head(c, status, ctype ? ctype : "application/octet-stream", (size_t)length, extra, elen);
    lua_pop(co, 2);
    if (length <= 0 || c->req.parser.method == HTTP_HEAD) { /* the head says it all */
        file_finish(f);
        conn_send(c, status, 0);
        return;
    }
    observe(c, status, (size_t)length);
    c->state = C_WRITING;
    uv_timer_stop(&c->timer); /* the handler answered; each write arms its own deadline */
    file_stream *fs = xmalloc(sizeof *fs);
    fs->file = f;
    fs->offset = (int64_t)offset;
    fs->left = (uint64_t)length;
    fs->head_sent = fs->reading = 0;
    c->stream = fs;
    http_server *s = c->srv;
    s->streams++;
    s->stream_bytes += sizeof *fs;
    if (s->stream_bytes > s->stream_peak) s->stream_peak = s->stream_bytes;
    stream_read(c);
}

/* Is the value at idx a file response (its metatable chathost.http's file_mt)? */
static int is_file_response(http_conn *c, lua_State *co, int idx) {
    if (!lua_istable(co, idx) || !lua_getmetatable(co, idx)) return 0;
    lua_rawgeti(co, LUA_REGISTRYINDEX, c->srv->file_mt_ref);
    int yes = lua_rawequal(co, -1, -2);
    lua_pop(co, 2);
    return yes;
}

/* Turns a handler's results (on co, from base) into the response. */
static void respond(http_conn *c, lua_State *co, int base, int nres) {
    lua_checkstack(co, 12);
    if (nres >= 1 && is_file_response(c, co, base)) {
        respond_file(c, co, base);
        return;
    }
    int status = 200, body_idx = base, headers_idx = 0;
    if (nres >= 1 && lua_type(co, base) == LUA_TNUMBER) {
        status = (int)lua_tointeger(co, base);
        headers_idx = nres >= 2 && lua_istable(co, base + 1) ? base + 1 : 0;
        body_idx = nres >= 3 ? base + 2 : 0;
        if (status < 200 || status > 599) status = 500;
    } else if (nres < 1 || !lua_istable(co, base)) {
        log_error("http: %s returned no response (a table, or status, headers, body)", c->route);
        send_error(c, 500, ERR_Internal, "internal error", NULL);
        return;
    }
    const char *ctype = NULL;
    char extra[4096];
    size_t elen = headers_idx ? collect_headers(co, headers_idx, extra, sizeof extra, &ctype) : 0;
    size_t blen = 0;
    const char *body = "";
    if (body_idx && !lua_isnil(co, body_idx)) {
        ctype = body_of(co, body_idx, ctype, &body, &blen);
        if (!ctype) {
            log_error("http: %s: cannot encode the response: %s", c->route, lua_tostring(co, -1));
            send_error(c, 500, ERR_Internal, "internal error", NULL);
            return;
        }
    }
    out_head(c, status, ctype ? ctype : "application/json", blen, extra, elen);
    out_add(c, body, blen);
    conn_send(c, status, blen);
}

static int handler_done(void *ud, task_t *t, int ok, int nres) {
    http_conn *c = ud;
    c->task = NULL; /* the handler timer is re-armed by what follows the response */
    if (c->state == C_CLOSING) return 1; /* cancelled because the client went away */
    if (!ok) {
        const char *err = lua_tostring(t->co, -1);
        int cancelled = err && strcmp(err, "cancelled") == 0;
        c->close_after = cancelled;
        if (cancelled && c->timed_out)
            send_error(c, 504, ERR_Internal, "the handler did not answer in time", NULL);
        else if (cancelled)
            send_error(c, 503, ERR_ServerBusy, "server shutting down", NULL);
        else
            send_error(c, 500, ERR_Internal, "internal error", NULL);
        return cancelled; /* a real error is logged with its traceback */
    }
    respond(c, t->co, lua_gettop(t->co) - nres + 1, nres);
    return 0;
}

static void handler_timeout(uv_timer_t *timer) {
    http_conn *c = timer->data;
    log_warn("http: %s did not answer within %llu ms: cancelled", c->route,
             (unsigned long long)c->srv->handler_timeout_ms);
    c->timed_out = 1;
    if (c->task) sched_cancel(c->task);
}

static void dispatch(http_conn *c) {
    lua_State *L = c->srv->app->L;
    c->state = C_HANDLING;
    c->t0 = uv_hrtime();
    c->timed_out = 0;
    c->keep_alive = hreq_keep_alive(&c->req);
    const char *q = memchr(c->req.hbuf, '?', c->req.url_len);
    size_t path_len = q ? (size_t)(q - c->req.hbuf) : c->req.url_len;
    if (!find_handler(L, c, path_len)) return;
    push_req(L, c);
    uv_timer_start(&c->timer, handler_timeout, c->srv->handler_timeout_ms, 0);
    c->task = sched_spawn(c->srv->app, L, 1, c->route, handler_done, c);
}

/* ---- reading -------------------------------------------------------------------------- */

static void read_timeout(uv_timer_t *t) {
    http_conn *c = t->data;
    if (c->state != C_READING) return;
    if (!c->req.started) { /* idle keep-alive connection: nothing to answer */
        conn_close(c);
        return;
    }
    c->close_after = 1;
    snprintf(c->route, sizeof c->route, "unmatched");
    send_error(c, 408, 408, "request not received in time", NULL);
}

static void on_continue_written(uv_write_t *w, int status) { (void)w; }

/* How long a connection may wait for its next request: a new one gets the short first-byte
 * deadline (a client that connects and sends nothing holds a slot for no reason), one that
 * was served the keep-alive idle time. */
static uint64_t idle_limit(http_conn *c) {
    return c->served ? c->srv->idle_timeout_ms : c->srv->first_byte_timeout_ms;
}

/* Parses what was received; dispatches a complete request or answers a bad one. */
static void process_once(http_conn *c) {
    if (c->state != C_READING) return;
    size_t used;
    enum hreq_status st = hreq_feed(&c->req, c->in + c->in_off, c->in_len - c->in_off, &used);
    c->in_off += used;
    if (st == HREQ_DONE) {
        dispatch(c);
        return;
    }
    if (st == HREQ_ERROR) {
        c->close_after = 1; /* the stream cannot be trusted past a bad request */
        snprintf(c->route, sizeof c->route, "unmatched");
        send_error(c, c->req.err_status, c->req.err_status, c->req.err_msg, NULL);
        return;
    }
    if (c->in_off == c->in_len) c->in_off = c->in_len = 0;
    if (c->req.expect_continue && !c->sent_continue) {
        c->sent_continue = 1;
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25); /* libuv copies b */
        uv_write(&c->creq, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written);
    }
    if (c->eof) {
        if (hreq_eof(&c->req) == HREQ_ERROR) {
            c->close_after = 1;
            snprintf(c->route, sizeof c->route, "unmatched");
            send_error(c, 400, 400, c->req.err_msg, NULL);
        } else {
            conn_close(c);
        }
        return;
    }
    /* idle between requests, or the deadline of a request under way (from its first byte) */
    if (!c->req.started) {
        uv_timer_start(&c->timer, read_timeout, idle_limit(c), 0);
    } else if (!c->deadline_set) {
        c->deadline_set = 1;
        uv_timer_start(&c->timer, read_timeout, c->srv->read_timeout_ms, 0);
    }
}

/* A handler that answers at once completes the request inside dispatch(), and the next
 * pipelined one would start there too: instead of recursing (once per pipelined request)
 * the nested call asks the running one to go round again. */
static void conn_process(http_conn *c) {
    if (c->processing) {
        c->again = 1;
        return;
    }
    c->processing = 1;
    do {
        c->again = 0;
        process_once(c);
    } while (c->again && c->state == C_READING);
    c->processing = 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    http_conn *c = h->data;
    if (c->in_off > 0 && c->in_off == c->in_len) c->in_off = c->in_len = 0;
    if (c->in_cap - c->in_len < 16384) {
        if (c->in_off > 0) { /* compact before growing */
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        c->in = buf_grow(c->in, &c->in_cap, c->in_len + 16384);
    }
    *b = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    http_conn *c = s->data;
    if (n == 0) return;
    if (c->state == C_LINGERING) { /* drop it; the peer's close or the timer ends it */
        c->in_off = c->in_len = 0;
        c->lingered += n > 0 ? (size_t)n : 0;
        if (n < 0 || c->lingered > LINGER_MAX_BYTES) conn_close(c);
        return;
    }
    if (n < 0) {
        uv_read_stop(s);
        c->reading = 0;
        if (n != UV_EOF || c->state == C_CLOSING) {
            conn_close(c);
            return;
        }
        c->eof = 1;
        if (c->state == C_READING) conn_process(c);
        return;
    }
    c->in_len += (size_t)n;
    /* a client pipelining far ahead of us waits until we catch up */
    size_t pending = c->in_len - c->in_off;
    if (c->state != C_READING && pending > c->srv->limits.max_header + c->srv->limits.max_body) {
        uv_read_stop(s);
        c->reading = 0;
    }
    if (c->state == C_READING) conn_process(c);
}

/* ---- connections ---------------------------------------------------------------------- */

/* One user of c less (its handles, a file read in flight); frees it after the last. */
static void conn_release(http_conn *c) {
    if (--c->open_handles > 0) return;
    http_server *s = c->srv;
    stream_end(c);
    list_remove(&c->link); /* only now: the server must outlive its connections' handles */
    hreq_free(&c->req);
    free(c->in);
    free(c->out);
    free(c);
    hostobj_release(&s->obj);
}

static void conn_closed(uv_handle_t *h) { conn_release(h->data); }

static void conn_close(http_conn *c) {
    if (c->state == C_CLOSING) return;
    c->state = C_CLOSING;
    c->srv->nconns--;
    if (c->counted) peer_count_del(c->srv->per_ip, c->peer);
    metric_add(c->srv->m_conns, -1);
    if (c->task) sched_cancel(c->task); /* its done callback sees C_CLOSING */
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

/* Answers a connection the server will not serve, then closes it. */
static void refuse(http_conn *c, int status, int code, const char *msg) {
    c->close_after = 1;
    c->state = C_HANDLING;
    c->t0 = uv_hrtime();
    snprintf(c->route, sizeof c->route, "unmatched");
    send_error(c, status, code, msg, NULL);
}

static int is_exempt(http_server *s, const char *ip) {
    for (int i = 0; i < s->nexempt; i++)
        if (strcmp(s->exempt[i], ip) == 0) return 1;
    return 0;
}

static void on_connection(uv_stream_t *l, int status) {
    http_server *s = l->data;
    if (status < 0 || s->obj.closing) return;
    http_conn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    uv_tcp_init(s->app->loop, &c->tcp);
    uv_timer_init(s->app->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    hreq_init(&c->req, &s->limits);
    list_push_back(&s->conns, &c->link);
    hostobj_hold(&s->obj);
    s->nconns++;
    metric_add(s->m_conns, 1);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    tcp_peer_str(&c->tcp, c->peer, sizeof c->peer, 0);
    if (s->nconns > s->max_connections) {
        refuse(c, 503, ERR_ServerBusy, "too many connections");
        return;
    }
    if (s->max_per_ip > 0 && !is_exempt(s, c->peer)) {
        c->counted = 1;
        if (peer_count_add(s->per_ip, c->peer) > s->max_per_ip) {
            refuse(c, 429, ERR_RateLimited, "too many connections from your address");
            return;
        }
    }
    c->state = C_READING;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
    uv_timer_start(&c->timer, read_timeout, idle_limit(c), 0);
}

/* Reading resumes after a pause (pipelining backlog) once the connection reads again. */
static void conn_resume_reading(http_conn *c) {
    if (c->reading || c->eof || c->state == C_CLOSING) return;
    if (c->state == C_LINGERING) c->in_off = c->in_len = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

/* ---- the server ----------------------------------------------------------------------- */

static void server_free(hostobj *o) {
    http_server *s = HOSTOBJ_OF(o, http_server, obj);
    lua_State *L = s->app->L;
    luaL_unref(L, LUA_REGISTRYINDEX, s->routes_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->req_mt_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->file_mt_ref);
    for (int i = 0; i < ROUTE_STATS; i++) free(s->stats[i]);
    peer_count_free(s->per_ip);
    free(s->exempt);
    free(s);
}

static void listener_closed(uv_handle_t *h) {
    http_server *s = h->data;
    hostobj_release(&s->obj);
}

/* Stops accepting; idle connections close now, busy ones after their response. */
static void server_close(hostobj *o) {
    http_server *s = HOSTOBJ_OF(o, http_server, obj);
    uv_close((uv_handle_t *)&s->listener, listener_closed);
    list_node *n = s->conns.next;
    while (n != &s->conns) {
        http_conn *c = LIST_ENTRY(n, http_conn, link);
        n = n->next;
        if (c->state == C_READING || c->state == C_LINGERING) conn_close(c);
    }
}

/* per_ip_exempt = { "ip", ... }: addresses as tcp_peer_str writes them (canonical). */
static void read_exempt(lua_State *L, http_server *s) {
    s->per_ip = peer_count_new();
    lua_getfield(L, 1, "per_ip_exempt");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        s->exempt = xcalloc((size_t)n + 1, sizeof *s->exempt);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *ip = lua_tostring(L, -1);
            if (ip) snprintf(s->exempt[s->nexempt++], sizeof s->exempt[0], "%s", ip);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* The scalar options into s; raises on a wrong type (before anything is allocated). Every
 * default is the gate's in host/lua/config.lua's schema (gate.*): one number per limit,
 * whichever server (gate, a declared role, admin) leaves it out. */
static void read_options(lua_State *L, http_server *s) {
    s->limits.max_url = (size_t)vm_opt_int(L, 1, "max_url_bytes", 8192);
    s->limits.max_header = (size_t)vm_opt_int(L, 1, "max_header_bytes", 16384);
    s->limits.max_body = (size_t)vm_opt_int(L, 1, "max_body_bytes", 65536);
    s->limits.max_headers = (unsigned)vm_opt_int(L, 1, "max_headers", 100);
    s->read_timeout_ms = (uint64_t)vm_opt_int(L, 1, "read_timeout_ms", 10000);
    s->idle_timeout_ms = (uint64_t)vm_opt_int(L, 1, "idle_timeout_ms", 60000);
    s->handler_timeout_ms = (uint64_t)vm_opt_int(L, 1, "handler_timeout_ms", 30000);
    s->max_connections = (int)vm_opt_int(L, 1, "max_connections", 10000);
    s->max_per_ip = (int)vm_opt_int(L, 1, "max_connections_per_ip", 256);
    s->first_byte_timeout_ms = (uint64_t)vm_opt_int(L, 1, "first_byte_timeout_ms", 5000);
    lua_getfield(L, 1, "access_log");
    s->access_log = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_getfield(L, 1, "name");
    snprintf(s->name, sizeof s->name, "%s", luaL_optstring(L, -1, "http"));
    lua_pop(L, 2);
}

/* serve{address=, routes=table|function, name=?, reuseport=?, limits...} -> server | nil, err */
static int l_serve(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "address");
    const char *address = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "routes");
    if (!lua_istable(L, -1) && !lua_isfunction(L, -1))
        return luaL_argerror(L, 1, "routes must be a table or a function returning one");
    lua_getfield(L, 1, "reuseport");
    int reuseport = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (vm_require_embedded(L, "chathost.http") != 0) return lua_error(L);
    lua_getfield(L, -1, "req_mt");
    lua_getfield(L, -2, "file_mt");
    lua_remove(L, -3); /* routes, req_mt, file_mt on top */
    http_server opts = {0};
    read_options(L, &opts); /* a bad option raises before a socket or memory is taken */
    int port = 0, fd = listen_socket(address, reuseport, &port);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", address, strerror(-fd));
        return 2;
    }
    http_server *s = xmalloc(sizeof *s);
    *s = opts;
    s->app = app;
    s->port = port;
    read_exempt(L, s);
    list_init(&s->conns);
    uv_tcp_init(app->loop, &s->listener);
    s->listener.data = s;
    hostobj_init(app, &s->obj, "http server", server_close, server_free);
    hostobj_hold(&s->obj); /* the listener, until its close callback */
    s->file_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->routes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = listen_start(&s->listener, fd, 511, on_connection);
    if (rc != 0) {
        hostobj_close(&s->obj);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", address, uv_strerror(rc));
        return 2;
    }
    char labels[64];
    snprintf(labels, sizeof labels, "server=\"%s\"", s->name);
    s->m_conns = metrics_get(METRIC_GAUGE, "chathost_http_connections", labels,
                             "Open HTTP connections.");
    hostobj_push(L, &s->obj, SERVER_MT);
    return 1;
}

static int l_index(lua_State *L) {
    http_server *s = HOSTOBJ_OF(hostobj_check(L, 1, SERVER_MT), http_server, obj);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "port") == 0) {
        lua_pushinteger(L, s->port);
        return 1;
    }
    if (strcmp(k, "connections") == 0) {
        lua_pushinteger(L, s->nconns);
        return 1;
    }
    if (strcmp(k, "file_streams") == 0) { /* file responses being sent, and their buffers */
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, s->streams);
        lua_setfield(L, -2, "active");
        lua_pushnumber(L, (lua_Number)s->stream_bytes);
        lua_setfield(L, -2, "buffer_bytes");
        lua_pushnumber(L, (lua_Number)s->stream_peak);
        lua_setfield(L, -2, "peak_buffer_bytes");
        return 1;
    }
    return vm_method(L);
}

/* parse_range(header, size) -> offset, length | "unsatisfiable" | nil: chathost.http's,
 * loaded on first use (it requires host, which does not exist yet when this opens) */
static int l_parse_range(lua_State *L) {
    lua_settop(L, 2);
    if (vm_require_embedded(L, "chathost.http") != 0) return lua_error(L);
    lua_getfield(L, -1, "parse_range");
    lua_insert(L, 1);
    lua_pop(L, 1);
    lua_call(L, 2, LUA_MULTRET);
    return lua_gettop(L);
}

int http_server_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"close", hostobj_l_close}, {NULL, NULL}};
    hostobj_class(L, SERVER_MT, methods, l_index);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_serve, 1);
    lua_setfield(L, -2, "serve");
    lua_pushcfunction(L, l_parse_range);
    lua_setfield(L, -2, "parse_range");
    return 1;
}
