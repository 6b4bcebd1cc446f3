/* crypto.c: host.crypto. Random tokens and codes from libsodium, and argon2id password
 * hashing on libuv's thread pool through a workq: at most crypto.max_concurrent hashes run
 * at once (each takes crypto.argon2_memlimit_kib of memory), at most crypto.max_waiting
 * wait for a turn, none longer than crypto.wait_timeout_ms; beyond: nil, "busy". */
#include <lauxlib.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "modules.h"
#include "workq.h"

struct crypto_pool {
    workq q;
    unsigned long long opslimit;
    size_t memlimit;
    unsigned long hashes, verifies;
    double cpu_seconds; /* thread CPU spent hashing, for the share of a login it costs */
};

typedef struct hash_job {
    workq_job base;
    struct crypto_pool *pool;
    int verify;
    char *password;
    size_t password_len;
    char hash[crypto_pwhash_STRBYTES];
    int rc;
    double cpu_seconds;
} hash_job;

static struct crypto_pool *pool_get(struct app *app) {
    if (app->crypto) return app->crypto;
    struct crypto_pool *p = xcalloc(1, sizeof *p);
    workq_init(&p->q, app, (int)cfg_int(app, "crypto.max_concurrent", 2),
               (size_t)cfg_int(app, "crypto.max_waiting", 1000),
               (uint64_t)cfg_int(app, "crypto.wait_timeout_ms", 5000));
    p->opslimit = (unsigned long long)cfg_int(app, "crypto.argon2_opslimit", 2);
    p->memlimit = (size_t)cfg_int(app, "crypto.argon2_memlimit_kib", 19456) * 1024;
    app->crypto = p;
    return p;
}

static void job_release(workq_job *base) {
    hash_job *j = (hash_job *)base;
    if (j->password) {
        sodium_memzero(j->password, j->password_len);
        free(j->password);
    }
    sodium_memzero(j->hash, sizeof j->hash);
    free(j);
}

/* On a pool thread. */
static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_run(workq_job *base) {
    hash_job *j = (hash_job *)base;
    struct crypto_pool *p = j->pool;
    double t0 = thread_cpu();
    if (j->verify)
        j->rc = crypto_pwhash_str_verify(j->hash, j->password, j->password_len);
    else
        j->rc = crypto_pwhash_str(j->hash, j->password, j->password_len, p->opslimit, p->memlimit);
    j->cpu_seconds = thread_cpu() - t0;
}

static void job_finish(workq_job *base, task_t *t) {
    hash_job *j = (hash_job *)base;
    j->pool->cpu_seconds += j->cpu_seconds;
    if (j->verify) {
        lua_pushboolean(t->co, j->rc == 0);
        sched_resume(t, 1);
    } else if (j->rc == 0) {
        lua_pushstring(t->co, j->hash);
        sched_resume(t, 1);
    } else {
        sched_resume_error(t, "out of memory while hashing");
    }
}

static hash_job *job_new(lua_State *L, int pw_idx, int verify) {
    size_t len;
    const char *pw = luaL_checklstring(L, pw_idx, &len);
    hash_job *j = xcalloc(1, sizeof *j);
    j->pool = pool_get(app_from(L));
    j->verify = verify;
    verify ? j->pool->verifies++ : j->pool->hashes++;
    j->password = xmalloc(len + 1);
    memcpy(j->password, pw, len + 1);
    j->password_len = len;
    j->base.run = job_run;
    j->base.finish = job_finish;
    j->base.release = job_release;
    return j;
}

/* hash_password(pw) -> "$argon2id$..." | nil, err   (yields) */
static int l_hash_password(lua_State *L) {
    hash_job *j = job_new(L, 1, 0);
    return workq_submit(L, &j->pool->q, &j->base, "host.crypto.hash_password");
}

/* verify_password(hash, pw) -> true | false | nil, err   (yields) */
static int l_verify_password(lua_State *L) {
    size_t hlen;
    const char *hash = luaL_checklstring(L, 1, &hlen);
    luaL_checkstring(L, 2);
    if (hlen >= crypto_pwhash_STRBYTES || strncmp(hash, "$argon2id$", 10) != 0) {
        sched_need(L, "host.crypto.verify_password");
        lua_pushboolean(L, 0); /* not an argon2id hash: never matches */
        return 1;
    }
    hash_job *j = job_new(L, 2, 1);
    memcpy(j->hash, hash, hlen + 1);
    return workq_submit(L, &j->pool->q, &j->base, "host.crypto.verify_password");
}

