/* bench/echo_floor.c: the floor for the chat host-overhead benchmark. A minimal libuv
 * server with the chat framing ([id u16 BE][len u16 BE][body]) that answers every frame
 * with id + 1 and the same body: sockets and framing, no Lua, no JSON, no limits.
 * Build: cc -O2 -o echo_floor echo_floor.c -luv      Run: ./echo_floor PORT */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct conn {
    uv_tcp_t tcp;
    uint8_t in[131072];
    size_t len;
} conn;

static void on_closed(uv_handle_t *h) { free(h->data); }
static void on_written(uv_write_t *w, int status) { free(w); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    conn *c = h->data;
    *b = uv_buf_init((char *)c->in + c->len, (unsigned)(sizeof c->in - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0, out_len = 0;
    uint8_t *out = NULL;
    while (c->len - off >= 4) {
        uint16_t id = (uint16_t)(c->in[off] << 8 | c->in[off + 1]);
        uint16_t len = (uint16_t)(c->in[off + 2] << 8 | c->in[off + 3]);
        if (c->len - off < 4u + len) break;
        out = realloc(out, out_len + 4 + len + sizeof(uv_write_t));
        uint8_t *p = out + sizeof(uv_write_t) + out_len;
        uint16_t rid = (uint16_t)(id + 1);
        p[0] = (uint8_t)(rid >> 8);
        p[1] = (uint8_t)rid;
        memcpy(p + 2, c->in + off + 2, 2u + len);
        out_len += 4u + len;
        off += 4u + len;
    }
    memmove(c->in, c->in + off, c->len - off);
    c->len -= off;
    if (out) {
        uv_write_t *w = (uv_write_t *)out;
        uv_buf_t ob = uv_buf_init((char *)out + sizeof(uv_write_t), (unsigned)out_len);
        uv_write(w, s, &ob, 1, on_written);
    }
}

static void on_connection(uv_stream_t *l, int status) {
    conn *c = calloc(1, sizeof *c);
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
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 8098, &addr);
    uv_tcp_init(loop, &server);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) ||
        uv_listen((uv_stream_t *)&server, 4096, on_connection)) {
        fprintf(stderr, "cannot listen\n");
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
