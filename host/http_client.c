/* http_client.c: host.http.request, the HTTP client of scripts (the terminal client talks
 * to the gate with it): libcurl on the role's loop (curl_uv.c), so http and https with
 * certificate verification, keep-alive pools bounded in total and per host, redirects and
 * the standard proxy variables. Limits come from config `http_client`; this file turns
 * libcurl's outcomes into the results and error strings scripts know. */
#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "curl_uv.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

typedef struct http_client {
    struct app *app;
    curl_uv *cu;
    long timeout_ms, connect_timeout_ms, max_redirects, idle_timeout_s;
    long max_total, max_host, max_waiting;
    size_t max_response;
    char *ca_file;       /* NULL: the system's CA bundle */
    int insecure;
    long in_flight;      /* requests on the multi handle, running or queued by libcurl */
    list_node requests;  /* hc_request.link */
} http_client;

typedef struct hc_request {
    list_node link;
    http_client *cl;
    task_t *task;
    CURL *easy;
    struct curl_slist *headers;
    buf_t head;          /* the final response's headers: "name\0value\0" pairs */
    buf_t body;
    int too_large;       /* the body passed max_response */
    int https;
    char errbuf[CURL_ERROR_SIZE];
} hc_request;

/* ---- the client (one per process, made on first use) ------------------------------------- */

static void client_limits(http_client *cl) {
    CURLM *m = curl_uv_multi(cl->cu);
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, cl->max_total);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, cl->max_host);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, cl->max_total); /* idle ones kept */
}

static void warn_insecure(http_client *cl) {
    if (cl->insecure)
        log_warn("http_client.insecure is on: https certificates and host names are NOT "
                 "verified (development only; anyone on the path can read and change traffic)");
}

static void done(CURL *easy, CURLcode rc);

static http_client *client_get(struct app *app) {
    if (app->http_client) return app->http_client;
    http_client *cl = xcalloc(1, sizeof *cl);
    cl->app = app;
    cl->cu = curl_uv_new(app->loop, done);
    if (!cl->cu) {
        free(cl);
        return NULL;
    }
    list_init(&cl->requests);
    cl->timeout_ms = (long)cfg_int(app, "http_client.timeout_ms", 10000);
    cl->connect_timeout_ms = (long)cfg_int(app, "http_client.connect_timeout_ms", 5000);
    cl->max_response = (size_t)cfg_int(app, "http_client.max_response_bytes", 16 << 20);
    cl->max_redirects = (long)cfg_int(app, "http_client.max_redirects", 5);
    cl->idle_timeout_s = (long)cfg_int(app, "http_client.idle_timeout_s", 30);
    cl->max_total = (long)cfg_int(app, "http_client.max_total_connections", 64);
    cl->max_host = (long)cfg_int(app, "http_client.max_host_connections", 8);
    cl->max_waiting = (long)cfg_int(app, "http_client.max_waiting", 1000);
    cl->ca_file = cfg_str(app, "http_client.ca_file", NULL);
    cl->insecure = cfg_bool(app, "http_client.insecure", 0);
    client_limits(cl);
    warn_insecure(cl);
    app->http_client = cl;
    return cl;
}

/* ---- responses ---------------------------------------------------------------------------- */

/* One header line of a response ("Name: value\r\n"; trailers come the same way). A status
 * line starts another response (after a redirect or a 100): what came before is dropped. */
static size_t on_header(char *line, size_t size, size_t n, void *ud) {
    hc_request *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        r->head.len = 0;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line) return len; /* the blank line, or not a header */
    size_t nl = (size_t)(colon - line), vs = nl + 1, ve = len;
    while (vs < ve && (line[vs] == ' ' || line[vs] == '\t')) vs++;
    while (ve > vs && (line[ve - 1] == '\r' || line[ve - 1] == '\n' || line[ve - 1] == ' ' ||
                       line[ve - 1] == '\t'))
        ve--;
    for (size_t i = 0; i < nl; i++) {
        char ch = line[i] >= 'A' && line[i] <= 'Z' ? (char)(line[i] + 32) : line[i];
        buf_append(&r->head, &ch, 1);
    }
    buf_append(&r->head, "", 1);
    buf_append(&r->head, line + vs, ve - vs);
    buf_append(&r->head, "", 1);
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
    hc_request *r = ud;
    size_t len = size * n;
    if (r->body.len + len > r->cl->max_response) {
        r->too_large = 1;
        return 0; /* libcurl stops the transfer: CURLE_WRITE_ERROR */
    }
    buf_append(&r->body, data, len);
    return len;
}

