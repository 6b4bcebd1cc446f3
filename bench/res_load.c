/* bench/res_load.c: load generator for the resource channel (bench/res_bench.sh). One libuv
 * loop; N connections to the resource server, each running its transfers one after the
 * other, exactly as the Season 2 client does them (docs/protocol.md, resource channel):
 *
 *   res_load upload USERS|- CHAT|- RES --conns N --size BYTES [--repeat R]
 *                   [--manifest FILE] [--timeout S]
 *       N connections upload R images of BYTES each: 1041 (seq 1, token), then on its 1042
 *       1037s with at most 5 in flight (every 1038 frees a slot, acks advance a contiguous
 *       "confirmed" mark, the transfer is done when it reaches ceil(BYTES/32768)). Every
 *       image differs (its last chunk is its own) and starts with the PNG signature, so a
 *       content-addressed store keeps each and a type check by magic bytes passes. md5 is
 *       the real one. FILE gets one line per image for the download run.
 *   res_load download USERS|- CHAT|- RES --manifest FILE [--verify] [--timeout S]
 *       the images of FILE, one connection per receiver, each downloaded with 1047
 *       stop-and-wait until is_last; --verify compares every byte with what was uploaded.
 *
 * With USERS and CHAT ("uid token peer thread server" lines of bench/chat_setup.lua; a chat
 * server host:port), each connection's user first logs in on the chat server (1005, so
 * the resource session token exists), announces every image with 1035 and takes its
 * message_id from 1036, all before the clock starts; it keeps the chat connection (and its
 * 1023 heartbeat) for the whole run. The uploader is the first user of a pair, the
 * downloader its peer (the image's receiver). With "-" "-" (the floor) nobody logs in.
 *
 * Reports payload MB/s (10^6 bytes/s of file data acked or received, from the first frame
 * to the last reply), transfers done/failed, and p50/p99/max of the chunk round trips
 * (chunk sent -> its ack; 1047 -> 1048). Last line: "RESULT mode key=value ...".
 * Build: cc -O2 -o res_load res_load.c -luv -lm */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem (bench/res_wire.h) */
#endif
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <uv.h>

#include "res_wire.h"

#define WINDOW 5           /* the client's MAX_CWND_SIZE */
#define MAX_CONNS 8000     /* two sockets each: under the 20,000 descriptors of a process */
#define MAX_FRAME (1u << 20)

/* ---- MD5 (RFC 1321): the client sends the file's hex md5 with its chunks ---- */
typedef struct md5_ctx {
    uint32_t h[4];
    uint64_t len;
    uint8_t buf[64];
    size_t blen;
} md5_ctx;

