/* db_worker.c: the thread side of host.db. Each worker thread owns one blocking MariaDB
 * connection and its prepared statements (an LRU cache); it runs one job at a time, posted
 * by the loop (db.c), and hands it back through the pool's completion queue and uv_async_t.
 * No Lua here: rows are encoded into a compact buffer that db.c turns into tables. */
#include <errmsg.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "db.h"
#include "listen.h"
#include "log.h"

#define EXACT_INT_LIMIT (1LL << 53) /* beyond it a double loses integers: sent as a string */
#define MIN_COLUMN_BUFFER 64
#define MAX_COLUMN_BUFFER 65536 /* TEXT fits; longer values take a second fetch */

typedef struct db_stmt {
    list_node link;
    uint64_t hash;
    char *sql;
    size_t len;
    MYSQL_STMT *stmt;
} db_stmt;

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- result buffer ------------------------------------------------------------------- */

static void buf_u8(buf_t *b, uint8_t v) { buf_append(b, &v, 1); }
static void buf_u32(buf_t *b, uint32_t v) { buf_append(b, &v, sizeof v); }

static void buf_string(buf_t *b, const char *s, size_t len) {
    buf_u8(b, DB_CELL_STRING);
    buf_u32(b, (uint32_t)len);
    buf_append(b, s, len);
}

static void buf_number(buf_t *b, double d) {
    buf_u8(b, DB_CELL_NUMBER);
    buf_append(b, &d, sizeof d);
}

/* Integers are numbers while a double holds them exactly, decimal strings beyond. */
static void buf_integer(buf_t *b, long long v, int is_unsigned) {
    char s[24];
    unsigned long long u = (unsigned long long)v;
    if (is_unsigned ? u < (unsigned long long)EXACT_INT_LIMIT
                    : (v > -EXACT_INT_LIMIT && v < EXACT_INT_LIMIT)) {
        buf_number(b, is_unsigned ? (double)u : (double)v);
        return;
    }
    int n = is_unsigned ? snprintf(s, sizeof s, "%llu", u) : snprintf(s, sizeof s, "%lld", v);
    buf_string(b, s, (size_t)n);
}

/* ---- errors -------------------------------------------------------------------------- */

/* Errors after which the connection cannot be trusted: it is reconnected before reuse. */
static int is_connection_error(unsigned e) {
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == CR_SERVER_LOST_EXTENDED ||
           e == CR_COMMANDS_OUT_OF_SYNC || e == ER_CONNECTION_KILLED || e == ER_SERVER_SHUTDOWN;
}

/* Errors that say the node (not the statement) failed: the worker leaves it. 1047
 * (ER_UNKNOWN_COM_ERROR) is a Galera node that is not ready (joining, non-primary). */
static int is_node_error(unsigned e) {
    return is_connection_error(e) || e == ER_UNKNOWN_COM_ERROR || e == CR_CONNECTION_ERROR ||
           e == CR_CONN_HOST_ERROR || e == CR_SERVER_HANDSHAKE_ERR;
}

static void job_fail(db_job *j, unsigned err_no, const char *prefix, const char *msg) {
    j->failed = 1;
    j->err_no = err_no;
    snprintf(j->err, sizeof j->err, "%s%s", prefix, msg);
}

static void node_failed(db_worker *w, unsigned e, const char *why);

static void fail_conn(db_worker *w, db_job *j) {
    unsigned e = mysql_errno(w->conn);
    job_fail(j, e, "", e ? mysql_error(w->conn) : "connection error");
    node_failed(w, e, j->err);
}

static void fail_stmt(db_worker *w, db_job *j, MYSQL_STMT *st) {
    unsigned e = mysql_stmt_errno(st);
    job_fail(j, e, "", mysql_stmt_error(st));
    if (e) node_failed(w, e, j->err); /* no number: the statement's own failure */
}

/* ---- statement cache ----------------------------------------------------------------- */

static uint64_t sql_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void stmt_drop(db_worker *w, db_stmt *s) {
    list_remove(&s->link);
    mysql_stmt_close(s->stmt);
    free(s->sql);
    free(s);
    w->nstmts--;
}

