/* grpc_auth.c: the shared secret and the TLS credentials of the gRPC links (grpc_auth.h).
 * grpc_server.c checks calls with it, grpc_client.c sends the secret and dials with it. */
#include "grpc_auth.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

#define AUTH_KEY "authorization"
#define PEM_MAX (1 << 20)

/* The whole file as a NUL-terminated string, or NULL with the reason in err. */
static char *read_pem(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *data = xmalloc(PEM_MAX + 1);
    size_t n = data ? fread(data, 1, PEM_MAX + 1, f) : 0;
    fclose(f);
    if (!data || n == 0 || n > PEM_MAX) {
        snprintf(err, errlen, "%s is empty or larger than %d bytes", path, PEM_MAX);
        free(data);
        return NULL;
    }
    data[n] = '\0';
    return data;
}

/* Loads grpc.tls.<key> into *out when set; keeps the first error. */
static void load_file(struct app *app, grpc_auth *a, const char *key, char **out) {
    char path[64];
    snprintf(path, sizeof path, "grpc.tls.%s", key);
    char *file = cfg_str(app, path, NULL);
    if (!file) return;
    char err[256];
    *out = read_pem(file, err, sizeof err);
    if (!*out && !a->error[0]) snprintf(a->error, sizeof a->error, "grpc.tls.%s: %s", key, err);
    free(file);
}

void grpc_auth_load(struct app *app, grpc_auth *a) {
    memset(a, 0, sizeof *a);
    char *secret = cfg_str(app, "grpc.secret", NULL);
    if (secret && secret[0]) {
        a->header_len = strlen("Bearer ") + strlen(secret);
        a->header = xmalloc(a->header_len + 1);
        snprintf(a->header, a->header_len + 1, "Bearer %s", secret);
    }
    if (secret) sodium_memzero(secret, strlen(secret));
    free(secret);
    load_file(app, a, "cert_file", &a->cert);
    load_file(app, a, "key_file", &a->key);
    load_file(app, a, "ca_file", &a->ca);
    a->target_name = cfg_str(app, "grpc.tls.target_name", NULL);
}

static void free_secret(char *s, size_t len) {
    if (!s) return;
    sodium_memzero(s, len);
    free(s);
}

void grpc_auth_free(grpc_auth *a) {
    free_secret(a->header, a->header_len);
    free_secret(a->key, a->key ? strlen(a->key) : 0);
    free(a->cert);
    free(a->ca);
    free(a->target_name);
    memset(a, 0, sizeof *a);
}

int grpc_auth_check(const grpc_auth *a, const grpc_metadata_array *md) {
    if (!a->header) return 1;
    for (size_t i = 0; i < md->count; i++) {
        grpc_slice k = md->metadata[i].key, v = md->metadata[i].value;
        if (GRPC_SLICE_LENGTH(k) != strlen(AUTH_KEY) ||
            memcmp(GRPC_SLICE_START_PTR(k), AUTH_KEY, strlen(AUTH_KEY)) != 0)
            continue;
        return GRPC_SLICE_LENGTH(v) == a->header_len &&
               sodium_memcmp(GRPC_SLICE_START_PTR(v), a->header, a->header_len) == 0;
    }
    return 0;
}

grpc_server_credentials *grpc_auth_server_creds(const grpc_auth *a) {
    if (!a->cert || !a->key) return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {a->key, a->cert};
    /* with a CA, the clients must show a certificate it signed (mutual TLS) */
    return grpc_ssl_server_credentials_create_ex(
        a->ca, &pair, 1,
        a->ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
}

grpc_channel_credentials *grpc_auth_channel_creds(const grpc_auth *a) {
    if (!a->ca) return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {a->key, a->cert};
    return grpc_ssl_credentials_create(a->ca, a->cert && a->key ? &pair : NULL, NULL, NULL);
}
