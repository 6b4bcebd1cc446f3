/* mail.c: host.mail.send{to=, subject=, body=, timeout_ms=} -> true | nil, err. SMTP with
 * libcurl on libuv's thread pool through a workq (curl_easy_perform blocks): at most
 * mail.max_concurrent at once, mail.max_waiting queued; server, TLS mode, credentials and
 * timeout from config `mail`. A call's timeout_ms (at most mail.timeout_ms) bounds its wait
 * for a turn and the sending together, so a caller with a deadline of its own (verify,
 * answering a gRPC call) hears of a stuck mail server before its own caller gives up. */
#include <curl/curl.h>
#include <sodium.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "curl_uv.h"
#include "log.h"
#include "modules.h"
#include "workq.h"

typedef struct mail_pool {
    workq q;
    char *url, *from, *from_addr, *user, *password, *tls;
    long timeout_ms;
    unsigned long sent, failed;
} mail_pool;

typedef struct mail_job {
    workq_job base;
    mail_pool *pool;
    char *to, *message;
    size_t len, pos;
    int ran;      /* run() happened: the outcome is counted */
    int observed; /* finish() told the caller: it logs a failure, we don't */
    uint64_t deadline_ns; /* uv_hrtime() by which the call gives up */
    CURLcode rc;
    char errbuf[CURL_ERROR_SIZE];
} mail_job;


/* "alice@example.com" -> "a***@example.com": how logs show an address (as lib.mask does). */
static void mask_address(const char *addr, char *out, size_t size) {
    const char *at = strchr(addr, '@');
    if (!at || at == addr) snprintf(out, size, "***");
    else snprintf(out, size, "%c***%s", addr[0], at);
}

/* The address inside "Name <addr>", or the whole string. */
static char *bare_address(const char *s) {
    const char *lt = strchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (!lt || !gt) return xstrdup(s);
    return xstrndup(lt + 1, (size_t)(gt - lt - 1));
}

static mail_pool *pool_get(struct app *app) {
    if (app->mail) return app->mail;
    mail_pool *p = xcalloc(1, sizeof *p);
    /* a mail waits for a turn at most as long as one may take to send */
    workq_init(&p->q, app, (int)cfg_int(app, "mail.max_concurrent", 2),
               (size_t)cfg_int(app, "mail.max_waiting", 100),
               (uint64_t)cfg_int(app, "mail.timeout_ms", 10000));
    p->url = cfg_str(app, "mail.url", "smtp://127.0.0.1:2525");
    p->from = cfg_str(app, "mail.from", "chathost <noreply@chathost.local>");
    p->from_addr = bare_address(p->from);
    p->user = cfg_str(app, "mail.user", NULL);
    p->password = cfg_str(app, "mail.password", NULL);
    p->tls = cfg_str(app, "mail.tls", "none");
    p->timeout_ms = (long)cfg_int(app, "mail.timeout_ms", 10000);
    app->mail = p;
    return p;
}

static size_t read_body(char *buf, size_t size, size_t n, void *ud) {
    mail_job *j = ud;
    size_t room = size * n, left = j->len - j->pos;
    size_t take = left < room ? left : room;
    memcpy(buf, j->message + j->pos, take);
    j->pos += take;
    return take;
}

/* Runs on a pool thread. */
static void job_run(workq_job *base) {
    mail_job *j = (mail_job *)base;
    j->ran = 1;
    mail_pool *p = j->pool;
    uint64_t now = uv_hrtime();
    long left_ms = j->deadline_ns > now ? (long)((j->deadline_ns - now) / 1000000) : 0;
    if (left_ms <= 0) { /* the turn came too late (the loop's timer had not fired yet) */
        j->rc = CURLE_OPERATION_TIMEDOUT;
        snprintf(j->errbuf, sizeof j->errbuf, "timed out waiting for a turn");
        return;
    }
    CURL *c = curl_easy_init();
    struct curl_slist *rcpt = curl_slist_append(NULL, j->to);
    curl_uv_easy_defaults(c); /* no signals; its sockets CLOEXEC (a spawn meanwhile) */
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, p->from_addr);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(c, CURLOPT_READDATA, j);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, left_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, j->errbuf);
    if (strcmp(p->tls, "starttls") == 0) curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (strcmp(p->tls, "try") == 0) curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    if (p->user) curl_easy_setopt(c, CURLOPT_USERNAME, p->user);
    if (p->password) curl_easy_setopt(c, CURLOPT_PASSWORD, p->password);
    j->rc = curl_easy_perform(c);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(c);
}

static void job_release(workq_job *base) {
    mail_job *j = (mail_job *)base;
    free(j->to);
    free(j->message);
    free(j);
}

