/* tty.c: host.tty, line input for the terminal client that keeps the line being typed
 * intact while messages arrive. On a terminal, stdin is put in raw mode and this file is a
 * small line editor (printable UTF-8, Backspace, Ctrl-U, Enter; Ctrl-C and Ctrl-D end the
 * input); host.tty.print writes above the prompt and redraws it; host.tty.cancel ends a
 * pending read_line. A line wider than the terminal wraps: the editor counts the rows it
 * drew and erases all of them before a redraw. When stdin is not a terminal (a pipe), lines
 * are read as they come and printing is plain.
 *
 * Why not libedit (BSD; GNU readline is GPL): measured in tmux at 40 columns with
 * libedit 3.1-20221030 driven by rl_callback_read_char from a uv_poll, the
 * rl_save_prompt / rl_replace_line("") / rl_redisplay sequence that prints above the line
 * does not erase a wrapped line (every message left a copy of it on the screen, the defect
 * this editor had), and Ctrl-C raised SIGINT, which stops the whole process here. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"
#include "modules.h"
#include "sched.h"

#define LINE_MAX_DEFAULT 65536 /* read_line's max_bytes when none is given */
#define QUEUE_MAX 256

typedef struct tty_state {
    struct app *app;
    int opened, is_tty, eof;
    uv_tty_t tty;
    uv_pipe_t pipe;
    uv_stream_t *in;
    char *line;               /* the line being typed, max_bytes at most */
    size_t len, cap, typed;   /* typed: bytes of the line, kept or not (beyond max_bytes) */
    size_t max_bytes;
    char prompt[256];
    int hidden;
    int rows_up;              /* rows from the prompt's first row down to the cursor */
    int dirty;                /* the line changed since it was drawn */
    task_t *waiter;
    char *queue[QUEUE_MAX];   /* lines typed while nobody was reading */
    size_t qover[QUEUE_MAX];  /* their lengths when longer than max_bytes, else 0 */
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

/* Columns a code point takes: 2 for the wide East Asian blocks and emoji, 0 for combining
 * marks, 1 otherwise (close to wcwidth without setting the process's locale). */
static int cp_width(unsigned cp) {
    if (cp >= 0x300 && cp <= 0x36F) return 0;
    if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF && cp != 0x303F) ||
        (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
        (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
        (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
        (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD))
        return 2;
    return 1;
}

/* Terminal columns of n bytes of UTF-8 (a stray continuation byte counts as nothing). */
static size_t text_width(const char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        unsigned cp = more == 3 ? c & 0x07u : more == 2 ? c & 0x0Fu : more == 1 ? c & 0x1Fu : c;
        if ((c & 0xC0) == 0x80) { i++; continue; }
        i++;
        for (; more > 0 && i < n && ((unsigned char)s[i] & 0xC0) == 0x80; more--, i++)
            cp = (cp << 6) | ((unsigned char)s[i] & 0x3Fu);
        w += (size_t)cp_width(cp);
    }
    return w;
}

static size_t code_points(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* Erases what the last redraw drew (every row of a wrapped line), leaving the cursor at
 * the start of the prompt's first row. */
static void clear_input(void) {
    char up[32];
    if (tty.rows_up > 0) {
        snprintf(up, sizeof up, "\x1b[%dA", tty.rows_up);
        outs(up);
    }
    outs("\r\x1b[J");
    tty.rows_up = 0;
}

/* The byte offset where the last part of s[0..n) that is at most budget columns wide
 * begins (at a code point's first byte). */
static size_t tail_start(const char *s, size_t n, size_t budget) {
    size_t at = n, w = 0;
    while (at > 0) {
        size_t start = at - 1;
        while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80) start--;
        w += text_width(s + start, at - start);
        if (w > budget) break;
        at = start;
    }
    return at;
}

/* Redraws the prompt and the line typed so far (masked when hidden). A line that ends
 * exactly at the right margin moves the cursor to the next row itself, so the count of
 * rows does not depend on how the terminal handles its pending wrap. A line taller than
 * the screen shows its end after "...": rows scrolled off the top could not be erased. */
static void redraw(void) {
    tty.dirty = 0;
    if (!tty.is_tty || !tty.waiter) return; /* a prompt shows while a line is awaited */
    int cols = 0, rows = 0;
    if (uv_tty_get_winsize(&tty.tty, &cols, &rows) != 0 || cols <= 0 || rows <= 1) {
        cols = 0; /* unknown size: one row, as before */
        rows = 0;
    }
    clear_input();
    outs(tty.prompt);
    size_t width = text_width(tty.prompt, strlen(tty.prompt));
    if (tty.hidden) {
        size_t k = code_points(tty.line, tty.len);
        for (size_t i = 0; i < k; i++) out("*", 1);
        width += k;
    } else {
        size_t room = (size_t)cols * (size_t)(rows - 1), from = 0;
        size_t line_width = text_width(tty.line, tty.len);
        if (cols > 0 && width + line_width >= room && room > width + 3) {
            from = tail_start(tty.line, tty.len, room - width - 4);
            outs("...");
            width += 3;
        }
        out(tty.line + from, tty.len - from);
        width += text_width(tty.line + from, tty.len - from);
    }
    if (cols <= 0) return;
    if (width > 0 && width % (size_t)cols == 0) outs("\r\n");
    tty.rows_up = width > 0 ? (int)(width / (size_t)cols) : 0;
}

/* The task waiting for a line, which stops waiting (NULL when none). */
static task_t *take_waiter(void) {
    task_t *t = tty.waiter;
    tty.waiter = NULL;
    return t;
}

/* Pushes what read_line returns: the line, and its length in bytes when it was longer
 * than max_bytes (over: 0 when it was not; the line then holds only its first max_bytes). */
static int push_line(lua_State *L, char *line, size_t over) {
    lua_pushstring(L, line);
    free(line);
    if (!over) return 1;
    lua_pushnumber(L, (lua_Number)over);
    return 2;
}

static void deliver(char *line, size_t over) {
    if (tty.waiter) {
        task_t *t = take_waiter();
        sched_resume(t, push_line(t->co, line, over));
        return;
    }
    if (tty.qlen == QUEUE_MAX) { /* nobody reads: the oldest typed line goes */
        free(tty.queue[tty.qhead]);
        tty.qhead = (tty.qhead + 1) % QUEUE_MAX;
        tty.qlen--;
    }
    int at = (tty.qhead + tty.qlen++) % QUEUE_MAX;
    tty.queue[at] = line;
    tty.qover[at] = over;
}

/* Forgets the line typed so far. */
static void drop_line(void) {
    tty.len = 0;
    tty.typed = 0;
}

/* One byte of the line: kept while the line is under max_bytes, counted either way. The
 * buffer grows as needed, so a short line costs little. */
static void append(char ch) {
    tty.typed++;
    if (tty.len >= tty.max_bytes) return;
    tty.line = buf_grow(tty.line, &tty.cap, tty.len + 2); /* a spare byte for the NUL */
    tty.line[tty.len++] = ch;
}

static void end_input(const char *why) {
    if (!tty.waiter) {
        tty.eof = 1;
        return;
    }
    task_t *t = take_waiter();
    if (tty.is_tty) {
        outs("\r\n");
        tty.rows_up = 0;
    }
    sched_resume_error(t, why);
}

static void submit(void) {
    if (tty.dirty) redraw(); /* the whole line shows before the cursor leaves it */
    char *line = xmalloc(tty.len + 1);
    if (tty.len) memcpy(line, tty.line, tty.len);
    line[tty.len] = '\0';
    size_t over = tty.typed > tty.len ? tty.typed : 0;
    drop_line();
    if (tty.is_tty) {
        outs("\r\n");
        tty.rows_up = 0;
    }
    deliver(line, over);
}

/* One byte typed on the terminal (raw mode). Escape sequences (arrows) are skipped. The
 * line is redrawn once per read (dirty), not per byte: a pasted line is drawn once. */
static void key(unsigned char ch, int *esc) {
    if (*esc) {
        if (*esc == 1 && ch == '[') *esc = 2;
        else if (*esc == 2 && ch >= 0x40 && ch <= 0x7e) *esc = 0;
        else if (*esc == 1) *esc = 0;
        return;
    }
    switch (ch) {
    case 0x1b: *esc = 1; return;
    case 0x03:                                                       /* Ctrl-C */
        if (tty.dirty) redraw();
        drop_line();
        end_input("interrupted");
        return;
    case 0x04: if (tty.typed == 0) end_input("eof"); return;         /* Ctrl-D */
    case 0x15: drop_line(); tty.dirty = 1; return;                   /* Ctrl-U */
    case '\r': case '\n': submit(); tty.dirty = 1; return;
    case 0x7f: case 0x08:                                            /* Backspace */
        if (tty.typed > tty.len) { /* past max_bytes: nothing kept to take back */
            tty.typed--;
            return;
        }
        while (tty.len > 0 && ((unsigned char)tty.line[tty.len - 1] & 0xC0) == 0x80) tty.len--;
        if (tty.len > 0) tty.len--;
        tty.typed = tty.len;
        tty.dirty = 1;
        return;
    }
    if (ch < 0x20) return;
    append((char)ch);
    tty.dirty = 1;
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
            if (tty.len > 0 && tty.line[tty.len - 1] == '\r') {
                tty.len--;
                tty.typed--;
            }
            submit();
        } else {
            append((char)ch);
        }
    }
    if (tty.dirty) redraw();
}