/* needs_rehash(hash) -> bool: made with other cost parameters than the configured ones */
static int l_needs_rehash(lua_State *L) {
    struct crypto_pool *p = pool_get(app_from(L));
    const char *hash = luaL_checkstring(L, 1);
    lua_pushboolean(L, crypto_pwhash_str_needs_rehash(hash, p->opslimit, p->memlimit) != 0);
    return 1;
}

/* random_hex(nbytes) -> 2*nbytes hex characters from the OS's CSPRNG */
static int l_random_hex(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "must be 1..4096 bytes");
    unsigned char bin[4096];
    char hex[8193];
    randombytes_buf(bin, (size_t)n);
    sodium_bin2hex(hex, sizeof hex, bin, (size_t)n);
    lua_pushlstring(L, hex, (size_t)n * 2);
    return 1;
}

/* random_uniform(n) -> an integer in [0, n), uniformly distributed */
static int l_random_uniform(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 0xffffffffLL, 1, "must be 1..2^32-1");
    lua_pushinteger(L, (lua_Integer)randombytes_uniform((uint32_t)n));
    return 1;
}

/* constant_time_equal(a, b) -> bool, for comparing secrets (tokens, codes) */
static int l_equal(lua_State *L) {
    size_t la, lb;
    const char *a = luaL_checklstring(L, 1, &la), *b = luaL_checklstring(L, 2, &lb);
    lua_pushboolean(L, la == lb && sodium_memcmp(a, b, la) == 0);
    return 1;
}

/* hmac_sha256(key, message) -> 64 hex characters: HMAC-SHA-256 (RFC 2104) of message
   under key, for signing (the resource server's download URLs). The key of any length;
   the state holding it is wiped after use. */
static int l_hmac_sha256(lua_State *L) {
    size_t klen, mlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *msg = luaL_checklstring(L, 2, &mlen);
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char hex[2 * crypto_auth_hmacsha256_BYTES + 1];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, klen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, (unsigned long long)mlen);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    lua_pushlstring(L, hex, sizeof hex - 1);
    return 1;
}

/* ---- base64 ----------------------------------------------------------------------------
 * Table-driven, not constant time: what goes through it is file data on the resource
 * channel (issue 13), never a secret, and libsodium's constant-time decoder was a quarter
 * of the resource role's CPU. Nothing secret may be passed to these two. */

static const char B64_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#define B64_BAD 0x01000000u /* above the 24 data bits: set in a group with a bad character */

/* b64_d[k][c]: character c's 6 bits placed for position k of a 4-character group
 * (B64_BAD for anything outside the alphabet, '=' included) */
static uint32_t b64_d[4][256];

static pthread_once_t b64_once = PTHREAD_ONCE_INIT;
static int b64_avx2; /* the CPU has AVX2: b64_avx2.h takes the bulk */

static void b64_init_table(void) {
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 256; c++) b64_d[k][c] = B64_BAD;
    for (uint32_t v = 0; v < 64; v++) {
        unsigned char c = (unsigned char)B64_ALPHABET[v];
        for (int k = 0; k < 4; k++) b64_d[k][c] = v << (18 - 6 * k);
    }
#if defined(__x86_64__) && defined(__GNUC__)
    b64_avx2 = getenv("CHATHOST_NO_AVX2") == NULL && __builtin_cpu_supports("avx2");
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include "b64_avx2.h" /* the bulk, 32 characters / 24 bytes at a time */
#endif

/* Fills the table once, whichever thread asks first (file.c decodes on pool threads). */
static void b64_init(void) { pthread_once(&b64_once, b64_init_table); }

/* b64_encode(out, in, len): 4 * ceil(len / 3) characters with padding, no terminator */
static void b64_encode(char *out, const unsigned char *in, size_t len) {
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (b64_avx2) {
        size_t rounds = b64_avx2_rounds(len);
        b64_avx2_encode(out, in, rounds);
        i = rounds * 24;
        out += rounds * 32;
    }
#endif
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = B64_ALPHABET[v >> 18];
        *out++ = B64_ALPHABET[(v >> 12) & 63];
        *out++ = B64_ALPHABET[(v >> 6) & 63];
        *out++ = B64_ALPHABET[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = B64_ALPHABET[v >> 18];
        *out++ = B64_ALPHABET[(v >> 12) & 63];
        *out++ = i + 1 < len ? B64_ALPHABET[(v >> 6) & 63] : '=';
        *out++ = '=';
    }
}

/* b64_decode(out, in, len) -> bytes written | -1: strict RFC 4648 §4, the original
 * alphabet, len a multiple of 4, '=' only as the last one or two characters, the bits the
 * padding leaves over zero (one encoding per byte string, as libsodium's). out holds
 * len / 4 * 3 bytes. */