static uint32_t md5_k[64];
static const uint8_t md5_r[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                  5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

static void md5_init(md5_ctx *m) {
    if (!md5_k[0])
        for (int i = 0; i < 64; i++) md5_k[i] = (uint32_t)(fabs(sin(i + 1.0)) * 4294967296.0);
    m->h[0] = 0x67452301;
    m->h[1] = 0xefcdab89;
    m->h[2] = 0x98badcfe;
    m->h[3] = 0x10325476;
    m->len = 0;
    m->blen = 0;
}

static void md5_block(uint32_t h[4], const uint8_t *p) {
    uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) { f = (b & c) | (~b & d); g = i; }
        else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
        else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
        else { f = c ^ (b | ~d); g = (7 * i) % 16; }
        f += a + md5_k[i] + w[g];
        a = d;
        d = c;
        c = b;
        b += f << md5_r[i] | f >> (32 - md5_r[i]);
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static void md5_update(md5_ctx *m, const uint8_t *p, size_t n) {
    m->len += n;
    while (n > 0) {
        size_t take = 64 - m->blen < n ? 64 - m->blen : n;
        memcpy(m->buf + m->blen, p, take);
        m->blen += take;
        p += take;
        n -= take;
        if (m->blen == 64) {
            md5_block(m->h, m->buf);
            m->blen = 0;
        }
    }
}

static void md5_hex(md5_ctx m, char out[33]) { /* by value: the caller's state goes on */
    uint64_t bits = m.len * 8;
    uint8_t pad[72] = {0x80};
    size_t padn = (m.blen < 56 ? 56 : 120) - m.blen;
    for (int i = 0; i < 8; i++) pad[padn + i] = (uint8_t)(bits >> (8 * i));
    md5_update(&m, pad, padn + 8);
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", (unsigned)(m.h[i / 4] >> (8 * (i % 4))) & 0xff);
}

/* ---- transfers and their content ---- */
typedef struct xfer {
    long sender, receiver, message_id;
    char name[48];
    char md5[33];
    unsigned nonce, gidx; /* the last chunk's bytes come from these */
    char *last_b64;       /* upload: the last chunk, base64 */
    size_t last_b64_len;
} xfer;

static uint64_t fsize;       /* every image of a run has this size */
static int max_seq;          /* ceil(fsize / 32768) */
static uint8_t *base;        /* the content every image shares (all but its last chunk) */
static char **common_b64;    /* chunks 1 .. max_seq-1, base64 */
static size_t *common_b64_len;
static xfer *xfers;
static int nxfers;

static const uint8_t PNG_MAGIC[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};

static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

static size_t chunk_len(int seq) {
    uint64_t off = (uint64_t)(seq - 1) * RES_CHUNK;
    return fsize - off < RES_CHUNK ? (size_t)(fsize - off) : RES_CHUNK;
}

/* The bytes of chunk seq of image x (into out, RES_CHUNK bytes of room). */
static size_t chunk_bytes(const xfer *x, int seq, uint8_t *out) {
    size_t n = chunk_len(seq);
    if (seq < max_seq) {
        memcpy(out, base + (size_t)(seq - 1) * RES_CHUNK, n);
    } else {
        fill_random(out, n, (uint64_t)x->nonce << 32 | x->gidx);
        if (max_seq == 1) memcpy(out, PNG_MAGIC, n < 16 ? n : 16);
    }
    return n;
}

static void make_base(void) {
    max_seq = (int)((fsize + RES_CHUNK - 1) / RES_CHUNK);
    base = malloc((size_t)fsize);
    fill_random(base, (size_t)fsize, 42);
    memcpy(base, PNG_MAGIC, 16);
}

/* Base64 of the shared chunks and the md5 state after them, once for every image. */
static void encode_common(md5_ctx *prefix) {
    md5_init(prefix);
    common_b64 = calloc((size_t)max_seq, sizeof *common_b64);
    common_b64_len = calloc((size_t)max_seq, sizeof *common_b64_len);
    for (int seq = 1; seq < max_seq; seq++) {
        const uint8_t *p = base + (size_t)(seq - 1) * RES_CHUNK;
        common_b64[seq] = malloc(RES_B64_CHUNK);
        common_b64_len[seq] = res_b64_encode(p, RES_CHUNK, common_b64[seq]);
        md5_update(prefix, p, RES_CHUNK);
    }
}

static void prepare_upload(xfer *x, const md5_ctx *prefix) {
    uint8_t chunk[RES_CHUNK];
    size_t n = chunk_bytes(x, max_seq, chunk);
    x->last_b64 = malloc(RES_B64_CHUNK);
    x->last_b64_len = res_b64_encode(chunk, n, x->last_b64);
    md5_ctx m = *prefix;
    md5_update(&m, chunk, n);
    md5_hex(m, x->md5);
}

/* ---- connections ---- */
typedef struct rbuf {
    uint8_t *p;
    size_t len, cap;
} rbuf;

typedef struct conn {
    long uid, peer, thread;
    char token[80];
    uv_tcp_t res, chat;
    uv_connect_t res_req, chat_req;
    rbuf res_in, chat_in;
    int res_up, chat_up, res_closed, chat_closed;
    int logged_in, announced, ready, finished;
    int *xs, nx, cur; /* this connection's transfers, in order */
    /* the current transfer */
    int next_seq, confirmed, cwnd, failed_cur, dl_seq;
    uint64_t dl_bytes;
    uint8_t *acked;
    uint64_t *sent_at;
} conn;

static uv_loop_t *loop;
static conn *conns;
static int nconns;
static int upload_mode, with_chat, verify;
static struct sockaddr_in res_addr, chat_addr;
static int timeout_s = 600;
static int nready, nfinished, done_count, failed_count;
static uint64_t payload, t_start, t_end;
static double *rtt;
static size_t nrtt, rtt_cap;
static uv_timer_t beat, guard;
static unsigned long odd_frames;

static uint64_t now_ns(void) { return uv_hrtime(); }

/* uploads: the round trips of first chunks, the window after them, last chunks (the
 * completion) and the others, summed apart (where a transfer's time goes) */
enum { RTT_FIRST, RTT_WINDOW, RTT_LAST, RTT_OTHER, RTT_KINDS };
static double rtt_sum[RTT_KINDS];
static unsigned long rtt_n[RTT_KINDS];

static double rtt_mean(int k) { return rtt_n[k] ? rtt_sum[k] / (double)rtt_n[k] : 0; }

static double record_rtt(uint64_t sent) {
    if (nrtt == rtt_cap) {
        rtt_cap = rtt_cap ? rtt_cap * 2 : 65536;
        rtt = realloc(rtt, rtt_cap * sizeof *rtt);
    }
    return rtt[nrtt++] = (double)(now_ns() - sent) / 1e6;
}

static void on_write(uv_write_t *w, int status) { free(w); }

/* Sends header+head (copied) then data and tail as they are (they outlive the write). */
static void send_frame(uv_tcp_t *tcp, int chat_frame, uint16_t id, const char *head, size_t hn, const char *data,
                       size_t dn, const char *tail, size_t tn) {
    size_t hdr = chat_frame ? 4 : RES_HEADER, total = hn + dn + tn;
    uv_write_t *w = malloc(sizeof *w + hdr + hn);
    uint8_t *p = (uint8_t *)(w + 1);
    if (chat_frame) {
        p[0] = (uint8_t)(id >> 8);
        p[1] = (uint8_t)id;
        p[2] = (uint8_t)(total >> 8);
        p[3] = (uint8_t)total;
    } else {
        res_put_header(p, id, (uint32_t)total);
    }
    memcpy(p + hdr, head, hn);
    uv_buf_t b[3] = {uv_buf_init((char *)p, (unsigned)(hdr + hn)), uv_buf_init((char *)data, (unsigned)dn),
                     uv_buf_init((char *)tail, (unsigned)tn)};
    if (uv_write(w, (uv_stream_t *)tcp, b, dn || tn ? 3 : 1, on_write) != 0) free(w);
}

static void send_chat(conn *c, uint16_t id, const char *body, size_t n) {
    if (!c->chat_closed) send_frame(&c->chat, 1, id, body, n, NULL, 0, NULL, 0);
}

static void report_and_exit(void);

static void conn_finished(conn *c) {
    if (c->finished) return;
    c->finished = 1;
    if (++nfinished == nconns) report_and_exit();
}

static void start_transfer(conn *c);

static void next_transfer(conn *c) {
    c->cur++;
    start_transfer(c);
}

/* The current transfer failed: counted once; the connection goes on with its next one when
 * the chunks still in flight have had their acks (each 1037 gets exactly one 1038). */
static void fail_current(conn *c, const char *why, const char *body, size_t len) {
    if (!c->failed_cur) {
        c->failed_cur = 1;
        if (failed_count++ < 5)
            fprintf(stderr, "transfer %s of uid %ld failed: %s %.*s\n", xfers[c->xs[c->cur]].name, c->uid, why,
                    (int)(len > 300 ? 300 : len), body ? body : "");
    }
    if (c->cwnd == 0) next_transfer(c);
}

/* ---- upload ---- */
static void send_chunk(conn *c, int seq) {
    xfer *x = &xfers[c->xs[c->cur]];
    const char *data = seq == max_seq ? x->last_b64 : common_b64[seq];
    size_t dn = seq == max_seq ? x->last_b64_len : common_b64_len[seq];
    unsigned long long trans = (unsigned long long)(seq - 1) * RES_CHUNK + chunk_len(seq);
    char head[768];
    int hn;
    if (seq == 1)
        hn = snprintf(head, sizeof head,
                      "{\"name\":\"%s\",\"unique_id\":\"{%s}\",\"seq\":1,\"trans_size\":\"%llu\",\"total_size\":\"%llu\","
                      "\"token\":\"%s\",\"md5\":\"%s\",\"uid\":%ld,\"message_id\":%ld,\"receiver\":%ld,\"sender\":%ld,"
                      "\"last\":%d,\"data\":\"",
                      x->name, x->name, trans, (unsigned long long)fsize, c->token, x->md5, c->uid, x->message_id,
                      x->receiver, x->sender, max_seq == 1);
    else
        hn = snprintf(head, sizeof head,
                      "{\"md5\":\"%s\",\"name\":\"%s\",\"seq\":%d,\"trans_size\":\"%llu\",\"total_size\":\"%llu\","
                      "\"last\":%d,\"last_seq\":%d,\"uid\":%ld,\"message_id\":%ld,\"sender\":%ld,\"receiver\":%ld,"
                      "\"data\":\"",
                      x->md5, x->name, seq, trans, (unsigned long long)fsize, seq == max_seq, max_seq, c->uid,
                      x->message_id, x->sender, x->receiver);
    c->sent_at[seq] = now_ns();
    send_frame(&c->res, 0, seq == 1 ? 1041 : 1037, head, (size_t)hn, data, dn, "\"}", 2);
}

/* The client's BatchSend: fill the window with the next chunks. */
static void batch_send(conn *c) {
    while (c->cwnd < WINDOW && c->next_seq < max_seq) {
        c->next_seq++;
        send_chunk(c, c->next_seq);
        c->cwnd++;
    }
}

static void on_upload_ack(conn *c, uint16_t id, const char *body, size_t len) {
    if (id != 1042 && id != 1038 && id != 1044) {
        if (odd_frames++ < 5) fprintf(stderr, "unexpected frame %u: %.*s\n", id, (int)(len > 200 ? 200 : len), body);
        return;
    }
    if (c->cur >= c->nx) return;
    if (id != 1042 && c->cwnd > 0) c->cwnd--; /* first, also for a refusal (as the client) */
    if (c->failed_cur) {
        if (c->cwnd == 0) next_transfer(c);
        return;
    }
    long long err = -1, seq = 0;
    if (res_json_int(body, len, "error", &err) != 0 || err != 0) {
        fail_current(c, "ack", body, len);
        return;
    }
    if (res_json_int(body, len, "seq", &seq) != 0 || seq < 1 || seq > max_seq || c->acked[seq]) {
        fail_current(c, "ack with a bad seq", body, len);
        return;
    }
    c->acked[seq] = 1;
    double ms = record_rtt(c->sent_at[seq]);
    int kind = seq == 1                              ? RTT_FIRST
               : seq <= 1 + WINDOW && seq < max_seq ? RTT_WINDOW
               : seq == max_seq                      ? RTT_LAST
                                                     : RTT_OTHER;
    rtt_sum[kind] += ms;
    rtt_n[kind]++;
    payload += chunk_len((int)seq);
    while (c->confirmed < max_seq && c->acked[c->confirmed + 1]) c->confirmed++;
    if (c->confirmed == max_seq) {
        done_count++;
        if (c->cwnd == 0) next_transfer(c);
        else c->failed_cur = 1; /* not a failure: drain the slots (cannot happen with in-order acks) */
        return;
    }
    batch_send(c);
}

/* ---- download ---- */
static void send_1047(conn *c) {
    xfer *x = &xfers[c->xs[c->cur]];
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"name\":\"%s\",\"seq\":%d,\"trans_size\":\"%llu\",\"total_size\":\"%llu\",%s%s%s"
                     "\"sender_id\":%ld,\"receiver_id\":%ld,\"message_id\":%ld,\"uid\":%ld}",
                     x->name, c->dl_seq, (unsigned long long)c->dl_bytes, (unsigned long long)fsize,
                     c->dl_seq == 1 ? "\"token\":\"" : "", c->dl_seq == 1 ? c->token : "", c->dl_seq == 1 ? "\"," : "",
                     x->sender, x->receiver, x->message_id, c->uid);
    c->sent_at[1] = now_ns();
    send_frame(&c->res, 0, 1047, body, (size_t)n, NULL, 0, NULL, 0);
}

