/* chat_server.c: host.chat.serve, the chat role's long connections (and the resource
 * role's, with 6-byte headers: option frame = "u16u32"). Frames (frame.c) are handled one at a time per session, in order, each by the script's messages[id] in a
 * task of its own; a returned table is the reply (id + 1). Sessions are host objects: they
 * survive script reloads, and the uid -> session index lives here (host.sessions). Bounds:
 * the body size (a bigger header is answered and the connection closed without reading
 * the body), the inbound backlog (reading pauses), the send queue in bytes and frames (a
 * client that does not read is disconnected, never dropped frame by frame), the idle time
 * (a periodic sweep) and the connection count. Replies to a session are coalesced into as
 * few writes as possible. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "errors.h"
#include "frame.h"
#include "peer_count.h"
#include "json.h"
#include "scripts.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include <sodium.h>

#include "alloc.h"
#include "buf.h"
#include "hostobj.h"
#include "listen.h"
#include "modules.h"
#include "ws_handshake.h"
#include <wslay/wslay.h>

#define SESSION_MT "chathost.session"
#define SERVER_MT "chathost.chat_server"
#define INBOX_MAX_FRAMES 256
#define INBOX_MAX_BYTES (256 * 1024)
#define FLUSH_ON_CLOSE_MS 2000
#define MSG_STATS 128 /* msg_ids whose series are kept at hand; the chat role has ~20 */
#define WS_MAX_HEADERS 64 /* header lines of a WebSocket handshake (a browser sends ~15) */

/* The series of one msg_id: messages received and their handlers' time. */
typedef struct msg_stat {
    metric *count, *latency;
} msg_stat;

typedef struct chat_server chat_server;

typedef struct out_buf {
    buf_t bytes;
    unsigned frames;
} out_buf;

typedef struct inframe {
    list_node link;
    uint16_t id;
    uint32_t len;
    char body[];
} inframe;

enum session_state { S_OPEN, S_DRAINING, S_CLOSED };

/* A WebSocket session's transport (docs/protocol.md §5.5): the handshake first, then
 * wslay frames whose text messages carry {"id":..,"body":{..}}. */
typedef struct ws_conn {
    hreq *hs;                   /* the upgrade request being read; NULL once upgraded */
    wslay_event_context_ptr ctx;
    const uint8_t *rd;          /* the bytes wslay's recv callback reads from */
    size_t rd_len;
    uint64_t last_ping;
} ws_conn;

typedef struct session {
    list_node link;
    list_node dirty_link;   /* in srv->dirty while frames wait for the end of the loop pass */
    int dirty;
    chat_server *srv;
    uv_tcp_t tcp;
    uv_timer_t *flush_timer;
    char id[48];
    double uid;
    int bound;
    int kept_open;          /* session:keep_open(): no login deadline (a peer server's link) */
    size_t max_body;        /* its frames' limit: the server's, or what keep_open raised it to */
    char peer[48];
    char ip[48];            /* the peer without its port: the per-address count's key */
    int counted;            /* counted in srv->per_ip */
    uint64_t last_recv;
    uint64_t accepted_at;   /* loop time of the accept: the login deadline counts from it */
    uint8_t *part;          /* the bytes of a frame not complete yet */
    size_t part_len, part_cap;
    list_node inbox;        /* complete frames waiting for the running handler */
    size_t inbox_bytes;
    unsigned inbox_frames;
    int busy, processing, again, reading;
    uint16_t current_id;    /* the frame whose handler runs */
    msg_stat current_stat;  /* its series, and when its handler started (uv_hrtime) */
    uint64_t handler_t0;
    task_t *task;           /* its task while it waits */
    uint64_t busy_since;
    int timed_out;
    out_buf pending, inflight;
    out_buf held;           /* frames sent after bind() within the request that bound it */
    int holding;            /* they wait for that request's reply (the login reply) */
    int writing;
    uv_write_t wreq;
    int ud_ref, data_ref;
    enum session_state state;
    const char *reason;
    int ud_alive;           /* the Lua object exists: it frees the session once closed */
    ws_conn *ws;            /* a WebSocket session; NULL: the TCP frames */
    out_buf *wtarget;       /* where wslay's send callback puts the bytes it makes */
} session;

typedef struct session_ud {
    session *s;
} session_ud;

struct chat_server {
    hostobj obj;            /* users: the Lua handle, the listener, the sweep timer, sessions */
    struct app *app;
    uv_tcp_t listener;
    uv_timer_t sweep;
    int port;
    char name[32];
    int handlers_ref, by_uid_ref;
    int messages_ref;       /* the current generation's messages table, cached */
    unsigned messages_epoch;
    enum frame_kind kind;   /* the header format of every frame, both ways */
    size_t max_body, queue_bytes;
    unsigned queue_frames;
    uint64_t idle_ms, handler_ms, login_ms; /* idle and login: 0 is off */
    int max_connections, nconns, nbound;
    int max_per_ip;         /* connections from one address; 0: no cap */
    peer_count *per_ip;
    int full;               /* reached max_connections; until it is down to 90% of it */
    list_node sessions;
    /* Sessions with frames queued during this pass of the loop: written once each, after the
     * pass's I/O callbacks (flush_check), so the frames of many pushes to one member (a group
     * commit's fan-out, a NotifyBatch) cost one write. flush_idle keeps poll from sleeping
     * while any wait (a frame queued after the check runs goes out in the next pass). */
    list_node dirty;
    uv_check_t flush_check;
    uv_idle_t flush_idle;
    char id_prefix[24];
    uint64_t next_id;
    metric *m_conns, *m_in, *m_out, *m_writes, *m_unknown, *m_slow;
    struct {
        int used;
        uint16_t id;
        msg_stat st;
    } msg_stats[MSG_STATS];
    msg_stat unknown_msgs; /* msg_ids without a handler share one series: not a label each */
    unsigned long unknown_logged;
    unsigned long refused;  /* connections turned away at max_connections */
    unsigned long refused_ip; /* ... and at max_connections_per_ip */
    /* the WebSocket listener (ws_address set), its limits and Origin allow-list */
    uv_tcp_t ws_listener;
    int ws_port;
    size_t ws_max_message, ws_handshake_bytes;
    uint64_t ws_ping_ms, ws_handshake_ms;
    char **ws_origins;
    size_t ws_norigins;
};


static void session_process(session *s);
static void session_close(session *s, const char *reason, int flush);
static void session_read_start(session *s);
static void ws_on_read(session *s, const uint8_t *data, size_t len);
static void ws_queue_close(session *s, uint16_t code, const char *reason);
static int ws_unwrap(session *s, lua_State *L, const char *text, size_t len, uint16_t *id);
static void ws_free(ws_conn *w);

/* ---- sending ------------------------------------------------------------------------- */

static void write_now(session *s);

/* Only there to be active: an active idle handle keeps poll from sleeping (libuv refuses
 * to start one without a callback). */
static void flush_idle_cb(uv_idle_t *h) { (void)h; }

/* Marks s to be written at the end of this pass of the loop (see chat_server.dirty). */
static void schedule_write(session *s) {
    if (s->dirty || s->state == S_CLOSED) return;
    chat_server *srv = s->srv;
    if (srv->obj.closing) { /* the flush handles are closing too */
        write_now(s);
        return;
    }
    if (list_empty(&srv->dirty)) uv_idle_start(&srv->flush_idle, flush_idle_cb);
    s->dirty = 1;
    list_push_back(&srv->dirty, &s->dirty_link);
}

static void undirty(session *s) {
    if (!s->dirty) return;
    s->dirty = 0;
    list_remove(&s->dirty_link);
}

/* The check phase: every session marked this pass writes what it queued, in one write. */
static void on_flush_check(uv_check_t *h) {
    chat_server *srv = h->data;
    while (!list_empty(&srv->dirty)) {
        session *s = LIST_ENTRY(list_pop_front(&srv->dirty), session, dirty_link);
        s->dirty = 0;
        write_now(s); /* may close s: it is off the list already */
    }
    uv_idle_stop(&srv->flush_idle);
}

static void on_written(uv_write_t *w, int status) {
    session *s = w->data;
    s->writing = 0;
    s->inflight.bytes.len = 0;
    s->inflight.frames = 0;
    if (status < 0) {
        session_close(s, "write error", 0);
        return;
    }
    if (s->pending.bytes.len > 0) {
        write_now(s);
    } else if (s->state == S_DRAINING) {
        session_close(s, s->reason, 0);
    }
}

