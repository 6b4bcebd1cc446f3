/* http_parse.c: the request accumulator around http_parser (see http_parse.h). The data
 * callbacks fire several times per element when input arrives in pieces, so everything is
 * appended; a limit crossed in a callback stops the parser with the status to answer. */
#include "http_parse.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"

static hreq *req_of(http_parser *p) { return p->data; }

static int fail(hreq *r, int status, const char *msg) {
    r->err_status = status;
    r->err_msg = msg;
    return 1; /* non-zero stops http_parser with HPE_CB_* */
}

static int hbuf_append(hreq *r, const char *at, size_t len, int lower) {
    if (r->hlen + len > r->limits.max_header)
        return fail(r, 431, "request header too large");
    r->hbuf = buf_grow(r->hbuf, &r->hcap, r->hlen + len);
    for (size_t i = 0; i < len; i++)
        r->hbuf[r->hlen + i] = lower ? (char)tolower((unsigned char)at[i]) : at[i];
    r->hlen += len;
    return 0;
}

/* Chunk data must be followed by CRLF; http_parser built without HTTP_PARSER_STRICT (as
 * Debian's is) takes any two bytes there. Checks the CRLF bytes still due from p on. */
static int check_chunk_tail(hreq *r, const char *p, const char *end) {
    for (; r->chunk_tail > 0 && p < end; p++, r->chunk_tail--)
        if (*p != "\r\n"[2 - r->chunk_tail]) return fail(r, 400, "chunk data not followed by CRLF");
    return 0;
}

/* Obsolete line folding (a header line starting with SP or HT, RFC 9112 §5.2) is joined
 * into the value by a non-strict http_parser: refused, as RFC 9112 allows a server to. The
 * scan carries the last byte across feeds, so a fold split between reads is seen too. */
static int scan_head(hreq *r, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (r->head_prev == '\n' && (p[i] == ' ' || p[i] == '\t'))
            return fail(r, 400, "obsolete line folding in the headers");
        r->head_prev = p[i];
    }
    return 0;
}

static int on_message_begin(http_parser *p) {
    req_of(p)->started = 1;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    hreq *r = req_of(p);
    if (r->url_len + len > r->limits.max_url) return fail(r, 414, "request target too long");
    r->url_len += len;
    return hbuf_append(r, at, len, 0);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
    hreq *r = req_of(p);
    if (r->nheaders == 0 || r->in_value) { /* a new header starts */
        if (r->nheaders >= r->limits.max_headers) return fail(r, 431, "too many headers");
        if (r->nheaders == r->cap_headers) {
            r->cap_headers = r->cap_headers ? r->cap_headers * 2 : 16;
            r->headers = xrealloc(r->headers, r->cap_headers * sizeof *r->headers);
        }
        hreq_header *h = &r->headers[r->nheaders++];
        memset(h, 0, sizeof *h);
        h->name = r->hlen;
        r->in_value = 0;
    }
    r->headers[r->nheaders - 1].name_len += len;
    return hbuf_append(r, at, len, 1);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    hreq *r = req_of(p);
    if (r->nheaders == 0) return 0;
    hreq_header *h = &r->headers[r->nheaders - 1];
    if (!r->in_value) {
        h->value = r->hlen;
        r->in_value = 1;
    }
    h->value_len += len;
    return hbuf_append(r, at, len, 0);
}

static int on_headers_complete(http_parser *p) {
    hreq *r = req_of(p);
    /* here 1 would mean "no body": an error must be another value */
    if (p->http_major != 1) { /* http_parser takes any digit; HTTP/1.x minor > 1 is 1.1 */
        fail(r, 505, "HTTP version not supported");
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > r->limits.max_body) {
        fail(r, 413, "request body too large");
        return -1;
    }
    size_t n;
    const char *expect = hreq_header_value(r, "expect", &n);
    r->expect_continue = expect && n == 12 && strncasecmp(expect, "100-continue", 12) == 0;
    r->head_done = 1;
    http_parser_pause(p, 1); /* hreq_feed scans the header bytes for folds, then resumes */
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    hreq *r = req_of(p);
    if (r->body_len + len > r->limits.max_body) return fail(r, 413, "request body too large");
    r->body = buf_grow(r->body, &r->body_cap, r->body_len + len + 1); /* + a NUL */
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) { /* the end of a chunk's data */
        r->chunk_tail = 2;
        return check_chunk_tail(r, at + len, r->feed_end);
    }
    return 0;
}