static void on_download_reply(conn *c, uint16_t id, const char *body, size_t len) {
    if (id != 1048) {
        if (odd_frames++ < 5) fprintf(stderr, "unexpected frame %u: %.*s\n", id, (int)(len > 200 ? 200 : len), body);
        return;
    }
    if (c->cur >= c->nx) return;
    record_rtt(c->sent_at[1]);
    long long err = -1, seq = 0;
    const char *data, *last;
    size_t dn, ln;
    if (res_json_int(body, len, "error", &err) != 0 || err != 0) {
        fail_current(c, "1048", body, len);
        return;
    }
    if (res_json_int(body, len, "seq", &seq) != 0 || seq != c->dl_seq || res_json_str(body, len, "data", &data, &dn) != 0 ||
        res_json_raw(body, len, "is_last", &last, &ln) != 0) {
        fail_current(c, "1048 without the right seq, data or is_last", body, len);
        return;
    }
    static char unescaped[2 * RES_B64_CHUNK];
    if (memchr(data, '\\', dn) && dn <= sizeof unescaped) { /* an encoder that writes "/" as "\/" */
        size_t k = 0;
        for (size_t i = 0; i < dn; i++)
            if (data[i] != '\\') unescaped[k++] = data[i];
        data = unescaped;
        dn = k;
    }
    size_t got = res_b64_size(data, dn);
    if (verify) {
        static uint8_t want[RES_CHUNK], have[RES_CHUNK + 3];
        size_t wn = c->dl_seq <= max_seq ? chunk_bytes(&xfers[c->xs[c->cur]], c->dl_seq, want) : 0;
        long hn = dn <= RES_B64_CHUNK ? res_b64_decode(data, dn, have) : -1;
        if (hn < 0 || (size_t)hn != wn || memcmp(want, have, wn) != 0) {
            fail_current(c, "--verify: the chunk differs from the upload", NULL, 0);
            return;
        }
    }
    payload += got;
    c->dl_bytes += got;
    if (ln == 4 && memcmp(last, "true", 4) == 0) {
        if (c->dl_bytes == fsize) {
            done_count++;
            next_transfer(c);
        } else {
            fail_current(c, "is_last before the whole file", body, len > 200 ? 200 : len);
        }
        return;
    }
    if (c->dl_seq >= max_seq) {
        fail_current(c, "more chunks than the file has", body, len > 200 ? 200 : len);
        return;
    }
    c->dl_seq++;
    send_1047(c);
}