/* Pushes {status=, headers=, body=} onto co (a repeated header: its last value). */
static void push_response(lua_State *co, hc_request *r) {
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, status);
    lua_setfield(co, -2, "status");
    lua_newtable(co);
    for (size_t off = 0; off < r->head.len;) {
        const char *name = r->head.data + off;
        size_t nl = strlen(name);
        const char *value = name + nl + 1;
        size_t vl = strlen(value);
        lua_pushlstring(co, name, nl);
        lua_pushlstring(co, value, vl);
        lua_rawset(co, -3);
        off += nl + 1 + vl + 1;
    }
    lua_setfield(co, -2, "headers");
    lua_pushlstring(co, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(co, -2, "body");
}

/* ---- errors ------------------------------------------------------------------------------- */

static int is_tls_error(CURLcode rc) {
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED: case CURLE_SSL_SHUTDOWN_FAILED:
        return 1;
    default:
        return 0;
    }
}

/* libcurl's words for rc: its error buffer when it wrote one, without the "SSL: " or
 * "SSL " that the "tls: " prefix makes redundant. */
static const char *curl_words(hc_request *r, CURLcode rc) {
    const char *s = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    if (strncmp(s, "SSL: ", 5) == 0) return s + 5;
    if (strncmp(s, "SSL ", 4) == 0) return s + 4;
    return s;
}

/* The error string of a failed transfer: the words scripts matched before libcurl
 * ("timeout", "cannot connect", "connection refused", "connection closed before the whole
 * response"), "tls: <cause>" for TLS, and a sentence naming every limit that stopped it. */
static void error_text(hc_request *r, CURLcode rc, char *out, size_t size) {
    long os_errno = 0;
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
    if (r->too_large)
        snprintf(out, size, "response too large (over %zu bytes)", r->cl->max_response);
    else if (is_tls_error(rc))
        snprintf(out, size, "tls: %s", curl_words(r, rc));
    else if (rc == CURLE_COULDNT_CONNECT)
        snprintf(out, size, "%s",
                 os_errno == ECONNREFUSED ? "connection refused" : "cannot connect");
    else if (rc == CURLE_OPERATION_TIMEDOUT) /* libcurl's only deadline here is the connect's */
        snprintf(out, size, "connect timeout (%ld ms)", r->cl->connect_timeout_ms);
    else if (rc == CURLE_COULDNT_RESOLVE_HOST)
        snprintf(out, size, "cannot resolve: %s", curl_words(r, rc));
    else if (rc == CURLE_TOO_MANY_REDIRECTS)
        snprintf(out, size, "too many redirects (more than %ld)", r->cl->max_redirects);
    else if (rc == CURLE_UNSUPPORTED_PROTOCOL) /* the URL's own scheme was checked */
        snprintf(out, size, "redirect refused: %s", r->https ? "from https only to https"
                                                               : "only to http or https");
    else if (rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE)
        snprintf(out, size, "connection closed before the whole response");
    else
        snprintf(out, size, "%s", curl_words(r, rc));
}

/* ---- requests ----------------------------------------------------------------------------- */

static void req_free(hc_request *r) {
    list_remove(&r->link);
    r->cl->in_flight--;
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    buf_free(&r->head);
    buf_free(&r->body);
    free(r);
}

/* A transfer ended (curl_uv_done_fn): its task resumes with the response or nil, err. */
static void done(CURL *easy, CURLcode rc) {
    hc_request *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    task_t *t = r->task;
    if (rc == CURLE_OK && !r->too_large) {
        push_response(t->co, r);
        req_free(r);
        sched_resume(t, 1);
        return;
    }
    char err[CURL_ERROR_SIZE + 64];
    error_text(r, rc, err, sizeof err);
    req_free(r);
    sched_resume_error(t, err);
}

