/* bench/res_floor.c: the floor for the resource benchmark (bench/res_bench.sh). A plain
 * libuv server, one thread, speaking the resource channel's frames ([id u16 BE][len u32 BE]
 * [JSON]) as far as a transfer needs them: 1041/1037/1043 chunks are base64-decoded and
 * written with pwrite at (seq-1)*32768 into DIR/<name>, acked 1042/1038/1044 with the
 * echoes the Season 2 client reads (error, seq, name, sender, receiver, ...); 1047 is
 * answered 1048 from that file (stop-and-wait, base64, is_last a JSON bool). No auth, no
 * database, no content check, no hashing: what sockets, framing, base64 and the page cache
 * cost, against which the resource role is measured.
 * Build: cc -O2 -o res_floor res_floor.c -luv      Run: ./res_floor PORT DIR */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem (bench/res_wire.h) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "res_wire.h"

#define MAX_BODY (1u << 20) /* a frame above this is a broken client: closed */

typedef struct pend pend;

typedef struct conn {
    uv_tcp_t tcp;
    pend *head, *tail; /* RES_FLOOR_POOL: replies in request order, each sent once done */
    int pending;       /* writes in flight (the conn is freed after the last, when closed) */
    int closed;
    uint8_t *in;
    size_t len, cap;
    char name[128]; /* the file fd belongs to ("" none) */
    int fd;
    int fd_writable;
    uint8_t out_chunk[RES_CHUNK];
} conn;

typedef struct out {
    uint8_t *p;
    size_t len, cap;
} out;

static const char *dir;

static void conn_free(conn *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->in);
    free(c);
}

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    c->closed = 1;
    if (c->pending == 0) conn_free(c);
}

static void on_written(uv_write_t *w, int status) { free(w); }

/* Room for n more bytes after the uv_write_t that heads the reply buffer. */
static uint8_t *out_room(out *o, size_t n) {
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 65536;
        while (cap < o->len + n) cap *= 2;
        uint8_t *p = realloc(o->p, sizeof(uv_write_t) + cap);
        if (!p) abort();
        o->p = p;
        o->cap = cap;
    }
    return o->p + sizeof(uv_write_t) + o->len;
}

/* Appends the frame id with this body to the reply. */
static void out_frame(out *o, uint16_t id, const char *body, size_t blen) {
    uint8_t *p = out_room(o, RES_HEADER + blen);
    res_put_header(p, id, (uint32_t)blen);
    memcpy(p + RES_HEADER, body, blen);
    o->len += RES_HEADER + blen;
}

#ifdef RES_FLOOR_POOL
/* `FLOOR_CFLAGS=-DRES_FLOOR_POOL`: the floor writes each chunk with uv_fs_write (libuv's
 * pool) instead of pwrite on its loop, as a server that may not block its loop must, and
 * sends the replies in request order as their writes end: what that rule costs a plain
 * server, next to the resource role that follows it. */
struct pend {
    pend *next;
    conn *c;
    uv_fs_t req;
    int done, error;
    size_t n;           /* the chunk's bytes (its write must take them all) */
    uint8_t *frame;     /* a reply ready to send (no write), or NULL */
    size_t flen;
    char rest[1024];    /* a chunk's reply after its error code */
    int rlen;
    uint16_t id;
    uint8_t buf[RES_CHUNK + 3];
};

static void pend_add(conn *c, pend *p) {
    p->c = c;
    if (c->tail) c->tail->next = p; else c->head = p;
    c->tail = p;
}

/* Sends the replies at the head of the queue that are done. */
static void pend_flush(conn *c) {
    out o = {0};
    while (c->head && c->head->done) {
        pend *p = c->head;
        c->head = p->next;
        if (!c->head) c->tail = NULL;
        if (p->frame) {
            uint8_t *q = out_room(&o, p->flen);
            memcpy(q, p->frame, p->flen);
            o.len += p->flen;
            free(p->frame);
        } else {
            char reply[1100];
            int rn =
                snprintf(reply, sizeof reply, "{\"error\":%d,%.*s", p->error, p->rlen, p->rest);
            out_frame(&o, (uint16_t)(p->id + 1), reply, (size_t)rn);
        }
        free(p);
    }
    if (o.len > 0 && !c->closed) {
        uv_write_t *w = (uv_write_t *)o.p;
        uv_buf_t ob = uv_buf_init((char *)o.p + sizeof(uv_write_t), (unsigned)o.len);
        if (uv_write(w, (uv_stream_t *)&c->tcp, &ob, 1, on_written) != 0) free(o.p);
    } else {
        free(o.p);
    }
}

static void on_fs_written(uv_fs_t *r) {
    pend *p = r->data;
    conn *c = p->c;
    if (r->result != (ssize_t)p->n) p->error = 1105;
    uv_fs_req_cleanup(r);
    p->done = 1;
    c->pending--;
    pend_flush(c);
    if (c->closed && c->pending == 0) {
        while (c->head) { /* nobody to answer */
            pend *q = c->head;
            c->head = q->next;
            free(q->frame);
            free(q);
        }
        conn_free(c);
    }
}

