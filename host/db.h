/* db.h: what the parts of host.db share. db.c is the Lua side (arguments, results, objects),
 * db_pool.c the loop side (acquisition, completions, transaction leases, shutdown),
 * db_worker.c the thread side (one blocking MariaDB connection per worker thread). Not a
 * public header: the rest of the host sees db_open, db_shutdown and db_free only. */
#ifndef CHATHOST_DB_H
#define CHATHOST_DB_H

#include <mysql.h>
#include <stdint.h>

#include "buf.h"
#include "sched.h"

/* One pool's settings: the `mysql` section of the config, or host.db.new's fields. */
typedef struct db_config {
    char *host, *user, *password, *database; /* password may be NULL */
    unsigned port;
    int pool_size;
    unsigned connect_timeout_s, read_timeout_s, write_timeout_s;
    uint64_t acquire_timeout_ms;
    size_t max_waiting;
    int stmt_cache;
    uint64_t ping_idle_ms;
    size_t max_result_bytes; /* a query whose rows take more fails (use LIMIT) */
    char *nodes;             /* "host:port,host:port" (mysql.nodes) or NULL: host and port */
    char *policy;            /* "prefer_first" (NULL too) or "spread" */
    uint64_t node_retry_ms;  /* a dead node is tried again after this long */
} db_config;

typedef enum db_policy {
    DB_POLICY_PREFER_FIRST, /* every connection to the first live node of the list */
    DB_POLICY_SPREAD        /* worker i to node i % n first, the next live ones after it */
} db_policy;

/* A server of the pool (one, or the nodes of a Galera cluster). Shared by the worker
 * threads: the fields after port are under the pool's nodes_mu. */
typedef struct db_node {
    char *host;
    unsigned port;
    uint64_t dead_since; /* when a worker last found it dead (ms, uv_hrtime); 0: never */
    uint64_t dead_until; /* not tried before this (unless every node is dead) */
    int conns;           /* workers connected to it now */
    unsigned long failures;
} db_node;

typedef enum db_param_kind {
    DB_PARAM_NULL,
    DB_PARAM_INT, /* bound as LONGLONG */
    DB_PARAM_DOUBLE,
    DB_PARAM_STRING, /* bound as STRING with its length */
    DB_PARAM_BOOL    /* bound as TINY 0/1 */
} db_param_kind;

typedef struct db_param {
    db_param_kind kind;
    signed char flag;
    long long i;
    double d;
    const char *s;
    unsigned long len;
} db_param;

typedef enum db_job_kind {
    DB_JOB_QUERY,
    DB_JOB_EXEC,
    DB_JOB_BEGIN,
    DB_JOB_COMMIT,
    DB_JOB_ROLLBACK
} db_job_kind;

/* Result buffer layout (host byte order): u32 column count, then per column u32 length and
 * the name; then per row and column one tag byte, followed by a double for NUMBER or u32
 * length and the bytes for STRING. */
enum { DB_CELL_NULL, DB_CELL_NUMBER, DB_CELL_STRING };

struct db_pool;
struct db_worker;
struct db_tx;
struct db_pool_handle;

/* One unit of work. The loop owns it except between db_worker_post and its appearance in
 * the pool's completion queue, when only the worker touches it. */
typedef struct db_job {
    list_node link; /* pool->waiters (loop) or pool->done (under done_mu) */
    db_job_kind kind;
    struct db_pool *pool;
    struct db_worker *worker;
    struct db_tx *tx; /* the transaction the job belongs to, or NULL */
    int start_tx;     /* the transaction's first job: START TRANSACTION before it */
    task_t *task;     /* resumed with the result; NULL once the task is cancelled */
    int queued;       /* in pool->waiters */
    uint64_t queued_at;
    const char *sql;
    size_t sql_len;
    int nparams;
    db_param *params;
    /* written by the worker */
    int failed;
    unsigned err_no; /* MySQL error number, 0 when there is none */
    char err[512];
    unsigned long long affected, insert_id;
    buf_t result; /* DB_JOB_QUERY: encoded rows */
    uint32_t nrows;
    unsigned reconnected : 1; /* the worker reconnected a lost connection for this job */
    unsigned ran : 1;         /* a statement was executed (stats.queries) */
} db_job;

/* A worker thread and its connection. Fields are grouped by owner. */
typedef struct db_worker {
    struct db_pool *pool;
    /* loop thread */
    list_node idle_link; /* in pool->idle while idle */
    struct db_tx *lease; /* the transaction holding this worker */
    int running;         /* a job is in flight */
    /* shared, under mu */
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    db_job *next;
    int quit;
    /* worker thread only */
    MYSQL *conn;
    int index;             /* in pool->workers: where spread starts */
    int node;              /* the node conn is connected to; -1 when none */
    uint64_t connected_at; /* ms (uv_hrtime) */
    int broken;            /* the connection was lost: reconnect before the next job */
    int tx_over;           /* the server ended the transaction under way (a statement's
                              failure: a deadlock victim, say): its error, for what follows */
    unsigned tx_over_errno;
    char tx_over_err[512];
    int ever_connected;
    uint64_t last_used_ms;
    list_node stmts; /* prepared statement cache, least recently used first */
    int nstmts;
} db_worker;

