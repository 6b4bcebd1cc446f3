/* grpc_server.c: host.grpc.serve. Every method of every service in proto/ is registered;
 * each call is decoded from its descriptor and handed to the Lua handler named
 * "Service.Method" in a task of its own. A method without a handler answers UNIMPLEMENTED at
 * once, a handler that raises answers INTERNAL, and a handler may answer any status with
 * `return nil, code, message`. Calls to methods the proto does not know are answered
 * UNIMPLEMENTED by an always-outstanding generic request (gRPC would let them hang). */
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "grpc_bridge.h"
#include "hostobj.h"
#include "log.h"
#include "pb.h"
#include "sched.h"

#define SERVER_MT "chathost.grpc_server"
/* Requested calls kept outstanding per method beyond the calls of it in flight: a call that
 * arrives while one is outstanding is handed over by gRPC's polling thread as it reads it;
 * one that finds none waits in gRPC core until the loop requests the next, and is then
 * handed over through a wake-up of that thread, a cross-thread round trip per call once
 * the calls in flight outnumber the requests (bench/grpc_status.sh, 64 in flight: status
 * CPU per call 37-47 us with 4 requests, 31-34 us with these). So the requests follow the
 * calls in flight (at most grpc.max_inflight_calls are, the rest are refused at once). */
#define REQUESTS_PER_METHOD 4
#define GENERIC_REQUESTS 2

typedef struct gmethod {
    const ProtobufCMethodDescriptor *desc;
    void *handle;
    char name[128]; /* "StatusService.GetChatServer" */
    grpc_method_stats stats;
    int requested; /* requests for it gRPC has not handed over yet */
    int active;    /* calls of it handed over and not yet answered */
} gmethod;

typedef struct gserver {
    hostobj obj; /* users: the Lua handle, and the gRPC server until it is done (finish) */
    list_node link;
    struct grpc_bridge *b;
    grpc_server *srv;
    int port;
    int handlers_ref; /* a table of handlers, or a function(name) -> handler */
    gmethod *methods;
    size_t nmethods;
    gtag shutdown_tag;
    int pending_requests; /* requested calls gRPC has not handed over yet */
    int max_inflight;     /* grpc.max_inflight_calls: beyond, RESOURCE_EXHAUSTED at once */
    unsigned long refused;
    unsigned long unauthenticated; /* calls refused for a missing or wrong secret */
    int active_calls;     /* calls handed over and not yet answered: they point at us */
    int destroyed;
    grpc_method_stats unknown_stats; /* calls to methods the proto does not know */
} gserver;

typedef struct srv_call {
    gtag tag;
    gserver *s;
    int method; /* index into s->methods, or -1 for the generic (unknown method) request */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    int cancelled;
    int has_details;
    uint64_t t0; /* handed over (uv_hrtime), for chathost_grpc_server_call_seconds */
} srv_call;

static void on_request(gtag *tag, int ok);

/* ---- lifecycle of a server ----------------------------------------------------------- */

/* Once gRPC is done with the server, the bridge may finish (it waits for every server);
 * the struct itself stays while the Lua handle does. */
static void server_free_if_done(gserver *s) {
    if (!s->destroyed || s->pending_requests > 0 || s->active_calls > 0 || !s->b) return;
    struct grpc_bridge *b = s->b;
    list_remove(&s->link);
    luaL_unref(b->app->L, LUA_REGISTRYINDEX, s->handlers_ref);
    free(s->methods);
    s->b = NULL; /* the bridge may be gone before the handle is collected */
    hostobj_release(&s->obj);
    grpc_bridge_maybe_finish(b);
}

static void server_free(hostobj *o) { free(HOSTOBJ_OF(o, gserver, obj)); }

static void on_shutdown(gtag *tag, int ok) {
    gserver *s = (gserver *)((char *)tag - offsetof(gserver, shutdown_tag));
    grpc_server_destroy(s->srv);
    s->destroyed = 1;
    server_free_if_done(s);
}

static void server_close(hostobj *o) {
    gserver *s = HOSTOBJ_OF(o, gserver, obj);
    s->shutdown_tag.cb = on_shutdown;
    grpc_server_shutdown_and_notify(s->srv, s->b->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->srv);
}

void grpc_servers_shutdown(struct grpc_bridge *b) {
    for (list_node *n = b->servers.next; n != &b->servers; n = n->next)
        hostobj_close(&LIST_ENTRY(n, gserver, link)->obj);
}

int grpc_servers_active(struct grpc_bridge *b) { return !list_empty(&b->servers); }

/* ---- requests ------------------------------------------------------------------------ */