static void job_finish(workq_job *base, task_t *t) {
    mail_job *j = (mail_job *)base;
    j->observed = 1;
    if (j->rc == CURLE_OK) {
        lua_pushboolean(t->co, 1);
        sched_resume(t, 1);
        return;
    }
    char err[CURL_ERROR_SIZE + 64];
    snprintf(err, sizeof err, "smtp: %s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(j->rc));
    sched_resume_error(t, err);
}

/* Counts every outcome; logs the failure of a mail whose caller stopped waiting (nobody
 * else will), with the address masked. */
static void job_release_counted(workq_job *base) {
    mail_job *j = (mail_job *)base;
    if (j->ran && j->rc == CURLE_OK) {
        j->pool->sent++;
    } else if (j->ran) {
        j->pool->failed++;
        if (!j->observed) {
            char to[320];
            mask_address(j->to, to, sizeof to);
            log_warn("mail to %s failed after its caller stopped waiting: %s (%s)", to,
                     curl_easy_strerror(j->rc), j->errbuf);
        }
    }
    job_release(base);
}

/* RFC 2047 encoded word for a header value that is not plain ASCII. */
static void add_header_text(luaL_Buffer *b, const char *s) {
    int ascii = 1;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) ascii &= *c < 0x80;
    if (ascii) {
        luaL_addstring(b, s);
        return;
    }
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = (const unsigned char *)s;
    size_t n = strlen(s);
    luaL_addstring(b, "=?UTF-8?B?");
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        luaL_addchar(b, tbl[v >> 18 & 63]);
        luaL_addchar(b, tbl[v >> 12 & 63]);
        luaL_addchar(b, i + 1 < n ? tbl[v >> 6 & 63] : '=');
        luaL_addchar(b, i + 2 < n ? tbl[v & 63] : '=');
    }
    luaL_addstring(b, "?=");
}

/* Pushes the RFC 5322 message: headers, blank line, body with CRLF line ends. */
static void build_message(lua_State *L, mail_pool *p, const char *to, const char *subject,
                          const char *body) {
    char date[64], id[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(id, sizeof id, "<%ld.%08x@chathost>", (long)now, (unsigned)randombytes_random());
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "Date: ");
    luaL_addstring(&b, date);
    luaL_addstring(&b, "\r\nFrom: ");
    luaL_addstring(&b, p->from);
    luaL_addstring(&b, "\r\nTo: ");
    luaL_addstring(&b, to);
    luaL_addstring(&b, "\r\nSubject: ");
    add_header_text(&b, subject);
    luaL_addstring(&b, "\r\nMessage-ID: ");
    luaL_addstring(&b, id);
    luaL_addstring(&b, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                       "Content-Transfer-Encoding: 8bit\r\n\r\n");
    for (const char *c = body; *c; c++) {
        if (*c == '\n' && (c == body || c[-1] != '\r')) luaL_addchar(&b, '\r');
        luaL_addchar(&b, *c);
    }
    luaL_addstring(&b, "\r\n");
    luaL_pushresult(&b);
}

static const char *field(lua_State *L, const char *k, int header) {
    lua_getfield(L, 1, k);
    const char *s = lua_tostring(L, -1);
    if (!s) luaL_error(L, "host.mail.send: %s must be a string", k);
    if (header && strpbrk(s, "\r\n")) luaL_error(L, "host.mail.send: %s contains a line break", k);
    return s;
}

/* The call's timeout: timeout_ms if given (a positive number), at most mail.timeout_ms. */
static long call_timeout(lua_State *L, mail_pool *p) {
    lua_getfield(L, 1, "timeout_ms");
    if (lua_isnil(L, -1)) return p->timeout_ms;
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 1)
        luaL_error(L, "host.mail.send: timeout_ms must be a number >= 1");
    lua_Number ms = lua_tonumber(L, -1);
    return ms < (lua_Number)p->timeout_ms ? (long)ms : p->timeout_ms;
}

/* send{to=, subject=, body=, timeout_ms=} -> true | nil, err   (yields) */
static int l_send(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *to = field(L, "to", 1), *subject = field(L, "subject", 1);
    const char *body = field(L, "body", 0);
    sched_need(L, "host.mail.send");
    mail_pool *p = pool_get(app);
    long timeout = call_timeout(L, p);
    mail_job *j = xcalloc(1, sizeof *j);
    j->pool = p;
    j->deadline_ns = uv_hrtime() + (uint64_t)timeout * 1000000;
    if (timeout < p->timeout_ms) j->base.wait_until = uv_now(app->loop) + (uint64_t)timeout;
    j->to = bare_address(to);
    build_message(L, p, to, subject, body);
    j->message = xstrdup(lua_tolstring(L, -1, &j->len));
    j->base.run = job_run;
    j->base.finish = job_finish;
    j->base.release = job_release_counted;
    return workq_submit(L, &p->q, &j->base, "host.mail.send");
}

static int l_stats(lua_State *L) {
    mail_pool *p = pool_get(app_from(L));
    workq_push_stats(L, &p->q);
    lua_pushnumber(L, (lua_Number)p->sent);
    lua_setfield(L, -2, "sent");
    lua_pushnumber(L, (lua_Number)p->failed);
    lua_setfield(L, -2, "failed");
    return 1;
}

void mail_shutdown(struct app *app) {
    if (app->mail) workq_close(&app->mail->q);
}

int mail_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"send", l_send}, {"stats", l_stats}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