static void stmt_cache_clear(db_worker *w) {
    while (!list_empty(&w->stmts))
        stmt_drop(w, LIST_ENTRY(w->stmts.next, db_stmt, link));
}

static db_stmt *stmt_find(db_worker *w, const char *sql, size_t len, uint64_t h) {
    for (list_node *n = w->stmts.prev; n != &w->stmts; n = n->prev) {
        db_stmt *s = LIST_ENTRY(n, db_stmt, link);
        if (s->hash == h && s->len == len && memcmp(s->sql, sql, len) == 0) return s;
    }
    return NULL;
}

static MYSQL_STMT *stmt_prepare(db_worker *w, db_job *j) {
    MYSQL_STMT *st = mysql_stmt_init(w->conn);
    if (!st) {
        fail_conn(w, j);
        return NULL;
    }
    if (mysql_stmt_prepare(st, j->sql, j->sql_len) != 0) {
        fail_stmt(w, j, st);
        mysql_stmt_close(st);
        return NULL;
    }
    return st;
}

/* The prepared statement for j's SQL, from the cache or newly prepared (and cached, which
 * may evict the least recently used one). NULL with j failed on error. */
static db_stmt *stmt_get(db_worker *w, db_job *j) {
    uint64_t h = sql_hash(j->sql, j->sql_len);
    db_stmt *s = stmt_find(w, j->sql, j->sql_len, h);
    if (s) {
        list_remove(&s->link);
        list_push_back(&w->stmts, &s->link);
        return s;
    }
    MYSQL_STMT *st = stmt_prepare(w, j);
    if (!st) return NULL;
    s = xcalloc(1, sizeof *s);
    s->sql = xmalloc(j->sql_len + 1);
    memcpy(s->sql, j->sql, j->sql_len + 1);
    s->len = j->sql_len;
    s->hash = h;
    s->stmt = st;
    list_push_back(&w->stmts, &s->link);
    if (++w->nstmts > w->pool->cfg.stmt_cache)
        stmt_drop(w, LIST_ENTRY(w->stmts.next, db_stmt, link));
    return s;
}

/* ---- nodes -------------------------------------------------------------------------- */

/* Where worker w's order of nodes starts: the first node, or its own under spread. */
static int node_first(db_worker *w) {
    return w->pool->policy == DB_POLICY_SPREAD ? w->index % w->pool->nnodes : 0;
}

static int node_alive(db_pool *p, int i, uint64_t now) {
    uv_mutex_lock(&p->nodes_mu);
    int alive = p->nodes[i].dead_until <= now;
    uv_mutex_unlock(&p->nodes_mu);
    return alive;
}

/* Node i failed (a refused connection, a lost one, a node not ready): the workers leave it
 * and try it again after mysql.node_retry_ms. Logged when it was thought alive. */
static void node_dead(db_pool *p, int i, const char *why) {
    uint64_t now = now_ms();
    db_node *nd = &p->nodes[i];
    uv_mutex_lock(&p->nodes_mu);
    int was_alive = nd->dead_until <= now;
    nd->dead_since = now;
    nd->dead_until = now + p->cfg.node_retry_ms;
    nd->failures++;
    uv_mutex_unlock(&p->nodes_mu);
    if (was_alive && p->nnodes > 1)
        log_warn("mysql node %s:%u left (%s): using the other nodes, trying it again in %llu ms",
                 nd->host, nd->port, why, (unsigned long long)p->cfg.node_retry_ms);
}

/* Node i was found dead after w connected to it: w's connection is not to be trusted. */
static int node_died_since(db_pool *p, int i, uint64_t since) {
    uv_mutex_lock(&p->nodes_mu);
    int died = p->nodes[i].dead_since >= since;
    uv_mutex_unlock(&p->nodes_mu);
    return died;
}

/* A node before w's current one in w's order may be tried again (it was dead, its retry
 * time has come, or it never failed): w goes back to it at its next job. */