/* A reply built in o (a download's, an unknown id's) queued behind the chunks in flight. */
static void pend_frames(conn *c, out *o) {
    if (o->len == 0) return;
    pend *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->frame = malloc(o->len);
    if (!p->frame) abort();
    memcpy(p->frame, o->p + sizeof(uv_write_t), o->len);
    p->flen = o->len;
    p->done = 1;
    o->len = 0;
    pend_add(c, p);
}
#endif

/* A name is a file in DIR, never a path. */
static int name_ok(const char *s, size_t n) {
    if (n == 0 || n >= 100 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '/' || s[i] == '\0' || s[i] == '"' || s[i] == '\\') return 0;
    return 1;
}

/* The descriptor of DIR/name, kept open while the connection keeps naming the same file. */
static int file_for(conn *c, const char *s, size_t n, int writable) {
    if (c->fd >= 0 && c->fd_writable == writable && strlen(c->name) == n && memcmp(c->name, s, n) == 0) return c->fd;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->name[0] = '\0';
    char path[4096];
    snprintf(path, sizeof path, "%s/%.*s", dir, (int)n, s);
    int fd = writable ? open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    c->fd = fd;
    c->fd_writable = writable;
    memcpy(c->name, s, n);
    c->name[n] = '\0';
    return fd;
}

/* The raw JSON value of key, or "0" when missing: echoes keep the client's types. */
#define RAW(key, v, n) \
    do { \
        if (res_json_raw(body, len, key, &v, &n) != 0) { v = "0"; n = 1; } \
    } while (0)

/* 1041/1037/1043: one chunk written at its offset, acked with the echoes. */
static void on_chunk(conn *c, out *o, uint16_t id, const char *body, size_t len) {
    const char *name, *data, *v_sender, *v_recv, *v_total, *v_trans, *v_md5, *v_uid, *v_last;
    size_t nname, ndata, n_sender, n_recv, n_total, n_trans, n_md5, n_uid, n_last;
    long long seq = 0;
    int error = 0;
    data = NULL, ndata = 0; /* (set when error stays 0) */
    RAW("sender", v_sender, n_sender);
    RAW("receiver", v_recv, n_recv);
    RAW("total_size", v_total, n_total);
    RAW("trans_size", v_trans, n_trans);
    RAW("md5", v_md5, n_md5);
    RAW("uid", v_uid, n_uid);
    RAW("last", v_last, n_last);
    if (res_json_str(body, len, "name", &name, &nname) != 0 || !name_ok(name, nname)) {
        name = "";
        nname = 0;
        error = 1001;
    } else if (res_json_int(body, len, "seq", &seq) != 0 || seq < 1 ||
               res_json_str(body, len, "data", &data, &ndata) != 0 || ndata > RES_B64_CHUNK) {
        error = 1104;
    }
    char rest[1024]; /* the reply's fields after its error code */
    int rlen = snprintf(rest, sizeof rest,
                        "\"seq\":%lld,\"name\":\"%.*s\",\"sender\":%.*s,\"receiver\":%.*s,"
                        "\"total_size\":%.*s,\"trans_size\":%.*s,\"md5\":%.*s,\"uid\":%.*s,"
                        "\"last\":%.*s}",
                        seq, (int)nname, name, (int)n_sender, v_sender, (int)n_recv, v_recv,
                        (int)n_total, v_total, (int)n_trans, v_trans, (int)n_md5, v_md5,
                        (int)n_uid, v_uid, (int)n_last, v_last);
    if (!error) {
#ifdef RES_FLOOR_POOL
        pend *p = calloc(1, sizeof *p);
        if (!p) abort();
        long n = res_b64_decode_chunk(data, ndata, p->buf);
        int fd = file_for(c, name, nname, 1);
        if (n < 0 || fd < 0) {
            free(p);
            error = n < 0 ? 1104 : 1105;
        } else {
            pend_frames(c, o); /* replies before this one go first */
            p->id = id;
            p->n = (size_t)n;
            memcpy(p->rest, rest, (size_t)rlen);
            p->rlen = rlen;
            pend_add(c, p);
            p->req.data = p;
            uv_buf_t b = uv_buf_init((char *)p->buf, (unsigned)n);
            c->pending++;
            int64_t at = (seq - 1) * (int64_t)RES_CHUNK;
            if (uv_fs_write(c->tcp.loop, &p->req, fd, &b, 1, at, on_fs_written) != 0) {
                c->pending--;
                p->done = 1;
                p->error = 1105;
            }
            return;
        }
#else
        uint8_t buf[RES_CHUNK + 3];
        long n = res_b64_decode_chunk(data, ndata, buf);
        int fd = file_for(c, name, nname, 1);
        if (n < 0) error = 1104;
        else if (fd < 0) error = 1105;
        else if (pwrite(fd, buf, (size_t)n, (off_t)(seq - 1) * RES_CHUNK) != n) error = 1105;
#endif
    }
    char reply[1100];
    int rn = snprintf(reply, sizeof reply, "{\"error\":%d,%.*s", error, rlen, rest);
    out_frame(o, (uint16_t)(id + 1), reply, (size_t)rn);
}

