/* bench/chat_load.c: load generator for the chat role (and for the echo floor). One libuv
 * loop, one connection per user, the chat frame format [id u16 BE][len u16 BE][JSON].
 *
 *   chat_load msg  USERS_FILE SERVERS [--rate N] [--window W] [--seconds S]
 *       logs in every user of USERS_FILE ("uid token peer thread server_index" lines),
 *       then each user sends 1017 texts to its peer: with --rate, N messages/s in total
 *       (spread over senders); without, W messages in flight per sender. Counts acks
 *       (1018) and pushes (1019 at the peer) and reports messages/s and latency
 *       percentiles (send -> ack, send -> push; one clock: same process).
 *   chat_load msg  USERS_FILE SERVERS --rate N --split FILE [--seconds S]
 *       the same at a fixed rate, for a run with something happening in a window (bench/
 *       chat_reload.sh): prints "load started" when sending starts; after S seconds stops
 *       sending, waits up to 10 s for every ack and push, then reads FILE (lines "START END",
 *       CLOCK_MONOTONIC ns, written by the script meanwhile) and reports latencies of the
 *       messages sent inside those windows next to those sent outside, and every failure:
 *       refused texts (error != 0), other frames, closed connections, missing acks/pushes.
 *   chat_load group USERS_FILE SERVERS [--rate N] [--window W] [--seconds S]
 *       group messages (1065): USERS_FILE lines "uid token sender thread server_index",
 *       sender 1 for the users who send to their group thread, 0 for those who only
 *       receive. Counts acks (1066) and deliveries (1067 at every other member, latency
 *       from the send time the unique_id carries); the rate is group messages/s.
 *   chat_load idle USERS_FILE SERVERS [--sources A,B,...] [--seconds S]
 *       logs in every user and holds the connections (a heartbeat every 20 s), binding
 *       source addresses in turn (many connections need several 127.0.0.x).
 *   chat_load echo - SERVER [--conns C] [--window W] [--seconds S] [--id ID]
 *       C connections keep W frames {"n":k} of msg_id ID in flight; the server answers
 *       ID+1. Reports frames/s.
 *
 * --warmup MS (msg, group): the load runs MS ms before anything counts, then S seconds are
 *       measured (a run's first moments, caches and connections warming, are not its steady state).
 * --trace FILE (msg): every latency sample "SENT_NS MS KIND" (KIND 0 ack, 1 push) written to FILE
 *       at the end, to tell stalls (slow samples bunched in time) from queueing (spread).
 * --ws: every connection is a WebSocket (docs/protocol.md §5.5; SERVERS name the ws_ports):
 *       the upgrade first, then each frame as a masked text message {"id":..,"body":..}.
 * SERVERS: host:port[,host:port]; a user goes to servers[server_index].
 * Build: cc -O2 -o chat_load chat_load.c -luv */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_SERVERS 8
#define MAX_SOURCES 64
#define RING 4096 /* in-flight send times per connection */

typedef struct user {
    uv_tcp_t tcp;
    uv_connect_t creq;
    int index;
    long uid, peer, thread;
    char token[80];
    int server;
    int logged_in, closed;
    int upgraded;            /* --ws: the 101 has arrived */
    uint8_t *in;
    size_t in_len, in_cap;
    uint64_t sent_at[RING];  /* send times of unacked messages, in order */
    unsigned head, count;
    unsigned long next_msg;
} user;