static int better_node_due(db_worker *w) {
    db_pool *p = w->pool;
    uint64_t now = now_ms();
    for (int k = 0, i = node_first(w); i != w->node; i = (node_first(w) + ++k) % p->nnodes)
        if (node_alive(p, i, now)) return 1;
    return 0;
}

static void node_count(db_pool *p, int i, int delta) {
    uv_mutex_lock(&p->nodes_mu);
    p->nodes[i].conns += delta;
    uv_mutex_unlock(&p->nodes_mu);
}

/* After a failed call on w's connection: a connection error breaks it (reconnected before
 * the next job), and one that says the node failed marks the node dead for every worker. */
static void node_failed(db_worker *w, unsigned e, const char *why) {
    if (is_connection_error(e) || e == 0 || e == ER_UNKNOWN_COM_ERROR) w->broken = 1;
    if (w->node >= 0 && (e == 0 || is_node_error(e))) node_dead(w->pool, w->node, why);
}

/* ---- connection ---------------------------------------------------------------------- */

/* Closes the connection first: that detaches its statements, which are then freed without
 * talking to a server that may be gone. */
static void worker_disconnect(db_worker *w) {
    if (w->conn) mysql_close(w->conn);
    if (w->conn && w->node >= 0) node_count(w->pool, w->node, -1);
    w->conn = NULL;
    w->node = -1;
    stmt_cache_clear(w);
    w->broken = 0;
}

/* The value of the one-row SHOW statement sql ("ON", "OFF", ...) into out, "" when it has
 * no row (not a Galera-capable server). Returns 0 or -1 on failure. SHOW statements are
 * served by a node that takes no other statement. */
static int show_value(MYSQL *m, const char *sql, char *out, size_t cap) {
    if (mysql_query(m, sql) != 0) return -1;
    MYSQL_RES *res = mysql_store_result(m);
    if (!res) return -1;
    MYSQL_ROW row = mysql_fetch_row(res);
    snprintf(out, cap, "%s", row && row[1] ? row[1] : "");
    mysql_free_result(res);
    return 0;
}

/* With several nodes, a connection is only kept to a node that takes statements: a Galera
 * node (wsrep_on) that is joining or outside the primary component says wsrep_ready OFF.
 * Returns 0 (ready), 1 (not ready) or -1 (the check failed). */
static int node_ready(MYSQL *m) {
    char v[16];
    if (show_value(m, "SHOW VARIABLES LIKE 'wsrep_on'", v, sizeof v) != 0) return -1;
    if (strcmp(v, "ON") != 0) return 0; /* a plain server */
    if (show_value(m, "SHOW STATUS LIKE 'wsrep_ready'", v, sizeof v) != 0) return -1;
    return strcmp(v, "ON") == 0 ? 0 : 1;
}

static int connect_node(db_worker *w, db_job *j, int i) {
    const db_config *c = &w->pool->cfg;
    const db_node *nd = &w->pool->nodes[i];
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        job_fail(j, 0, "cannot connect: ", "out of memory");
        return -1;
    }
    unsigned ct = c->connect_timeout_s, rt = c->read_timeout_s, wt = c->write_timeout_s;
    my_bool off = 0;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rt);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &wt);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(m, MYSQL_OPT_RECONNECT, &off);
    if (!mysql_real_connect(m, nd->host, c->user, c->password, c->database, nd->port, NULL, 0)) {
        job_fail(j, mysql_errno(m), "cannot connect: ", mysql_error(m));
        mysql_close(m);
        return -1;
    }
    set_cloexec(mysql_get_socket(m)); /* opened without it: children must not inherit it */
    int ready = w->pool->nnodes > 1 ? node_ready(m) : 0;
    if (ready != 0) {
        if (ready < 0)
            job_fail(j, mysql_errno(m), "cannot connect: ", mysql_error(m));
        else
            job_fail(j, ER_UNKNOWN_COM_ERROR,
                     "cannot connect: ", "the node is not ready (wsrep_ready OFF)");
        mysql_close(m);
        return -1;
    }
    if (w->ever_connected) j->reconnected = 1;
    w->ever_connected = 1;
    w->conn = m;
    w->node = i;
    w->connected_at = now_ms();
    node_count(w->pool, i, 1);
    return 0;
}

