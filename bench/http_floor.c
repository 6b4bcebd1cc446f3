/* bench/http_floor.c: the floor for the gate's HTTP benchmark. A minimal libuv +
 * http_parser server answering every request with the same bytes the gate sends for its
 * trivial route (status line, Date, Content-Type, Content-Length, JSON body): what the
 * kernel and HTTP parsing cost, with no Lua, no routing, no limits.
 * Build: cc -O2 -o http_floor http_floor.c -luv -lhttp_parser
 * Run:   ./http_floor PORT */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static const char BODY[] = "{\"error\":0,\"msg\":\"hello\"}";

typedef struct conn {
    uv_tcp_t tcp;
    http_parser parser;
    char buf[65536];
    char out[65536];
    size_t out_len;
} conn;

static http_parser_settings settings;
static char date[64];

static int on_complete(http_parser *p) {
    conn *c = p->data;
    int n = snprintf(c->out + c->out_len, sizeof c->out - c->out_len,
                     "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s", date, sizeof BODY - 1, BODY);
    c->out_len += (size_t)n;
    return 0;
}

static void on_closed(uv_handle_t *h) { free(h->data); }

static void on_written(uv_write_t *w, int status) { free(w); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    conn *c = h->data;
    *b = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    c->out_len = 0;
    size_t used = http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    if (used != (size_t)n) {
        uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    if (c->out_len == 0) return;
    uv_write_t *w = malloc(sizeof *w + c->out_len);
    memcpy(w + 1, c->out, c->out_len);
    uv_buf_t ob = uv_buf_init((char *)(w + 1), (unsigned)c->out_len);
    uv_write(w, s, &ob, 1, on_written);
}

static void on_connection(uv_stream_t *l, int status) {
    conn *c = calloc(1, sizeof *c);
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void tick(uv_timer_t *t) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int main(int argc, char **argv) {
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_timer_t timer;
    http_parser_settings_init(&settings);
    settings.on_message_complete = on_complete;
    uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 8099, &addr);
    uv_tcp_init(loop, &server);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) ||
        uv_listen((uv_stream_t *)&server, 511, on_connection)) {
        fprintf(stderr, "cannot listen\n");
        return 1;
    }
    uv_timer_init(loop, &timer);
    uv_timer_start(&timer, tick, 0, 1000);
    return uv_run(loop, UV_RUN_DEFAULT);
}