/* Sends everything pending: at once if the socket takes it, else with one write request. */
static void write_now(session *s) {
    if (s->writing || s->pending.bytes.len == 0 || s->state == S_CLOSED) return;
    out_buf t = s->inflight;
    s->inflight = s->pending;
    s->pending = t;
    s->pending.bytes.len = 0;
    s->pending.frames = 0;
    uv_buf_t b = uv_buf_init(s->inflight.bytes.data, (unsigned)s->inflight.bytes.len);
    metric_add(s->srv->m_writes, 1);
    int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (n == (int)s->inflight.bytes.len) {
        s->inflight.bytes.len = 0;
        s->inflight.frames = 0;
        if (s->state == S_DRAINING && s->pending.bytes.len == 0) session_close(s, s->reason, 0);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        session_close(s, "write error", 0);
        return;
    }
    if (n > 0)
        b = uv_buf_init(s->inflight.bytes.data + n, (unsigned)(s->inflight.bytes.len - (size_t)n));
    s->writing = 1;
    s->wreq.data = s;
    if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, on_written) != 0) {
        s->writing = 0;
        session_close(s, "write error", 0);
    }
}

static int ws_queue_text(session *s, uint16_t id, const char *body, size_t len);

/* Queues one frame. Returns 0, or -1 when the client reads too slowly (it is closed). */
static int session_send_raw(session *s, uint16_t id, const char *body, size_t len) {
    chat_server *srv = s->srv;
    size_t queued = s->pending.bytes.len + s->inflight.bytes.len + s->held.bytes.len +
                    frame_header_len(srv->kind) + len;
    unsigned frames = s->pending.frames + s->inflight.frames + s->held.frames + 1;
    if (queued > srv->queue_bytes || frames > srv->queue_frames) {
        log_warn("chat: session %s (uid %.0f) does not read: %zu bytes / %u frames queued, "
                 "disconnecting", s->id, s->uid, queued, frames);
        metric_add(srv->m_slow, 1);
        session_close(s, "send queue full", 0);
        return -1;
    }
    out_buf *q = s->holding ? &s->held : &s->pending;
    if (s->ws) {
        if (ws_queue_text(s, id, body, len) != 0) return -1;
    } else {
        uint8_t head[FRAME_HEADER_MAX];
        size_t head_len = frame_header(srv->kind, head, id, (uint32_t)len);
        buf_append(&q->bytes, head, head_len);
        buf_append(&q->bytes, body, len);
    }
    q->frames++;
    metric_add(srv->m_out, 1);
    if (!s->processing && !s->holding) schedule_write(s); /* else: once the handler is done */
    return 0;
}

/* Ends a hold: what was sent meanwhile goes after what is queued (the reply). */
static void release_held(session *s) {
    if (!s->holding) return;
    s->holding = 0;
    if (s->held.bytes.len == 0) return;
    buf_append(&s->pending.bytes, s->held.bytes.data, s->held.bytes.len);
    s->pending.frames += s->held.frames;
    s->held.bytes.len = 0;
    s->held.frames = 0;
    if (!s->processing) schedule_write(s);
}

/* ---- the Lua session object ---------------------------------------------------------- */

static session *check_session(lua_State *L, int idx) {
    session_ud *u = luaL_checkudata(L, idx, SESSION_MT);
    return u->s;
}

/* Encodes the value at idx (a table or a string) as the body; NULL + message on failure. */
static const char *encode_body(lua_State *L, int idx, size_t *len) {
    if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
    const char *body = json_encode_pcall(L, idx, len);
    if (!body) lua_error(L); /* an unencodable value is the script's bug: it raises */
    return body;
}

/* session:send(msg_id, tbl|string) -> true | nil, "closed" | "too large" | "queue full" */
static int l_send(lua_State *L) {
    session *s = check_session(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    luaL_argcheck(L, id >= 0 && id <= 65535, 2, "must be 0..65535");
    if (lua_type(L, 3) != LUA_TTABLE && lua_type(L, 3) != LUA_TSTRING)
        return luaL_argerror(L, 3, "expected a table or a string");
    if (!s || s->state != S_OPEN) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    size_t len;
    const char *body = encode_body(L, 3, &len);
    if (len > frame_max_body(s->srv->kind)) {
        log_error("chat: frame %d for uid %.0f is %zu bytes, above %zu: not sent", (int)id,
                  s->uid, len, frame_max_body(s->srv->kind));
        lua_pushnil(L);
        lua_pushliteral(L, "too large");
        return 2;
    }
    if (session_send_raw(s, (uint16_t)id, body, len) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "queue full");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* session:close(reason?): queued frames are sent first */
static int l_close(lua_State *L) {
    session *s = check_session(L, 1);
    if (s) session_close(s, luaL_optstring(L, 2, "closed by the server"), 1);
    return 0;
}

static void push_by_uid(lua_State *L, chat_server *srv) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->by_uid_ref);
}

/* Removes s from the uid index if the index points at it. */
static void index_remove(lua_State *L, session *s) {
    if (!s->bound) return;
    chat_server *srv = s->srv;
    push_by_uid(L, srv);
    lua_pushnumber(L, s->uid);
    lua_rawget(L, -2);
    session_ud *u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (u && u->s == s) {
        lua_pushnumber(L, s->uid);
        lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    s->bound = 0;
    srv->nbound--;
}

/* session:bind(uid) -> true, the session this uid had on this server before (or nil) |
 * nil, "closed". A closed session is the peer's doing, not a bug: answered like send's. */
static int l_bind(lua_State *L) {
    session *s = check_session(L, 1);
    lua_Number uid = luaL_checknumber(L, 2);
    luaL_argcheck(L, uid >= 1 && uid < 4294967296.0, 2, "must be a positive uid");
    if (!s || s->state != S_OPEN) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (s->bound && s->uid != uid) index_remove(L, s);
    chat_server *srv = s->srv;
    push_by_uid(L, srv);
    lua_pushnumber(L, uid);
    lua_rawget(L, -2);
    session_ud *prev = lua_touserdata(L, -1);
    int had_prev = prev && prev->s && prev->s != s;
    lua_pushnumber(L, uid);
    lua_pushvalue(L, 1);
    lua_rawset(L, -4);
    if (!s->bound) srv->nbound++;
    s->uid = uid;
    s->bound = 1;
    /* Bound, the session gets pushes (host.sessions.get); bound by its own request (the
     * login), they wait for that request's reply: a client hears of its login first. */
    if (s->busy) s->holding = 1;
    if (had_prev) { /* it stays open until the script closes it, but is no longer bound */
        prev->s->bound = 0;
        srv->nbound--;
    }
    if (!had_prev) lua_pushnil(L);
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

/* session:keep_open(max_body?) -> the session's frame limit: the session is not a client
 * that must log in (a peer chat server's push link, once it proved it knows grpc.secret):
 * chat.login_timeout_ms no longer applies; the idle limit still does (the link pings).
 * max_body raises its frames' limit above max_body_bytes, up to what the format carries. */
static int l_keep_open(lua_State *L) {
    session *s = check_session(L, 1);
    lua_Integer want = luaL_optinteger(L, 2, 0);
    if (!s) return 0;
    s->kept_open = 1;
    size_t cap = frame_max_body(s->srv->kind);
    if (want > 0 && (size_t)want > s->max_body) s->max_body = (size_t)want > cap ? cap : (size_t)want;
    lua_pushinteger(L, (lua_Integer)s->max_body);
    return 1;
}

/* session:unbind(): the session loses its identity (and its place in the index) */
static int l_unbind(lua_State *L) {
    session *s = check_session(L, 1);
    if (s) {
        index_remove(L, s);
        s->uid = 0;
    }
    return 0;
}

/* session.<field> or session:<method>. The fields are looked at first: scripts read
 * session.data and session.uid many times per message, and a method lookup first (the
 * metatable's methods table) cost more than the field itself. No method has a field's
 * name. A freed session's fields are nil (none pushed); its methods are still found. */
static int l_session_index(lua_State *L) {
    session *s = check_session(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "data") == 0) {
        if (!s) return 0;
        if (s->data_ref == LUA_NOREF) {
            lua_newtable(L);
            s->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    } else if (strcmp(k, "uid") == 0) {
        if (!s) return 0;
        if (s->uid > 0) lua_pushnumber(L, s->uid); else lua_pushnil(L);
    } else if (strcmp(k, "id") == 0) {
        if (!s) return 0;
        lua_pushstring(L, s->id);
    } else if (strcmp(k, "peer") == 0) {
        if (!s) return 0;
        lua_pushstring(L, s->peer);
    } else if (strcmp(k, "closed") == 0) {
        if (!s) return 0;
        lua_pushboolean(L, s->state != S_OPEN);
    } else {
        vm_method(L); /* the method, or nil */
    }
    return 1;
}

/* L: any thread of the app's state (the server may be gone when the object is collected). */
static void session_free(lua_State *L, session *s) {
    if (s->data_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, s->data_ref);
    while (!list_empty(&s->inbox)) free(LIST_ENTRY(list_pop_front(&s->inbox), inframe, link));
    free(s->part);
    buf_free(&s->pending.bytes);
    buf_free(&s->inflight.bytes);
    buf_free(&s->held.bytes);
    if (s->ws) ws_free(s->ws);
    free(s);
}

static int l_session_gc(lua_State *L) {
    session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    session *s = u->s;
    if (!s) return 0;
    s->ud_alive = 0;
    if (s->state == S_CLOSED) session_free(L, s);
    return 0;
}

static int l_session_tostring(lua_State *L) {
    session *s = check_session(L, 1);
    lua_pushfstring(L, "session %s", s ? s->id : "(freed)");
    return 1;
}

/* ---- closing --------------------------------------------------------------------------- */

static int on_close_done(void *ud, task_t *t, int ok, int nres) { return 0; }

/* Runs the script's on_close(session, reason) in a task of its own. */
static void call_on_close(session *s) {
    chat_server *srv = s->srv;
    lua_State *L = srv->app->L;
    if (srv->app->stopping) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->handlers_ref);
    if (lua_pcall(L, 0, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "on_close");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ud_ref);
    lua_pushstring(L, s->reason);
    sched_spawn(srv->app, L, 2, "on_close", on_close_done, NULL);
}

/* A full server has room again at 90% of max_connections (at least one below it), so it
 * does not flap between full and not at every connection. */
static int room_again_at(const chat_server *srv) {
    int margin = srv->max_connections / 10;
    return srv->max_connections - (margin > 0 ? margin : 1);
}

/* Runs the script's on_capacity(full) in a task of its own, when the server turns full
 * (max_connections reached) or has room again (room_again_at): the script tells the
 * status role at once, so logins stop being sent here before they are refused. */
static void call_on_capacity(chat_server *srv, int full) {
    lua_State *L = srv->app->L;
    srv->full = full;
    if (srv->app->stopping) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->handlers_ref);
    if (lua_pcall(L, 0, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "on_capacity");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushboolean(L, full);
    sched_spawn(srv->app, L, 1, "on_capacity", on_close_done, NULL);
}

static void tcp_closed(uv_handle_t *h) {
    session *s = h->data;
    chat_server *srv = s->srv;
    lua_State *L = srv->app->L;
    call_on_close(s);
    int ref = s->ud_ref;
    s->ud_ref = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, ref); /* the Lua object frees s when collected */
    undirty(s);
    list_remove(&s->link); /* only now: until here the server must outlive s (on_close runs Lua) */
    if (!s->ud_alive) session_free(L, s);
    hostobj_release(&srv->obj);
}

