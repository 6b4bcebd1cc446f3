/* grpc_client.c: host.grpc.call(target, "Service.Method", req, {timeout_ms=}) -> rsp |
 * nil, err, code. Channels are created once per target and reused, methods registered once
 * per channel; every call has a deadline (grpc.deadline_ms by default). Reconnect backoff
 * is kept short so a peer that comes back is reachable again within about a second. */
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "grpc_bridge.h"
#include "log.h"
#include "pb.h"
#include "sched.h"

#define MAX_CHANNELS 256
#define MAX_STATS 256 /* methods with client series; the proto has far fewer */

/* The client side's series per method, shared by every channel; they outlive the calls
 * (a channel may be destroyed while its calls finish). */
static struct client_stats {
    const ProtobufCMethodDescriptor *desc;
    char name[128];
    grpc_method_stats stats;
} client_stats[MAX_STATS];

typedef struct chan_method {
    const ProtobufCMethodDescriptor *desc;
    void *handle;
    grpc_method_stats *stats;
} chan_method;

typedef struct gchannel {
    list_node link;
    char *target;
    grpc_channel *ch;
    chan_method *methods;
    size_t nmethods, cap;
} gchannel;

typedef struct cli_call {
    gtag tag;
    list_node link;
    struct grpc_bridge *b;
    task_t *task; /* NULL once the waiting task was cancelled */
    grpc_call *call;
    const ProtobufCMethodDescriptor *desc;
    grpc_method_stats *stats; /* NULL: not recorded (MAX_STATS reached) */
    uint64_t t0;              /* started (uv_hrtime) */
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *send, *recv;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    grpc_metadata auth;  /* the secret, sent with the call (static slices: nothing to free) */
    char *auth_copy;     /* opts.secret's header, when it replaces the configured one */
} cli_call;

static grpc_channel *channel_create(struct grpc_bridge *b, const char *target) {
    grpc_arg args[6];
    const char *keys[5] = {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                           GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                           GRPC_ARG_MAX_RECONNECT_BACKOFF_MS};
    int values[5] = {b->max_message, b->max_message, 100, 100, 1000};
    for (int i = 0; i < 5; i++) {
        args[i].type = GRPC_ARG_INTEGER;
        args[i].key = (char *)keys[i];
        args[i].value.integer = values[i];
    }
    grpc_channel_args ca = {5, args};
    if (b->auth.target_name) { /* the name the peers' certificate has, if not their address */
        args[5].type = GRPC_ARG_STRING;
        args[5].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[5].value.string = b->auth.target_name;
        ca.num_args = 6;
    }
    grpc_channel_credentials *creds = grpc_auth_channel_creds(&b->auth);
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static gchannel *channel_get(struct grpc_bridge *b, const char *target) {
    for (list_node *n = b->channels.next; n != &b->channels; n = n->next) {
        gchannel *c = LIST_ENTRY(n, gchannel, link);
        if (strcmp(c->target, target) == 0) return c;
    }
    if (b->nchannels >= MAX_CHANNELS) return NULL;
    gchannel *c = xcalloc(1, sizeof *c);
    c->target = xstrdup(target);
    c->ch = channel_create(b, target);
    list_push_back(&b->channels, &c->link);
    b->nchannels++;
    return c;
}

/* The series of method m, found or set up (NULL once MAX_STATS methods have some). */
static grpc_method_stats *method_stats(const ProtobufCServiceDescriptor *svc,
                                       const ProtobufCMethodDescriptor *m) {
    for (int i = 0; i < MAX_STATS; i++) {
        struct client_stats *cs = &client_stats[i];
        if (cs->desc == m) return &cs->stats;
        if (cs->desc) continue;
        cs->desc = m;
        snprintf(cs->name, sizeof cs->name, "%s.%s", svc->short_name, m->name);
        cs->stats.method = cs->name;
        cs->stats.client = 1;
        return &cs->stats;
    }
    return NULL;
}

static chan_method *method_handle(gchannel *c, const ProtobufCServiceDescriptor *svc,
                                  const ProtobufCMethodDescriptor *m) {
    for (size_t i = 0; i < c->nmethods; i++)
        if (c->methods[i].desc == m) return &c->methods[i];
    if (c->nmethods == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->methods = xrealloc(c->methods, c->cap * sizeof *c->methods);
    }
    char path[200];
    snprintf(path, sizeof path, "/%s/%s", svc->name, m->name);
    chan_method *cm = &c->methods[c->nmethods++];
    cm->desc = m;
    cm->handle = grpc_channel_register_call(c->ch, path, NULL, NULL);
    cm->stats = method_stats(svc, m);
    return cm;
}

static void call_free(cli_call *c) {
    list_remove(&c->link);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    grpc_slice_unref(c->details);
    free(c->auth_copy);
    if (c->error_string) gpr_free((void *)c->error_string);
    if (c->call) grpc_call_unref(c->call);
    free(c);
}

/* Resumes the caller with rsp, or nil, "STATUS: details", code. */
static void resume_caller(cli_call *c) {
    task_t *t = c->task;
    lua_State *co = t->co;
    lua_checkstack(co, 3);
    if (c->status == GRPC_STATUS_OK && c->recv) {
        size_t len;
        char *data = grpc_bb_read(c->recv, &len);
        ProtobufCMessage *m = protobuf_c_message_unpack(c->desc->output, NULL, len, (uint8_t *)data);
        free(data);
        if (m) {
            pb_push_message(co, m);
            protobuf_c_message_free_unpacked(m, NULL);
            sched_resume(t, 1);
            return;
        }
        c->status = GRPC_STATUS_INTERNAL;
    }
    if (c->status == GRPC_STATUS_OK) c->status = GRPC_STATUS_INTERNAL; /* OK without a message */
    lua_pushnil(co);
    size_t dlen = GRPC_SLICE_LENGTH(c->details);
    lua_pushstring(co, grpc_status_name(c->status));
    if (dlen) {
        lua_pushliteral(co, ": ");
        lua_pushlstring(co, (const char *)GRPC_SLICE_START_PTR(c->details), dlen);
        lua_concat(co, 3);
    }
    lua_pushinteger(co, c->status);
    sched_resume(t, 3);
}

static void on_call_done(gtag *tag, int ok) {
    cli_call *c = (cli_call *)tag;
    struct grpc_bridge *b = c->b;
    if (c->task) resume_caller(c); /* may turn OK into INTERNAL: what the caller saw */
    if (c->stats) grpc_stats_record(c->stats, c->status, c->t0);
    call_free(c);
    grpc_bridge_call_end(b);
}

static void call_cancel(void *op) {
    cli_call *c = op;
    c->task = NULL;
    grpc_call_cancel(c->call, NULL);
}

void grpc_clients_shutdown(struct grpc_bridge *b) {
    for (list_node *n = b->calls.next; n != &b->calls; n = n->next)
        grpc_call_cancel(LIST_ENTRY(n, cli_call, link)->call, NULL);
    while (!list_empty(&b->channels)) {
        gchannel *c = LIST_ENTRY(list_pop_front(&b->channels), gchannel, link);
        grpc_channel_destroy(c->ch);
        free(c->methods);
        free(c->target);
        free(c);
        b->nchannels--;
    }
}

static int start_batch(cli_call *c) {
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (GRPC_SLICE_LENGTH(c->auth.value) > 0) {
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &c->auth;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    ops[5].data.recv_status_on_client.error_string = &c->error_string;
    return grpc_call_start_batch(c->call, ops, 6, &c->tag, NULL) == GRPC_CALL_OK ? 0 : -1;
}

static int fail(lua_State *L, const char *msg, int code) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushinteger(L, code);
    return 3;
}

/* The secret the call carries: opts.secret (a string, or false for none: for tools and
 * specs that speak to another cluster or test the refusal), else grpc.secret. */
static void set_auth(lua_State *L, cli_call *c) {
    const char *header = c->b->auth.header;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "secret");
        if (lua_type(L, -1) == LUA_TSTRING) {
            c->auth_copy = xmalloc(lua_objlen(L, -1) + 8);
            sprintf(c->auth_copy, "Bearer %s", lua_tostring(L, -1));
            header = c->auth_copy;
        } else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
            header = NULL;
        }
        lua_pop(L, 1);
    }
    if (!header) return;
    c->auth.key = grpc_slice_from_static_string("authorization");
    c->auth.value = grpc_slice_from_static_string(header);
}

