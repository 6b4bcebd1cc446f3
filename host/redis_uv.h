/* redis_uv.h: hiredis 0.14's adapters/libuv.h, patched; used only by redis.c.
 * Changes from the stock adapter:
 *  - a poll error (libuv reports POLLERR as status UV_EBADF and stops the poll) is passed
 *    on to hiredis as the events we were waiting for, so a refused connect reaches the
 *    connect callback instead of hanging forever (upstream hiredis 1.0 does the same);
 *  - the event struct is freed when uv_poll_init fails, and comes from xcalloc (alloc.h);
 *  - redis_uv_mute(): stops all I/O on a context we have given up on (a timed-out
 *    connection) so that hiredis cannot act on it before we free it from a timer.
 * Original: Copyright (c) 2009-2011 Salvatore Sanfilippo, Pieter Noordhuis; BSD-3-Clause. */
#ifndef CHATHOST_REDIS_UV_H
#define CHATHOST_REDIS_UV_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alloc.h"

typedef struct redis_uv_events {
    redisAsyncContext *context; /* NULL once hiredis cleaned up */
    uv_poll_t handle;
    int events;
    int muted;
} redis_uv_events;

static void redis_uv_poll(uv_poll_t *handle, int status, int events) {
    redis_uv_events *p = (redis_uv_events *)handle->data;
    int ev = status ? p->events : events;
    if (p->context && !p->muted && (ev & UV_READABLE)) redisAsyncHandleRead(p->context);
    if (p->context && !p->muted && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

static void redis_uv_update(redis_uv_events *p) {
    if (p->muted) return;
    if (p->events)
        uv_poll_start(&p->handle, p->events, redis_uv_poll);
    else
        uv_poll_stop(&p->handle);
}

static void redis_uv_add_read(void *privdata) {
    redis_uv_events *p = (redis_uv_events *)privdata;
    p->events |= UV_READABLE;
    redis_uv_update(p);
}

static void redis_uv_del_read(void *privdata) {
    redis_uv_events *p = (redis_uv_events *)privdata;
    p->events &= ~UV_READABLE;
    redis_uv_update(p);
}

static void redis_uv_add_write(void *privdata) {
    redis_uv_events *p = (redis_uv_events *)privdata;
    p->events |= UV_WRITABLE;
    redis_uv_update(p);
}

static void redis_uv_del_write(void *privdata) {
    redis_uv_events *p = (redis_uv_events *)privdata;
    p->events &= ~UV_WRITABLE;
    redis_uv_update(p);
}

static void redis_uv_closed(uv_handle_t *handle) { free(handle->data); }

static void redis_uv_cleanup(void *privdata) {
    redis_uv_events *p = (redis_uv_events *)privdata;
    p->context = NULL; /* the context is being freed */
    uv_close((uv_handle_t *)&p->handle, redis_uv_closed);
}

/* Attaches ac to loop. Returns REDIS_OK, or REDIS_ERR with nothing attached (the caller
 * still owns ac and frees it). */
static int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data != NULL) return REDIS_ERR;
    redis_uv_events *p = (redis_uv_events *)xcalloc(1, sizeof *p);
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    ac->ev.addRead = redis_uv_add_read;
    ac->ev.delRead = redis_uv_del_read;
    ac->ev.addWrite = redis_uv_add_write;
    ac->ev.delWrite = redis_uv_del_write;
    ac->ev.cleanup = redis_uv_cleanup;
    ac->ev.data = p;
    p->handle.data = p;
    p->context = ac;
    return REDIS_OK;
}

/* Stops every read and write on ac for good; only redisAsyncFree is left to do. */
static void redis_uv_mute(redisAsyncContext *ac) {
    redis_uv_events *p = (redis_uv_events *)ac->ev.data;
    if (!p) return;
    p->muted = 1;
    uv_poll_stop(&p->handle);
}

#endif