static void flush_timer_closed(uv_handle_t *h) { free(h); }

static void flush_timeout(uv_timer_t *t) { session_close(t->data, "flush timed out", 0); }

/* Closes s. flush: send what is queued first (bounded by FLUSH_ON_CLOSE_MS). */
static void session_close(session *s, const char *reason, int flush) {
    if (s->state == S_CLOSED) return;
    chat_server *srv = s->srv;
    if (s->state == S_OPEN) {
        s->reason = reason;
        if (flush && s->ws) /* 1001: the server goes away; 1000: the script closed it */
            ws_queue_close(s, srv->obj.closing ? WSLAY_CODE_GOING_AWAY : WSLAY_CODE_NORMAL_CLOSURE,
                           reason);
        if (s->reading) uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
        index_remove(srv->app->L, s);
    }
    if (flush && (s->pending.bytes.len > 0 || s->writing)) {
        if (s->state == S_OPEN) {
            s->state = S_DRAINING;
            write_now(s);
            if (s->state != S_DRAINING) return; /* all written at once: start_write closed it */
            s->flush_timer = xmalloc(sizeof *s->flush_timer);
            uv_timer_init(srv->app->loop, s->flush_timer);
            s->flush_timer->data = s;
            uv_timer_start(s->flush_timer, flush_timeout, FLUSH_ON_CLOSE_MS, 0);
        }
        return;
    }
    s->state = S_CLOSED;
    if (s->flush_timer) {
        uv_close((uv_handle_t *)s->flush_timer, flush_timer_closed);
        s->flush_timer = NULL;
    }
    srv->nconns--;
    if (s->counted) peer_count_del(srv->per_ip, s->ip);
    metric_add(srv->m_conns, -1);
    if (srv->full && srv->nconns <= room_again_at(srv)) call_on_capacity(srv, 0);
    uv_close((uv_handle_t *)&s->tcp, tcp_closed);
}

/* ---- handling frames ------------------------------------------------------------------ */

/* Answers frame id with {"error":code}, and "field" naming the bad field when given. */
static void reply_error(session *s, uint16_t id, enum host_error code, const char *field) {
    char body[96];
    int n = field ? snprintf(body, sizeof body, "{\"error\":%d,\"field\":\"%s\"}", code, field)
                  : snprintf(body, sizeof body, "{\"error\":%d}", code);
    session_send_raw(s, (uint16_t)(id + 1), body, (size_t)n);
}

/* Sends the table at idx as the reply to frame id (id + 1), encoded straight into the
 * session's queue (no Lua string). */
static void send_reply(session *s, lua_State *co, uint16_t id, int idx) {
    size_t len;
    const char *body = json_encode_pcall(co, idx, &len);
    if (!body) {
        log_error("chat: reply to %d cannot be encoded: %s", id, lua_tostring(co, -1));
        lua_pop(co, 1);
        reply_error(s, id, ERR_Internal, NULL);
        return;
    }
    if (len > frame_max_body(s->srv->kind)) {
        log_error("chat: reply to %d is %zu bytes, above %zu: not sent", id, len,
                  frame_max_body(s->srv->kind));
        reply_error(s, id, ERR_Internal, NULL);
        return;
    }
    session_send_raw(s, (uint16_t)(id + 1), body, len);
}

static int frame_done(void *ud, task_t *t, int ok, int nres) {
    session *s = ud;
    uint16_t id = s->current_id;
    lua_State *co = t->co;
    int cancelled = 0;
    int holding = s->holding;
    s->task = NULL;
    metric_observe(s->current_stat.latency, (double)(uv_hrtime() - s->handler_t0) / 1e9);
    s->holding = 0; /* the reply goes first, then what was held */
    if (!ok) {
        const char *err = lua_tostring(co, -1);
        cancelled = err && strcmp(err, "cancelled") == 0;
        if (s->state == S_OPEN && (!cancelled || s->timed_out)) reply_error(s, id, ERR_Internal, NULL);
    } else if (nres >= 1 && lua_istable(co, -nres) && s->state == S_OPEN) {
        send_reply(s, co, id, lua_gettop(co) - nres + 1);
    }
    s->holding = holding;
    release_held(s);
    s->busy = 0;
    if (s->state != S_CLOSED) session_process(s);
    return cancelled;
}

