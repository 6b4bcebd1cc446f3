/* tls_stream.c: TLS client sessions on memory BIOs (tls_stream.h). The socket is the
 * caller's: OpenSSL reads ciphertext from rbio (what tls_stream_feed gave) and writes to
 * wbio (what tls_stream_take hands out), so it never blocks and never touches a socket.
 * OpenSSL's error queue is per thread and libcurl shares it: each call starts with it clear
 * and leaves it clear. */
#include <arpa/inet.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tls_stream.h"

struct tls_stream {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    char *name;       /* what the certificate must name (for the errors) */
    char err[256];
};

static int is_ip(const char *s) {
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* The context of one connection: TLS 1.2 or later, the peer's certificate checked against
 * ca_file (or the system's CAs), no renegotiation. NULL with err set when ca_file fails. */
static SSL_CTX *client_ctx(const char *ca_file, char *err, size_t errsz) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errsz, "tls: cannot make a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        unsigned long e = ERR_peek_last_error();
        snprintf(err, errsz, "tls: cannot read the CA file %s: %s", ca_file ? ca_file : "(system)",
                 e ? ERR_reason_error_string(e) : "unknown error");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Contexts by CA file: loading a CA bundle is blocking file I/O (and parsing) on the loop,
 * so it happens once per file and version (its inode, size, mtime and ctime), not at
 * every connect.
 * Only the loop's thread calls this. A context in use by a connection outlives its
 * eviction (SSL_new took a reference). */
#define CTX_CACHE 8
static struct {
    char *path;   /* NULL: the system's CAs */
    int used;
    struct timespec mtime, ctime;
    off_t size;
    ino_t ino;
    SSL_CTX *ctx;
} ctx_cache[CTX_CACHE];
static unsigned ctx_clock;

static SSL_CTX *cached_ctx(const char *ca_file, char *err, size_t errsz) {
    struct stat st = {0};
    if (ca_file && stat(ca_file, &st) != 0) return client_ctx(ca_file, err, errsz); /* its error */
    int victim = 0;
    for (int i = 0; i < CTX_CACHE; i++) {
        if (!ctx_cache[i].ctx) {
            victim = i;
            break;
        }
        int same = ca_file ? (ctx_cache[i].path && strcmp(ctx_cache[i].path, ca_file) == 0 &&
                              ctx_cache[i].mtime.tv_sec == st.st_mtim.tv_sec &&
                              ctx_cache[i].mtime.tv_nsec == st.st_mtim.tv_nsec &&
                              ctx_cache[i].ctime.tv_sec == st.st_ctim.tv_sec &&
                              ctx_cache[i].ctime.tv_nsec == st.st_ctim.tv_nsec &&
                              ctx_cache[i].size == st.st_size && ctx_cache[i].ino == st.st_ino)
                           : ctx_cache[i].path == NULL;
        if (same) {
            ctx_cache[i].used = (int)++ctx_clock;
            SSL_CTX_up_ref(ctx_cache[i].ctx);
            return ctx_cache[i].ctx;
        }
        if (ctx_cache[i].used < ctx_cache[victim].used) victim = i;
    }
    SSL_CTX *ctx = client_ctx(ca_file, err, errsz);
    if (!ctx) return NULL;
    if (ctx_cache[victim].ctx) SSL_CTX_free(ctx_cache[victim].ctx);
    free(ctx_cache[victim].path);
    ctx_cache[victim].path = ca_file ? xstrdup(ca_file) : NULL;
    ctx_cache[victim].mtime = st.st_mtim;
    ctx_cache[victim].ctime = st.st_ctim;
    ctx_cache[victim].size = st.st_size;
    ctx_cache[victim].ino = st.st_ino;
    ctx_cache[victim].used = (int)++ctx_clock;
    ctx_cache[victim].ctx = ctx;
    SSL_CTX_up_ref(ctx); /* the cache's reference and the caller's */
    return ctx;
}

/* The name check (and SNI for a DNS name) of t's certificate. 0 or -1. */
static int set_peer_name(tls_stream *t) {
    if (is_ip(t->name))
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->name) == 1 ? 0 : -1;
    if (SSL_set_tlsext_host_name(t->ssl, t->name) != 1) return -1;
    return SSL_set1_host(t->ssl, t->name) == 1 ? 0 : -1;
}

tls_stream *tls_stream_client(const char *ca_file, const char *server_name, char *err,
                              size_t errsz) {
    ERR_clear_error();
    SSL_CTX *ctx = cached_ctx(ca_file, err, errsz);
    if (!ctx) {
        ERR_clear_error();
        return NULL;
    }
    tls_stream *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(server_name);
    t->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) abort(); /* out of memory, as xmalloc would */
    BIO_set_mem_eof_return(t->rbio, -1);          /* empty means "more to come", not EOF */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_connect_state(t->ssl);
    if (set_peer_name(t) != 0) {
        snprintf(err, errsz, "tls: bad server name %s", server_name);
        tls_stream_free(t);
        ERR_clear_error();
        return NULL;
    }
    return t;
}