static uv_loop_t *loop;
static user *users;
static int nusers;
static struct sockaddr_in servers[MAX_SERVERS];
static int nservers;
static struct sockaddr_in sources[MAX_SOURCES];
static int nsources;
static const char *mode;
static double rate;
static int window = 8, seconds = 10, echo_id = 1, conns = 50;
static int logged_in, connected, login_failed, conn_failed;
static uint64_t t_start, t_end;
static int measuring, done;
static unsigned long acks, pushes, errors_seen, sent;
static unsigned long acks_all; /* acks of the whole run, warm-up included (CPU per message) */
static double *ack_lat, *push_lat;
static size_t nack_lat, npush_lat, lat_cap = 4u << 20;
static uv_timer_t tick, stopper, beat;
static long rate_cursor;
static double rate_credit;
static int ws_mode;      /* --ws */
static int group_mode;   /* mode "group": 1065/1066/1067, senders marked in the users file */
static int *senders;     /* indexes of the users who send */
static int nsenders;
/* --split and --trace: every latency sample with its send time; --split: what counts as a failure */
typedef struct sample {
    uint64_t sent;
    float ms;
    char push;
} sample;
static const char *split_path;
static const char *trace_path; /* --trace: every sample written there at the end */
static int warmup_ms;          /* --warmup: load runs this long before anything is counted */
static sample *samples;
static size_t nsamples, samples_cap;
static unsigned long closed_early, odd_frames;
#define MAX_WINDOWS 256
static uint64_t win[MAX_WINDOWS][2];
static int nwin;

static int in_windows(uint64_t t) {
    for (int i = 0; i < nwin; i++)
        if (t >= win[i][0] && t <= win[i][1]) return 1;
    return 0;
}

static uint64_t now_ns(void) { return uv_hrtime(); }

static void on_write(uv_write_t *w, int status) { free(w); }

/* --ws: one masked WebSocket frame of opcode op carrying payload (as a browser sends). */
static void send_ws(user *u, int op, const char *payload, size_t len) {
    static const uint8_t key[4] = {0x5a, 0x17, 0xc3, 0x8e};
    uv_write_t *w = malloc(sizeof *w + 14 + len);
    uint8_t *p = (uint8_t *)(w + 1);
    size_t h = 0;
    p[h++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        p[h++] = (uint8_t)(0x80 | len);
    } else {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(len >> 8);
        p[h++] = (uint8_t)len;
    }
    memcpy(p + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++) p[h + i] = (uint8_t)payload[i] ^ key[i % 4];
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)(h + len));
    if (uv_write(w, (uv_stream_t *)&u->tcp, &b, 1, on_write) != 0) free(w);
}

static void send_frame(user *u, uint16_t id, const char *body, size_t len) {
    if (u->closed) return;
    if (ws_mode) {
        char msg[65600];
        int h = snprintf(msg, sizeof msg, "{\"id\":%u,\"body\":", id);
        if (len > sizeof msg - (size_t)h - 1) return;
        memcpy(msg + h, body, len);
        msg[(size_t)h + len] = '}';
        send_ws(u, 1, msg, (size_t)h + len + 1);
        return;
    }
    uv_write_t *w = malloc(sizeof *w + 4 + len);
    uint8_t *p = (uint8_t *)(w + 1);
    p[0] = (uint8_t)(id >> 8);
    p[1] = (uint8_t)id;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    memcpy(p + 4, body, len);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)(4 + len));
    if (uv_write(w, (uv_stream_t *)&u->tcp, &b, 1, on_write) != 0) free(w);
}

static void send_text(user *u) {
    char body[512];
    uint64_t t = now_ns();
    if (group_mode) {
        int n = snprintf(body, sizeof body,
                         "{\"thread_id\":%ld,\"text_array\":[{\"content\":\"hello from %ld, message %lu\","
                         "\"unique_id\":\"t%lluu%ld\"}]}",
                         u->thread, u->uid, u->next_msg++, (unsigned long long)t, u->uid);
        if (u->count < RING) u->sent_at[(u->head + u->count++) % RING] = t;
        sent++;
        send_frame(u, 1065, body, (size_t)n);
        return;
    }
    int n = snprintf(body, sizeof body,
                     "{\"fromuid\":%ld,\"touid\":%ld,\"thread_id\":%ld,\"text_array\":"
                     "[{\"content\":\"hello from %ld, message %lu\",\"unique_id\":\"t%llu\"}]}",
                     u->uid, u->peer, u->thread, u->uid, u->next_msg++, (unsigned long long)t);
    if (u->count < RING) u->sent_at[(u->head + u->count++) % RING] = t;
    sent++;
    send_frame(u, 1017, body, (size_t)n);
}

static void send_echo(user *u) {
    char body[64];
    int n = snprintf(body, sizeof body, "{\"n\":%lu}", u->next_msg++);
    if (u->count < RING) u->sent_at[(u->head + u->count++) % RING] = now_ns();
    sent++;
    send_frame(u, (uint16_t)echo_id, body, (size_t)n);
}