/* Decodes the body into a table on L; 0 when it is not a JSON object. */
static int decode_object(lua_State *L, const char *body, size_t len) {
    if (json_decode(L, body, len) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (json_is_array(L, -1)) { /* an array is not an object, also [] */
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

/* Pushes the messages table of the current generation (read again after a reload). */
static int push_messages(lua_State *L, chat_server *srv) {
    if (srv->messages_ref != LUA_NOREF && srv->messages_epoch == srv->app->reload_epoch) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, srv->messages_ref);
        return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->handlers_ref);
    if (lua_pcall(L, 0, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "messages");
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, srv->messages_ref);
    lua_pushvalue(L, -1);
    srv->messages_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    srv->messages_epoch = srv->app->reload_epoch;
    return 1;
}

/* Pushes messages[id] of the current generation, or nothing and returns 0. */
static int push_handler(lua_State *L, chat_server *srv, uint16_t id) {
    if (!push_messages(L, srv)) return 0;
    lua_rawgeti(L, -1, id);
    lua_remove(L, -2);
    if (lua_isfunction(L, -1)) return 1;
    lua_pop(L, 1);
    return 0;
}

/* The series of msg_id (a number, or "unknown": then no handler, no latency). */
static msg_stat msg_series(chat_server *srv, const char *msg_id) {
    char labels[96];
    snprintf(labels, sizeof labels, "server=\"%s\",msg_id=\"%s\"", srv->name, msg_id);
    msg_stat st;
    st.count = metrics_get(METRIC_COUNTER, "chathost_chat_messages_total", labels,
                           "Chat messages received, by msg_id (\"unknown\": no handler).");
    st.latency = NULL;
    if (strcmp(msg_id, "unknown") != 0)
        st.latency = metrics_get(METRIC_HISTOGRAM, "chathost_chat_handler_seconds", labels,
                                 "Time a msg_id's handler took, from its start to its end.");
    return st;
}

/* The series of a msg_id that has a handler: from the cache after the first frame (with
 * more handlers than MSG_STATS, the others are looked up in the registry each time). */
static msg_stat msg_stats(chat_server *srv, uint16_t id) {
    unsigned k = id % MSG_STATS, probes = 0;
    while (probes < MSG_STATS && srv->msg_stats[k].used && srv->msg_stats[k].id != id) {
        k = (k + 1) % MSG_STATS;
        probes++;
    }
    if (probes < MSG_STATS && srv->msg_stats[k].used) return srv->msg_stats[k].st;
    char msg_id[8];
    snprintf(msg_id, sizeof msg_id, "%u", id);
    msg_stat st = msg_series(srv, msg_id);
    if (probes < MSG_STATS) {
        srv->msg_stats[k].st = st;
        srv->msg_stats[k].id = id;
        srv->msg_stats[k].used = 1;
    }
    return st;
}

/* Starts the handler of one frame. */
static void handle_frame(session *s, uint16_t id, const char *body, size_t len) {
    chat_server *srv = s->srv;
    lua_State *L = srv->app->L;
    int ws_body = 0; /* a WebSocket envelope's body: decoded already (-1: not an object) */
    if (s->ws && (ws_body = ws_unwrap(s, L, body, len, &id)) == 0) return;
    metric_add(srv->m_in, 1);
    if (!push_handler(L, srv, id)) {
        if (ws_body == 1) lua_pop(L, 1);
        metric_add(srv->unknown_msgs.count, 1);
        metric_add(srv->m_unknown, 1);
        if (srv->unknown_logged++ % 1000 == 0)
            log_warn("chat: unknown msg_id %u from %s (uid %.0f): ignored (%lu so far)", id,
                     s->peer, s->uid, srv->unknown_logged);
        return;
    }
    msg_stat st = msg_stats(srv, id);
    metric_add(st.count, 1);
    if (ws_body == 1) {
        lua_insert(L, -2); /* handler, msg */
    } else if (ws_body == -1 || !decode_object(L, body, len)) {
        lua_pop(L, 1);
        reply_error(s, id, ERR_Error_Json, NULL);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ud_ref);
    lua_insert(L, -2); /* handler, session, msg */
    s->current_id = id;
    s->busy = 1;
    s->busy_since = uv_now(srv->app->loop);
    s->timed_out = 0;
    s->task = NULL;
    s->current_stat = st;
    s->handler_t0 = uv_hrtime();
    task_t *t = sched_spawn(srv->app, L, 2, "chat message", frame_done, s);
    if (s->busy && t) s->task = t; /* still running: the sweep may have to cancel it */
}

/* Handles queued frames while no handler runs. Re-entered from a handler that answered at
 * once; instead of recursing, the running call goes round again (as in http_server.c). */
static void session_process(session *s) {
    if (s->processing) {
        s->again = 1;
        return;
    }
    s->processing = 1;
    do {
        s->again = 0;
        while (!s->busy && s->state == S_OPEN && !list_empty(&s->inbox)) {
            inframe *f = LIST_ENTRY(list_pop_front(&s->inbox), inframe, link);
            s->inbox_frames--;
            s->inbox_bytes -= f->len;
            handle_frame(s, f->id, f->body, f->len);
            free(f);
        }
    } while (s->again);
    s->processing = 0;
    schedule_write(s); /* replies of all frames handled above, with the pass's other frames */
    if (s->state == S_OPEN && !s->reading && s->inbox_frames < INBOX_MAX_FRAMES / 2)
        session_read_start(s);
}

/* ---- reading -------------------------------------------------------------------------- */

/* Shared: on_read consumes it before returning. 256 KiB: a resource connection's chunk
 * frames are ~44 KB with five in flight; with 64 KiB most of them came in two reads, their
 * first part copied aside (keep_partial) first: the loop's CPU per GB uploaded one at a
 * time -5% with this (bench/RESULTS.md). */
static uint8_t read_buf[262144];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    *b = uv_buf_init((char *)read_buf, sizeof read_buf);
}

static void enqueue(session *s, const frame *f) {
    inframe *in = xmalloc(sizeof *in + f->len);
    in->id = f->id;
    in->len = f->len;
    memcpy(in->body, f->body, f->len);
    list_push_back(&s->inbox, &in->link);
    s->inbox_frames++;
    s->inbox_bytes += f->len;
}

/* Handles f now if nothing runs or waits before it, else queues it. */
static void deliver(session *s, const frame *f) {
    if (!s->busy && list_empty(&s->inbox) && !s->processing) {
        s->processing = 1; /* replies of a burst of frames go out in one write */
        handle_frame(s, f->id, (const char *)f->body, f->len);
        s->processing = 0;
    } else {
        enqueue(s, f);
    }
}

/* Takes the complete frames out of data; returns the bytes consumed. */
static size_t take_frames(session *s, const uint8_t *data, size_t len) {
    size_t off = 0;
    for (;;) {
        frame f;
        size_t used;
        enum frame_status st =
            frame_parse(s->srv->kind, data + off, len - off, s->max_body, &f, &used);
        if (st == FRAME_MORE) return off;
        if (st == FRAME_TOO_BIG) {
            log_warn("chat: %s announced a %u-byte body (limit %zu): closing", s->peer, f.len,
                     s->max_body);
            reply_error(s, f.id, ERR_InvalidParams, "body_len");
            session_close(s, "frame too large", 1);
            return len;
        }
        deliver(s, &f);
        off += used;
        if (s->state != S_OPEN) return len;
    }
}

static void keep_partial(session *s, const uint8_t *data, size_t len) {
    if (len == 0) return;
    s->part = buf_grow(s->part, &s->part_cap, s->part_len + len);
    memmove(s->part + s->part_len, data, len);
    s->part_len += len;
}

/* How many of the len bytes at data the frame begun in s->part still lacks (all of them
 * when they do not complete it). A header announcing a body over the limit needs no body:
 * the header alone gets its answer. */
static size_t part_missing(session *s, const uint8_t *data, size_t len) {
    enum frame_kind k = s->srv->kind;
    size_t hl = frame_header_len(k);
    uint8_t head[FRAME_HEADER_MAX];
    size_t have = s->part_len < hl ? s->part_len : hl;
    memcpy(head, s->part, have);
    if (hl - have > len) return len;
    memcpy(head + have, data, hl - have);
    frame f;
    size_t used;
    size_t body = frame_parse(k, head, hl, s->max_body, &f, &used) == FRAME_TOO_BIG ? 0 : f.len;
    size_t total = hl + body;
    size_t need = total - s->part_len;
    return need < len ? need : len;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    session *s = st->data;
    if (n == 0) return;
    if (n < 0) {
        session_close(s, n == UV_EOF ? "closed by the client" : "read error", 0);
        return;
    }
    s->last_recv = uv_now(s->srv->app->loop);
    const uint8_t *data = (const uint8_t *)b->base;
    size_t len = (size_t)n;
    if (s->ws) {
        ws_on_read(s, data, len);
    } else if (s->part_len > 0) { /* complete the pending frame (copying only its bytes) first */
        size_t take = part_missing(s, data, len);
        keep_partial(s, data, take);
        data += take;
        len -= take;
        if (take_frames(s, s->part, s->part_len) == s->part_len || s->state != S_OPEN)
            s->part_len = 0;
    }
    if (!s->ws && s->part_len == 0 && s->state == S_OPEN) { /* the rest: whole frames, then a tail */
        size_t used = take_frames(s, data, len);
        if (s->state == S_OPEN) keep_partial(s, data + used, len - used);
    }
    if (s->state != S_OPEN) return;
    schedule_write(s);
    if (s->inbox_frames >= INBOX_MAX_FRAMES || s->inbox_bytes >= INBOX_MAX_BYTES) {
        uv_read_stop(st); /* the client runs ahead of its handlers: wait */
        s->reading = 0;
    }
}