/* Asks gRPC for one more call of method (-1: any unknown method); -> 0 | -1 (logged) */
static int request_one(gserver *s, int method) {
    srv_call *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->method = method;
    c->tag.cb = on_request;
    grpc_metadata_array_init(&c->md);
    grpc_call_error rc;
    if (method >= 0) {
        rc = grpc_server_request_registered_call(s->srv, s->methods[method].handle, &c->call,
                                                 &c->deadline, &c->md, &c->payload, s->b->cq,
                                                 s->b->cq, &c->tag);
    } else {
        grpc_call_details_init(&c->details);
        c->has_details = 1;
        rc = grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, s->b->cq, s->b->cq,
                                      &c->tag);
    }
    if (rc != GRPC_CALL_OK) {
        log_error("grpc: cannot request a call (%d)", (int)rc);
        grpc_metadata_array_destroy(&c->md);
        if (c->has_details) grpc_call_details_destroy(&c->details);
        free(c);
        return -1;
    }
    s->pending_requests++;
    if (method >= 0) s->methods[method].requested++;
    return 0;
}

/* After a call of method was handed over: requests in its place, and more while the
 * method's calls in flight outgrow them (see REQUESTS_PER_METHOD). */
static void rearm(gserver *s, int method) {
    if (method < 0) {
        request_one(s, method);
        return;
    }
    gmethod *gm = &s->methods[method];
    do {
        if (request_one(s, method) != 0) return;
    } while (gm->requested < gm->active + REQUESTS_PER_METHOD);
}

static void call_free(srv_call *c) {
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_metadata_array_destroy(&c->md);
    if (c->has_details) grpc_call_details_destroy(&c->details);
    grpc_slice_unref(c->status_details);
    free(c);
}

static void on_reply_sent(gtag *tag, int ok) {
    srv_call *c = (srv_call *)tag;
    gserver *s = c->s;
    struct grpc_bridge *b = s->b;
    if (c->method >= 0) s->methods[c->method].active--;
    call_free(c);
    s->active_calls--;
    grpc_bridge_call_end(b);
    server_free_if_done(s);
}

/* Answers the call: a message (when bytes is not NULL) and a status. */
static void reply(srv_call *c, grpc_status_code code, const char *msg, const uint8_t *bytes,
                  size_t len) {
    gserver *s = c->s;
    grpc_stats_record(c->method >= 0 ? &s->methods[c->method].stats : &s->unknown_stats, code,
                      c->t0);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    int n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (bytes) {
        grpc_slice slice = grpc_slice_from_copied_buffer((const char *)bytes, len);
        c->reply = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->tag.cb = on_reply_sent;
    grpc_call_error rc = grpc_call_start_batch(c->call, ops, (size_t)n, &c->tag, NULL);
    if (rc != GRPC_CALL_OK) {
        log_error("grpc: cannot send a reply (%d)", (int)rc);
        on_reply_sent(&c->tag, 0);
    }
}

/* ---- handing a call to Lua ----------------------------------------------------------- */

/* ctx:remaining_ms() -> the milliseconds left before the caller's deadline (never below 0;
 * math.huge for a call without one) */
static int l_ctx_remaining(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "deadline_at");
    if (lua_isnil(L, -1)) {
        lua_pushnumber(L, HUGE_VAL);
        return 1;
    }
    lua_Number left = lua_tonumber(L, -1) - (lua_Number)uv_hrtime() / 1e6;
    lua_pushnumber(L, left > 0 ? left : 0);
    return 1;
}

/* ctx: method, peer, metadata and, for a call with a deadline, deadline_ms (left when the
 * call arrived) and deadline_at (on host.timer.monotonic()'s clock); ctx:remaining_ms(). */
static void push_ctx(lua_State *L, srv_call *c) {
    lua_createtable(L, 0, 7);
    lua_pushstring(L, c->s->methods[c->method].name);
    lua_setfield(L, -2, "method");
    char *peer = grpc_call_get_peer(c->call);
    lua_pushstring(L, peer);
    gpr_free(peer);
    lua_setfield(L, -2, "peer");
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec dl = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) != 0) {
        lua_Number left = (lua_Number)gpr_time_to_millis(gpr_time_sub(dl, now));
        lua_pushnumber(L, left);
        lua_setfield(L, -2, "deadline_ms");
        lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6 + left);
        lua_setfield(L, -2, "deadline_at");
    }
    lua_pushcfunction(L, l_ctx_remaining);
    lua_setfield(L, -2, "remaining_ms");
    lua_createtable(L, 0, (int)c->md.count);
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key, v = c->md.metadata[i].value;
        lua_pushlstring(L, (const char *)GRPC_SLICE_START_PTR(k), GRPC_SLICE_LENGTH(k));
        lua_pushlstring(L, (const char *)GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v));
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "metadata");
}

