/* fuzz/http_fuzz.c: libFuzzer target for the HTTP request reader (host/http_parse.c).
 * The input is fed in pieces whose sizes come from the input itself, requests after
 * requests (pipelining), with small limits so every limit is reached: the reader must
 * never exceed a limit, never overrun, and end each request as done, more or an error
 * with a status. `make fuzz` runs it. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"

/* libFuzzer's entry point; declared for -Wmissing-prototypes (libFuzzer has no header). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    hreq_limits limits = {.max_url = 256, .max_header = 1024, .max_body = 2048, .max_headers = 16};
    hreq r;
    hreq_init(&r, &limits);
    size_t piece = (size_t)(data[0] % 32) + 1, off = 1;
    while (off < size) {
        size_t n = size - off < piece ? size - off : piece, used;
        enum hreq_status st = hreq_feed(&r, (const char *)data + off, n, &used);
        assert(used <= n);
        off += used;
        if (st == HREQ_ERROR) {
            assert(r.err_status >= 400 && r.err_status <= 599 && r.err_msg);
            break;
        }
        if (st == HREQ_DONE) {
            assert(r.url_len <= limits.max_url && r.hlen <= limits.max_header);
            assert(r.body_len <= limits.max_body && r.nheaders <= limits.max_headers);
            hreq_keep_alive(&r);
            hreq_reset(&r);
            continue;
        }
        if (used < n) break; /* paused without a request: nothing more to read */
    }
    hreq_eof(&r);
    hreq_free(&r);
    return 0;
}
