/* tty.c: host.tty, line input for the terminal client that keeps the line being typed
 * intact while messages arrive. On a terminal, stdin is put in raw mode and this file is a
 * small line editor (printable UTF-8, Backspace, Ctrl-U, Enter; Ctrl-C and Ctrl-D end the
 * input); host.tty.print writes above the prompt and redraws it; host.tty.cancel ends a
 * pending read_line. When stdin is not a terminal (a pipe), lines are read as they come
 * and printing is plain. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sched.h"

#define LINE_MAX_BYTES 4096
#define QUEUE_MAX 256

typedef struct tty_state {
    struct app *app;
    int opened, is_tty, eof;
    uv_tty_t tty;
    uv_pipe_t pipe;
    uv_stream_t *in;
    char line[LINE_MAX_BYTES];
    size_t len;
    char prompt[256];
    int hidden;
    task_t *waiter;
    char *queue[QUEUE_MAX];   /* lines typed while nobody was reading */
    int qhead, qlen;
    int interrupted;
} tty_state;

static tty_state tty;

static void out(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void outs(const char *s) { out(s, strlen(s)); }

/* Redraws the prompt and the line typed so far (masked when hidden). */
static void redraw(void) {
    if (!tty.is_tty || !tty.waiter) return; /* a prompt shows while a line is awaited */
    outs("\r\x1b[K");
    outs(tty.prompt);
    if (tty.hidden) {
        for (size_t i = 0; i < tty.len; i++)
            if (((unsigned char)tty.line[i] & 0xC0) != 0x80) out("*", 1);
    } else {
        out(tty.line, tty.len);
    }
}

/* The task waiting for a line, which stops waiting (NULL when none). */
static task_t *take_waiter(void) {
    task_t *t = tty.waiter;
    tty.waiter = NULL;
    return t;
}

static void deliver(char *line) {
    if (tty.waiter) {
        task_t *t = take_waiter();
        lua_pushstring(t->co, line);
        free(line);
        sched_resume(t, 1);
        return;
    }
    if (tty.qlen == QUEUE_MAX) { /* nobody reads: the oldest typed line goes */
        free(tty.queue[tty.qhead]);
        tty.qhead = (tty.qhead + 1) % QUEUE_MAX;
        tty.qlen--;
    }
    tty.queue[(tty.qhead + tty.qlen++) % QUEUE_MAX] = line;
}

static void end_input(const char *why) {
    if (!tty.waiter) {
        tty.eof = 1;
        return;
    }
    task_t *t = take_waiter();
    if (tty.is_tty) outs("\r\n");
    sched_resume_error(t, why);
}

static void submit(void) {
    char *line = malloc(tty.len + 1);
    memcpy(line, tty.line, tty.len);
    line[tty.len] = '\0';
    tty.len = 0;
    if (tty.is_tty) outs("\r\n");
    deliver(line);
}

/* One byte typed on the terminal (raw mode). Escape sequences (arrows) are skipped. */
static void key(unsigned char ch, int *esc) {
    if (*esc) {
        if (*esc == 1 && ch == '[') *esc = 2;
        else if (*esc == 2 && ch >= 0x40 && ch <= 0x7e) *esc = 0;
        else if (*esc == 1) *esc = 0;
        return;
    }
    switch (ch) {
    case 0x1b: *esc = 1; return;
    case 0x03: tty.len = 0; end_input("interrupted"); return;        /* Ctrl-C */
    case 0x04: if (tty.len == 0) end_input("eof"); return;           /* Ctrl-D */
    case 0x15: tty.len = 0; redraw(); return;                        /* Ctrl-U */
    case '\r': case '\n': submit(); redraw(); return;
    case 0x7f: case 0x08:                                            /* Backspace */
        while (tty.len > 0 && ((unsigned char)tty.line[tty.len - 1] & 0xC0) == 0x80) tty.len--;
        if (tty.len > 0) tty.len--;
        redraw();
        return;
    }
    if (ch < 0x20 || tty.len >= LINE_MAX_BYTES - 1) return;
    tty.line[tty.len++] = (char)ch;
    redraw();
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    static int esc;
    if (n < 0) {
        uv_read_stop(s);
        if (!tty.is_tty && tty.len > 0) submit(); /* a last line without a newline */
        tty.eof = 1; /* the stream is over: later reads end at once too */
        end_input("eof");
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)b->base[i];
        if (tty.is_tty) {
            key(ch, &esc);
        } else if (ch == '\n') {
            if (tty.len > 0 && tty.line[tty.len - 1] == '\r') tty.len--;
            submit();
        } else if (tty.len < LINE_MAX_BYTES - 1) {
            tty.line[tty.len++] = (char)ch;
        }
    }
}

