/* grpc_bridge.c: the completion-queue thread and the shutdown order of gRPC core: servers
 * shut down and are destroyed first; the queue shuts down only once no application call is
 * in flight (gRPC core fires the server's shutdown tag while the application still owns a
 * call awaiting its reply, and a batch started on a queue already shut down aborts the
 * process); then the thread is joined, the queue destroyed and grpc_shutdown() called. */
#include "grpc_bridge.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "modules.h"


static void cq_thread(void *arg) {
    struct grpc_bridge *b = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        uv_mutex_lock(&b->lock);
        if (b->nevents == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 64;
            b->events = xrealloc(b->events, b->cap * sizeof *b->events);
        }
        b->events[b->nevents].tag = ev.tag;
        b->events[b->nevents].ok = ev.success;
        b->nevents++;
        uv_mutex_unlock(&b->lock);
        uv_async_send(&b->async);
    }
    uv_mutex_lock(&b->lock);
    b->thread_done = 1;
    uv_mutex_unlock(&b->lock);
    uv_async_send(&b->async);
}

static void bridge_closed(uv_handle_t *h) {
    struct grpc_bridge *b = h->data;
    free(b->events);
    free(b->spare);
    uv_mutex_destroy(&b->lock);
    grpc_auth_free(&b->auth);
    b->app->grpc = NULL;
    free(b);
    grpc_shutdown();
}

/* Runs on the loop: dispatches the events the cq thread queued. */
static void on_async(uv_async_t *h) {
    struct grpc_bridge *b = h->data;
    uv_mutex_lock(&b->lock);
    struct gevent *ev = b->events;
    size_t n = b->nevents, evcap = b->cap;
    int done = b->thread_done;
    b->events = b->spare;
    b->cap = b->spare_cap;
    b->nevents = 0;
    uv_mutex_unlock(&b->lock);
    for (size_t i = 0; i < n; i++) ev[i].tag->cb(ev[i].tag, ev[i].ok);
    uv_mutex_lock(&b->lock);
    b->spare = ev;
    b->spare_cap = evcap;
    uv_mutex_unlock(&b->lock);
    if (done && n == 0) {
        uv_thread_join(&b->thread);
        grpc_completion_queue_destroy(b->cq);
        uv_close((uv_handle_t *)&b->async, bridge_closed);
    } else if (done) {
        uv_async_send(&b->async); /* drain, then finish */
    }
}

/* While capture_buf is set (grpc_core_log_capture), core's lines go there instead. */
static uv_mutex_t capture_lock;
static uv_once_t capture_once = UV_ONCE_INIT;
static char *capture_buf;
static size_t capture_size;

static void capture_init(void) { uv_mutex_init(&capture_lock); }

/* gRPC core's own log lines join ours (one line each, with our prefix); errors it reports
 * that matter (a port in use, a failed call) reach the caller as return values anyway. */
static void grpc_log(gpr_log_func_args *args) {
    uv_mutex_lock(&capture_lock);
    if (capture_buf) {
        size_t used = strlen(capture_buf);
        snprintf(capture_buf + used, capture_size - used, "%s%s", used ? "; " : "", args->message);
        uv_mutex_unlock(&capture_lock);
        return;
    }
    uv_mutex_unlock(&capture_lock);
    enum log_level level = args->severity == GPR_LOG_SEVERITY_ERROR ? LOG_WARN : LOG_DEBUG;
    log_msg(level, "grpc core: %s", args->message);
}

void grpc_core_log_capture(char *buf, size_t size) {
    uv_once(&capture_once, capture_init);
    uv_mutex_lock(&capture_lock);
    capture_buf = size ? buf : NULL;
    capture_size = size;
    if (capture_buf) capture_buf[0] = '\0';
    uv_mutex_unlock(&capture_lock);
}

