/* http_parse.h: one HTTP/1.x request at a time from a byte stream, on top of http_parser,
 * with the host's limits. Pure: no sockets, no Lua, so it can be unit-tested and fuzzed.
 * Feed bytes with hreq_feed(); when it reports HREQ_DONE the request is complete and the
 * bytes after it stay unconsumed (pipelining); hreq_reset() prepares for the next one. */
#ifndef CHATHOST_HTTP_PARSE_H
#define CHATHOST_HTTP_PARSE_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hreq_limits {
    size_t max_url;      /* request target bytes: beyond -> 414 */
    size_t max_header;   /* request line + headers bytes: beyond -> 431 */
    size_t max_body;     /* body bytes: beyond -> 413 */
    unsigned max_headers;
} hreq_limits;

enum hreq_status {
    HREQ_MORE = 0, /* need more bytes */
    HREQ_DONE,     /* a complete request: see the fields */
    HREQ_ERROR,    /* answer err_status and close */
};

typedef struct hreq_header {
    size_t name, name_len, value, value_len; /* offsets into hreq.hbuf */
} hreq_header;

typedef struct hreq {
    http_parser parser;
    http_parser_settings settings;
    hreq_limits limits;
    /* the request being read */
    char *hbuf;          /* url, then header names and values (names lower-cased) */
    size_t hlen, hcap;
    size_t url_len;
    hreq_header *headers;
    unsigned nheaders, cap_headers;
    int in_value;        /* the last header callback was a value */
    char *body;
    size_t body_len, body_cap;
    int started;         /* a byte of this request has arrived */
    int complete;
    int expect_continue; /* "Expect: 100-continue" with an acceptable body */
    int head_done;       /* the headers are complete: the fold scan is over */
    char head_prev;      /* the last header byte scanned (a fold is LF then SP/HT) */
    int chunk_tail;      /* bytes of the CRLF after a chunk's data still to check */
    const char *feed_end; /* the end of the bytes being fed (on_body looks past a chunk) */
    int err_status;      /* HTTP status to answer on HREQ_ERROR */
    const char *err_msg;
} hreq;

void hreq_init(hreq *r, const hreq_limits *limits);
void hreq_free(hreq *r);
/* Clears the last request (keeps the buffers) before the next one. */
void hreq_reset(hreq *r);
/* Feeds up to len bytes; *used is set to the bytes consumed. */
enum hreq_status hreq_feed(hreq *r, const char *data, size_t len, size_t *used);
/* The end of the stream: HREQ_ERROR if a request was cut short, else HREQ_MORE. */
enum hreq_status hreq_eof(hreq *r);

const char *hreq_method(const hreq *r);
int hreq_keep_alive(const hreq *r);
/* The value of header name (lower-case), or NULL; *len gets its length. */
const char *hreq_header_value(const hreq *r, const char *name, size_t *len);

#endif
