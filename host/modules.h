/* modules.h: the table of contents of the `host` Lua module, after Lua's own lualib.h and
 * linit.c. Every C module that provides a field of `host` declares its open (and shutdown)
 * function here, and has one row in host_modules[] (modules.c): vm.c attaches the rows,
 * main.c shuts them down, so a module is added in two places that sit side by side. */
#ifndef CHATHOST_MODULES_H
#define CHATHOST_MODULES_H

#include "app.h"

/* The opens: each finds the app (light userdata) on top of the stack and pushes the field's
 * value, usually a table whose functions have the app as upvalue. */
int sched_open(lua_State *L);       /* host.spawn      sched.c */
int timer_open(lua_State *L);       /* host.timer      timer.c */
int http_server_open(lua_State *L); /* host.http       http_server.c */
int http_client_open(lua_State *L); /* host.http.request  http_client.c */
int http_client_configure_open(lua_State *L); /* host.http.configure_client  http_client.c */
int http_client_stats_open(lua_State *L); /* host.http.client_stats  http_client.c */
int scripts_open(lua_State *L);     /* host.scripts    scripts.c */
int redis_open(lua_State *L);       /* host.redis      redis.c */
int db_open(lua_State *L);          /* host.db         db.c, db_pool.c */
int crypto_open(lua_State *L);      /* host.crypto     crypto.c */
/* Strict base64 (the original alphabet, padding required) into out (len / 4 * 3 bytes),
 * on any thread -> bytes written | -1 when in is not such base64. Non-secret data only. */
ssize_t crypto_b64_decode(unsigned char *out, const unsigned char *in, size_t len);
/* Base64 of in (the original alphabet, padded) into out: 4 * ceil(len / 3) characters, no
 * terminator; on any thread. Non-secret data only. */
void crypto_b64_encode(char *out, const unsigned char *in, size_t len);
int mail_open(lua_State *L);        /* host.mail       mail.c */
int tty_open(lua_State *L);         /* host.tty        tty.c */
int grpc_open(lua_State *L);        /* host.grpc       grpc_bridge.c */
int proc_open(lua_State *L);        /* host.proc       proc.c */
int fs_open(lua_State *L);          /* host.fs         fs.c */
int file_open(lua_State *L);        /* host.file       file.c */
int tcp_client_open(lua_State *L);  /* host.tcp        tcp_client.c */
int metrics_open(lua_State *L);     /* host.metrics    metrics.c */
int promise_open(lua_State *L);     /* host.promise    promise.c */
int chat_open(lua_State *L);        /* host.chat       chat_server.c */
int sessions_open(lua_State *L);    /* host.sessions   chat_server.c */
int frame_open(lua_State *L);       /* host.frame      frame.c */
int json_open(lua_State *L);        /* host.json       json.c */
int pb_open(lua_State *L);          /* host.pb         pb.c */
int errors_open(lua_State *L);      /* host.errors     errors.c */
int stop_open(lua_State *L);        /* host.on_stop    main.c */

/* Not fields of `host`: the test harness's core (require "chathost.harness_core"), and
 * lua-cjson's safe variant, which lua-cjson.h does not declare. */
int harness_core_open(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

/* The shutdowns: each makes its clients refuse new work and starts closing their handles;
 * the loop ends once the handles are closed. */
void scripts_close_all(struct app *app);
void redis_shutdown(struct app *app);
void db_shutdown(struct app *app);
void db_free(struct app *app);
void crypto_shutdown(struct app *app);
void mail_shutdown(struct app *app);
void http_client_shutdown(struct app *app);
void tty_shutdown(struct app *app);
void grpc_bridge_shutdown(struct app *app);
void file_release_all(struct app *app);

struct host_module {
    const char *name;                  /* field of host; "a.b" is field b of host.a */
    lua_CFunction open;
    void (*shutdown)(struct app *app); /* at app_stop, in table order; or NULL */
    void (*release)(struct app *app);  /* after the loop has ended, before lua_close; or NULL */
};

/* In the order vm.c opens them and main.c shuts them down; ends with a NULL name. */
extern const struct host_module host_modules[];

#endif