static void start_transfer(conn *c) {
    c->failed_cur = 0;
    c->cwnd = 0;
    if (c->cur >= c->nx || c->res_closed) {
        conn_finished(c);
        return;
    }
    if (upload_mode) {
        memset(c->acked, 0, (size_t)max_seq + 1);
        c->confirmed = 0;
        c->next_seq = 1;
        send_chunk(c, 1);
    } else {
        c->dl_seq = 1;
        c->dl_bytes = 0;
        send_1047(c);
    }
}

/* ---- reading frames ---- */
/* Room for the next read; one byte is never offered, so rbuf_frames can NUL-terminate a
 * body that ends where the data ends. */
static void rbuf_alloc(rbuf *r, uv_buf_t *b) {
    if (r->cap - r->len < 65536 + 1) {
        r->cap = r->cap ? r->cap * 2 : 131072;
        r->p = realloc(r->p, r->cap);
    }
    *b = uv_buf_init((char *)r->p + r->len, (unsigned)(r->cap - r->len - 1));
}

/* Takes n more bytes; calls on_frame for every whole frame (chat: 4-byte header, resource:
 * 6-byte) with its body NUL-terminated. Returns -1 on a frame above MAX_FRAME. */
static int rbuf_frames(rbuf *r, size_t n, int chat_frame, conn *c,
                       void (*on_frame)(conn *, uint16_t, const char *, size_t)) {
    r->len += n;
    size_t off = 0, hdr = chat_frame ? 4 : RES_HEADER;
    while (r->len - off >= hdr) {
        const uint8_t *p = r->p + off;
        uint16_t id = res_get_id(p);
        size_t blen = chat_frame ? (size_t)(p[2] << 8 | p[3]) : res_get_len(p);
        if (blen > MAX_FRAME) return -1;
        if (r->len - off < hdr + blen) break;
        char *body = (char *)r->p + off + hdr;
        char save = body[blen];
        body[blen] = '\0';
        on_frame(c, id, body, blen);
        body[blen] = save;
        off += hdr + blen;
    }
    memmove(r->p, r->p + off, r->len - off);
    r->len -= off;
    return 0;
}

