/* mail.c: host.mail.send{to=, subject=, body=} -> true | nil, err. SMTP with libcurl on
 * libuv's thread pool (curl_easy_perform blocks), at most mail.max_concurrent at once and
 * mail.max_waiting queued; server, TLS mode, credentials and timeout from config `mail`. */
#include <curl/curl.h>
#include <sodium.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "sched.h"

typedef struct mail_pool {
    struct app *app;
    char *url, *from, *from_addr, *user, *password, *tls;
    long timeout_ms;
    int active, max_active;
    size_t waiting, max_waiting;
    list_node queue;
    unsigned long sent, failed, busy;
} mail_pool;

typedef struct mail_job {
    uv_work_t work;
    list_node link;
    mail_pool *pool;
    task_t *task;
    char *to, *message;
    size_t len, pos;
    CURLcode rc;
    long smtp_code;
    char errbuf[CURL_ERROR_SIZE];
} mail_job;

static mail_pool *pool_instance;

/* The address inside "Name <addr>", or the whole string. */
static char *bare_address(const char *s) {
    const char *lt = strchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (!lt || !gt) return strdup(s);
    return strndup(lt + 1, (size_t)(gt - lt - 1));
}

static mail_pool *pool_get(struct app *app) {
    if (pool_instance) return pool_instance;
    mail_pool *p = calloc(1, sizeof *p);
    p->app = app;
    p->url = cfg_str(app, "mail.url", "smtp://127.0.0.1:2525");
    p->from = cfg_str(app, "mail.from", "chathost <noreply@chathost.local>");
    p->from_addr = bare_address(p->from);
    p->user = cfg_str(app, "mail.user", NULL);
    p->password = cfg_str(app, "mail.password", NULL);
    p->tls = cfg_str(app, "mail.tls", "none");
    p->timeout_ms = (long)cfg_int(app, "mail.timeout_ms", 10000);
    p->max_active = (int)cfg_int(app, "mail.max_concurrent", 2);
    p->max_waiting = (size_t)cfg_int(app, "mail.max_waiting", 100);
    list_init(&p->queue);
    pool_instance = p;
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
static void work_send(uv_work_t *w) {
    mail_job *j = w->data;
    mail_pool *p = j->pool;
    CURL *c = curl_easy_init();
    struct curl_slist *rcpt = curl_slist_append(NULL, j->to);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, p->from_addr);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(c, CURLOPT_READDATA, j);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, j->errbuf);
    if (strcmp(p->tls, "starttls") == 0) curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (strcmp(p->tls, "try") == 0) curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    if (p->user) curl_easy_setopt(c, CURLOPT_USERNAME, p->user);
    if (p->password) curl_easy_setopt(c, CURLOPT_PASSWORD, p->password);
    j->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &j->smtp_code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(c);
}

static void job_free(mail_job *j) {
    free(j->to);
    free(j->message);
    free(j);
}

static void pool_next(mail_pool *p);

static void work_done(uv_work_t *w, int status) {
    mail_job *j = w->data;
    mail_pool *p = j->pool;
    p->active--;
    if (j->rc == CURLE_OK) {
        p->sent++;
    } else {
        p->failed++;
        log_warn("mail to %s failed: %s (%s)", j->to, curl_easy_strerror(j->rc), j->errbuf);
    }
    if (j->task) {
        if (j->rc == CURLE_OK) {
            lua_pushboolean(j->task->co, 1);
            sched_resume(j->task, 1);
        } else {
            char err[CURL_ERROR_SIZE + 64];
            snprintf(err, sizeof err, "smtp: %s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(j->rc));
            sched_resume_error(j->task, err);
        }
    }
    job_free(j);
    if (!p->app->stopping) pool_next(p);
}

static void job_start(mail_pool *p, mail_job *j) {
    p->active++;
    j->work.data = j;
    uv_queue_work(p->app->loop, &j->work, work_send, work_done);
}

static void pool_next(mail_pool *p) {
    while (p->active < p->max_active && !list_empty(&p->queue)) {
        p->waiting--;
        job_start(p, LIST_ENTRY(list_pop_front(&p->queue), mail_job, link));
    }
}

static void job_cancel(void *op) {
    mail_job *j = op;
    if (j->link.next != &j->link) {
        list_remove(&j->link);
        j->pool->waiting--;
        job_free(j);
        return;
    }
    j->task = NULL;
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

/* send{to=, subject=, body=} -> true | nil, err   (yields) */
static int l_send(lua_State *L) {
    struct app *app = app_from(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *to = field(L, "to", 1), *subject = field(L, "subject", 1);
    const char *body = field(L, "body", 0);
    task_t *t = sched_need(L, "host.mail.send");
    mail_pool *p = pool_get(app);
    if (app->stopping || (p->active >= p->max_active && p->waiting >= p->max_waiting)) {
        p->busy++;
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    mail_job *j = calloc(1, sizeof *j);
    j->pool = p;
    j->task = t;
    j->to = bare_address(to);
    build_message(L, p, to, subject, body);
    j->message = strdup(lua_tolstring(L, -1, &j->len));
    list_init(&j->link);
    if (p->active < p->max_active) {
        job_start(p, j);
    } else {
        list_push_back(&p->queue, &j->link);
        p->waiting++;
    }
    sched_suspend(t, job_cancel, j);
    return lua_yield(L, 0);
}

static int l_stats(lua_State *L) {
    mail_pool *p = pool_get(app_from(L));
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, p->active);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, (lua_Integer)p->waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushnumber(L, (lua_Number)p->sent);
    lua_setfield(L, -2, "sent");
    lua_pushnumber(L, (lua_Number)p->failed);
    lua_setfield(L, -2, "failed");
    lua_pushnumber(L, (lua_Number)p->busy);
    lua_setfield(L, -2, "busy");
    return 1;
}

void mail_shutdown(struct app *app) {
    mail_pool *p = pool_instance;
    if (!p) return;
    while (!list_empty(&p->queue)) {
        mail_job *j = LIST_ENTRY(list_pop_front(&p->queue), mail_job, link);
        task_t *t = j->task;
        p->waiting--;
        job_free(j);
        if (t) sched_resume_error(t, "shutting down");
    }
}

int mail_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"send", l_send}, {"stats", l_stats}, {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