static int on_message_complete(http_parser *p) {
    hreq *r = req_of(p);
    r->complete = 1;
    http_parser_pause(p, 1); /* one request at a time: the rest waits in the buffer */
    return 0;
}

void hreq_init(hreq *r, const hreq_limits *limits) {
    memset(r, 0, sizeof *r);
    r->limits = *limits;
    http_parser_settings_init(&r->settings);
    r->settings.on_message_begin = on_message_begin;
    r->settings.on_url = on_url;
    r->settings.on_header_field = on_header_field;
    r->settings.on_header_value = on_header_value;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

void hreq_free(hreq *r) {
    free(r->hbuf);
    free(r->headers);
    free(r->body);
}

void hreq_reset(hreq *r) {
    r->hlen = r->url_len = r->body_len = 0;
    r->nheaders = 0;
    r->in_value = r->started = r->complete = r->expect_continue = 0;
    r->head_done = r->chunk_tail = 0;
    r->head_prev = 0;
    r->err_status = 0;
    r->err_msg = NULL;
    /* keep big buffers only while they are moderate */
    if (r->body_cap > (1 << 20)) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
    }
    if (r->parser.http_errno == HPE_PAUSED) http_parser_pause(&r->parser, 0);
}

static enum hreq_status parse_error(hreq *r) {
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (r->err_status) return HREQ_ERROR; /* one of our limits */
    if (e == HPE_INVALID_METHOD) {
        r->err_status = 501;
        r->err_msg = "method not implemented";
    } else if (e == HPE_HEADER_OVERFLOW) {
        r->err_status = 431;
        r->err_msg = "request header too large";
    } else {
        r->err_status = 400;
        r->err_msg = http_errno_description(e);
    }
    return HREQ_ERROR;
}

enum hreq_status hreq_feed(hreq *r, const char *data, size_t len, size_t *used) {
    *used = 0;
    if (len == 0) return r->complete ? HREQ_DONE : HREQ_MORE;
    if (check_chunk_tail(r, data, data + len)) return HREQ_ERROR;
    r->feed_end = data + len;
    int in_head = !r->head_done;
    size_t n = http_parser_execute(&r->parser, &r->settings, data, len);
    if (in_head && scan_head(r, data, n)) return HREQ_ERROR;
    if (in_head && r->head_done && HTTP_PARSER_ERRNO(&r->parser) == HPE_PAUSED) {
        http_parser_pause(&r->parser, 0); /* paused at the end of the headers: go on */
        if (n < len) n += http_parser_execute(&r->parser, &r->settings, data + n, len - n);
    }
    *used = n;
    if (r->complete) {
        if (r->body) r->body[r->body_len] = '\0';
        return HREQ_DONE;
    }
    if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK) return parse_error(r);
    if (r->parser.upgrade) {
        r->err_status = 501;
        r->err_msg = "protocol upgrade not supported";
        return HREQ_ERROR;
    }
    return HREQ_MORE;
}

enum hreq_status hreq_eof(hreq *r) {
    if (!r->started || r->complete) return HREQ_MORE;
    size_t n = http_parser_execute(&r->parser, &r->settings, NULL, 0);
    (void)n;
    if (r->complete) return HREQ_DONE;
    r->err_status = 400;
    r->err_msg = "request cut short";
    return HREQ_ERROR;
}

const char *hreq_method(const hreq *r) { return http_method_str((enum http_method)r->parser.method); }

int hreq_keep_alive(const hreq *r) { return http_should_keep_alive(&r->parser); }

const char *hreq_header_value(const hreq *r, const char *name, size_t *len) {
    size_t nl = strlen(name);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const hreq_header *h = &r->headers[i];
        if (h->name_len == nl && memcmp(r->hbuf + h->name, name, nl) == 0) {
            *len = h->value_len;
            return r->hbuf + h->value;
        }
    }
    return NULL;
}