/* Pushes the handler for method name: handlers[name], or handlers(name) when a function. */
static void push_handler(lua_State *L, gserver *s, const char *name) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handlers_ref);
    if (lua_isfunction(L, -1)) {
        lua_pushstring(L, name);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            log_error("grpc: looking up the handler of %s: %s", name, lua_tostring(L, -1));
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    } else if (lua_istable(L, -1)) {
        lua_getfield(L, -1, name);
        lua_remove(L, -2);
    }
}

/* The handler's task ended: turn its results into the reply. */
static int handler_done(void *ud, task_t *t, int ok, int nres) {
    srv_call *c = ud;
    lua_State *co = t->co;
    const ProtobufCMethodDescriptor *m = c->s->methods[c->method].desc;
    if (!ok) {
        const char *err = lua_tostring(co, -1);
        int cancelled = err && strcmp(err, "cancelled") == 0;
        char msg[300];
        snprintf(msg, sizeof msg, "%s", cancelled ? "server shutting down" : err ? err : "error");
        char *nl = strchr(msg, '\n');
        if (nl) *nl = '\0';
        reply(c, cancelled ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_INTERNAL, msg, NULL, 0);
        return cancelled; /* a real error is logged with its traceback by the scheduler */
    }
    int base = lua_gettop(co) - nres + 1;
    if (nres >= 2 && lua_isnil(co, base) && lua_isnumber(co, base + 1)) {
        int code = (int)lua_tointeger(co, base + 1);
        const char *msg = nres >= 3 ? lua_tostring(co, base + 2) : NULL;
        if (code <= 0 || code > 16) code = GRPC_STATUS_UNKNOWN;
        reply(c, (grpc_status_code)code, msg, NULL, 0);
        return 0;
    }
    if (nres < 1 || !lua_istable(co, base)) {
        log_error("grpc: handler of %s returned no reply table", c->s->methods[c->method].name);
        reply(c, GRPC_STATUS_INTERNAL, "handler returned no reply", NULL, 0);
        return 0;
    }
    char err[300];
    ProtobufCMessage *rsp = pb_from_table(co, base, m->output, err, sizeof err);
    if (!rsp) {
        log_error("grpc: %s: bad reply: %s", c->s->methods[c->method].name, err);
        reply(c, GRPC_STATUS_INTERNAL, err, NULL, 0);
        return 0;
    }
    size_t len;
    uint8_t *bytes = pb_pack(rsp, &len);
    protobuf_c_message_free_unpacked(rsp, NULL);
    reply(c, GRPC_STATUS_OK, NULL, bytes, len);
    free(bytes);
    return 0;
}

static void dispatch(srv_call *c) {
    gserver *s = c->s;
    lua_State *L = s->b->app->L;
    gmethod *gm = &s->methods[c->method];
    size_t len;
    char *data = grpc_bb_read(c->payload, &len);
    ProtobufCMessage *req = protobuf_c_message_unpack(gm->desc->input, NULL, len, (uint8_t *)data);
    free(data);
    if (!req) {
        reply(c, GRPC_STATUS_INVALID_ARGUMENT, "cannot decode the request", NULL, 0);
        return;
    }
    push_handler(L, s, gm->name);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        protobuf_c_message_free_unpacked(req, NULL);
        char msg[200];
        snprintf(msg, sizeof msg, "%s has no handler", gm->name);
        reply(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL, 0);
        return;
    }
    pb_push_message(L, req);
    protobuf_c_message_free_unpacked(req, NULL);
    push_ctx(L, c);
    sched_spawn(s->b->app, L, 2, gm->name, handler_done, c);
}

/* A call without the shared secret: answered before anything else is looked at. */
static void refuse_unauthenticated(srv_call *c) {
    gserver *s = c->s;
    if (s->unauthenticated++ % 1000 == 0) {
        char *peer = grpc_call_get_peer(c->call);
        log_warn("grpc: call from %s without the right grpc.secret: refused (%lu so far)",
                 peer ? peer : "?", s->unauthenticated);
        gpr_free(peer);
    }
    reply(c, GRPC_STATUS_UNAUTHENTICATED, "missing or wrong grpc secret", NULL, 0);
}