/* call(target, "Service.Method", req, opts?) -> rsp | nil, err, code   (yields)
 * opts: timeout_ms, secret (see set_auth) */
static int l_call(lua_State *L) {
    struct app *app = app_from(L);
    const char *target = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer timeout = vm_opt_int(L, 4, "timeout_ms", -1);
    const ProtobufCServiceDescriptor *svc = NULL;
    const ProtobufCMethodDescriptor *m = pb_find_method(name, &svc);
    if (!m) return luaL_argerror(L, 2, lua_pushfstring(L, "no method %s in the proto", name));
    task_t *t = sched_need(L, "host.grpc.call");
    if (app->stopping) return fail(L, "shutting down", GRPC_STATUS_UNAVAILABLE);
    struct grpc_bridge *b = grpc_bridge_get(app);
    if (b->auth.error[0]) return fail(L, b->auth.error, GRPC_STATUS_UNAVAILABLE);
    char err[300];
    ProtobufCMessage *req = pb_from_table(L, 3, m->input, err, sizeof err);
    if (!req) return fail(L, err, GRPC_STATUS_INVALID_ARGUMENT);
    gchannel *ch = channel_get(b, target);
    if (!ch) {
        protobuf_c_message_free_unpacked(req, NULL);
        return fail(L, "too many gRPC targets", GRPC_STATUS_RESOURCE_EXHAUSTED);
    }
    size_t len;
    uint8_t *bytes = pb_pack(req, &len);
    protobuf_c_message_free_unpacked(req, NULL);
    cli_call *c = xcalloc(1, sizeof *c);
    c->tag.cb = on_call_done;
    c->b = b;
    c->task = t;
    c->desc = m;
    set_auth(L, c);
    grpc_metadata_array_init(&c->initial_md);
    grpc_metadata_array_init(&c->trailing_md);
    grpc_slice slice = grpc_slice_from_copied_buffer((const char *)bytes, len);
    free(bytes);
    c->send = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    gpr_timespec deadline = gpr_time_add(
        gpr_now(GPR_CLOCK_MONOTONIC),
        gpr_time_from_millis(timeout >= 0 ? timeout : b->deadline_ms, GPR_TIMESPAN));
    chan_method *cm = method_handle(ch, svc, m);
    c->stats = cm->stats;
    c->t0 = uv_hrtime();
    c->call = grpc_channel_create_registered_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
                                                  cm->handle, deadline, NULL);
    list_init(&c->link);
    if (start_batch(c) != 0) {
        call_free(c);
        return fail(L, "cannot start the call", GRPC_STATUS_INTERNAL);
    }
    list_push_back(&b->calls, &c->link);
    grpc_bridge_call_begin(b);
    sched_suspend(t, call_cancel, c);
    return lua_yield(L, 0);
}

/* Leaves host.grpc.call on the stack (the app is on top when called). */
int grpc_client_open(lua_State *L) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_call, 1);
    return 1;
}