/* The task stopped waiting (its timeout_ms passed, or it was cancelled). */
static void req_cancel(void *op) {
    hc_request *r = op;
    curl_uv_remove(r->cl->cu, r->easy);
    req_free(r);
}

/* The caller's headers: string names only, none with CR/LF (or ':' in the name), and not
 * Host or Content-Length, which libcurl writes. "Expect:" turns off libcurl's
 * 100-continue wait before large bodies. */
static struct curl_slist *build_headers(lua_State *L, int opts) {
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    lua_getfield(L, opts, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            /* lua_tostring on a number key would change it and break lua_next */
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            const char *v = lua_tostring(L, -1);
            if (k && v && *k && !strpbrk(k, "\r\n:;") && !strpbrk(v, "\r\n") &&
                strcasecmp(k, "content-length") != 0 && strcasecmp(k, "host") != 0) {
                /* "Name;" is libcurl's way to send a header with an empty value */
                lua_pushfstring(L, *v ? "%s: %s" : "%s;", k, v);
                list = curl_slist_append(list, lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return list;
}

static void set_method_and_body(lua_State *L, CURL *e, const char *method, int opts) {
    size_t blen = 0;
    lua_getfield(L, opts, "body");
    const char *body = lua_isstring(L, -1) ? lua_tolstring(L, -1, &blen) : NULL;
    if (body || strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body ? body : "");
    }
    lua_pop(L, 1);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "POST") != 0 && (body || strcmp(method, "GET") != 0))
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method); /* POST and GET keep libcurl's
                                                               redirect rules (303: GET) */
}

static void set_tls(CURL *e, http_client *cl, const char *ca_file) {
    if (ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    if (cl->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/* The easy handle of one request; redirects stay on https when the URL is https. */
static void setup_easy(hc_request *r, const char *url, long connect_ms, const char *ca_file) {
    http_client *cl = r->cl;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_uv_easy_defaults(e);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "chathost");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, cl->idle_timeout_s);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, cl->max_redirects > 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, cl->max_redirects);
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, r->https ? "https" : "http,https");
    set_tls(e, cl, ca_file);
}

/* The URL's scheme: 1 https, 0 http, -1 neither or no host. */
static int url_scheme(const char *url) {
    CURLU *u = curl_url();
    char *scheme = NULL, *hostname = NULL;
    int https = -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &hostname, 0) == CURLUE_OK && *hostname)
        https = strcmp(scheme, "https") == 0 ? 1 : strcmp(scheme, "http") == 0 ? 0 : -1;
    curl_free(scheme);
    curl_free(hostname);
    curl_url_cleanup(u);
    return https;
}

static const char *opt_string(lua_State *L, const char *k) {
    lua_getfield(L, 1, k);
    return luaL_optstring(L, -1, NULL);
}

/* request{url=, method="GET", headers=?, body=?, timeout_ms=?, ca_file=?}
 *   -> {status=, headers=, body=} | nil, err   (yields) */