static void session_read_start(session *s) {
    if (s->reading || s->state != S_OPEN) return;
    if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0) s->reading = 1;
}

/* ---- WebSocket (docs/protocol.md §5.5) ------------------------------------------------ */
/* wslay does the framing, masking, reassembly and control frames over our buffers: its
 * recv callback reads the bytes on_read got, its send callback appends to the session's
 * queue (wtarget), so the send-queue bounds and the coalesced writes are the TCP ones. */

static buf_t ws_scratch; /* the envelope being built: wslay copies a message it queues */

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *ud) {
    session *s = ud;
    buf_append(&s->wtarget->bytes, data, len);
    return (ssize_t)len;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud) {
    ws_conn *w = ((session *)ud)->ws;
    if (w->rd_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->rd_len ? len : w->rd_len;
    memcpy(buf, w->rd, n);
    w->rd += n;
    w->rd_len -= n;
    return (ssize_t)n;
}

/* Moves what wslay has queued (messages, pongs, pings, a close) into q. */
static void ws_pump(session *s, out_buf *q) {
    s->wtarget = q;
    wslay_event_send(s->ws->ctx); /* the callback never fails: nothing to report */
    s->wtarget = &s->pending;
}

/* Our text messages skip wslay's event queue (a malloc and a copy per message): wslay's
 * frame layer writes each as one unmasked, unfragmented frame straight into the session's
 * queue, after whatever the event queue holds (a pong queued while reading): ws_pump
 * empties that queue every time, its send callback never blocks. */
static wslay_frame_context_ptr ws_framer;
static out_buf *ws_framer_target;

static ssize_t ws_framer_send(const uint8_t *data, size_t len, int flags, void *ud) {
    buf_append(&ws_framer_target->bytes, data, len);
    return (ssize_t)len;
}

/* Queues {"id":id,"body":<body>} as one text message (body is JSON already). 0, or -1
 * when the session takes no more messages (not upgraded, or its close was sent). */
static int ws_queue_text(session *s, uint16_t id, const char *body, size_t len) {
    if (!s->ws->ctx || wslay_event_get_close_sent(s->ws->ctx)) return -1;
    if (!ws_framer) {
        static const struct wslay_frame_callbacks cb = {ws_framer_send, NULL, NULL};
        if (wslay_frame_context_init(&ws_framer, &cb, NULL) != 0) return -1;
    }
    char digits[8], *d = digits + sizeof digits; /* the id without snprintf's cost */
    unsigned v = id;
    do *--d = (char)('0' + v % 10); while ((v /= 10) != 0);
    ws_scratch.len = 0;
    buf_append(&ws_scratch, "{\"id\":", 6);
    buf_append(&ws_scratch, d, (size_t)(digits + sizeof digits - d));
    buf_append(&ws_scratch, ",\"body\":", 8);
    buf_append(&ws_scratch, body, len);
    buf_append(&ws_scratch, "}", 1);
    struct wslay_frame_iocb io = {.fin = 1, .opcode = WSLAY_TEXT_FRAME,
        .payload_length = ws_scratch.len, .data = (const uint8_t *)ws_scratch.data,
        .data_length = ws_scratch.len};
    ws_framer_target = s->holding ? &s->held : &s->pending;
    ws_pump(s, ws_framer_target); /* a pong wslay queued while reading goes first */
    ssize_t sent = wslay_frame_send(ws_framer, &io); /* all of it: the callback takes all */
    return sent == (ssize_t)ws_scratch.len ? 0 : -1;
}

/* Queues a close frame with code and reason (at most 123 bytes, the RFC's room). */
static void ws_queue_close(session *s, uint16_t code, const char *reason) {
    wslay_event_context_ptr ctx = s->ws->ctx;
    if (!ctx || wslay_event_get_close_sent(ctx)) return;
    size_t rl = strlen(reason);
    wslay_event_queue_close(ctx, code, (const uint8_t *)reason, rl > 123 ? 123 : rl);
    ws_pump(s, &s->pending);
}

/* Why the WebSocket closing handshake ended the session (a static string: the reason
 * on_close gets). */
static const char *ws_close_reason(wslay_event_context_ptr ctx) {
    if (wslay_event_get_close_received(ctx)) return "closed by the client";
    switch (wslay_event_get_status_code_sent(ctx)) {
    case WSLAY_CODE_PROTOCOL_ERROR: return "websocket protocol error (1002)";
    case WSLAY_CODE_UNSUPPORTED_DATA: return "websocket binary message (1003)";
    case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA: return "websocket invalid message (1007)";
    case WSLAY_CODE_MESSAGE_TOO_BIG: return "websocket message too big (1009)";
    default: return "websocket closed";
    }
}

/* Closes s with close code 1007 (a message that is no envelope): at once, also
 * when the message waited in the inbox, outside any read. */
static void ws_reject(session *s, const char *why) {
    ws_queue_close(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, why);
    session_close(s, ws_close_reason(s->ws->ctx), 1);
}

/* The id and body of a message {"id":n,"body":{..}}: 1 with the body table pushed on L,
 * -1 when the body is no JSON object (answered like a TCP frame's bad JSON), 0 when the
 * message is no envelope (s is closed with 1007). */
static int ws_unwrap(session *s, lua_State *L, const char *text, size_t len, uint16_t *id) {
    const char *body;
    size_t blen;
    /* the common spelling without a table for the envelope; its body is an object, or the
     * whole message goes the general way below (which finds what is wrong with it) */
    if (ws_envelope_plain(text, len, id, &body, &blen) && decode_object(L, body, blen)) return 1;
    if (!decode_object(L, text, len)) {
        ws_reject(s, "not a JSON object");
        return 0;
    }
    lua_getfield(L, -1, "id");
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    lua_Number n = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isnum || n < 0 || n > 65535 || n != (lua_Number)(long)n) {
        lua_pop(L, 1);
        ws_reject(s, "\"id\" must be a msg_id");
        return 0;
    }
    *id = (uint16_t)n;
    lua_getfield(L, -1, "body");
    lua_remove(L, -2);
    /* a nested array is not marked (json.c): one with elements has [1]; [] passes as {} */
    if (lua_istable(L, -1) && lua_objlen(L, -1) == 0) return 1;
    lua_pop(L, 1);
    return -1;
}

/* A complete message from wslay (fragments reassembled, control frames answered). */
static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud) {
    session *s = ud;
    if (s->state != S_OPEN || wslay_event_get_close_sent(ctx)) return;
    if (arg->opcode == WSLAY_BINARY_FRAME) {
        ws_queue_close(s, WSLAY_CODE_UNSUPPORTED_DATA, "text messages only");
    } else if (arg->opcode == WSLAY_TEXT_FRAME) {
        if (!ws_utf8_valid(arg->msg, arg->msg_length)) {
            ws_queue_close(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8");
            return;
        }
        frame f = {0, (uint32_t)arg->msg_length, arg->msg};
        deliver(s, &f);
    }
}

static const char *http_reason(int status) {
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    default: return "Error";
    }
}

/* Answers a handshake with an HTTP error and closes once it is sent. */
static void ws_refuse(session *s, int status, const char *why) {
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n%s\n",
                     status, http_reason(status), strlen(why) + 1,
                     status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", why);
    buf_append(&s->pending.bytes, resp, (size_t)n < sizeof resp ? (size_t)n : sizeof resp - 1);
    session_close(s, "websocket handshake refused", 1);
}

/* Checks the complete upgrade request and switches s to WebSocket frames. 0, or -1 when
 * it was refused (and s is closing). */
static int ws_upgrade(session *s) {
    chat_server *srv = s->srv;
    ws_conn *w = s->ws;
    const char *key, *why, *origin;
    size_t key_len, olen = 0;
    int status = ws_check_upgrade(w->hs, &key, &key_len, &why);
    if (status) {
        ws_refuse(s, status, why);
        return -1;
    }
    origin = hreq_header_value(w->hs, "origin", &olen);
    if (!ws_origin_allowed(origin, olen, (const char *const *)srv->ws_origins, srv->ws_norigins)) {
        log_info("chat %s: WebSocket from %s with Origin %.*s refused (chat.ws_origins)",
                 srv->name, s->peer, origin ? (int)(olen > 200 ? 200 : olen) : 6,
                 origin ? origin : "(none)");
        ws_refuse(s, 403, "origin not allowed");
        return -1;
    }
    char accept[WS_ACCEPT_LEN + 1];
    struct wslay_event_callbacks cb = {ws_recv_cb, ws_send_cb, NULL, NULL, NULL, NULL, ws_on_msg};
    if (ws_accept_key(key, key_len, accept) != 0 ||
        wslay_event_context_server_init(&w->ctx, &cb, s) != 0) {
        w->ctx = NULL;
        ws_refuse(s, 400, "cannot answer the handshake");
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, srv->ws_max_message);
    char resp[160];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    buf_append(&s->pending.bytes, resp, (size_t)n);
    hreq_free(w->hs);
    free(w->hs);
    w->hs = NULL;
    w->last_ping = uv_now(srv->app->loop);
    write_now(s);
    return 0;
}