static void on_res_frame(conn *c, uint16_t id, const char *body, size_t len) {
    if (upload_mode) on_upload_ack(c, id, body, len);
    else on_download_reply(c, id, body, len);
}

static void on_res_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) { rbuf_alloc(&((conn *)h->data)->res_in, b); }
static void on_chat_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) { rbuf_alloc(&((conn *)h->data)->chat_in, b); }

static void check_ready(conn *c);
static void start_all(void);

/* A connection that cannot start (no resource connection, chat login or 1035 refused):
 * its transfers count as failed, the others start without waiting for it. */
static void give_up(conn *c, const char *why) {
    if (c->ready) return;
    fprintf(stderr, "uid %ld cannot start: %s\n", c->uid, why);
    c->ready = -1;
    failed_count += c->nx;
    c->finished = 1;
    nfinished++;
    if (++nready == nconns) start_all();
}

static void res_lost(conn *c, const char *why) {
    if (c->res_closed) return;
    c->res_closed = 1;
    uv_read_stop((uv_stream_t *)&c->res);
    if (t_start && !c->finished) {
        fprintf(stderr, "resource connection of uid %ld: %s\n", c->uid, why);
        int left = c->nx - c->cur - (c->failed_cur ? 1 : 0);
        failed_count += left > 0 ? left : 0;
        conn_finished(c);
    } else if (!t_start) {
        give_up(c, why);
    }
}

static void on_res_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn *c = s->data;
    if (n < 0) {
        res_lost(c, uv_strerror((int)n));
        return;
    }
    if (rbuf_frames(&c->res_in, (size_t)n, 0, c, on_res_frame) != 0) res_lost(c, "frame too large");
}

