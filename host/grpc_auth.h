/* grpc_auth.h: who may call whom between roles. Every call carries the shared secret
 * (metadata "authorization: Bearer <grpc.secret>") and every server refuses a call without
 * it (UNAUTHENTICATED); optionally the links are TLS (grpc.tls: certificate, key and the
 * CA that signed the peers'), for roles on different hosts. */
#ifndef CHATHOST_GRPC_AUTH_H
#define CHATHOST_GRPC_AUTH_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "app.h"

typedef struct grpc_auth {
    char *header;           /* "Bearer <secret>", or NULL: calls are not authenticated */
    size_t header_len;
    char *cert, *key, *ca;  /* PEM contents of grpc.tls.*_file, or NULL */
    char *target_name;      /* grpc.tls.target_name: the name the peers' certificate has */
    char error[400];        /* why the TLS files could not be read: no link may start */
} grpc_auth;

/* Reads grpc.secret and grpc.tls.* from the config. A TLS file that cannot be read leaves
 * its reason in a->error (servers and calls then fail with it: never a silent fall back to
 * plain text). */
void grpc_auth_load(struct app *app, grpc_auth *a);
void grpc_auth_free(grpc_auth *a);

/* 1 when md carries the secret (or no secret is configured), else 0. Constant time in the
 * secret's bytes. */
int grpc_auth_check(const grpc_auth *a, const grpc_metadata_array *md);

/* Credentials for a server / a channel: TLS when grpc.tls names a certificate (server) or
 * a CA (client), else insecure. The caller releases them. */
grpc_server_credentials *grpc_auth_server_creds(const grpc_auth *a);
grpc_channel_credentials *grpc_auth_channel_creds(const grpc_auth *a);

#endif