static void record(double **arr, size_t *n, double v) {
    if (!measuring || *n >= lat_cap) return;
    if (!*arr) *arr = malloc(lat_cap * sizeof **arr);
    (*arr)[(*n)++] = v;
}

static void split_record(int push, uint64_t sent_at, uint64_t now) {
    if ((!split_path && !trace_path) || !measuring) return;
    if (nsamples == samples_cap) {
        samples_cap = samples_cap ? samples_cap * 2 : 1u << 20;
        samples = realloc(samples, samples_cap * sizeof *samples);
    }
    samples[nsamples++] = (sample){sent_at, (float)((double)(now - sent_at) / 1e6), (char)push};
}

static void on_frame(user *u, uint16_t id, const char *body, size_t len) {
    if (id == 1006) {
        if (strstr(body, "\"error\":0") && !u->logged_in) {
            u->logged_in = 1;
            logged_in++;
        } else if (!u->logged_in) {
            login_failed++;
            if (login_failed < 5) fprintf(stderr, "login failed for %ld: %.*s\n", u->uid, (int)len, body);
        }
        return;
    }
    if (id == 1018 || (group_mode && id == 1066) || (strcmp(mode, "echo") == 0 && id == echo_id + 1)) {
        /* a 1018 with a non-zero error is a refusal (nothing stored): it frees its slot in
         * the window but is neither an ack nor an ack latency */
        int refused = (strcmp(mode, "msg") == 0 || group_mode) && id != echo_id + 1 &&
                      !strstr(body, "\"error\":0,") && !strstr(body, "\"error\":0}");
        if (u->count > 0) {
            if (!refused) record(&ack_lat, &nack_lat, (double)(now_ns() - u->sent_at[u->head]) / 1e6);
            if (!refused) split_record(0, u->sent_at[u->head], now_ns());
            u->head = (u->head + 1) % RING;
            u->count--;
        }
        if (refused) {
            if (errors_seen++ < 5) fprintf(stderr, "text refused: %.*s\n", (int)len, body);
        } else {
            acks_all++;
            if (measuring) acks++;
        }
        if (!done && rate == 0) { /* window mode: keep it full */
            if (strcmp(mode, "echo") == 0) send_echo(u); else send_text(u);
        }
        return;
    }
    if (id == 1019 || (group_mode && id == 1067)) {
        const char *p = strstr(body, "\"unique_id\":\"t");
        if (p && measuring) {
            unsigned long long t = strtoull(p + 14, NULL, 10);
            record(&push_lat, &npush_lat, (double)(now_ns() - t) / 1e6);
            split_record(1, t, now_ns());
            pushes++;
        }
        return;
    }
    if (split_path && measuring && odd_frames++ < 5) fprintf(stderr, "unexpected frame %u: %.*s\n", id, (int)len, body);
}

/* One byte of the buffer is never offered to libuv (in_len < in_cap always), so on_read
 * can NUL-terminate every body in place, also one that ends where the data ends. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    user *u = h->data;
    if (u->in_cap - u->in_len < 65536 + 1) {
        u->in_cap = u->in_cap ? u->in_cap * 2 : 65536 * 2;
        u->in = realloc(u->in, u->in_cap);
    }
    *b = uv_buf_init((char *)u->in + u->in_len, (unsigned)(u->in_cap - u->in_len - 1));
}

static void on_connected(user *u);

/* --ws: the 101 (consumed), then whole frames; returns the bytes consumed. A text message
 * {"id":N,"body":B} goes to on_frame as (N, B); pings are answered. */