/* ---- the chat side: login, 1035 -> 1036, heartbeats ---- */
static void announce_next(conn *c) {
    xfer *x = &xfers[c->xs[c->announced]];
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"fromuid\":%ld,\"touid\":%ld,\"thread_id\":%ld,\"md5\":\"%s\",\"name\":\"%s\",\"token\":\"%s\","
                     "\"unique_id\":\"{%s}\",\"text_or_url\":\"/tmp/res_load/%s\"}",
                     c->uid, c->peer, c->thread, x->md5, x->name, c->token, x->name, x->name);
    send_chat(c, 1035, body, (size_t)n);
}

static void on_chat_frame(conn *c, uint16_t id, const char *body, size_t len) {
    long long err = -1, mid = 0;
    if (id == 1006 && !c->logged_in) {
        if (res_json_int(body, len, "error", &err) != 0 || err != 0) {
            fprintf(stderr, "chat login of %ld failed: %.*s\n", c->uid, (int)len, body);
            give_up(c, "chat login refused");
            return;
        }
        c->logged_in = 1;
        if (upload_mode && c->nx > 0) announce_next(c);
        check_ready(c);
    } else if (id == 1036 && upload_mode && c->announced < c->nx) {
        xfer *x = &xfers[c->xs[c->announced]];
        const char *un;
        size_t unl;
        if (res_json_int(body, len, "error", &err) != 0 || err != 0 || res_json_int(body, len, "message_id", &mid) != 0 ||
            res_json_str(body, len, "unique_name", &un, &unl) != 0 || unl != strlen(x->name) ||
            memcmp(un, x->name, unl) != 0) {
            fprintf(stderr, "1035 of %ld refused: %.*s\n", c->uid, (int)len, body);
            give_up(c, "1035 refused");
            return;
        }
        x->message_id = (long)mid;
        if (++c->announced < c->nx) announce_next(c);
        check_ready(c);
    }
}

static void on_chat_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn *c = s->data;
    if (n < 0 || rbuf_frames(&c->chat_in, (size_t)n, 1, c, on_chat_frame) != 0) {
        if (!c->chat_closed) fprintf(stderr, "chat connection of uid %ld closed\n", c->uid);
        c->chat_closed = 1;
        if (!t_start) give_up(c, "chat connection closed");
        uv_read_stop(s);
    }
}

static void heartbeat(uv_timer_t *t) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].logged_in) {
            char body[64];
            int n = snprintf(body, sizeof body, "{\"fromuid\":%ld}", conns[i].uid);
            send_chat(&conns[i], 1023, body, (size_t)n);
        }
}

/* ---- start, report ---- */
static void on_guard(uv_timer_t *t);

static void start_all(void) {
    if (t_start) return;
    t_start = now_ns();
    uv_timer_start(&guard, on_guard, (uint64_t)timeout_s * 1000, 0); /* from now on: --timeout */
    for (int i = 0; i < nconns; i++)
        if (conns[i].ready == 1) start_transfer(&conns[i]);
    if (nfinished == nconns) report_and_exit();
}

static void check_ready(conn *c) {
    if (c->ready || !c->res_up) return;
    if (with_chat && (!c->logged_in || (upload_mode && c->announced < c->nx))) return;
    c->ready = 1;
    if (++nready == nconns) start_all();
}

static void on_res_connect(uv_connect_t *req, int status) {
    conn *c = req->data;
    if (status < 0) {
        res_lost(c, uv_strerror(status));
        return;
    }
    c->res_up = 1;
    uv_tcp_nodelay(&c->res, 1);
    uv_read_start((uv_stream_t *)&c->res, on_res_alloc, on_res_read);
    check_ready(c);
}

static void on_chat_connect(uv_connect_t *req, int status) {
    conn *c = req->data;
    if (status < 0) {
        c->chat_closed = 1;
        give_up(c, uv_strerror(status));
        return;
    }
    c->chat_up = 1;
    uv_read_start((uv_stream_t *)&c->chat, on_chat_alloc, on_chat_read);
    char body[200];
    int n = snprintf(body, sizeof body, "{\"uid\":%ld,\"token\":\"%s\"}", c->uid, c->token);
    send_chat(c, 1005, body, (size_t)n);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double p) { return nrtt ? rtt[(size_t)(p * (double)(nrtt - 1))] : 0; }

static const char *manifest_path;

static void write_manifest(void) {
    FILE *f = fopen(manifest_path, "w");
    if (!f) {
        perror(manifest_path);
        return;
    }
    for (int i = 0; i < nxfers; i++) {
        xfer *x = &xfers[i];
        fprintf(f, "%ld %ld %ld %s %llu %u %u %s\n", x->sender, x->receiver, x->message_id, x->name,
                (unsigned long long)fsize, x->nonce, x->gidx, x->md5);
    }
    fclose(f);
}

