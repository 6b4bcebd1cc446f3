/* curl_uv.c: libcurl's multi-socket interface on a libuv loop (see curl_uv.h). libcurl
 * says which sockets to watch for what (socket_cb) and when to call it back without
 * socket activity (timer_cb); every poll event and timer expiry is handed to
 * curl_multi_socket_action, after which finished transfers are collected. */
#include "curl_uv.h"

#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "list.h"
#include "listen.h"
#include "log.h"

struct curl_uv {
    CURLM *multi;             /* NULL once closed */
    uv_timer_t timer;
    curl_uv_done_fn done;
    int open_handles;         /* the timer and every poll handle not closed yet */
    list_node sockets;        /* cu_socket.link: the sockets being polled */
};

typedef struct cu_socket {
    list_node link;
    uv_poll_t poll;
    curl_uv *cu;
    curl_socket_t fd;
} cu_socket;

static void release(curl_uv *cu) {
    if (--cu->open_handles == 0) free(cu);
}

static void timer_closed(uv_handle_t *h) { release(h->data); }

static void poll_closed(uv_handle_t *h) {
    cu_socket *s = h->data;
    curl_uv *cu = s->cu;
    free(s);
    release(cu);
}

/* Hands every finished transfer to done. done may resume Lua, which may start or stop
 * other transfers or close cu: each message is copied before the easy leaves the multi,
 * and a closed cu ends the loop. */
static void collect_done(curl_uv *cu) {
    CURLMsg *msg;
    int left;
    while (cu->multi && (msg = curl_multi_info_read(cu->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        curl_multi_remove_handle(cu->multi, easy);
        cu->done(easy, rc);
    }
}

static void act(curl_uv *cu, curl_socket_t fd, int flags) {
    if (!cu->multi) return;
    int running;
    curl_multi_socket_action(cu->multi, fd, flags, &running);
    collect_done(cu);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    cu_socket *s = h->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    act(s->cu, s->fd, flags);
}

static void on_timer(uv_timer_t *t) { act(t->data, CURL_SOCKET_TIMEOUT, 0); }

static void socket_forget(curl_uv *cu, cu_socket *s) {
    if (cu->multi) curl_multi_assign(cu->multi, s->fd, NULL);
    list_remove(&s->link);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, poll_closed);
}

/* libcurl wants fd watched for what (or no longer). Returns -1 when the socket cannot be
 * polled: libcurl fails the transfer using it. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    curl_uv *cu = userp;
    cu_socket *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) socket_forget(cu, s);
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        if (uv_poll_init_socket(cu->timer.loop, &s->poll, fd) != 0) {
            log_error("curl: cannot poll socket %d", (int)fd);
            free(s);
            return -1;
        }
        s->cu = cu;
        s->fd = fd;
        s->poll.data = s;
        cu->open_handles++;
        list_push_back(&cu->sockets, &s->link);
        curl_multi_assign(cu->multi, fd, s);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

/* libcurl's next deadline: -1 none; 0 means as soon as possible, which must not be a call
 * from inside this callback (libcurl forbids it), so the timer fires on the next turn. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    curl_uv *cu = userp;
    if (timeout_ms < 0) uv_timer_stop(&cu->timer);
    else uv_timer_start(&cu->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static int socket_opened(void *ud, curl_socket_t fd, curlsocktype purpose) {
    set_cloexec(fd);
    return CURL_SOCKOPT_OK;
}

void curl_uv_easy_defaults(CURL *easy) {
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_SOCKOPTFUNCTION, socket_opened);
}

curl_uv *curl_uv_new(uv_loop_t *loop, curl_uv_done_fn done) {
    CURLM *multi = curl_multi_init();
    if (!multi) return NULL;
    cloexec_inherited(); /* the multi's wakeup socket pair, opened without CLOEXEC */
    curl_uv *cu = xcalloc(1, sizeof *cu);
    cu->multi = multi;
    cu->done = done;
    uv_timer_init(loop, &cu->timer);
    cu->timer.data = cu;
    cu->open_handles = 1;
    list_init(&cu->sockets);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, cu);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, cu);
    return cu;
}

CURLM *curl_uv_multi(curl_uv *cu) { return cu->multi; }

int curl_uv_add(curl_uv *cu, CURL *easy) {
    if (!cu->multi) return -ESHUTDOWN;
    return curl_multi_add_handle(cu->multi, easy) == CURLM_OK ? 0 : -EINVAL;
}

void curl_uv_remove(curl_uv *cu, CURL *easy) {
    if (cu->multi) curl_multi_remove_handle(cu->multi, easy);
}

void curl_uv_close(curl_uv *cu) {
    if (!cu->multi) return;
    CURLM *multi = cu->multi;
    curl_multi_cleanup(multi); /* closes the pooled connections: socket_cb forgets them */
    cu->multi = NULL;
    while (!list_empty(&cu->sockets)) /* any it did not tell of */
        socket_forget(cu, LIST_ENTRY(cu->sockets.next, cu_socket, link));
    uv_close((uv_handle_t *)&cu->timer, timer_closed);
}
