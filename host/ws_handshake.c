/* ws_handshake.c: see ws_handshake.h. */
#include "ws_handshake.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* 1 when the comma-separated header value v contains the token tok (without case). */
static int has_token(const char *v, size_t len, const char *tok) {
    size_t tl = strlen(tok), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < len && v[i] != ',') i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
        if (end - start == tl && strncasecmp(v + start, tok, tl) == 0) return 1;
    }
    return 0;
}

int ws_check_upgrade(const hreq *r, const char **key, size_t *key_len, const char **why) {
    size_t len;
    const char *v;
    if (strcmp(hreq_method(r), "GET") != 0) {
        *why = "a WebSocket handshake is a GET";
        return 405;
    }
    v = hreq_header_value(r, "upgrade", &len);
    if (!v || !has_token(v, len, "websocket")) {
        *why = "Upgrade: websocket expected";
        return 426;
    }
    v = hreq_header_value(r, "connection", &len);
    if (!v || !has_token(v, len, "upgrade")) {
        *why = "Connection: Upgrade expected";
        return 400;
    }
    v = hreq_header_value(r, "sec-websocket-version", &len);
    if (!v || len != 2 || memcmp(v, "13", 2) != 0) {
        *why = "Sec-WebSocket-Version: 13 expected";
        return 426;
    }
    v = hreq_header_value(r, "sec-websocket-key", &len);
    /* 16 random bytes in base64: 22 characters and "==" */
    if (!v || len != 24 || v[22] != '=' || v[23] != '=') {
        *why = "Sec-WebSocket-Key must be 16 bytes in base64";
        return 400;
    }
    *key = v;
    *key_len = len;
    return 0;
}

int ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char in[64], md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    size_t gl = sizeof WS_GUID - 1;
    if (key_len > sizeof in - gl) return -EINVAL;
    memcpy(in, key, key_len);
    memcpy(in + key_len, WS_GUID, gl);
    if (EVP_Digest(in, key_len + gl, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < 20; i += 3) { /* 20 bytes: six groups of 3, then 2 and one '=' */
        uint32_t n = (uint32_t)md[i] << 16;
        if (i + 1 < 20) n |= (uint32_t)md[i + 1] << 8;
        if (i + 2 < 20) n |= md[i + 2];
        out[o++] = b64[(n >> 18) & 63];
        out[o++] = b64[(n >> 12) & 63];
        out[o++] = i + 1 < 20 ? b64[(n >> 6) & 63] : '=';
        out[o++] = i + 2 < 20 ? b64[n & 63] : '=';
    }
    out[o] = '\0';
    return 0;
}

int ws_origin_allowed(const char *origin, size_t len, const char *const *origins, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(origins[i], "*") == 0) return 1;
        if (origin && strlen(origins[i]) == len && strncasecmp(origins[i], origin, len) == 0)
            return 1;
    }
    return 0;
}

int ws_utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i - 1 < need) return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += need + 1;
    }
    return 1;
}

int ws_envelope_plain(const char *t, size_t len, uint16_t *id, const char **body, size_t *blen) {
    if (len < 6 + 1 + 8 + 2 + 1 || memcmp(t, "{\"id\":", 6) != 0 || t[len - 1] != '}') return 0;
    size_t i = 6;
    unsigned long v = 0;
    while (i < len && i < 6 + 5 && t[i] >= '0' && t[i] <= '9') v = v * 10 + (unsigned long)(t[i++] - '0');
    if (i == 6 || (t[6] == '0' && i > 7) || v > 65535) return 0;
    if (len - i < 8 + 2 + 1 || memcmp(t + i, ",\"body\":", 8) != 0 || t[i + 8] != '{') return 0;
    *id = (uint16_t)v;
    *body = t + i + 8;
    *blen = len - 1 - (i + 8);
    return 1;
}