/* Connects to the first live node in w's order; when every node is dead, tries each of
 * them anyway (the job would fail otherwise). A node that fails is marked dead. */
static int worker_connect(db_worker *w, db_job *j) {
    db_pool *p = w->pool;
    uint64_t now = now_ms();
    int first = node_first(w);
    for (int pass = 0; pass < 2; pass++) {
        int tried = 0;
        for (int k = 0; k < p->nnodes; k++) {
            int i = (first + k) % p->nnodes;
            if ((pass == 0) != node_alive(p, i, now)) continue;
            tried++;
            if (connect_node(w, j, i) == 0) {
                j->failed = 0;
                j->err_no = 0;
                j->err[0] = '\0';
                return 0;
            }
            node_dead(p, i, j->err);
        }
        if (pass == 0 && tried == p->nnodes) break;
    }
    return -1;
}

/* Makes sure the connection is usable before a job that may start on a fresh one (a plain
 * statement or BEGIN): reconnects a broken one, one to a node found dead since, or one
 * that can go back to a node before it in its order; pings one idle longer than
 * ping_idle_ms. */
static int worker_ready(db_worker *w, db_job *j) {
    uint64_t idle = now_ms() - w->last_used_ms;
    if (w->conn && !w->broken && w->pool->nnodes > 1 &&
        (node_died_since(w->pool, w->node, w->connected_at) || better_node_due(w)))
        w->broken = 1;
    if (w->conn && !w->broken && idle > w->pool->cfg.ping_idle_ms && mysql_ping(w->conn) != 0)
        w->broken = 1;
    if (w->conn && !w->broken) return 0;
    worker_disconnect(w);
    return worker_connect(w, j);
}

/* Inside a transaction a lost connection must not be replaced silently: the statements
 * would run outside the transaction. */
static int worker_in_tx(db_worker *w, db_job *j) {
    if (w->tx_over) { /* (the server ended it: run_begin's comment) */
        job_fail(j, w->tx_over_errno, "", w->tx_over_err);
        return -1;
    }
    if (w->conn && !w->broken) return 0;
    job_fail(j, CR_SERVER_LOST, "", "connection lost during the transaction");
    return -1;
}

/* ---- statements ---------------------------------------------------------------------- */

static void bind_param(MYSQL_BIND *b, db_param *p) {
    switch (p->kind) {
    case DB_PARAM_NULL:
        b->buffer_type = MYSQL_TYPE_NULL;
        break;
    case DB_PARAM_INT:
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &p->i;
        break;
    case DB_PARAM_DOUBLE:
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &p->d;
        break;
    case DB_PARAM_STRING:
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = (void *)p->s;
        b->buffer_length = p->len;
        b->length = &p->len;
        break;
    case DB_PARAM_BOOL:
        b->buffer_type = MYSQL_TYPE_TINY;
        b->buffer = &p->flag;
        break;
    }
}

static int bind_params(db_worker *w, db_job *j, MYSQL_STMT *st) {
    unsigned long expected = mysql_stmt_param_count(st);
    if (expected != (unsigned long)j->nparams) {
        char msg[96];
        snprintf(msg, sizeof msg, "the statement has %lu placeholders but %d parameters were given",
                 expected, j->nparams);
        job_fail(j, CR_INVALID_PARAMETER_NO, "", msg);
        return -1;
    }
    if (j->nparams == 0) return 0;
    MYSQL_BIND *b = xcalloc((size_t)j->nparams, sizeof *b);
    for (int i = 0; i < j->nparams; i++)
        bind_param(&b[i], &j->params[i]);
    int rc = mysql_stmt_bind_param(st, b) ? -1 : 0; /* the library copies the binds */
    free(b);
    if (rc) fail_stmt(w, j, st);
    return rc;
}

typedef enum { COL_INT, COL_DOUBLE, COL_STRING } col_kind;

typedef struct column {
    col_kind kind;
    int is_unsigned;
    long long i;
    double d;
    char *buf;
    unsigned long len;
    my_bool is_null, error;
} column;