static ssize_t b64_decode(unsigned char *out, const unsigned char *in, size_t len) {
    if (len % 4) return -1;
    if (len == 0) return 0;
    size_t pad = in[len - 1] == '=' ? (in[len - 2] == '=' ? 2 : 1) : 0;
    size_t full = len - (pad ? 4 : 0); /* groups without padding */
    uint32_t bad = 0;
    unsigned char *o = out;
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (b64_avx2 && full >= 44) { /* 32 at a time while 12 more follow (its 8 bytes of room) */
        size_t bulk = (full - 12) / 32 * 32;
        if (b64_avx2_decode(o, in, bulk) != 0) return -1;
        i = bulk;
        o += bulk / 4 * 3;
    }
#endif
    for (; i < full; i += 4) {
        uint32_t v = b64_d[0][in[i]] | b64_d[1][in[i + 1]] | b64_d[2][in[i + 2]] |
                     b64_d[3][in[i + 3]];
        bad |= v;
        o[0] = (unsigned char)(v >> 16);
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
        o += 3;
    }
    if (bad & B64_BAD) return -1;
    if (pad) {
        const unsigned char *g = in + full;
        uint32_t v = b64_d[0][g[0]] | b64_d[1][g[1]] | (pad == 1 ? b64_d[2][g[2]] : 0);
        if (v & B64_BAD) return -1;
        if (v & (pad == 1 ? 0xffu : 0xffffu)) return -1; /* leftover bits not zero */
        *o++ = (unsigned char)(v >> 16);
        if (pad == 1) *o++ = (unsigned char)(v >> 8);
    }
    return o - out;
}

/* The encoder above for other modules (file.c's f:read_base64), on any thread. */
void crypto_b64_encode(char *out, const unsigned char *in, size_t len) {
    b64_init();
    b64_encode(out, in, len);
}

/* The strict decoder above for other modules (file.c's f:write_base64), on any thread. */
ssize_t crypto_b64_decode(unsigned char *out, const unsigned char *in, size_t len) {
    b64_init();
    return b64_decode(out, in, len);
}

/* base64_encode(s) -> the original base64 alphabet, with padding (RFC 4648 §4); for
 * non-secret data only (not constant time) */
static int l_base64_encode(lua_State *L) {
    size_t len;
    const char *bin = luaL_checklstring(L, 1, &len);
    size_t n = (len + 2) / 3 * 4;
    b64_init();
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (n <= LUAL_BUFFERSIZE) {
        b64_encode(luaL_prepbuffer(&b), (const unsigned char *)bin, len);
        luaL_addsize(&b, n);
        luaL_pushresult(&b);
        return 1;
    }
    char *out = xmalloc(n);
    b64_encode(out, (const unsigned char *)bin, len);
    lua_pushlstring(L, out, n);
    free(out);
    return 1;
}

/* base64_decode(s) -> bytes | nil, "invalid base64": the original alphabet, padding
 * required, nothing else (no whitespace, no trailing bytes); for non-secret data only */
static int l_base64_decode(lua_State *L) {
    size_t len;
    const char *b64 = luaL_checklstring(L, 1, &len);
    unsigned char *bin = xmalloc(len / 4 * 3 + 1);
    ssize_t n = b64_decode(bin, (const unsigned char *)b64, len);
    if (n < 0) {
        free(bin);
        lua_pushnil(L);
        lua_pushliteral(L, "invalid base64");
        return 2;
    }
    lua_pushlstring(L, (const char *)bin, (size_t)n);
    free(bin);
    return 1;
}

static int l_stats(lua_State *L) {
    struct crypto_pool *p = pool_get(app_from(L));
    workq_push_stats(L, &p->q);
    lua_pushnumber(L, (lua_Number)p->hashes);
    lua_setfield(L, -2, "hashes");
    lua_pushnumber(L, (lua_Number)p->verifies);
    lua_setfield(L, -2, "verifies");
    lua_pushnumber(L, p->cpu_seconds);
    lua_setfield(L, -2, "cpu_seconds");
    return 1;
}

void crypto_shutdown(struct app *app) {
    if (app->crypto) workq_close(&app->crypto->q);
}

int crypto_open(lua_State *L) {
    if (sodium_init() < 0) return luaL_error(L, "libsodium failed to initialise");
    b64_init();
    static const luaL_Reg fns[] = {{"hash_password", l_hash_password},
                                   {"verify_password", l_verify_password},
                                   {"needs_rehash", l_needs_rehash},
                                   {"random_hex", l_random_hex},
                                   {"random_uniform", l_random_uniform},
                                   {"constant_time_equal", l_equal},
                                   {"hmac_sha256", l_hmac_sha256},
                                   {"base64_encode", l_base64_encode},
                                   {"base64_decode", l_base64_decode},
                                   {"stats", l_stats},
                                   {NULL, NULL}};
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