static size_t ws_frames(user *u) {
    size_t off = 0;
    u->in[u->in_len] = '\0'; /* in_len < in_cap: strstr stops at the data's end */
    if (!u->upgraded) {
        char *end = strstr((char *)u->in, "\r\n\r\n");
        if (!end) return 0;
        if (strncmp((char *)u->in, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "WebSocket refused: %.*s\n", (int)(end - (char *)u->in), (char *)u->in);
            u->closed = 1;
            uv_read_stop((uv_stream_t *)&u->tcp);
            return 0;
        }
        off = (size_t)(end + 4 - (char *)u->in);
        u->upgraded = 1;
        on_connected(u);
    }
    while (u->in_len - off >= 2) {
        uint8_t *f = u->in + off;
        size_t h = 2, len = f[1] & 0x7f;
        if (len == 126) {
            if (u->in_len - off < 4) break;
            len = (size_t)f[2] << 8 | f[3];
            h = 4;
        } else if (len == 127) {
            if (u->in_len - off < 10) break;
            len = 0;
            for (int i = 2; i < 10; i++) len = len << 8 | f[i];
            h = 10;
        }
        if (u->in_len - off < h + len) break;
        char *pl = (char *)f + h;
        int op = f[0] & 0x0f;
        if (op == 9) send_ws(u, 10, pl, len);
        if (op == 8) {
            u->closed = 1;
            return off + h + len;
        }
        const char *ip = op == 1 ? strstr(pl, "\"id\":") : NULL;
        const char *bp = op == 1 ? strstr(pl, "\"body\":") : NULL;
        if (ip && bp && bp < pl + len) {
            char *body = (char *)bp + 7;
            size_t blen = (size_t)(pl + len - 1 - body); /* without the envelope's } */
            char save = body[blen];
            body[blen] = '\0';
            on_frame(u, (uint16_t)atoi(ip + 5), body, blen);
            body[blen] = save;
        }
        off += h + len;
    }
    return off;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    user *u = s->data;
    if (n < 0) {
        if (!u->closed && !done) fprintf(stderr, "connection of %ld closed: %s\n", u->uid, uv_strerror((int)n));
        if (!u->closed && split_path) closed_early++; /* before the drain ends, every close is one */
        u->closed = 1;
        uv_read_stop(s);
        return;
    }
    u->in_len += (size_t)n;
    size_t off = 0;
    if (ws_mode) {
        off = ws_frames(u);
        if (u->closed) return;
    }
    while (!ws_mode && u->in_len - off >= 4) {
        uint16_t id = (uint16_t)(u->in[off] << 8 | u->in[off + 1]);
        uint16_t len = (uint16_t)(u->in[off + 2] << 8 | u->in[off + 3]);
        if (u->in_len - off < 4u + len) break;
        char *body = (char *)u->in + off + 4;
        char save = body[len]; /* off + 4 + len <= in_len < in_cap: inside the buffer */
        body[len] = '\0';     /* on_frame's strstr stops at the body's end */
        on_frame(u, id, body, len);
        body[len] = save;
        off += 4u + len;
    }
    memmove(u->in, u->in + off, u->in_len - off);
    u->in_len -= off;
    if (u->in_cap > (1 << 20) && u->in_len < 4096) { /* do not keep a big buffer */
        u->in_cap = 65536 * 2;
        u->in = realloc(u->in, u->in_cap);
    }
}

static void login(user *u) {
    char body[200];
    int n = snprintf(body, sizeof body, "{\"uid\":%ld,\"token\":\"%s\"}", u->uid, u->token);
    send_frame(u, 1005, body, (size_t)n);
}

static void on_connect(uv_connect_t *req, int status) {
    user *u = req->data;
    if (status < 0) {
        if (conn_failed++ < 5) fprintf(stderr, "connect failed: %s\n", uv_strerror(status));
        u->closed = 1;
        return;
    }
    connected++;
    uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
    if (ws_mode) { /* the frames start after the 101 */
        static const char up[] = "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        uv_write_t *w = malloc(sizeof *w + sizeof up);
        memcpy(w + 1, up, sizeof up - 1);
        uv_buf_t b = uv_buf_init((char *)(w + 1), sizeof up - 1);
        if (uv_write(w, (uv_stream_t *)&u->tcp, &b, 1, on_write) != 0) free(w);
        return;
    }
    on_connected(u);
}

static void on_connected(user *u) {
    if (strcmp(mode, "echo") == 0) {
        u->logged_in = 1;
        logged_in++;
    } else {
        login(u);
    }
}

static int connect_next;