static col_kind column_kind(enum enum_field_types t) {
    switch (t) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR:
        return COL_INT;
    case MYSQL_TYPE_FLOAT:
    case MYSQL_TYPE_DOUBLE:
        return COL_DOUBLE;
    default: /* DECIMAL stays exact as a string; dates come as "YYYY-MM-DD HH:MM:SS" */
        return COL_STRING;
    }
}

static void bind_column(MYSQL_BIND *b, column *c, const MYSQL_FIELD *f) {
    c->kind = column_kind(f->type);
    c->is_unsigned = (f->flags & UNSIGNED_FLAG) != 0;
    b->is_null = &c->is_null;
    b->error = &c->error;
    b->length = &c->len;
    if (c->kind == COL_INT) {
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &c->i;
        b->is_unsigned = (my_bool)c->is_unsigned;
    } else if (c->kind == COL_DOUBLE) {
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &c->d;
    } else {
        /* the column's declared length (rows are not buffered, so the longest value is not
         * known); a longer value (MEDIUMTEXT and beyond) is fetched again whole */
        size_t size = f->length < MIN_COLUMN_BUFFER   ? MIN_COLUMN_BUFFER
                      : f->length > MAX_COLUMN_BUFFER ? MAX_COLUMN_BUFFER
                                                      : f->length;
        c->buf = xmalloc(size);
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = c->buf;
        b->buffer_length = size;
    }
}

/* A value longer than its buffer: fetched again whole. */
static int put_truncated(db_job *j, MYSQL_STMT *st, column *c, unsigned idx) {
    MYSQL_BIND b;
    memset(&b, 0, sizeof b);
    char *whole = xmalloc(c->len ? c->len : 1);
    unsigned long len = 0;
    b.buffer_type = MYSQL_TYPE_STRING;
    b.buffer = whole;
    b.buffer_length = c->len;
    b.length = &len;
    int rc = mysql_stmt_fetch_column(st, &b, idx, 0);
    if (rc == 0)
        buf_string(&j->result, whole, len);
    else
        job_fail(j, mysql_stmt_errno(st), "", mysql_stmt_error(st));
    free(whole);
    return rc ? -1 : 0;
}

/* Appends a row; fails the job once the result passes mysql.max_result_bytes. */
static int put_row(db_worker *w, db_job *j, MYSQL_STMT *st, column *cols, unsigned n) {
    for (unsigned i = 0; i < n; i++) {
        column *c = &cols[i];
        if (c->is_null)
            buf_u8(&j->result, DB_CELL_NULL);
        else if (c->kind == COL_INT)
            buf_integer(&j->result, c->i, c->is_unsigned);
        else if (c->kind == COL_DOUBLE)
            buf_number(&j->result, c->d);
        else if (c->error) {
            if (put_truncated(j, st, c, i) != 0) return -1;
        } else
            buf_string(&j->result, c->buf, c->len);
    }
    j->nrows++;
    if (j->result.len > w->pool->cfg.max_result_bytes) {
        char msg[160];
        snprintf(msg, sizeof msg, "result set larger than mysql.max_result_bytes (%zu): use LIMIT",
                 w->pool->cfg.max_result_bytes);
        job_fail(j, 0, "", msg);
        return -1;
    }
    return 0;
}

static int fetch_rows(db_worker *w, db_job *j, MYSQL_STMT *st, MYSQL_RES *meta) {
    unsigned n = mysql_num_fields(meta);
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    column *cols = xcalloc(n, sizeof *cols);
    MYSQL_BIND *b = xcalloc(n, sizeof *b);
    buf_u32(&j->result, n);
    for (unsigned i = 0; i < n; i++) {
        buf_u32(&j->result, f[i].name_length);
        buf_append(&j->result, f[i].name, f[i].name_length);
        bind_column(&b[i], &cols[i], &f[i]);
    }
    int rc = mysql_stmt_bind_result(st, b) ? -1 : 0;
    if (rc) fail_stmt(w, j, st);
    while (rc == 0) {
        int fr = mysql_stmt_fetch(st);
        if (fr == MYSQL_NO_DATA) break;
        if (fr == 1) {
            fail_stmt(w, j, st);
            rc = -1;
        } else {
            rc = put_row(w, j, st, cols, n);
        }
    }
    for (unsigned i = 0; i < n; i++)
        free(cols[i].buf);
    free(cols);
    free(b);
    return rc;
}

