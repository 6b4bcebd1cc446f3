/* modules.c: the one list of the host's C modules (see modules.h). The order is the
 * shutdown order: the scripts stop first, Redis and MySQL before the pools that serve them,
 * gRPC last (its completion-queue thread ends after every call is answered). */
#include "modules.h"

const struct host_module host_modules[] = {
    {"spawn", sched_open, NULL, NULL},
    {"timer", timer_open, NULL, NULL},
    {"http", http_server_open, NULL, NULL},
    {"scripts", scripts_open, scripts_close_all, NULL},
    {"redis", redis_open, redis_shutdown, NULL},
    {"db", db_open, db_shutdown, db_free},
    {"crypto", crypto_open, crypto_shutdown, NULL},
    {"mail", mail_open, mail_shutdown, NULL},
    {"http.request", http_client_open, http_client_shutdown, NULL},
    {"http.configure_client", http_client_configure_open, NULL, NULL},
    {"http.client_stats", http_client_stats_open, NULL, NULL},
    {"tty", tty_open, tty_shutdown, NULL},
    {"grpc", grpc_open, grpc_bridge_shutdown, NULL},
    {"proc", proc_open, NULL, NULL},
    {"fs", fs_open, NULL, NULL},
    {"file", file_open, NULL, file_release_all},
    {"tcp", tcp_client_open, NULL, NULL},
    {"metrics", metrics_open, NULL, NULL},
    {"promise", promise_open, NULL, NULL},
    {"chat", chat_open, NULL, NULL},
    {"sessions", sessions_open, NULL, NULL},
    {"frame", frame_open, NULL, NULL},
    {"json", json_open, NULL, NULL},
    {"pb", pb_open, NULL, NULL},
    {"errors", errors_open, NULL, NULL},
    {"on_stop", stop_open, NULL, NULL},
    {NULL, NULL, NULL, NULL},
};