/* After wslay read or queued: send what it made; a close it sent ends the session. */
static void ws_after_io(session *s) {
    if (s->state != S_OPEN || !s->ws->ctx) return;
    ws_pump(s, &s->pending);
    if (wslay_event_get_close_sent(s->ws->ctx)) {
        session_close(s, ws_close_reason(s->ws->ctx), 1);
        return;
    }
    if (!s->processing) schedule_write(s);
}

/* The bytes of a WebSocket session: the handshake, then frames for wslay. */
static void ws_on_read(session *s, const uint8_t *data, size_t len) {
    ws_conn *w = s->ws;
    if (w->hs) {
        size_t used = 0;
        enum hreq_status st = hreq_feed(w->hs, (const char *)data, len, &used);
        if (st == HREQ_MORE) return;
        if (st == HREQ_ERROR) {
            ws_refuse(s, w->hs->err_status, w->hs->err_msg ? w->hs->err_msg : "bad request");
            return;
        }
        if (ws_upgrade(s) != 0) return;
        data += used;
        len -= used;
    }
    if (len == 0 || wslay_event_get_close_sent(w->ctx)) return;
    w->rd = data;
    w->rd_len = len;
    int rc = wslay_event_recv(w->ctx);
    w->rd_len = 0;
    if (s->state != S_OPEN) return;
    if (rc != 0) {
        session_close(s, "websocket error", 0);
        return;
    }
    ws_after_io(s);
}

/* Sends a ping when the session has had none for chat.ws_ping_interval_ms. */
static void ws_maybe_ping(session *s, uint64_t now) {
    uint64_t every = s->srv->ws_ping_ms;
    if (!every || s->state != S_OPEN || !s->ws->ctx || now - s->ws->last_ping < every) return;
    s->ws->last_ping = now;
    struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
    if (wslay_event_queue_msg(s->ws->ctx, &m) == 0) ws_after_io(s);
}

static void ws_free(ws_conn *w) {
    if (w->hs) {
        hreq_free(w->hs);
        free(w->hs);
    }
    if (w->ctx) wslay_event_context_free(w->ctx);
    free(w);
}

/* A new WebSocket session starts by reading its handshake, bounded in bytes. */
static ws_conn *ws_new(chat_server *srv) {
    ws_conn *w = xcalloc(1, sizeof *w);
    hreq_limits lim = {srv->ws_handshake_bytes, srv->ws_handshake_bytes, 0, WS_MAX_HEADERS};
    w->hs = xmalloc(sizeof *w->hs);
    hreq_init(w->hs, &lim);
    return w;
}

/* ---- accepting ------------------------------------------------------------------------- */

static void refuse_closed(uv_handle_t *h) { free(h); }

static void refuse_closed_session(uv_handle_t *h) { free(h->data); }

/* The answer a client turned away at max_connections reads before the close: the login
 * reply it is about to wait for, with 1018 (busy, safe to retry, through the gate). */
static const char FULL_MESSAGE[] = "chat server full";

static void refuse_connection(chat_server *srv, uv_stream_t *l, int ws) {
    uv_tcp_t *t = xmalloc(sizeof *t);
    uv_tcp_init(srv->app->loop, t);
    if (uv_accept(l, (uv_stream_t *)t) == 0 && !ws) { /* (a browser retries a refused WebSocket) */
        char body[64];
        int n = snprintf(body, sizeof body, "{\"error\":%d,\"message\":\"%s\"}",
                         ERR_ServerBusy, FULL_MESSAGE);
        char frame[FRAME_HEADER_MAX + sizeof body];
        size_t hl = frame_header(srv->kind, (uint8_t *)frame, 1006, (uint32_t)n);
        memcpy(frame + hl, body, (size_t)n);
        uv_buf_t b = uv_buf_init(frame, (unsigned)(hl + (size_t)n));
        uv_try_write((uv_stream_t *)t, &b, 1); /* a fresh socket's buffer takes it, or never mind */
        if (srv->refused++ % 1000 == 0)
            log_warn("chat: %d connections (max_connections): refusing more (%lu so far)",
                     srv->nconns, srv->refused);
    }
    uv_close((uv_handle_t *)t, refuse_closed);
}

/* One client address must not hold every slot (the resource channel has no login to
 * wait for): a connection beyond max_connections_per_ip from its address is closed at
 * once, unanswered, and counted. Returns 1 when s was turned away (and is being freed). */
static int over_ip_cap(chat_server *srv, session *s) {
    tcp_peer_str(&s->tcp, s->ip, sizeof s->ip, 0);
    if (peer_count_add(srv->per_ip, s->ip) <= srv->max_per_ip) {
        s->counted = 1;
        return 0;
    }
    peer_count_del(srv->per_ip, s->ip);
    if (srv->refused_ip++ % 1000 == 0)
        log_warn("chat %s: %s holds max_connections_per_ip (%d): refusing more (%lu so far)",
                 srv->name, s->ip, srv->max_per_ip, srv->refused_ip);
    uv_close((uv_handle_t *)&s->tcp, refuse_closed_session);
    return 1;
}