/* Converts the first result set for a query, row by row as it arrives (not buffered by
 * the client library first: mysql.max_result_bytes bounds what a query holds), and
 * discards the rest, also the further result sets of a CALL and those after a failure, so
 * the connection stays in sync. */
static int read_results(db_worker *w, db_job *j, MYSQL_STMT *st) {
    int rc = 0;
    do {
        MYSQL_RES *meta = mysql_stmt_result_metadata(st);
        if (!meta) continue;
        if (rc == 0 && j->kind == DB_JOB_QUERY && j->result.len == 0)
            rc = fetch_rows(w, j, st, meta);
        mysql_free_result(meta);
        mysql_stmt_free_result(st); /* reads and drops the rows not fetched */
    } while (mysql_stmt_more_results(st) && mysql_stmt_next_result(st) == 0);
    return rc;
}

/* Runs j's statement once. Returns 0, -1 on failure (j failed), or 1 when the cached
 * statement must be prepared again (it was evicted). */
static int execute_once(db_worker *w, db_job *j) {
    db_stmt *s = stmt_get(w, j);
    if (!s) return -1;
    if (bind_params(w, j, s->stmt) != 0) return -1;
    j->ran = 1;
    if (mysql_stmt_execute(s->stmt) != 0) {
        if (mysql_stmt_errno(s->stmt) == ER_NEED_REPREPARE) {
            stmt_drop(w, s);
            return 1;
        }
        fail_stmt(w, j, s->stmt);
        return -1;
    }
    if (read_results(w, j, s->stmt) != 0) return -1;
    j->affected = mysql_stmt_affected_rows(s->stmt);
    j->insert_id = mysql_stmt_insert_id(s->stmt);
    return 0;
}

static void run_statement(db_worker *w, db_job *j) {
    if (execute_once(w, j) == 1 && execute_once(w, j) == 1)
        job_fail(j, ER_NEED_REPREPARE, "", "the statement had to be prepared again twice");
}

/* ---- transactions -------------------------------------------------------------------- */

/* A transaction is START TRANSACTION on a connection that stays in autocommit mode (one
 * round trip: no SET autocommit before and after), so that a statement after the server
 * ended the transaction on its own (a deadlock victim's, rolled back whole; Galera's
 * certification) would run, and commit, alone: after any failed statement of a
 * transaction the worker asks whether it is still open (@@in_transaction; only on that
 * path), and when it is not, every later statement and the COMMIT fail with the error
 * that ended it (tx_over), and a ROLLBACK has nothing left to do. */
static void run_begin(db_worker *w, db_job *j) {
    if (worker_ready(w, j) != 0) return;
    w->tx_over = 0;
    if (mysql_real_query(w->conn, "START TRANSACTION", 17) != 0) fail_conn(w, j);
}

/* The transaction is over on the server: what follows fails with j's error. */
static void tx_ended(db_worker *w, const db_job *j) {
    w->tx_over = 1;
    w->tx_over_errno = j->err_no;
    snprintf(w->tx_over_err, sizeof w->tx_over_err, "%s", j->err);
}

/* The first job of a transaction leased without a BEGIN job (db_tx_begin): started here
 * -> 0 | -1 (j failed; so will the rest of the transaction) */
static int start_tx(db_worker *w, db_job *j) {
    run_begin(w, j);
    if (!j->failed) return 0;
    if (!w->broken) tx_ended(w, j); /* (a lost connection fails what follows by itself) */
    return -1;
}