static void report_and_exit(void) {
    t_end = now_ns();
    int never_started = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].ready == 0) never_started += conns[i].nx;
    failed_count += never_started;
    double secs = t_start ? (double)(t_end - t_start) / 1e9 : 0;
    double mbps = secs > 0 ? (double)payload / 1e6 / secs : 0;
    if (nrtt > 0) qsort(rtt, nrtt, sizeof *rtt, cmp_double);
    const char *mode = upload_mode ? "upload" : "download";
    printf("%s: %d connections, %d transfers of %llu bytes: %.1f MB/s payload over %.2f s; done %d, failed %d; "
           "chunk round trip ms p50 %.2f p99 %.2f max %.2f\n",
           mode, nconns, nxfers, (unsigned long long)fsize, mbps, secs, done_count, failed_count, pct(0.5), pct(0.99),
           pct(1));
    if (upload_mode)
        printf("upload chunk round trip ms, mean: first %.3f, the window after it %.3f, last %.3f, "
               "the others %.3f\n", rtt_mean(RTT_FIRST), rtt_mean(RTT_WINDOW),
               rtt_mean(RTT_LAST), rtt_mean(RTT_OTHER));
    printf("RESULT %s conns=%d transfers=%d size=%llu done=%d failed=%d mbps=%.1f p50=%.2f p99=%.2f secs=%.2f\n", mode,
           nconns, nxfers, (unsigned long long)fsize, done_count, failed_count, mbps, pct(0.5), pct(0.99), secs);
    if (upload_mode && manifest_path) write_manifest();
    fflush(stdout);
    exit(0);
}

static void on_guard(uv_timer_t *t) {
    if (!t_start) {
        fprintf(stderr, "%d of %d connections ready after %d s; going on with them\n", nready, nconns, 60);
        for (int i = 0; i < nconns; i++)
            if (!conns[i].ready) {
                conns[i].finished = 1;
                nfinished++;
            }
        start_all();
        return;
    }
    fprintf(stderr, "timeout: %d of %d connections finished after %d s\n", nfinished, nconns, timeout_s);
    for (int i = 0; i < nconns; i++)
        if (!conns[i].finished) failed_count += conns[i].nx - conns[i].cur - conns[i].failed_cur;
    report_and_exit();
}

/* ---- set-up ---- */
typedef struct user {
    long uid, peer, thread;
    char token[80];
} user;

static user *users;
static int nusers;

static void load_users(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    int cap = 1024, server;
    users = calloc((size_t)cap, sizeof *users);
    user u;
    while (fscanf(f, "%ld %79s %ld %ld %d", &u.uid, u.token, &u.peer, &u.thread, &server) == 5) {
        if (nusers == cap) users = realloc(users, (size_t)(cap *= 2) * sizeof *users);
        users[nusers++] = u;
    }
    fclose(f);
}

static const user *find_user(long uid) {
    for (int i = 0; i < nusers; i++)
        if (users[i].uid == uid) return &users[i];
    return NULL;
}

static conn *add_conn(long uid, long peer, long thread, const char *token, int nx) {
    conn *c = &conns[nconns++];
    c->uid = uid;
    c->peer = peer;
    c->thread = thread;
    snprintf(c->token, sizeof c->token, "%s", token);
    c->xs = calloc((size_t)nx, sizeof *c->xs);
    return c;
}

static void setup_upload(int n, int repeat, unsigned nonce) {
    md5_ctx prefix;
    if (with_chat && nusers < 2 * n) {
        fprintf(stderr, "%d connections need %d users (pairs), the users file has %d\n", n, 2 * n, nusers);
        exit(1);
    }
    encode_common(&prefix);
    conns = calloc((size_t)n, sizeof *conns);
    xfers = calloc((size_t)n * (size_t)repeat, sizeof *xfers);
    for (int i = 0; i < n; i++) {
        const user *u = with_chat ? &users[2 * i] : NULL;
        conn *c = add_conn(u ? u->uid : 1000000 + 2 * i, u ? u->peer : 1000001 + 2 * i, u ? u->thread : 0,
                           u ? u->token : "", repeat);
        for (int r = 0; r < repeat; r++) {
            xfer *x = &xfers[nxfers];
            x->sender = c->uid;
            x->receiver = c->peer;
            x->nonce = nonce;
            x->gidx = (unsigned)nxfers;
            x->message_id = nxfers + 1; /* the floor's; 1036 gives the real one */
            snprintf(x->name, sizeof x->name, "%08x-%04x-4%03x-8%03x-%012x.png", nonce, (unsigned)i & 0xffff,
                     (unsigned)r & 0xfff, (unsigned)(nxfers >> 12) & 0xfff, (unsigned)nxfers);
            prepare_upload(x, &prefix);
            c->xs[c->nx++] = nxfers++;
        }
    }
}