static int tty_open(struct app *app) {
    if (tty.opened || tty.eof) return 0; /* closed once: stays closed (eof) */
    tty.app = app;
    uv_handle_type t = uv_guess_handle(STDIN_FILENO);
    if (t == UV_TTY) {
        uv_tty_init(app->loop, &tty.tty, STDIN_FILENO, 1);
        uv_tty_set_mode(&tty.tty, UV_TTY_MODE_RAW);
        tty.in = (uv_stream_t *)&tty.tty;
        tty.is_tty = 1;
    } else if (t == UV_NAMED_PIPE) {
        uv_pipe_init(app->loop, &tty.pipe, 0);
        uv_pipe_open(&tty.pipe, STDIN_FILENO);
        tty.in = (uv_stream_t *)&tty.pipe;
    } else {
        return -1;
    }
    tty.opened = 1;
    uv_read_start(tty.in, on_alloc, on_read);
    return 0;
}

static void waiter_cancel(void *op) { take_waiter(); }

/* read_line{prompt=?, hidden=?} -> line | nil, "eof" | "interrupted" */
static int l_read_line(lua_State *L) {
    struct app *app = app_from(L);
    const char *prompt = "";
    int hidden = 0;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "prompt");
        prompt = luaL_optstring(L, -1, "");
        lua_getfield(L, 1, "hidden");
        hidden = lua_toboolean(L, -1);
    }
    task_t *t = sched_need(L, "host.tty.read_line");
    if (tty_open(app) != 0) return luaL_error(L, "host.tty: stdin is neither a terminal nor a pipe");
    if (tty.waiter) return luaL_error(L, "host.tty.read_line: another coroutine is reading");
    if (tty.qlen > 0) {
        char *line = tty.queue[tty.qhead];
        tty.qhead = (tty.qhead + 1) % QUEUE_MAX;
        tty.qlen--;
        lua_pushstring(L, line);
        free(line);
        return 1;
    }
    if (tty.eof) {
        lua_pushnil(L);
        lua_pushliteral(L, "eof");
        return 2;
    }
    snprintf(tty.prompt, sizeof tty.prompt, "%s", prompt);
    tty.hidden = hidden;
    tty.waiter = t;
    if (tty.is_tty) redraw();
    else if (prompt[0]) outs(prompt);
    sched_suspend(t, waiter_cancel, NULL);
    return lua_yield(L, 0);
}

/* print(text): a line above the prompt; the line being typed is redrawn below it */
static int l_print(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (tty.is_tty && tty.waiter) outs("\r\x1b[K");
    for (size_t i = 0; i < n; i++) { /* raw mode: \n alone does not return the carriage */
        if (s[i] == '\n' && tty.is_tty) out("\r\n", 2);
        else out(s + i, 1);
    }
    out(tty.is_tty ? "\r\n" : "\n", tty.is_tty ? 2 : 1);
    redraw();
    return 0;
}

/* cancel() -> true when a read_line was pending: it returns nil, "cancelled" and the line
 * typed so far is dropped (the client goes back to its login prompt after a kick). */
static int l_cancel(lua_State *L) {
    if (!tty.waiter) {
        lua_pushboolean(L, 0);
        return 1;
    }
    task_t *t = take_waiter();
    tty.len = 0;
    if (tty.is_tty) outs("\r\x1b[K");
    sched_resume_error(t, "cancelled");
    lua_pushboolean(L, 1);
    return 1;
}

static int l_is_tty(lua_State *L) {
    lua_pushboolean(L, uv_guess_handle(STDIN_FILENO) == UV_TTY);
    return 1;
}

static void tty_closed(uv_handle_t *h) { (void)h; }

/* close(): restores the terminal and stops reading (also done at shutdown). */
void tty_shutdown(struct app *app) {
    if (!tty.opened) return;
    tty.opened = 0;
    tty.eof = 1; /* later reads end at once: the input is closed */
    if (tty.waiter) /* a coroutine waiting for a line learns the input is closed */
        sched_resume_error(take_waiter(), "closed");
    if (tty.is_tty) uv_tty_reset_mode();
    if (!uv_is_closing((uv_handle_t *)tty.in)) uv_close((uv_handle_t *)tty.in, tty_closed);
}

static int l_close(lua_State *L) {
    tty_shutdown(app_from(L));
    return 0;
}

int tty_open_lua(lua_State *L) {
    static const luaL_Reg fns[] = {{"read_line", l_read_line}, {"print", l_print},
                                   {"is_tty", l_is_tty}, {"cancel", l_cancel},
                                   {"close", l_close}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