/* After statement j of the transaction failed: is the transaction still open? */
static void check_tx_open(db_worker *w, db_job *j) {
    static const char q[] = "SELECT @@in_transaction";
    if (!w->conn || w->broken) return; /* (the server rolls back with the connection) */
    MYSQL_RES *res = NULL;
    MYSQL_ROW row = NULL;
    if (mysql_real_query(w->conn, q, sizeof q - 1) == 0 && (res = mysql_store_result(w->conn)))
        row = mysql_fetch_row(res);
    int known = row && row[0], in_tx = known && strcmp(row[0], "0") != 0;
    if (res) mysql_free_result(res);
    if (!known) worker_disconnect(w); /* no answer: the connection goes now, and the
                                       * transaction with it (the server rolls it back) */
    if (!in_tx) tx_ended(w, j);
}

static void run_finish(db_worker *w, db_job *j) {
    if (j->start_tx) { /* (never started: nothing to commit or undo) */
        w->tx_over = 0;
        return;
    }
    int commit = j->kind == DB_JOB_COMMIT, over = w->tx_over;
    w->tx_over = 0;
    if (over) { /* the server ended it: nothing to undo, nothing to commit */
        if (commit) job_fail(j, w->tx_over_errno, "", w->tx_over_err);
        return;
    }
    if (worker_in_tx(w, j) != 0) return; /* the server rolled back when the connection went */
    if ((commit ? mysql_commit(w->conn) : mysql_rollback(w->conn)) != 0) {
        fail_conn(w, j);
        if (commit && !w->broken) mysql_rollback(w->conn);
    }
}

/* ---- the thread ---------------------------------------------------------------------- */

static void run_job(db_worker *w, db_job *j) {
    switch (j->kind) {
    case DB_JOB_BEGIN:
        run_begin(w, j);
        break;
    case DB_JOB_COMMIT:
    case DB_JOB_ROLLBACK:
        run_finish(w, j);
        break;
    case DB_JOB_QUERY:
    case DB_JOB_EXEC:
        if (j->start_tx && start_tx(w, j) != 0) break;
        if ((j->tx ? worker_in_tx(w, j) : worker_ready(w, j)) == 0) {
            run_statement(w, j);
            if (j->tx && j->failed) check_tx_open(w, j);
        }
        break;
    }
    w->last_used_ms = now_ms();
}

/* Signalling under done_mu: once the loop has seen the job, the send is over, so the loop
 * may close the async handle as soon as every worker is idle. */
static void complete(db_worker *w, db_job *j) {
    struct db_pool *p = w->pool;
    uv_mutex_lock(&p->done_mu);
    list_push_back(&p->done, &j->link);
    if (!p->async_closed) uv_async_send(&p->async);
    uv_mutex_unlock(&p->done_mu);
}

static db_job *take_job(db_worker *w) {
    uv_mutex_lock(&w->mu);
    while (!w->next && !w->quit)
        uv_cond_wait(&w->cv, &w->mu);
    db_job *j = w->next;
    w->next = NULL;
    uv_mutex_unlock(&w->mu);
    return j;
}

static void worker_main(void *arg) {
    db_worker *w = arg;
    mysql_thread_init();
    db_job *j;
    while ((j = take_job(w)) != NULL) {
        run_job(w, j);
        complete(w, j);
    }
    worker_disconnect(w);
    mysql_thread_end();
}

int db_worker_start(db_worker *w, struct db_pool *p) {
    w->pool = p;
    list_init(&w->stmts);
    list_init(&w->idle_link);
    uv_mutex_init(&w->mu);
    uv_cond_init(&w->cv);
    int rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc != 0) {
        uv_cond_destroy(&w->cv);
        uv_mutex_destroy(&w->mu);
    }
    return rc;
}

void db_worker_post(db_worker *w, db_job *j) {
    uv_mutex_lock(&w->mu);
    w->next = j;
    uv_cond_signal(&w->cv);
    uv_mutex_unlock(&w->mu);
}

void db_worker_stop(db_worker *w) {
    uv_mutex_lock(&w->mu);
    w->quit = 1;
    uv_cond_signal(&w->cv);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->thread);
    uv_cond_destroy(&w->cv);
    uv_mutex_destroy(&w->mu);
}