static void setup_download(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    int cap = 1024;
    xfers = calloc((size_t)cap, sizeof *xfers);
    xfer x;
    unsigned long long size;
    memset(&x, 0, sizeof x);
    while (fscanf(f, "%ld %ld %ld %47s %llu %u %u %32s", &x.sender, &x.receiver, &x.message_id, x.name, &size, &x.nonce,
                  &x.gidx, x.md5) == 8) {
        if (fsize && size != fsize) {
            fprintf(stderr, "%s: every image of a manifest has one size\n", path);
            exit(1);
        }
        fsize = size;
        if (nxfers == cap) xfers = realloc(xfers, (size_t)(cap *= 2) * sizeof *xfers);
        xfers[nxfers++] = x;
    }
    fclose(f);
    if (nxfers == 0) {
        fprintf(stderr, "%s: no transfer in it\n", path);
        exit(1);
    }
    conns = calloc((size_t)nxfers, sizeof *conns);
    for (int i = 0; i < nxfers; i++) { /* one connection per receiver, in order of appearance */
        conn *c = NULL;
        for (int k = 0; k < nconns && !c; k++)
            if (conns[k].uid == xfers[i].receiver) c = &conns[k];
        if (!c) {
            const user *u = with_chat ? find_user(xfers[i].receiver) : NULL;
            if (with_chat && !u) {
                fprintf(stderr, "receiver %ld is not in the users file\n", xfers[i].receiver);
                exit(1);
            }
            c = add_conn(xfers[i].receiver, xfers[i].sender, u ? u->thread : 0, u ? u->token : "", nxfers);
        }
        c->xs[c->nx++] = i;
    }
}

static int parse_addr(const char *s, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    return uv_ip4_addr(host, atoi(colon + 1), out);
}

int main(int argc, char **argv) {
    if (argc < 5 || (strcmp(argv[1], "upload") != 0 && strcmp(argv[1], "download") != 0)) {
        fprintf(stderr, "usage: res_load upload USERS|- CHAT|- RES --conns N --size BYTES [--repeat R] [--manifest FILE]\n"
                        "       res_load download USERS|- CHAT|- RES --manifest FILE [--verify]   [--timeout S]\n");
        return 2;
    }
    upload_mode = strcmp(argv[1], "upload") == 0;
    with_chat = strcmp(argv[2], "-") != 0;
    int n = 1, repeat = 1;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--conns") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) fsize = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--manifest") && i + 1 < argc) manifest_path = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--verify")) verify = 1;
        else {
            fprintf(stderr, "res_load: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (parse_addr(argv[4], &res_addr) != 0 || (with_chat && parse_addr(argv[3], &chat_addr) != 0)) {
        fprintf(stderr, "res_load: addresses are host:port\n");
        return 2;
    }
    if (with_chat) load_users(argv[2]);
    if (upload_mode) {
        if (n < 1 || n > MAX_CONNS || repeat < 1 || fsize < 64) {
            fprintf(stderr, "res_load: 1 <= --conns <= %d, --repeat >= 1, --size >= 64\n", MAX_CONNS);
            return 2;
        }
        make_base();
        setup_upload(n, repeat, (unsigned)(uv_hrtime() ^ (uint64_t)getpid()));
    } else {
        if (!manifest_path) {
            fprintf(stderr, "res_load download: --manifest FILE (written by an upload run)\n");
            return 2;
        }
        setup_download(manifest_path);
        make_base();
        if (nconns > MAX_CONNS) {
            fprintf(stderr, "res_load: %d receivers, at most %d connections\n", nconns, MAX_CONNS);
            return 2;
        }
    }
    loop = uv_default_loop();
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        c->acked = calloc((size_t)max_seq + 2, 1);
        c->sent_at = calloc((size_t)max_seq + 2, sizeof *c->sent_at);
        uv_tcp_init(loop, &c->res);
        c->res.data = c->res_req.data = c;
        uv_tcp_connect(&c->res_req, &c->res, (struct sockaddr *)&res_addr, on_res_connect);
        if (with_chat) {
            uv_tcp_init(loop, &c->chat);
            c->chat.data = c->chat_req.data = c;
            uv_tcp_connect(&c->chat_req, &c->chat, (struct sockaddr *)&chat_addr, on_chat_connect);
        }
    }
    if (with_chat) {
        uv_timer_init(loop, &beat);
        uv_timer_start(&beat, heartbeat, 10000, 10000);
        uv_unref((uv_handle_t *)&beat);
    }
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, on_guard, 60000, 0);
    return uv_run(loop, UV_RUN_DEFAULT);
}