void tls_stream_free(tls_stream *t) {
    if (!t) return;
    SSL_free(t->ssl);
    free(t->name);
    free(t);
}

void tls_stream_feed(tls_stream *t, const char *data, size_t len) {
    size_t done;
    BIO_write_ex(t->rbio, data, len, &done); /* a memory BIO takes everything or aborts */
}

/* Records the cause of the failure rc of the last SSL call: the certificate check's
 * verdict, else OpenSSL's reason. */
static void set_error(tls_stream *t, int rc) {
    unsigned long e = ERR_peek_last_error();
    long v = SSL_get_verify_result(t->ssl);
    if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && v != X509_V_OK) {
        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(t->err, sizeof t->err, "tls: certificate problem: not made out to %s",
                     t->name);
        else
            snprintf(t->err, sizeof t->err, "tls: certificate problem: %s",
                     X509_verify_cert_error_string(v));
    } else if (e) {
        const char *why = ERR_reason_error_string(e);
        snprintf(
            t->err, sizeof t->err, "tls: %s%s",
            SSL_is_init_finished(t->ssl) ? "" : "handshake failed: ", why ? why : "unknown error");
    } else {
        snprintf(t->err, sizeof t->err, "tls: failed (%d)", SSL_get_error(t->ssl, rc));
    }
    ERR_clear_error();
}

int tls_stream_handshake(tls_stream *t) {
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) return 1;
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    set_error(t, rc);
    return -1;
}

ssize_t tls_stream_read(tls_stream *t, char *out, size_t cap) {
    size_t n = 0;
    ERR_clear_error();
    int rc = SSL_read_ex(t->ssl, out, cap, &n);
    if (rc == 1) return (ssize_t)n;
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) return TLS_STREAM_CLOSED;
    set_error(t, rc);
    return -1;
}

int tls_stream_write(tls_stream *t, const char *data, size_t len) {
    size_t n = 0;
    if (len == 0) return 0; /* SSL_write_ex refuses nothing to write */
    ERR_clear_error();
    int rc = SSL_write_ex(t->ssl, data, len, &n); /* all of it: wbio never says "full" */
    if (rc == 1 && n == len) return 0;
    set_error(t, rc);
    return -1;
}

void tls_stream_close_notify(tls_stream *t) {
    if (!SSL_is_init_finished(t->ssl)) return;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: ours is queued; the peer's is not waited for */
    ERR_clear_error();
}

size_t tls_stream_pending(const tls_stream *t) { return BIO_ctrl_pending(t->wbio); }

size_t tls_stream_take(tls_stream *t, char *out, size_t cap) {
    size_t n = 0;
    if (cap > 0 && BIO_read_ex(t->wbio, out, cap, &n) != 1) n = 0;
    return n;
}

const char *tls_stream_error(const tls_stream *t) { return t->err; }
