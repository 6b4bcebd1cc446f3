/* ws_handshake.h: the host's part of a WebSocket server (RFC 6455) that wslay leaves to
 * it: the opening handshake's checks and Sec-WebSocket-Accept (§4.2), the Origin
 * allow-list (§10.2) and the UTF-8 check of text messages (§8.1). Pure functions over
 * buffers (no sockets, no Lua), shared by the chat server and the fuzz target. */
#ifndef CHATHOST_WS_HANDSHAKE_H
#define CHATHOST_WS_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"

#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* Checks that the complete request r asks for a WebSocket upgrade (GET, Upgrade:
 * websocket, Connection: upgrade, Sec-WebSocket-Version: 13, a 16-byte base64 key).
 * Returns 0 and the key in *key, its length in *key_len, or the HTTP status to answer (400, 405, 426)
 * with a sentence in *why. */
int ws_check_upgrade(const hreq *r, const char **key, size_t *key_len, const char **why);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + the RFC's GUID)), NUL-terminated
 * into out. 0, or -EINVAL when the digest cannot be computed. */
int ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]);

/* 1 when origin (len bytes, NULL: no Origin header) is in the allow-list origins (n
 * entries, compared without case; the entry "*" allows any origin, also none). */
int ws_origin_allowed(const char *origin, size_t len, const char *const *origins, size_t n);

/* 1 when p[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF), else 0. */
int ws_utf8_valid(const uint8_t *p, size_t n);

/* The envelope as our clients write it, {"id":<digits>,"body":{...}} with no spaces
 * (docs/protocol.md §5.5): 1 with the id (0..65535) in *id and the body's bytes (from
 * its '{' to before the envelope's last '}', inside t) in *body, *blen; 0 for any other
 * spelling, which the caller decodes as JSON. The body is not checked here. */
int ws_envelope_plain(const char *t, size_t len, uint16_t *id, const char **body, size_t *blen);

#endif
