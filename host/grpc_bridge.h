/* grpc_bridge.h: gRPC core on the libuv loop. One completion queue serves every server and
 * client call of the process; a dedicated thread blocks on it and hands each completed
 * event to the loop (uv_async), where the event's tag callback runs. No Lua runs on that
 * thread. Servers live in grpc_server.c, client calls in grpc_client.c. */
#ifndef CHATHOST_GRPC_BRIDGE_H
#define CHATHOST_GRPC_BRIDGE_H

#include <grpc/grpc.h>

#include "app.h"
#include "grpc_auth.h"
#include "metrics.h"

/* Every tag handed to gRPC starts with this: the loop calls cb(tag, success). */
typedef struct gtag {
    void (*cb)(struct gtag *tag, int ok);
} gtag;

struct grpc_bridge {
    struct app *app;
    grpc_completion_queue *cq;
    uv_thread_t thread;
    uv_async_t async;
    uv_mutex_t lock;
    struct gevent { gtag *tag; int ok; } *events, *spare;
    size_t nevents, cap, spare_cap;
    int thread_done;      /* set by the cq thread when it saw the queue shut down */
    int inflight;         /* calls the application owns (server replies pending, client calls) */
    int shutting_down;
    int cq_shut;
    list_node servers;    /* grpc_server.c */
    list_node calls;      /* client calls in flight (grpc_client.c) */
    list_node channels;
    int nchannels;
    int64_t deadline_ms;  /* default client deadline */
    int max_message;
    grpc_auth auth;       /* the shared secret and TLS credentials (grpc_auth.c) */
};

/* The bridge, started on first use (grpc_init, cq, thread). */
struct grpc_bridge *grpc_bridge_get(struct app *app);

/* An application call began / ended; the queue shuts down only when none remain. */
void grpc_bridge_call_begin(struct grpc_bridge *b);
void grpc_bridge_call_end(struct grpc_bridge *b);
/* Shuts the queue down when shutting down and nothing is in flight any more. */
void grpc_bridge_maybe_finish(struct grpc_bridge *b);

const char *grpc_status_name(grpc_status_code code);

/* One gRPC method's series on one side (server or client): calls by status code and a
 * latency histogram, looked up in the registry once and then kept, so that recording a
 * call costs no lookup and no allocation. Zeroed = nothing looked up yet. */
typedef struct grpc_method_stats {
    const char *method; /* "StatusService.GetChatServer" (outlives the stats) */
    int client;         /* chathost_grpc_client_* rather than chathost_grpc_server_* */
    metric *latency;
    metric *calls[GRPC_STATUS_UNAUTHENTICATED + 1];
} grpc_method_stats;

/* Counts one finished call with its status (out of range counts as UNKNOWN) and the time
 * since t0 (uv_hrtime). */
void grpc_stats_record(grpc_method_stats *st, grpc_status_code code, uint64_t t0);
/* Copies a byte buffer into one malloc'd block; returns NULL for a NULL buffer. */
char *grpc_bb_read(grpc_byte_buffer *bb, size_t *len);

/* Until called again with size 0, gRPC core's log lines (from any thread) are collected in
 * buf ("; "-separated, cut at size) instead of being logged: for a call whose failure the
 * caller reports itself, in one line, with the core's detail as a footnote. */
void grpc_core_log_capture(char *buf, size_t size);

/* grpc_server.c / grpc_client.c */
void grpc_servers_shutdown(struct grpc_bridge *b);
void grpc_clients_shutdown(struct grpc_bridge *b);
int grpc_servers_active(struct grpc_bridge *b);
int grpc_server_open(lua_State *L);
int grpc_client_open(lua_State *L);

#endif