static int open_stdin(struct app *app) {
    if (tty.opened || tty.eof) return 0; /* closed once: stays closed (eof) */
    tty.app = app;
    if (!tty.max_bytes) tty.max_bytes = LINE_MAX_DEFAULT;
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

/* read_line{prompt=?, hidden=?, max_bytes=?} -> line | line, bytes | nil, "eof" |
 * "interrupted" | "cancelled". A line longer than max_bytes (default 65536; it applies to
 * the next line typed) comes back cut to max_bytes with its full length in bytes, so the
 * caller can refuse it; a line within the bound comes back alone. */
static int l_read_line(lua_State *L) {
    struct app *app = app_from(L);
    const char *prompt = "";
    int hidden = 0;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "prompt");
        prompt = luaL_optstring(L, -1, "");
        lua_getfield(L, 1, "hidden");
        hidden = lua_toboolean(L, -1);
        lua_getfield(L, 1, "max_bytes");
        lua_Integer max = luaL_optinteger(L, -1, 0);
        if (max < 0) return luaL_argerror(L, 1, "max_bytes must be positive");
        if (max > 0 && tty.typed == 0) tty.max_bytes = (size_t)max;
    }
    task_t *t = sched_need(L, "host.tty.read_line");
    if (open_stdin(app) != 0) return luaL_error(L, "host.tty: stdin is neither a terminal nor a pipe");
    if (tty.waiter) return luaL_error(L, "host.tty.read_line: another coroutine is reading");
    if (tty.qlen > 0) {
        char *line = tty.queue[tty.qhead];
        size_t over = tty.qover[tty.qhead];
        tty.qhead = (tty.qhead + 1) % QUEUE_MAX;
        tty.qlen--;
        return push_line(L, line, over);
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
    if (tty.is_tty && tty.waiter) clear_input();
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
    drop_line();
    if (tty.is_tty) clear_input();
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

int tty_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"read_line", l_read_line}, {"print", l_print},
                                   {"is_tty", l_is_tty}, {"cancel", l_cancel},
                                   {"close", l_close}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