static int l_request(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *url = opt_string(L, "url");
    const char *method = opt_string(L, "method");
    const char *ca_file = opt_string(L, "ca_file");
    if (!url) return luaL_argerror(L, 1, "url must be a string");
    int https = url_scheme(url);
    if (https < 0) return luaL_argerror(L, 1, "url must be http(s)://host[:port]/path");
    task_t *t = sched_need(L, "host.http.request");
    if (app->stopping) {
        lua_pushnil(L);
        lua_pushliteral(L, "shutting down");
        return 2;
    }
    http_client *cl = client_get(app);
    if (!cl) return luaL_error(L, "host.http.request: libcurl cannot make a multi handle");
    long timeout = (long)vm_opt_int(L, 1, "timeout_ms", cl->timeout_ms);
    luaL_argcheck(L, timeout >= 1, 1, "timeout_ms must be at least 1 (a request without a deadline "
                                      "could hold its connection for good)");
    if (cl->in_flight >= cl->max_total + cl->max_waiting) {
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    hc_request *r = xcalloc(1, sizeof *r);
    r->cl = cl;
    r->https = https;
    r->easy = curl_easy_init();
    r->headers = build_headers(L, 1);
    list_push_back(&cl->requests, &r->link);
    cl->in_flight++;
    setup_easy(r, url, cl->connect_timeout_ms, ca_file ? ca_file : cl->ca_file);
    set_method_and_body(L, r->easy, method ? method : "GET", 1);
    if (curl_uv_add(cl->cu, r->easy) != 0) {
        req_free(r);
        lua_pushnil(L);
        lua_pushliteral(L, "cannot start the request");
        return 2;
    }
    r->task = t;
    sched_suspend_timeout(t, req_cancel, r, timeout);
    return lua_yield(L, 0);
}

/* Field k of the options table (argument 1), cur when absent; raises below min. */
static long opt_at_least(lua_State *L, const char *k, long cur, long min) {
    lua_Integer v = vm_opt_int(L, 1, k, cur);
    if (v < min) luaL_error(L, "host.http.configure_client: %s must be at least %d", k, (int)min);
    return (long)v;
}

/* configure_client{timeout_ms=, connect_timeout_ms=, max_response_bytes=, max_redirects=,
 * idle_timeout_s=, max_total_connections=, max_host_connections=, max_waiting=, ca_file=,
 * insecure=} -> true: the config's http_client settings for this process from now on (specs
 * cross each limit with it); a key left out keeps its value. */
static int l_configure(lua_State *L) {
    http_client *cl = client_get(app_from(L));
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!cl) return luaL_error(L, "host.http.configure_client: libcurl cannot make a multi handle");
    cl->timeout_ms = opt_at_least(L, "timeout_ms", cl->timeout_ms, 1);
    cl->connect_timeout_ms = opt_at_least(L, "connect_timeout_ms", cl->connect_timeout_ms, 1);
    cl->max_response = (size_t)opt_at_least(L, "max_response_bytes", (long)cl->max_response, 1);
    cl->max_redirects = opt_at_least(L, "max_redirects", cl->max_redirects, 0);
    cl->idle_timeout_s = opt_at_least(L, "idle_timeout_s", cl->idle_timeout_s, 1);
    cl->max_total = opt_at_least(L, "max_total_connections", cl->max_total, 1);
    cl->max_host = opt_at_least(L, "max_host_connections", cl->max_host, 1);
    cl->max_waiting = opt_at_least(L, "max_waiting", cl->max_waiting, 0);
    lua_getfield(L, 1, "ca_file");
    if (!lua_isnil(L, -1)) {
        free(cl->ca_file);
        cl->ca_file = lua_toboolean(L, -1) ? xstrdup(luaL_checkstring(L, -1)) : NULL;
    }
    lua_getfield(L, 1, "insecure");
    if (!lua_isnil(L, -1)) cl->insecure = lua_toboolean(L, -1);
    client_limits(cl);
    warn_insecure(cl);
    lua_pushboolean(L, 1);
    return 1;
}

/* stats() -> {in_flight=}: requests running or waiting for a connection */
static int l_stats(lua_State *L) {
    http_client *cl = app_from(L)->http_client;
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, cl ? cl->in_flight : 0);
    lua_setfield(L, -2, "in_flight");
    return 1;
}

/* Closes the pooled connections (shutdown). The tasks were cancelled before (app_stop
 * closes every tracked coroutine first), so no request is left; any that is, is dropped. */
void http_client_shutdown(struct app *app) {
    http_client *cl = app->http_client;
    if (!cl) return;
    while (!list_empty(&cl->requests))
        req_cancel(LIST_ENTRY(cl->requests.next, hc_request, link));
    curl_uv_close(cl->cu);
    free(cl->ca_file);
    free(cl);
    app->http_client = NULL;
}

int http_client_open(lua_State *L) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_request, 1);
    return 1;
}

/* host.http.configure_client and host.http.client_stats (modules.c attaches them next to
 * request). */
int http_client_configure_open(lua_State *L) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_configure, 1);
    return 1;
}

int http_client_stats_open(lua_State *L) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_stats, 1);
    return 1;
}