/* Opens connections in batches, so the server's accept queue is not flooded. */
static void connect_some(uv_timer_t *t) {
    int batch = 500;
    while (batch-- > 0 && connect_next < nusers) {
        user *u = &users[connect_next];
        u->index = connect_next++;
        uv_tcp_init(loop, &u->tcp);
        u->tcp.data = u->creq.data = u;
        if (nsources > 0) {
            uv_tcp_bind(&u->tcp, (struct sockaddr *)&sources[u->index % nsources], 0);
        }
        uv_tcp_connect(&u->creq, &u->tcp, (struct sockaddr *)&servers[u->server % nservers], on_connect);
    }
    if (connect_next >= nusers) uv_timer_stop(t);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p) {
    if (n == 0) return 0;
    size_t i = (size_t)(p * (double)(n - 1));
    return v[i];
}

/* --trace FILE: one line per latency sample, "SENT_NS MS KIND" (KIND 0 ack, 1 push), for
 * finding out when the slow ones were sent (stalls against steady queueing). */
static void write_trace(void) {
    FILE *f = fopen(trace_path, "w");
    if (!f) {
        perror(trace_path);
        return;
    }
    for (size_t i = 0; i < nsamples; i++)
        fprintf(f, "%llu %.3f %d\n", (unsigned long long)samples[i].sent, samples[i].ms, samples[i].push);
    fclose(f);
}