typedef struct db_pool db_pool;

struct db_pool {
    struct app *app;
    list_node all_link;            /* app->db_pools */
    tracked track;                 /* pools from host.db.new: "mysql pool" */
    struct db_pool_handle *handle; /* the Lua object of a host.db.new pool, while alive */
    db_config cfg;
    db_worker *workers;
    int size; /* threads running */
    list_node idle;
    int nidle;
    list_node waiters; /* FIFO of queued jobs */
    size_t nwaiting;
    uv_timer_t timer; /* expires waiters after acquire_timeout_ms */
    uv_async_t async; /* workers: "the completion queue is not empty" */
    uv_mutex_t done_mu;
    list_node done;            /* completion queue, under done_mu */
    int async_closed;          /* under done_mu: workers must not signal any more */
    const char *closed_reason; /* non-NULL once closing: new work is refused with it */
    int finishing;             /* handles are closing */
    int handles_open;
    int joined; /* the threads have ended */
    uint64_t last_busy_warning;
    unsigned long queries, errors, busy_rejections, reconnects;
    db_node *nodes; /* at least one */
    int nnodes;
    db_policy policy;
    uv_mutex_t nodes_mu; /* the nodes' state, shared by the workers */
};

struct db_pool_handle {
    db_pool *pool; /* valid while the handle lives: the pool is freed after it */
};

/* A transaction: holds its worker from BEGIN until COMMIT/ROLLBACK has run. */
typedef struct db_tx {
    tracked track; /* "mysql transaction" while it holds a worker */
    db_pool *pool;
    db_worker *worker; /* NULL while BEGIN waits for a worker */
    struct db_tx_handle *handle;
    int ended;     /* no statement may run any more */
    int finishing; /* COMMIT or ROLLBACK is posted */
    int unstarted; /* leased at once (db_tx_begin): its first job starts it on the server */
} db_tx;

typedef struct db_tx_handle {
    db_tx *tx; /* NULL once the transaction is over */
} db_tx_handle;

/* ---- db_pool.c (loop thread) ---------------------------------------------------------- */

db_job *db_job_new(db_job_kind kind);
void db_job_free(db_job *j);
void db_config_free(db_config *c);

/* A running pool that now owns cfg, or NULL when no worker thread could start (cfg is
 * freed then). */
db_pool *db_pool_new(struct app *app, db_config *cfg);

/* Refuses new work with nil, why from now on and fails every waiter the same way; running
 * jobs and transactions finish (a transaction's further statements are refused), then the
 * handles close and the threads end. Idempotent. */
void db_pool_close(db_pool *p, const char *why);

/* Registers p as a host resource ("mysql pool"): closed by the harness or at shutdown. */
void db_pool_track(db_pool *p);

/* The pool's Lua object is being collected: closes p; p is freed once its threads ended. */
void db_pool_drop_handle(db_pool *p);

/* Runs j on an idle worker or queues it for t, then suspends t: returns lua_yield's value.
 * When p refuses the work (closed, busy), frees j and returns nil, why pushed on L. */
int db_pool_submit(lua_State *L, db_pool *p, db_job *j, task_t *t);

/* A transaction on p: with an idle worker, leased at once (its first job starts it on the
 * server) and a tx handle pushed without yielding (returns 1); else a BEGIN job through
 * db_pool_submit, t gets a tx handle or nil, err, errno. */
int db_tx_begin(lua_State *L, db_pool *p, task_t *t);

/* Runs statement j on tx's worker (which must be free) for t, or pushes nil, why when the
 * pool is closing. Returns like db_pool_submit. */
int db_tx_submit(lua_State *L, db_tx *tx, db_job *j, task_t *t);

/* COMMIT (or ROLLBACK), then the worker back to the pool. t gets true or nil, err, errno. */
int db_tx_finish(lua_State *L, db_tx *tx, int commit, task_t *t);

/* The task holding tx is gone: no statement may run any more; the worker rolls back as
 * soon as it is free, then returns to the pool. Idempotent. */
void db_tx_abandon(db_tx *tx);

/* Parses "host:port,host:port" (spaces around entries allowed) into *out (an array of n
 * nodes with their own host strings). Returns n >= 1 or -EINVAL (nothing allocated) when
 * an entry has no host or no port in 1..65535. */
int db_nodes_parse(const char *spec, db_node **out);

/* ---- db.c ---------------------------------------------------------------------------- */

/* Pushes what a finished job's task gets (rows, {affected, insert_id}, a tx handle, true,
 * or nil, err, errno) onto co; returns the number of values. */
int db_push_result(lua_State *co, db_job *j);
void db_push_tx(lua_State *L, db_tx *tx);

/* ---- db_worker.c --------------------------------------------------------------------- */

/* Starts w's thread for pool p. Returns 0 or a negative errno (w is unusable then). */
int db_worker_start(db_worker *w, struct db_pool *p);

/* Hands j to w's thread; w must be idle. The job comes back through p->done. */
void db_worker_post(db_worker *w, db_job *j);

/* Tells w's thread to end once its current job is done, waits for it, and closes its
 * connection and statements. */
void db_worker_stop(db_worker *w);

#endif