/* A connection on either listener (ws: the WebSocket one) becomes a session. */
static void accept_session(uv_stream_t *l, int status, int ws) {
    chat_server *srv = l->data;
    lua_State *L = srv->app->L;
    if (status < 0 || srv->obj.closing) return;
    if (srv->nconns >= srv->max_connections) { /* accept, answer and close: the queue drains */
        refuse_connection(srv, l, ws);
        return;
    }
    session *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->ud_ref = s->data_ref = LUA_NOREF;
    list_init(&s->inbox);
    uv_tcp_init(srv->app->loop, &s->tcp);
    s->tcp.data = s;
    if (uv_accept(l, (uv_stream_t *)&s->tcp) != 0) {
        uv_close((uv_handle_t *)&s->tcp, refuse_closed_session);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    snprintf(s->id, sizeof s->id, "%s-%llx", srv->id_prefix, (unsigned long long)++srv->next_id);
    tcp_peer_str(&s->tcp, s->peer, sizeof s->peer, 1);
    if (srv->max_per_ip > 0 && over_ip_cap(srv, s)) return;
    if (ws) s->ws = ws_new(srv);
    s->wtarget = &s->pending;
    s->last_recv = s->accepted_at = uv_now(srv->app->loop);
    s->max_body = srv->max_body;
    session_ud *u = lua_newuserdata(L, sizeof *u);
    u->s = s;
    s->ud_alive = 1;
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    s->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    list_push_back(&srv->sessions, &s->link);
    hostobj_hold(&srv->obj);
    srv->nconns++;
    metric_add(srv->m_conns, 1);
    if (!srv->full && srv->nconns >= srv->max_connections) call_on_capacity(srv, 1);
    session_read_start(s);
}

static void on_connection(uv_stream_t *l, int status) { accept_session(l, status, 0); }

static void on_ws_connection(uv_stream_t *l, int status) { accept_session(l, status, 1); }

/* Closes the sessions silent for longer than the idle limit. */
static void on_sweep(uv_timer_t *t) {
    chat_server *srv = t->data;
    uint64_t now = uv_now(srv->app->loop);
    list_node *n = srv->sessions.next;
    while (n != &srv->sessions) {
        session *s = LIST_ENTRY(n, session, link);
        n = n->next; /* s may leave the list */
        if (s->state == S_OPEN && s->ws && s->ws->hs && now - s->accepted_at > srv->ws_handshake_ms) {
            session_close(s, "websocket handshake timed out", 0);
        } else if (s->state == S_OPEN && !s->busy && srv->idle_ms && now - s->last_recv > srv->idle_ms) {
            session_close(s, "idle", 0); /* (a session waiting for its handler is not idle) */
        } else if (s->state == S_OPEN && !s->busy && s->uid == 0 && !s->kept_open &&
                   srv->login_ms && now - s->accepted_at > srv->login_ms) {
            session_close(s, "no login in time", 0); /* it held a descriptor for nothing */
        } else if (s->task && now - s->busy_since > srv->handler_ms) {
            log_warn("chat: handler of %u for uid %.0f ran %llu ms (chat.handler_timeout_ms): "
                     "cancelled", s->current_id, s->uid, (unsigned long long)(now - s->busy_since));
            s->timed_out = 1;
            sched_cancel(s->task); /* frame_done answers 1019; the next frames go on */
        }
        if (s->ws) ws_maybe_ping(s, now);
    }
}

/* ---- the server ------------------------------------------------------------------------ */

static void ws_origins_free(chat_server *srv) {
    for (size_t i = 0; i < srv->ws_norigins; i++) free(srv->ws_origins[i]);
    free(srv->ws_origins);
    srv->ws_origins = NULL;
    srv->ws_norigins = 0;
}

static void server_free(hostobj *o) {
    chat_server *srv = HOSTOBJ_OF(o, chat_server, obj);
    lua_State *L = srv->app->L;
    luaL_unref(L, LUA_REGISTRYINDEX, srv->handlers_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->by_uid_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->messages_ref);
    if (srv->app->chat == srv) srv->app->chat = NULL;
    peer_count_free(srv->per_ip);
    ws_origins_free(srv);
    free(srv);
}

static void server_handle_closed(uv_handle_t *h) {
    chat_server *srv = h->data;
    hostobj_release(&srv->obj);
}

/* Stops accepting and closes every session (queued frames are flushed first). */
static void server_close(hostobj *o) {
    chat_server *srv = HOSTOBJ_OF(o, chat_server, obj);
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
    uv_close((uv_handle_t *)&srv->sweep, server_handle_closed);
    on_flush_check(&srv->flush_check); /* what this pass queued goes out now */
    uv_close((uv_handle_t *)&srv->flush_check, server_handle_closed);
    uv_close((uv_handle_t *)&srv->flush_idle, server_handle_closed);
    if (srv->ws_port >= 0) uv_close((uv_handle_t *)&srv->ws_listener, server_handle_closed);
    list_node *n = srv->sessions.next;
    while (n != &srv->sessions) {
        session *s = LIST_ENTRY(n, session, link);
        n = n->next;
        session_close(s, "server shutting down", 1);
    }
}


/* The open-file limit raised to its hard maximum (the soft default is often 1024), or -1
 * when it cannot be read. */
static long nofile_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &r) != 0) getrlimit(RLIMIT_NOFILE, &r);
    }
    return r.rlim_cur == RLIM_INFINITY || r.rlim_cur > 100000000 ? 100000000 : (long)r.rlim_cur;
}

/* max_connections, at most the descriptors this process may open minus a reserve for its
 * pools, gRPC channels, admin listener and files: beyond that accept() fails with EMFILE
 * and the server can neither serve nor refuse anyone. Says so when it lowers the limit. */
static int clamp_connections(const char *name, int wanted, int reserve) {
    long limit = nofile_limit();
    if (limit < 0) return wanted;
    long room = limit - reserve;
    if (room < 1) room = 1;
    if (wanted <= room) return wanted;
    log_info("chat %s: max_connections %d lowered to %ld (open-file limit %ld minus "
             "chat.fd_reserve %d)", name, wanted, room, limit, reserve);
    return (int)room;
}

/* ws_origins = {"http://host:port", ...} into o; "*" allows any Origin. Raises on an
 * entry that is not a string. */
static void read_origins(lua_State *L, chat_server *o) {
    lua_getfield(L, 1, "ws_origins");
    if (!lua_isnil(L, -1)) luaL_checktype(L, -1, LUA_TTABLE);
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "ws_origins[%d]: expected a string", (int)i);
        lua_pop(L, 1);
    }
    o->ws_origins = n ? xcalloc(n, sizeof *o->ws_origins) : NULL;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        o->ws_origins[i - 1] = xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    o->ws_norigins = n;
    lua_pop(L, 1);
}

/* The options into o (max_connections as asked, before clamp_connections); returns
 * fd_reserve. Raises on a wrong type. */
static int read_options(lua_State *L, chat_server *o) {
    o->kind = frame_opt_kind(L, 1);
    o->max_body = (size_t)vm_opt_int(L, 1, "max_body_bytes", 8192);
    if (o->max_body > frame_max_body(o->kind)) o->max_body = frame_max_body(o->kind);
    o->queue_bytes = (size_t)vm_opt_int(L, 1, "send_queue_bytes", 1 << 20);
    o->queue_frames = (unsigned)vm_opt_int(L, 1, "send_queue_frames", 1000);
    o->idle_ms = (uint64_t)vm_opt_int(L, 1, "idle_timeout_ms", 60000);
    o->handler_ms = (uint64_t)vm_opt_int(L, 1, "handler_timeout_ms", 30000);
    o->login_ms = (uint64_t)vm_opt_int(L, 1, "login_timeout_ms", 10000);
    lua_getfield(L, 1, "name");
    snprintf(o->name, sizeof o->name, "%s", luaL_optstring(L, -1, "chat"));
    lua_pop(L, 1);
    o->max_connections = (int)vm_opt_int(L, 1, "max_connections", 200000);
    o->max_per_ip = (int)vm_opt_int(L, 1, "max_connections_per_ip", 0);
    o->ws_max_message = (size_t)vm_opt_int(L, 1, "ws_max_message_bytes", 16384);
    o->ws_ping_ms = (uint64_t)vm_opt_int(L, 1, "ws_ping_interval_ms", 20000);
    o->ws_handshake_ms = (uint64_t)vm_opt_int(L, 1, "ws_handshake_timeout_ms", 5000);
    o->ws_handshake_bytes = (size_t)vm_opt_int(L, 1, "ws_handshake_max_bytes", 8192);
    int fd_reserve = (int)vm_opt_int(L, 1, "fd_reserve", 256);
    read_origins(L, o); /* last: nothing raises after its allocations */
    return fd_reserve;
}

/* How often the sweep runs: a quarter of the shortest deadline it enforces (0: off),
 * at most a second. */
static uint64_t sweep_interval(const chat_server *srv) {
    uint64_t limit = srv->handler_ms;
    if (srv->idle_ms && srv->idle_ms < limit) limit = srv->idle_ms;
    if (srv->login_ms && srv->login_ms < limit) limit = srv->login_ms;
    if (srv->ws_port > 0 && srv->ws_handshake_ms < limit) limit = srv->ws_handshake_ms;
    if (srv->ws_port > 0 && srv->ws_ping_ms && srv->ws_ping_ms < limit) limit = srv->ws_ping_ms;
    return limit / 4 < 1000 ? limit / 4 : 1000;
}

/* serve{address=, handlers=function() -> table, name=?, frame=?, max_body_bytes=?,
 *       send_queue_bytes=?, send_queue_frames=?, idle_timeout_ms=?, login_timeout_ms=?,
 *       handler_timeout_ms=?, max_connections=?, max_connections_per_ip=? (0: no cap),
 *       fd_reserve=?} -> server | nil, err
 * frame "u16u32" (the resource channel) has 6-byte headers and bodies up to 16 MiB (still
 * bounded by max_body_bytes); idle_timeout_ms / login_timeout_ms = 0 turn those off. */