static void report(void) {
    if (trace_path) write_trace();
    double secs = (double)(t_end - t_start) / 1e9;
    qsort(ack_lat, nack_lat, sizeof *ack_lat, cmp_double);
    qsort(push_lat, npush_lat, sizeof *push_lat, cmp_double);
    if (strcmp(mode, "echo") == 0) {
        printf("echo: %d connections, window %d: %.0f frames/s; latency ms p50 %.3f p99 %.3f\n",
               conns, window, (double)acks / secs, pct(ack_lat, nack_lat, 0.5), pct(ack_lat, nack_lat, 0.99));
        return;
    }
    printf("users %d (pairs %d), logged in %d, login failures %d\n", nusers, nusers / 2, logged_in, login_failed);
    if (strcmp(mode, "idle") == 0) return;
    if (group_mode)
        printf("users %d, senders %d\n", nusers, nsenders);
    printf("acked: %.0f msgs/s; pushed: %.0f msgs/s over %.1f s; refused %lu\n", (double)acks / secs,
           (double)pushes / secs, secs, errors_seen);
    printf("totals: acked %lu, pushed %lu\n", acks, pushes);
    if (warmup_ms > 0) printf("acked with the %d ms of warm-up: %lu\n", warmup_ms, acks_all);
    printf("ack latency ms:  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", pct(ack_lat, nack_lat, 0.5),
           pct(ack_lat, nack_lat, 0.9), pct(ack_lat, nack_lat, 0.99), pct(ack_lat, nack_lat, 1));
    printf("push latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", pct(push_lat, npush_lat, 0.5),
           pct(push_lat, npush_lat, 0.9), pct(push_lat, npush_lat, 0.99), pct(push_lat, npush_lat, 1));
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Prints p50/p99/max of the samples of one kind sent inside (or outside) the windows. */
static void split_line(const char *what, int push, int inside) {
    float *v = malloc((nsamples + 1) * sizeof *v);
    size_t n = 0;
    for (size_t i = 0; i < nsamples; i++) {
        const sample *x = &samples[i];
        if (x->push == push && in_windows(x->sent) == inside) v[n++] = x->ms;
    }
    qsort(v, n, sizeof *v, cmp_float);
#define PCT(p) (n ? v[(size_t)((p) * (double)(n - 1))] : 0.0)
    printf("%-16s %s: %8zu msgs  p50 %6.2f  p99 %6.2f  max %7.2f ms\n", inside ? "inside windows" : "outside windows",
           what, n, PCT(0.5), PCT(0.99), PCT(1.0));
#undef PCT
    free(v);
}

static void split_report(void) {
    unsigned long long w0, w1;
    double inside = 0;
    FILE *f = fopen(split_path, "r");
    while (f && nwin < MAX_WINDOWS && fscanf(f, "%llu %llu", &w0, &w1) == 2) {
        win[nwin][0] = w0;
        win[nwin++][1] = w1;
        inside += (double)(w1 - w0) / 1e9;
    }
    if (f) fclose(f);
    if (nwin == 0) fprintf(stderr, "%s: no window in it\n", split_path);
    unsigned long unacked = 0;
    for (int i = 0; i < nusers; i++) unacked += users[i].count;
    double secs = (double)(t_end - t_start) / 1e9;
    printf("sent %lu texts in %.1f s (%.0f/s), acked %lu, pushed %lu; %d windows, %.1f s in all, "
           "from %.1f s to %.1f s of the run\n", sent, secs, (double)sent / secs, acks, pushes, nwin, inside,
           nwin ? (double)(win[0][0] - t_start) / 1e9 : 0.0, nwin ? (double)(win[nwin - 1][1] - t_start) / 1e9 : 0.0);
    split_line("ack ", 0, 0);
    split_line("ack ", 0, 1);
    split_line("push", 1, 0);
    split_line("push", 1, 1);
    unsigned long unpushed = acks > pushes ? acks - pushes : 0;
    unsigned long failed = errors_seen + odd_frames + closed_early + unacked + unpushed +
                           (unsigned long)(nusers - logged_in);
    printf("failed: %lu (refused %lu, unexpected frames %lu, closed connections %lu, missing acks %lu, "
           "missing pushes %lu, failed logins/connects %d)\n", failed, errors_seen, odd_frames, closed_early,
           unacked, unpushed, nusers - logged_in);
}

static void drain_check(uv_timer_t *t) {
    static int waited;
    unsigned long unacked = 0;
    for (int i = 0; i < nusers; i++) unacked += users[i].closed ? 0 : users[i].count;
    if ((unacked > 0 || pushes < acks) && ++waited < 500) return; /* 10 s */
    measuring = 0;
    split_report();
    fflush(stdout);
    exit(0);
}

/* --split: stop sending, give what is in flight time to arrive, then report. */
static void split_stop(void) {
    static uv_timer_t drain;
    t_end = now_ns();
    done = 1;
    uv_timer_stop(&tick);
    uv_timer_init(loop, &drain);
    uv_timer_start(&drain, drain_check, 20, 20);
}

static void stop_all(uv_timer_t *t) {
    if (split_path) {
        split_stop();
        return;
    }
    t_end = now_ns();
    measuring = 0;
    done = 1;
    report();
    fflush(stdout);
    exit(0);
}

/* Fixed-rate mode: every millisecond, the messages the rate owes go out round-robin. */
static void on_tick(uv_timer_t *t) {
    static uint64_t last;
    if (split_path) { /* owed by the clock, also when a tick comes late on a busy machine */
        uint64_t now = now_ns();
        rate_credit += last ? rate * (double)(now - last) / 1e9 : rate / 1000.0;
        last = now;
    } else {
        rate_credit += rate / 1000.0;
    }
    while (rate_credit >= 1) {
        user *u = group_mode ? &users[senders[rate_cursor++ % nsenders]]
                             : &users[(rate_cursor++ % (nusers / 2)) * 2];
        if (!u->closed && u->logged_in) send_text(u);
        rate_credit -= 1;
    }
}

static void heartbeat(uv_timer_t *t) {
    for (int i = 0; i < nusers; i++)
        if (users[i].logged_in && !users[i].closed) {
            char body[64];
            int n = snprintf(body, sizeof body, "{\"fromuid\":%ld}", users[i].uid);
            send_frame(&users[i], 1023, body, (size_t)n);
        }
}

/* The end of --warmup: from now on acks, pushes and latencies count. */
static void start_measuring(uv_timer_t *t) {
    t_start = now_ns();
    measuring = 1;
}

static void start_load(void) {
    static uv_timer_t warm;
    t_start = now_ns();
    measuring = warmup_ms == 0;
    if (warmup_ms > 0) {
        uv_timer_init(loop, &warm);
        uv_timer_start(&warm, start_measuring, (uint64_t)warmup_ms, 0);
    }
    uv_timer_init(loop, &stopper);
    uv_timer_start(&stopper, stop_all, (uint64_t)seconds * 1000 + (uint64_t)warmup_ms, 0);
    if (strcmp(mode, "idle") == 0) {
        printf("idle: %d connections logged in; holding for %d s\n", logged_in, seconds);
        fflush(stdout);
        uv_timer_init(loop, &beat);
        uv_timer_start(&beat, heartbeat, 20000, 20000);
        return;
    }
    if (split_path) {
        printf("load started\n");
        fflush(stdout);
    }
    if (rate > 0) {
        uv_timer_init(loop, &tick);
        uv_timer_start(&tick, on_tick, 1, 1);
        return;
    }
    for (int i = 0; i < nusers; i++) {
        user *u = &users[i];
        if (group_mode ? u->peer != 1 : strcmp(mode, "echo") != 0 && i % 2 == 1) continue; /* receivers */
        for (int k = 0; k < window; k++) {
            if (strcmp(mode, "echo") == 0) send_echo(u); else send_text(u);
        }
    }
}

static void wait_logins(uv_timer_t *t) {
    static int waited;
    if (logged_in + login_failed + conn_failed >= nusers || ++waited > 6000) {
        uv_timer_stop(t);
        if (logged_in < nusers)
            fprintf(stderr, "%d of %d users logged in; going on with them\n", logged_in, nusers);
        /* a moment for the servers to settle (presence writes) before measuring */
        static uv_timer_t settle;
        uv_timer_init(loop, &settle);
        uv_timer_start(&settle, (uv_timer_cb)start_load, 500, 0);
    }
}

static void parse_addrs(const char *list, struct sockaddr_in *out, int *n, int max, int with_port) {
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && *n < max; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        int port = 0;
        if (with_port && colon) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        uv_ip4_addr(tok, port, &out[(*n)++]);
    }
    free(copy);
}

