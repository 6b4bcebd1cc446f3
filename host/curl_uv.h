/* curl_uv.h: a libcurl multi handle driven by the role's libuv loop through libcurl's
 * multi-socket interface (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION with a uv_poll_t per
 * socket and one uv_timer_t), so transfers never block the loop. http_client.c runs
 * host.http.request on it; any other libcurl user on the loop can share the glue. */
#ifndef CHATHOST_CURL_UV_H
#define CHATHOST_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

typedef struct curl_uv curl_uv;

/* Called on the loop when a transfer ends: easy is already out of the multi handle and
 * belongs to the callee again (its CURLOPT_PRIVATE says whose it is). */
typedef void (*curl_uv_done_fn)(CURL *easy, CURLcode rc);

/* A multi handle on loop. Returns NULL when libcurl cannot make one; nothing is left
 * behind then. Set the multi's own options (connection limits) with curl_uv_multi. */
curl_uv *curl_uv_new(uv_loop_t *loop, curl_uv_done_fn done);

CURLM *curl_uv_multi(curl_uv *cu);

/* What every easy handle on the loop needs: no signals (timeouts by the loop's timer, not
 * SIGALRM) and sockets children do not inherit (libcurl opens them without CLOEXEC). */
void curl_uv_easy_defaults(CURL *easy);

/* Starts easy on cu. Returns 0, or -EINVAL when libcurl refuses it (easy is untouched and
 * still the caller's), -ESHUTDOWN after curl_uv_close. */
int curl_uv_add(curl_uv *cu, CURL *easy);

/* Stops a transfer started by curl_uv_add that has not ended (its done is never called);
 * easy is the caller's again. Safe from any loop callback, not from libcurl's callbacks. */
void curl_uv_remove(curl_uv *cu, CURL *easy);

/* Closes the multi handle (its pooled connections with it) and then frees cu once its
 * libuv handles are closed. Transfers still running must have been removed first. */
void curl_uv_close(curl_uv *cu);

#endif