static int l_serve(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "address");
    const char *address = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "handlers");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "handlers must be a function returning the table");
    chat_server opts = {0};
    int fd_reserve = read_options(L, &opts); /* a bad option raises before anything is taken */
    lua_getfield(L, 1, "ws_address");
    const char *ws_address = luaL_optstring(L, -1, NULL);
    lua_pop(L, 1);
    int port = 0, fd = listen_socket(address, 0, &port);
    if (fd < 0) {
        ws_origins_free(&opts);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", address, strerror(-fd));
        return 2;
    }
    int ws_port = -1, ws_fd = ws_address ? listen_socket(ws_address, 0, &ws_port) : -1;
    if (ws_address && ws_fd < 0) {
        close(fd);
        ws_origins_free(&opts);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", ws_address, strerror(-ws_fd));
        return 2;
    }
    chat_server *srv = xmalloc(sizeof *srv);
    *srv = opts;
    srv->app = app;
    srv->port = port;
    srv->max_connections = clamp_connections(srv->name, srv->max_connections, fd_reserve);
    srv->per_ip = peer_count_new();
    list_init(&srv->sessions);
    uv_tcp_init(app->loop, &srv->listener);
    srv->listener.data = srv;
    uv_timer_init(app->loop, &srv->sweep);
    srv->sweep.data = srv;
    list_init(&srv->dirty);
    uv_check_init(app->loop, &srv->flush_check);
    srv->flush_check.data = srv;
    uv_check_start(&srv->flush_check, on_flush_check);
    uv_unref((uv_handle_t *)&srv->flush_check); /* sessions keep the loop alive, not these */
    uv_idle_init(app->loop, &srv->flush_idle);
    srv->flush_idle.data = srv;
    uv_unref((uv_handle_t *)&srv->flush_idle);
    hostobj_init(app, &srv->obj, "chat server", server_close, server_free);
    /* the listener, the sweep timer and the two flush handles, until their close callbacks */
    for (int i = 0; i < 4; i++) hostobj_hold(&srv->obj);
    srv->ws_port = ws_address ? ws_port : -1;
    if (ws_address) { /* and the WebSocket listener */
        uv_tcp_init(app->loop, &srv->ws_listener);
        srv->ws_listener.data = srv;
        hostobj_hold(&srv->obj);
    }
    srv->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    srv->messages_ref = srv->by_uid_ref = LUA_NOREF;
    int rc = listen_start(&srv->listener, fd, 4096, on_connection);
    if (rc == 0 && ws_address) {
        rc = listen_start(&srv->ws_listener, ws_fd, 4096, on_ws_connection);
        address = ws_address;
    } else if (ws_address) {
        close(ws_fd);
    }
    if (rc != 0) {
        hostobj_close(&srv->obj);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", address, uv_strerror(rc));
        return 2;
    }
    lua_newtable(L);
    srv->by_uid_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    unsigned char rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(srv->id_prefix, sizeof srv->id_prefix, rnd, sizeof rnd);
    uint64_t sweep = sweep_interval(srv);
    uv_timer_start(&srv->sweep, on_sweep, sweep ? sweep : 1, sweep ? sweep : 1);
    char labels[64];
    snprintf(labels, sizeof labels, "server=\"%s\"", srv->name);
    srv->m_conns = metrics_get(METRIC_GAUGE, "chathost_chat_connections", labels, "Open chat connections.");
    srv->m_in = metrics_get(METRIC_COUNTER, "chathost_chat_frames_in_total", labels, "Frames received.");
    srv->m_out = metrics_get(METRIC_COUNTER, "chathost_chat_frames_out_total", labels, "Frames queued to send.");
    srv->m_writes = metrics_get(METRIC_COUNTER, "chathost_chat_writes_total", labels,
                                "Writes to client sockets (frames_out / writes: frames per write).");
    srv->m_unknown = metrics_get(METRIC_COUNTER, "chathost_chat_unknown_frames_total", labels,
                                 "Frames with a msg_id no handler takes.");
    srv->m_slow = metrics_get(METRIC_COUNTER, "chathost_chat_slow_readers_total", labels,
                              "Sessions closed because they did not read their frames.");
    srv->unknown_msgs = msg_series(srv, "unknown");
    app->chat = srv;
    hostobj_push(L, &srv->obj, SERVER_MT);
    return 1;
}

static int l_server_index(lua_State *L) {
    chat_server *srv = HOSTOBJ_OF(hostobj_check(L, 1, SERVER_MT), chat_server, obj);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "port") == 0) {
        lua_pushinteger(L, srv->port);
        return 1;
    }
    if (strcmp(k, "ws_port") == 0) { /* nil: no WebSocket listener */
        if (srv->ws_port > 0) lua_pushinteger(L, srv->ws_port); else lua_pushnil(L);
        return 1;
    }
    return vm_method(L);
}

/* ---- host.sessions ------------------------------------------------------------------- */

/* host.sessions speaks of the process's chat server (the last one served, while open). */
static int l_sessions_get(lua_State *L) {
    chat_server *current = app_from(L)->chat;
    lua_Number uid = luaL_checknumber(L, 1);
    if (!current) return 0;
    push_by_uid(L, current);
    lua_pushnumber(L, uid);
    lua_rawget(L, -2);
    return 1;
}

/* host.sessions.send(uids, msg_id, body, except?) -> here, away: one push to many users
 * (a group's members): body (a table is encoded once) goes to the session of each uid of
 * the array uids bound here, except the uid except; here: how many had a session here (a
 * session that cannot take it is closed as by session:send), away: the array of the others
 * in their order, or nil when none. Raises on bad arguments or a body above the frame's
 * limit (the script's bug, as for session:send of an unencodable value). */
static int l_sessions_send(lua_State *L) {
    chat_server *current = app_from(L)->chat;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer id = luaL_checkinteger(L, 2);
    luaL_argcheck(L, id >= 0 && id <= 65535, 2, "must be 0..65535");
    if (lua_type(L, 3) != LUA_TTABLE && lua_type(L, 3) != LUA_TSTRING)
        return luaL_argerror(L, 3, "expected a table or a string");
    int has_except = !lua_isnoneornil(L, 4);
    lua_Number except = has_except ? luaL_checknumber(L, 4) : 0;
    lua_settop(L, 4);
    size_t len;
    const char *body = encode_body(L, 3, &len);
    /* a table's JSON is the encoder's buffer, which a member closed on the way (its
     * on_capacity runs Lua) could reuse: our own copy, at index 5 */
    if (lua_type(L, 3) == LUA_TTABLE) lua_pushlstring(L, body, len); else lua_pushvalue(L, 3);
    body = lua_tolstring(L, 5, &len);
    if (current && len > frame_max_body(current->kind))
        return luaL_error(L, "push %d of %d bytes is above the frame limit %d", (int)id, (int)len,
                          (int)frame_max_body(current->kind));
    int n = (int)lua_objlen(L, 1), here = 0, away = 0;
    if (current) push_by_uid(L, current); else lua_newtable(L); /* index 6 */
    lua_newtable(L);                                                /* index 7: away */
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        if (lua_type(L, -1) != LUA_TNUMBER) return luaL_error(L, "uids[%d] is not a number", i);
        lua_Number uid = lua_tonumber(L, -1);
        if (has_except && uid == except) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -1);
        lua_rawget(L, 6);
        session_ud *u = lua_isuserdata(L, -1) ? lua_touserdata(L, -1) : NULL;
        lua_pop(L, 1);
        if (u && u->s && u->s->state == S_OPEN) {
            here++;
            session_send_raw(u->s, (uint16_t)id, body, len); /* -1: closed, logged there */
            lua_pop(L, 1);
        } else {
            lua_rawseti(L, 7, ++away);
        }
    }
    lua_pushinteger(L, here);
    if (away) lua_pushvalue(L, 7); else lua_pushnil(L);
    return 2;
}

static int l_sessions_count(lua_State *L) {
    chat_server *current = app_from(L)->chat;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, current ? current->nconns : 0);
    lua_setfield(L, -2, "connected");
    lua_pushinteger(L, current ? current->nbound : 0);
    lua_setfield(L, -2, "bound");
    lua_pushinteger(L, current ? current->max_connections : 0);
    lua_setfield(L, -2, "max"); /* max_connections as lowered to the descriptor limit */
    lua_pushboolean(L, current && current->full);
    lua_setfield(L, -2, "full");
    return 1;
}

static int l_sessions_list(lua_State *L) {
    chat_server *current = app_from(L)->chat;
    lua_newtable(L);
    if (!current) return 1;
    int n = 0;
    push_by_uid(L, current);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_rawseti(L, -4, ++n);
    }
    lua_pop(L, 1);
    return 1;
}

/* host.chat = {serve=}, host.sessions = {get=, count=, list=} */
int chat_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"send", l_send}, {"close", l_close}, {"bind", l_bind},
                                       {"unbind", l_unbind}, {"keep_open", l_keep_open},
                                       {NULL, NULL}};
    static const luaL_Reg server_methods[] = {{"close", hostobj_l_close}, {NULL, NULL}};
    vm_class(L, SESSION_MT, methods, l_session_index, l_session_gc);
    luaL_getmetatable(L, SESSION_MT);
    lua_pushcfunction(L, l_session_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    hostobj_class(L, SERVER_MT, server_methods, l_server_index);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_serve, 1);
    lua_setfield(L, -2, "serve");
    return 1;
}

int sessions_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"get", l_sessions_get}, {"count", l_sessions_count},
                                   {"list", l_sessions_list}, {"send", l_sessions_send},
                                   {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