/* 1047: the chunk seq of DIR/name, base64, with is_last and the sizes as strings. */
static void on_download(conn *c, out *o, const char *body, size_t len) {
    const char *name, *v_sender, *v_recv, *v_msg;
    size_t nname, n_sender, n_recv, n_msg;
    long long seq = 0;
    RAW("sender_id", v_sender, n_sender);
    RAW("receiver_id", v_recv, n_recv);
    RAW("message_id", v_msg, n_msg);
    int error = 0;
    long got = 0;
    long long total = 0, off = 0;
    if (res_json_str(body, len, "name", &name, &nname) != 0 || !name_ok(name, nname)) {
        name = "";
        nname = 0;
        error = 1001;
    } else if (res_json_int(body, len, "seq", &seq) != 0 || seq < 1) {
        error = 1104;
    } else {
        struct stat st;
        int fd = file_for(c, name, nname, 0);
        off = (seq - 1) * (long long)RES_CHUNK;
        if (fd < 0 || fstat(fd, &st) != 0) error = 1100;
        else if ((total = st.st_size) <= off) error = 1104;
        else if ((got = (long)pread(fd, c->out_chunk, RES_CHUNK, (off_t)off)) <= 0) error = 1105;
    }
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "{\"error\":%d,\"name\":\"%.*s\",\"seq\":%lld,\"sender_id\":%.*s,\"receiver_id\":%.*s,"
                      "\"message_id\":%.*s,\"total_size\":\"%lld\",\"current_size\":\"%lld\",\"is_last\":%s,\"data\":\"",
                      error, (int)nname, name, seq, (int)n_sender, v_sender, (int)n_recv, v_recv, (int)n_msg, v_msg,
                      total, error ? 0 : off + got, error || off + got >= total ? "true" : "false");
    size_t blen = (size_t)hn + (error ? 0 : (size_t)(got + 2) / 3 * 4) + 2;
    uint8_t *p = out_room(o, RES_HEADER + blen);
    res_put_header(p, 1048, (uint32_t)blen);
    memcpy(p + RES_HEADER, head, (size_t)hn);
    char *text = (char *)p + RES_HEADER + hn;
    size_t dn = error ? 0 : res_b64_encode_chunk(c->out_chunk, (size_t)got, text);
    memcpy(p + RES_HEADER + hn + dn, "\"}", 2);
    o->len += RES_HEADER + blen;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    conn *c = h->data;
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->in = realloc(c->in, c->cap);
        if (!c->in) abort();
    }
    *b = uv_buf_init((char *)c->in + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0;
    out o = {0};
    while (c->len - off >= RES_HEADER) {
        uint16_t id = res_get_id(c->in + off);
        uint32_t blen = res_get_len(c->in + off);
        if (blen > MAX_BODY) {
            fprintf(stderr, "res_floor: frame of %u bytes, closing\n", blen);
            uv_close((uv_handle_t *)s, on_closed);
            free(o.p);
            return;
        }
        if (c->len - off < RES_HEADER + blen) break;
        const char *body = (const char *)c->in + off + RES_HEADER;
        if (id == 1041 || id == 1037 || id == 1043) on_chunk(c, &o, id, body, blen);
        else if (id == 1047) on_download(c, &o, body, blen);
        else out_frame(&o, (uint16_t)(id + 1), "{\"error\":1001}", 14);
        off += RES_HEADER + blen;
    }
#ifdef RES_FLOOR_POOL
    if (c->head) { /* replies wait for the writes before them */
        pend_frames(c, &o);
        free(o.p);
        o.p = NULL;
        pend_flush(c);
    }
#endif
    memmove(c->in, c->in + off, c->len - off);
    c->len -= off;
    if (c->cap > (1u << 21) && c->len < 65536) { /* a big frame passed: give the memory back */
        c->cap = 131072;
        c->in = realloc(c->in, c->cap);
    }
    if (o.len > 0) {
        uv_write_t *w = (uv_write_t *)o.p;
        uv_buf_t ob = uv_buf_init((char *)o.p + sizeof(uv_write_t), (unsigned)o.len);
        if (uv_write(w, s, &ob, 1, on_written) != 0) free(o.p);
    }
}

static void on_connection(uv_stream_t *l, int status) {
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->fd = -1;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: res_floor PORT DIR\n");
        return 2;
    }
    dir = argv[2];
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    uv_tcp_init(loop, &server);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) ||
        uv_listen((uv_stream_t *)&server, 4096, on_connection)) {
        fprintf(stderr, "res_floor: cannot listen on 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