struct grpc_bridge *grpc_bridge_get(struct app *app) {
    if (app->grpc) return app->grpc;
    struct grpc_bridge *b = xcalloc(1, sizeof *b);
    b->app = app;
    b->deadline_ms = cfg_int(app, "grpc.deadline_ms", 2000);
    b->max_message = (int)cfg_int(app, "grpc.max_message_bytes", 4 << 20);
    grpc_auth_load(app, &b->auth);
    list_init(&b->servers);
    list_init(&b->calls);
    list_init(&b->channels);
    uv_once(&capture_once, capture_init);
    gpr_set_log_function(grpc_log);
    gpr_set_log_verbosity(log_enabled(LOG_DEBUG) ? GPR_LOG_SEVERITY_DEBUG : GPR_LOG_SEVERITY_ERROR);
    grpc_init();
    b->cq = grpc_completion_queue_create_for_next(NULL);
    uv_mutex_init(&b->lock);
    uv_async_init(app->loop, &b->async, on_async);
    b->async.data = b;
    uv_thread_create(&b->thread, cq_thread, b);
    app->grpc = b;
    return b;
}

void grpc_bridge_call_begin(struct grpc_bridge *b) { b->inflight++; }

void grpc_bridge_call_end(struct grpc_bridge *b) {
    b->inflight--;
    grpc_bridge_maybe_finish(b);
}

void grpc_bridge_maybe_finish(struct grpc_bridge *b) {
    if (!b->shutting_down || b->cq_shut || b->inflight > 0 || grpc_servers_active(b)) return;
    b->cq_shut = 1;
    grpc_completion_queue_shutdown(b->cq);
}

void grpc_bridge_shutdown(struct app *app) {
    struct grpc_bridge *b = app->grpc;
    if (!b || b->shutting_down) return;
    b->shutting_down = 1;
    grpc_servers_shutdown(b);
    grpc_clients_shutdown(b);
    grpc_bridge_maybe_finish(b);
}

const char *grpc_status_name(grpc_status_code code) {
    static const char *names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                  "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                  "UNAUTHENTICATED"};
    return code >= 0 && code <= 16 ? names[code] : "UNKNOWN";
}

static metric *stats_series(const grpc_method_stats *st, const char *code) {
    char labels[200];
    const char *side = st->client ? "client" : "server";
    char name[48];
    if (!code) {
        snprintf(labels, sizeof labels, "method=\"%s\"", st->method);
        snprintf(name, sizeof name, "chathost_grpc_%s_call_seconds", side);
        return metrics_get(METRIC_HISTOGRAM, name, labels,
                           st->client ? "gRPC calls made: time to their status."
                                      : "gRPC calls served: time from arrival to the reply.");
    }
    snprintf(labels, sizeof labels, "method=\"%s\",code=\"%s\"", st->method, code);
    snprintf(name, sizeof name, "chathost_grpc_%s_calls_total", side);
    return metrics_get(METRIC_COUNTER, name, labels,
                       st->client ? "gRPC calls made, by method and status code."
                                  : "gRPC calls served, by method and status code.");
}

void grpc_stats_record(grpc_method_stats *st, grpc_status_code code, uint64_t t0) {
    if (code < 0 || code > GRPC_STATUS_UNAUTHENTICATED) code = GRPC_STATUS_UNKNOWN;
    if (!st->calls[code]) st->calls[code] = stats_series(st, grpc_status_name(code));
    if (!st->latency) st->latency = stats_series(st, NULL);
    metric_add(st->calls[code], 1);
    metric_observe(st->latency, (double)(uv_hrtime() - t0) / 1e9);
}

char *grpc_bb_read(grpc_byte_buffer *bb, size_t *len) {
    *len = 0;
    if (!bb) return NULL;
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    char *out = xmalloc(*len ? *len : 1);
    memcpy(out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return out;
}

static int l_status_names(lua_State *L) {
    lua_newtable(L);
    for (int i = 0; i <= 16; i++) {
        lua_pushinteger(L, i);
        lua_setfield(L, -2, grpc_status_name((grpc_status_code)i));
    }
    return 1;
}

/* host.grpc = { serve = ..., call = ..., status = {OK=0, CANCELLED=1, ...} } */
int grpc_open(lua_State *L) {
    lua_newtable(L);
    lua_pushvalue(L, -2);
    grpc_server_open(L);
    lua_setfield(L, -3, "serve");
    lua_pop(L, 1);
    lua_pushvalue(L, -2);
    grpc_client_open(L);
    lua_setfield(L, -3, "call");
    lua_pop(L, 1);
    l_status_names(L);
    lua_setfield(L, -2, "status");
    return 1;
}
