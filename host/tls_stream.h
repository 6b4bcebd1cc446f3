/* tls_stream.h: the client side of TLS over a byte stream that its caller moves (OpenSSL
 * with memory BIOs): the caller feeds what the socket read, sends what tls_stream_take
 * gives, and reads and writes plaintext. No I/O, no blocking, no threads: host.tcp drives
 * it from its libuv callbacks (tcp_client.c). */
#ifndef CHATHOST_TLS_STREAM_H
#define CHATHOST_TLS_STREAM_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tls_stream tls_stream;

#define TLS_STREAM_CLOSED (-2) /* tls_stream_read: the peer's close_notify */

/* A TLS client for server_name: a DNS name is sent as SNI and must be in the certificate;
 * an IP address (no SNI) must be one of the certificate's IP addresses. The certificate
 * must chain to one in ca_file, or to the system's CAs when ca_file is NULL. Returns NULL
 * with the cause in err ("tls: ...", at most errsz bytes) when ca_file cannot be read. */
tls_stream *tls_stream_client(const char *ca_file, const char *server_name, char *err,
                              size_t errsz);
/* Frees t (nothing is sent: see tls_stream_close_notify). */
void tls_stream_free(tls_stream *t);

/* Hands t len bytes the socket read. */
void tls_stream_feed(tls_stream *t, const char *data, size_t len);
/* Advances the handshake: 1 when done, 0 while it needs more from the peer, -1 when it
 * failed (the cause in tls_stream_error). */
int tls_stream_handshake(tls_stream *t);
/* Decrypts up to cap bytes into out: the count, 0 when more must be fed first,
 * TLS_STREAM_CLOSED after the peer's close_notify, -1 on a failure (tls_stream_error). */
ssize_t tls_stream_read(tls_stream *t, char *out, size_t cap);
/* Encrypts len bytes (after the handshake) for tls_stream_take: 0, or -1 on a failure
 * (tls_stream_error); nothing of data is then sent. */
int tls_stream_write(tls_stream *t, const char *data, size_t len);
/* Queues our close_notify for tls_stream_take (once the handshake is done; else nothing). */
void tls_stream_close_notify(tls_stream *t);

/* Bytes waiting to be sent on the socket. */
size_t tls_stream_pending(const tls_stream *t);
/* Moves up to cap of the waiting bytes into out; returns how many. */
size_t tls_stream_take(tls_stream *t, char *out, size_t cap);

/* The last failure: "tls: <cause>" ("" before any). */
const char *tls_stream_error(const tls_stream *t);

#endif