static void load_users(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    int cap = 1024;
    users = calloc((size_t)cap, sizeof *users);
    user u;
    memset(&u, 0, sizeof u);
    while (fscanf(f, "%ld %79s %ld %ld %d", &u.uid, u.token, &u.peer, &u.thread, &u.server) == 5) {
        if (nusers == cap) {
            cap *= 2;
            users = realloc(users, (size_t)cap * sizeof *users);
        }
        users[nusers] = u;
        memset(&users[nusers].tcp, 0, sizeof u.tcp);
        nusers++;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: chat_load msg|idle|echo USERS_FILE|- SERVERS [options]\n");
        return 2;
    }
    mode = argv[1];
    group_mode = strcmp(mode, "group") == 0;
    parse_addrs(argv[3], servers, &nservers, MAX_SERVERS, 1);
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc) conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--id") && i + 1 < argc) echo_id = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--split") && i + 1 < argc) split_path = argv[++i];
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc) trace_path = argv[++i];
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ws")) ws_mode = 1;
        else if (!strcmp(argv[i], "--sources") && i + 1 < argc)
            parse_addrs(argv[++i], sources, &nsources, MAX_SOURCES, 0);
    }
    if (warmup_ms < 0 || (warmup_ms > 0 && split_path)) {
        fprintf(stderr, "--warmup: milliseconds >= 0, not with --split\n");
        return 2;
    }
    if (split_path && (rate <= 0 || strcmp(mode, "msg") != 0)) {
        fprintf(stderr, "--split needs msg mode and --rate\n");
        return 2;
    }
    loop = uv_default_loop();
    if (strcmp(mode, "echo") == 0) {
        nusers = conns;
        users = calloc((size_t)nusers, sizeof *users);
    } else {
        load_users(argv[2]);
    }
    if (group_mode) {
        senders = calloc((size_t)nusers + 1, sizeof *senders);
        for (int i = 0; i < nusers; i++)
            if (users[i].peer == 1) senders[nsenders++] = i;
        if (nsenders == 0) {
            fprintf(stderr, "no sender in %s\n", argv[2]);
            return 2;
        }
    }
    static uv_timer_t connector, waiter;
    uv_timer_init(loop, &connector);
    uv_timer_start(&connector, connect_some, 0, 10);
    uv_timer_init(loop, &waiter);
    uv_timer_start(&waiter, wait_logins, 10, 10);
    return uv_run(loop, UV_RUN_DEFAULT);
}