static void on_request(gtag *tag, int ok) {
    srv_call *c = (srv_call *)tag;
    gserver *s = c->s;
    s->pending_requests--;
    if (c->method >= 0) s->methods[c->method].requested--;
    if (!ok) { /* the server is shutting down */
        call_free(c);
        server_free_if_done(s);
        return;
    }
    c->t0 = uv_hrtime();
    if (c->method >= 0) s->methods[c->method].active++;
    if (!s->obj.closing) rearm(s, c->method);
    grpc_bridge_call_begin(s->b);
    s->active_calls++;
    if (!grpc_auth_check(&s->b->auth, &c->md)) {
        refuse_unauthenticated(c);
        return;
    }
    if (s->active_calls > s->max_inflight) {
        if (s->refused++ % 1000 == 0)
            log_warn("grpc: %d calls in flight (grpc.max_inflight_calls): refusing more (%lu so far)",
                     s->active_calls - 1, s->refused);
        reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many calls in flight", NULL, 0);
        return;
    }
    if (c->method < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown method %.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
        reply(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL, 0);
        return;
    }
    if (s->obj.closing) { /* matched before the shutdown, seen after it: the scripts may be gone */
        reply(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down", NULL, 0);
        return;
    }
    dispatch(c);
}

/* ---- creating a server --------------------------------------------------------------- */

static void register_methods(gserver *s) {
    size_t n = 0;
    for (int i = 0; pb_services[i]; i++) n += pb_services[i]->n_methods;
    s->methods = xcalloc(n ? n : 1, sizeof *s->methods);
    for (int i = 0; pb_services[i]; i++) {
        const ProtobufCServiceDescriptor *svc = pb_services[i];
        for (unsigned k = 0; k < svc->n_methods; k++) {
            gmethod *gm = &s->methods[s->nmethods++];
            char path[200];
            gm->desc = &svc->methods[k];
            gm->stats.method = gm->name;
            snprintf(gm->name, sizeof gm->name, "%s.%s", svc->short_name, svc->methods[k].name);
            snprintf(path, sizeof path, "/%s/%s", svc->name, svc->methods[k].name);
            gm->handle = grpc_server_register_method(s->srv, path, NULL,
                                                     GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        }
    }
}

static grpc_server *server_create(struct grpc_bridge *b) {
    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT; /* a second server on the port must fail, not share */
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = b->max_message;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = b->max_message;
    grpc_channel_args ca = {3, args};
    return grpc_server_create(&ca, NULL);
}

/* serve{address=, handlers=table|function} -> server | nil, err, detail (gRPC core's words) */
static int l_serve(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "address");
    const char *address = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "handlers");
    if (!lua_istable(L, -1) && !lua_isfunction(L, -1))
        return luaL_argerror(L, 1, "handlers must be a table or a function(name)");
    lua_getfield(L, 1, "max_inflight_calls"); /* raises: read before allocating */
    int max_inflight = (int)luaL_optinteger(L, -1, cfg_int(app, "grpc.max_inflight_calls", 10000));
    lua_pop(L, 1);
    if (app->stopping) {
        lua_pushnil(L);
        lua_pushliteral(L, "shutting down");
        return 2;
    }
    struct grpc_bridge *b = grpc_bridge_get(app);
    if (b->auth.error[0]) {
        lua_pushnil(L);
        lua_pushstring(L, b->auth.error);
        return 2;
    }
    gserver *s = xcalloc(1, sizeof *s);
    s->b = b;
    s->unknown_stats.method = "unknown";
    s->max_inflight = max_inflight;
    s->srv = server_create(b);
    grpc_server_register_completion_queue(s->srv, b->cq, NULL);
    register_methods(s);
    grpc_server_credentials *creds = grpc_auth_server_creds(&b->auth);
    char core_err[1024]; /* core logs why a bind failed as a long nested error: a footnote */
    grpc_core_log_capture(core_err, sizeof core_err);
    s->port = grpc_server_add_http2_port(s->srv, address, creds);
    grpc_core_log_capture(NULL, 0);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        grpc_server_destroy(s->srv);
        free(s->methods);
        free(s);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s (%s)", address,
                        strstr(core_err, "Address already in use") ? "address in use"
                                                                   : "address in use or invalid");
        lua_pushstring(L, core_err);
        return 3;
    }
    if (core_err[0]) log_debug("grpc core: %s", core_err); /* what it said while binding */
    s->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    grpc_server_start(s->srv);
    list_push_back(&b->servers, &s->link);
    hostobj_init(app, &s->obj, "grpc server", server_close, server_free);
    hostobj_hold(&s->obj); /* the gRPC server, until server_free_if_done */
    for (size_t i = 0; i < s->nmethods; i++)
        for (int k = 0; k < REQUESTS_PER_METHOD; k++) request_one(s, (int)i);
    for (int k = 0; k < GENERIC_REQUESTS; k++) request_one(s, -1);
    hostobj_push(L, &s->obj, SERVER_MT);
    return 1;
}

/* server.port: nil once gRPC is done with a closed server */
static int l_server_index(lua_State *L) {
    gserver *s = HOSTOBJ_OF(hostobj_check(L, 1, SERVER_MT), gserver, obj);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "port") == 0) {
        if (!s->b) return 0;
        lua_pushinteger(L, s->port);
        return 1;
    }
    return vm_method(L);
}

/* Leaves host.grpc.serve on the stack (the app is on top when called). server:close()
 * stops accepting; calls in flight are cancelled. */
int grpc_server_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"close", hostobj_l_close}, {NULL, NULL}};
    hostobj_class(L, SERVER_MT, methods, l_server_index);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_serve, 1);
    return 1;
}
