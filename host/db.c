/* db.c: host.db, the MySQL/MariaDB pool: the Lua side. Arguments become jobs (parameters
 * always bound), encoded result sets become tables, and pools and transactions become Lua
 * objects. Acquisition and completions live in db_pool.c, connections and statements on
 * worker threads in db_worker.c; db.tx itself is Lua (host/lua/db.lua), since LuaJIT can
 * only yield across a pcall made from Lua. */
#include <lauxlib.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "log.h"
#include "modules.h"

#define POOL_MT "chathost.db.pool"
#define TX_MT "chathost.db.tx"

/* ---- jobs ---------------------------------------------------------------------------- */

/* Bytes a parameter needs in the job; raises on a value that cannot be bound. */
static size_t param_size(lua_State *L, int i) {
    switch (lua_type(L, i)) {
    case LUA_TNIL:
    case LUA_TNUMBER:
    case LUA_TBOOLEAN:
        return 0;
    case LUA_TSTRING:
        return lua_objlen(L, i);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == NULL) return 0; /* host.null */
        /* fall through */
    default:
        return (size_t)luaL_argerror(
            L, i,
            lua_pushfstring(L,
                            "cannot bind a %s (expected nil, host.null, a number, "
                            "a string or a boolean)",
                            luaL_typename(L, i)));
    }
}

static void param_set(lua_State *L, int i, db_param *p, char **strings) {
    int t = lua_type(L, i);
    if (t == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, i);
        int integral = d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == floor(d);
        p->kind = integral ? DB_PARAM_INT : DB_PARAM_DOUBLE;
        p->i = integral ? (long long)d : 0;
        p->d = d;
    } else if (t == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, i, &len);
        memcpy(*strings, s, len);
        p->kind = DB_PARAM_STRING;
        p->s = *strings;
        p->len = (unsigned long)len;
        *strings += len;
    } else if (t == LUA_TBOOLEAN) {
        p->kind = DB_PARAM_BOOL;
        p->flag = (signed char)lua_toboolean(L, i);
    } else {
        p->kind = DB_PARAM_NULL;
    }
}

/* A job for the SQL at sql_idx and the parameters after it (every argument up to the top
 * counts, trailing nils too). One allocation holds the job, its parameters and copies of
 * the SQL and string parameters. Raises on bad arguments before allocating anything. */
static db_job *job_from_args(lua_State *L, db_job_kind kind, int sql_idx) {
    size_t sql_len, bytes = 0;
    const char *sql = luaL_checklstring(L, sql_idx, &sql_len);
    int top = lua_gettop(L), n = top - sql_idx;
    for (int i = sql_idx + 1; i <= top; i++)
        bytes += param_size(L, i);
    db_job *j = xcalloc(1, sizeof *j + (size_t)n * sizeof(db_param) + sql_len + 1 + bytes);
    j->kind = kind;
    j->nparams = n;
    j->params = (db_param *)(j + 1);
    char *text = (char *)(j->params + n);
    memcpy(text, sql, sql_len + 1);
    j->sql = text;
    j->sql_len = sql_len;
    char *strings = text + sql_len + 1;
    for (int i = 0; i < n; i++)
        param_set(L, sql_idx + 1 + i, &j->params[i], &strings);
    return j;
}

/* ---- results ------------------------------------------------------------------------- */

typedef struct reader {
    const char *p;
} reader;

static uint32_t read_u32(reader *r) {
    uint32_t v;
    memcpy(&v, r->p, sizeof v);
    r->p += sizeof v;
    return v;
}

static void push_cell(lua_State *co, reader *r, int name_idx, int row_idx) {
    uint8_t tag = (uint8_t)*r->p++;
    if (tag == DB_CELL_NULL) return; /* SQL NULL: the key is absent */
    lua_pushvalue(co, name_idx);
    if (tag == DB_CELL_NUMBER) {
        double d;
        memcpy(&d, r->p, sizeof d);
        r->p += sizeof d;
        lua_pushnumber(co, d);
    } else {
        uint32_t len = read_u32(r);
        lua_pushlstring(co, r->p, len);
        r->p += len;
    }
    lua_rawset(co, row_idx);
}

/* Pushes the array of rows encoded in j->result onto co. */
static void push_rows(lua_State *co, db_job *j) {
    lua_createtable(co, (int)j->nrows, 0);
    if (j->result.len == 0) return; /* the statement returned no result set */
    reader r = {j->result.data};
    uint32_t ncols = read_u32(&r);
    lua_checkstack(co, (int)ncols + 4);
    int names = lua_gettop(co) + 1;
    for (uint32_t c = 0; c < ncols; c++) {
        uint32_t len = read_u32(&r);
        lua_pushlstring(co, r.p, len);
        r.p += len;
    }
    for (uint32_t row = 1; row <= j->nrows; row++) {
        lua_createtable(co, 0, (int)ncols);
        for (uint32_t c = 0; c < ncols; c++)
            push_cell(co, &r, names + (int)c, lua_gettop(co));
        lua_rawseti(co, names - 1, (int)row);
    }
    lua_pop(co, (int)ncols);
}

static void push_exec_result(lua_State *co, db_job *j) {
    lua_createtable(co, 0, 2);
    lua_pushnumber(co, (lua_Number)j->affected);
    lua_setfield(co, -2, "affected");
    lua_pushnumber(co, (lua_Number)j->insert_id);
    lua_setfield(co, -2, "insert_id");
}

static int push_error(lua_State *L, const char *err, unsigned err_no) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    if (err_no)
        lua_pushinteger(L, (lua_Integer)err_no);
    else
        lua_pushnil(L);
    return 3;
}

/* nil, err: for calls whose failures carry no MySQL error number. */
static int push_fail(lua_State *L, const char *err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

void db_push_tx(lua_State *co, db_tx *tx) {
    db_tx_handle *h = lua_newuserdata(co, sizeof *h);
    h->tx = tx;
    tx->handle = h;
    luaL_getmetatable(co, TX_MT);
    lua_setmetatable(co, -2);
}

/* Pushes what the waiting task gets: rows, {affected, insert_id}, a tx, true, or
 * nil, err, errno. Returns the number of values. */
int db_push_result(lua_State *co, db_job *j) {
    lua_checkstack(co, 4);
    if (j->failed) return push_error(co, j->err, j->err_no);
    switch (j->kind) {
    case DB_JOB_QUERY:
        push_rows(co, j);
        break;
    case DB_JOB_EXEC:
        push_exec_result(co, j);
        break;
    case DB_JOB_BEGIN:
        db_push_tx(co, j->tx);
        break;
    default:
        lua_pushboolean(co, 1);
        break;
    }
    return 1;
}

/* ---- configuration ------------------------------------------------------------------- */

typedef enum { FIELD_STRING, FIELD_UINT, FIELD_INT, FIELD_U64, FIELD_SIZE } field_type;

typedef struct field {
    const char *name;
    field_type type;
    size_t offset; /* in db_config */
    long long min, max;
} field;

#define FIELD(name, type, min, max)                                                                \
    { #name, type, offsetof(db_config, name), min, max }

/* The mysql section of config.lua (same ranges as host/lua/config.lua). */
static const field FIELDS[] = {
    FIELD(host, FIELD_STRING, 0, 0),
    FIELD(port, FIELD_UINT, 1, 65535),
    FIELD(user, FIELD_STRING, 0, 0),
    FIELD(password, FIELD_STRING, 0, 0),
    FIELD(database, FIELD_STRING, 0, 0),
    FIELD(pool_size, FIELD_INT, 1, 256),
    FIELD(connect_timeout_s, FIELD_UINT, 1, 600),
    FIELD(read_timeout_s, FIELD_UINT, 1, 3600),
    FIELD(write_timeout_s, FIELD_UINT, 1, 3600),
    FIELD(acquire_timeout_ms, FIELD_U64, 0, 600000),
    FIELD(max_waiting, FIELD_SIZE, 0, 10000000),
    FIELD(stmt_cache, FIELD_INT, 1, 4096),
    FIELD(ping_idle_ms, FIELD_U64, 0, 86400000),
    FIELD(max_result_bytes, FIELD_SIZE, 1024, 4294967295LL),
    FIELD(nodes, FIELD_STRING, 0, 0), /* a list in config.lua: see config_from_app */
    FIELD(policy, FIELD_STRING, 0, 0),
    FIELD(node_retry_ms, FIELD_U64, 10, 3600000),
    {NULL, FIELD_STRING, 0, 0, 0},
};

static void config_set_int(db_config *c, const field *f, long long v) {
    char *slot = (char *)c + f->offset;
    switch (f->type) {
    case FIELD_UINT:
        *(unsigned *)slot = (unsigned)v;
        break;
    case FIELD_INT:
        *(int *)slot = (int)v;
        break;
    case FIELD_U64:
        *(uint64_t *)slot = (uint64_t)v;
        break;
    case FIELD_SIZE:
        *(size_t *)slot = (size_t)v;
        break;
    case FIELD_STRING:
        break;
    }
}

/* Takes ownership of v (NULL for none). */
static void config_set_str(db_config *c, const field *f, char *v) {
    char **slot = (char **)((char *)c + f->offset);
    free(*slot);
    *slot = v;
}

static void config_from_app(struct app *app, db_config *c) {
    char path[64];
    memset(c, 0, sizeof *c);
    for (const field *f = FIELDS; f->name; f++) {
        snprintf(path, sizeof path, "mysql.%s", f->name);
        if (!strcmp(f->name, "nodes"))
            config_set_str(c, f, cfg_list(app, path));
        else if (f->type == FIELD_STRING)
            config_set_str(c, f, cfg_str(app, path, NULL));
        else
            config_set_int(c, f, cfg_int(app, path, f->min));
    }
    if (!c->host) c->host = xstrdup("127.0.0.1");
}

static const field *field_find(const char *name) {
    for (const field *f = FIELDS; f->name; f++)
        if (!strcmp(f->name, name)) return f;
    return NULL;
}

/* Pushes the nodes value at the top ("h:p,h:p" or a list of "h:p") as one "h:p,h:p" string,
 * or raises naming the argument at idx when it is neither or an entry does not parse. */
static void nodes_to_string(lua_State *L, int idx) {
    int v = lua_gettop(L);
    if (lua_type(L, v) == LUA_TTABLE) {
        luaL_Buffer b;
        int n = (int)lua_objlen(L, v);
        luaL_buffinit(L, &b);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, v, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, idx, "nodes must be a list of \"host:port\" strings");
            if (i > 1) luaL_addchar(&b, ',');
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
    } else if (lua_type(L, v) == LUA_TSTRING) {
        lua_pushvalue(L, v);
    } else {
        luaL_argerror(L, idx, "nodes must be a list of \"host:port\" strings");
    }
    db_node *nodes;
    int n = lua_objlen(L, -1) ? db_nodes_parse(lua_tostring(L, -1), &nodes) : 0;
    if (n < 0)
        luaL_argerror(
            L, idx,
            lua_pushfstring(L, "nodes: '%s' is not a list of host:port", lua_tostring(L, -1)));
    for (int i = 0; i < n; i++)
        free(nodes[i].host);
    if (n > 0) free(nodes);
}

/* Raises unless every field of the table at idx is known and valid. */
static void config_check_table(lua_State *L, int idx) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, idx, "field names must be strings");
        const char *name = lua_tostring(L, -2);
        const field *f = field_find(name);
        if (!f) luaL_argerror(L, idx, lua_pushfstring(L, "unknown field '%s'", name));
        int t = lua_type(L, -1);
        if (!strcmp(name, "nodes")) {
            nodes_to_string(L, idx);
            lua_pop(L, 1);
        } else if (!strcmp(name, "policy")) {
            const char *v = t == LUA_TSTRING ? lua_tostring(L, -1) : "";
            if (strcmp(v, "prefer_first") && strcmp(v, "spread"))
                luaL_argerror(L, idx, "policy must be \"prefer_first\" or \"spread\"");
        } else if (f->type != FIELD_STRING)
            vm_check_int_option(L, idx, name, f->min, f->max);
        else if (t != LUA_TSTRING && !(t == LUA_TBOOLEAN && !strcmp(name, "password")))
            luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a string", name));
        lua_pop(L, 1);
    }
}

/* Applies the (checked) fields of the table at idx over c. */
static void config_apply_table(lua_State *L, int idx, db_config *c) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const field *f = field_find(lua_tostring(L, -2));
        if (!strcmp(f->name, "nodes")) {
            nodes_to_string(L, idx);
            config_set_str(c, f, lua_objlen(L, -1) ? xstrdup(lua_tostring(L, -1)) : NULL);
            lua_pop(L, 1);
        } else if (f->type == FIELD_STRING) {
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            config_set_str(c, f, v ? xstrdup(v) : NULL);
        } else {
            config_set_int(c, f, (long long)lua_tonumber(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* ---- Lua: statements and pools ------------------------------------------------------- */

/* The process default pool, built from config on first use; NULL with nil, err pushed
 * when there is none (shutting down, or no thread could start). */
static db_pool *default_pool(lua_State *L, struct app *app) {
    if (!app->db && !app->stopping) {
        db_config c;
        config_from_app(app, &c);
        app->db = db_pool_new(app, &c);
    }
    if (!app->db) {
        lua_pushnil(L);
        lua_pushstring(L, app->stopping ? "shutting down" : "cannot start the database pool");
    }
    return app->db;
}

static db_pool *pool_check(lua_State *L, int idx) {
    return ((struct db_pool_handle *)luaL_checkudata(L, idx, POOL_MT))->pool;
}

/* A statement on a pool (method: self at index 1) or on the default pool. */
static int statement(lua_State *L, db_job_kind kind, int is_method, const char *fname) {
    db_pool *p = is_method ? pool_check(L, 1) : NULL;
    task_t *t = sched_need(L, fname);
    db_job *j = job_from_args(L, kind, is_method ? 2 : 1);
    if (!p) p = default_pool(L, app_from(L));
    if (!p) {
        db_job_free(j);
        return 2;
    }
    return db_pool_submit(L, p, j, t);
}

/* query(sql, ...) -> rows | nil, err, errno   (yields) */
static int l_query(lua_State *L) { return statement(L, DB_JOB_QUERY, 0, "host.db.query"); }
/* exec(sql, ...) -> {affected=, insert_id=} | nil, err, errno   (yields) */
static int l_exec(lua_State *L) { return statement(L, DB_JOB_EXEC, 0, "host.db.exec"); }
static int l_pool_query(lua_State *L) { return statement(L, DB_JOB_QUERY, 1, "pool:query"); }
static int l_pool_exec(lua_State *L) { return statement(L, DB_JOB_EXEC, 1, "pool:exec"); }

static void set_count(lua_State *L, const char *name, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, name);
}

static int push_stats(lua_State *L, db_pool *p) {
    lua_createtable(L, 0, 8);
    set_count(L, "size", p->size);
    set_count(L, "busy", p->size - p->nidle);
    set_count(L, "idle", p->nidle);
    set_count(L, "waiting", (double)p->nwaiting);
    set_count(L, "queries", (double)p->queries);
    set_count(L, "errors", (double)p->errors);
    set_count(L, "busy_rejections", (double)p->busy_rejections);
    set_count(L, "reconnects", (double)p->reconnects);
    lua_createtable(L, p->nnodes, 0);
    uv_mutex_lock(&p->nodes_mu);
    uint64_t now = uv_hrtime() / 1000000;
    for (int i = 0; i < p->nnodes; i++) {
        const db_node *nd = &p->nodes[i];
        lua_createtable(L, 0, 4);
        lua_pushfstring(L, "%s:%d", nd->host, (int)nd->port);
        lua_setfield(L, -2, "address");
        lua_pushboolean(L, nd->dead_until > now);
        lua_setfield(L, -2, "dead");
        set_count(L, "connections", nd->conns);
        set_count(L, "failures", (double)nd->failures);
        lua_rawseti(L, -2, i + 1);
    }
    uv_mutex_unlock(&p->nodes_mu);
    lua_setfield(L, -2, "nodes");
    return 1;
}

/* stats() -> {size=, busy=, idle=, waiting=, queries=, errors=, busy_rejections=,
 * reconnects=, nodes={{address=, dead=, connections=, failures=}, ...}} */
static int l_stats(lua_State *L) {
    db_pool *p = default_pool(L, app_from(L));
    return p ? push_stats(L, p) : 2;
}

static int l_pool_stats(lua_State *L) { return push_stats(L, pool_check(L, 1)); }

/* pool:close(): refuses new work at once; running jobs finish, then the threads end. */
static int l_pool_close(lua_State *L) {
    db_pool_close(pool_check(L, 1), "pool closed");
    return 0;
}

static int l_pool_gc(lua_State *L) {
    db_pool_drop_handle(pool_check(L, 1));
    return 0;
}

/* new{host=, port=, ..., pool_size=, ...} -> pool | nil, err
 * Fields default to the config's mysql section; the pool is a tracked resource. */
static int l_new(lua_State *L) {
    struct app *app = app_from(L);
    int has_opts = !lua_isnoneornil(L, 1);
    if (has_opts) {
        luaL_checktype(L, 1, LUA_TTABLE);
        config_check_table(L, 1);
    }
    if (app->stopping) return push_fail(L, "shutting down");
    struct db_pool_handle *h = lua_newuserdata(L, sizeof *h);
    db_config c;
    config_from_app(app, &c);
    if (has_opts) config_apply_table(L, 1, &c);
    h->pool = db_pool_new(app, &c);
    if (!h->pool) return push_fail(L, "cannot start the database worker threads");
    h->pool->handle = h;
    luaL_getmetatable(L, POOL_MT);
    lua_setmetatable(L, -2);
    db_pool_track(h->pool);
    return 1;
}

/* ---- Lua: transactions --------------------------------------------------------------- */

/* begin(pool | nil) -> tx | nil, err, errno   (yields; host/lua/db.lua's db.tx) */
static int l_tx_begin(lua_State *L) {
    db_pool *p = lua_isnoneornil(L, 1) ? NULL : pool_check(L, 1);
    task_t *t = sched_need(L, "db.tx");
    if (!p) p = default_pool(L, app_from(L));
    return p ? db_tx_begin(L, p, t) : 2;
}

/* The live transaction of the tx handle at index 1 with no statement running; raises
 * otherwise (misuse: the tx object escaped its function, or statements overlap). */
static db_tx *tx_check(lua_State *L) {
    db_tx_handle *h = luaL_checkudata(L, 1, TX_MT);
    if (!h->tx || h->tx->ended)
        luaL_error(L, "the transaction has ended (tx is usable only inside its db.tx function)");
    if (h->tx->worker->running)
        luaL_error(L, "another statement of this transaction is still running");
    return h->tx;
}

static int tx_statement(lua_State *L, db_job_kind kind, const char *fname) {
    db_tx *tx = tx_check(L);
    task_t *t = sched_need(L, fname);
    return db_tx_submit(L, tx, job_from_args(L, kind, 2), t);
}

/* tx:query(sql, ...) / tx:exec(sql, ...): like host.db's, on the transaction's connection */
static int l_tx_query(lua_State *L) { return tx_statement(L, DB_JOB_QUERY, "tx:query"); }
static int l_tx_exec(lua_State *L) { return tx_statement(L, DB_JOB_EXEC, "tx:exec"); }

/* finish(tx, commit) -> true | nil, err, errno   (yields): COMMIT or ROLLBACK, then
 * the worker back to the pool, whatever happened. */
static int l_tx_finish(lua_State *L) {
    db_tx_handle *h = luaL_checkudata(L, 1, TX_MT);
    if (!h->tx || h->tx->ended) return push_error(L, "the transaction has ended", 0);
    db_tx *tx = tx_check(L);
    task_t *t = sched_need(L, "db.tx");
    return db_tx_finish(L, tx, lua_toboolean(L, 2), t);
}

/* A tx object collected while its transaction runs: its task is gone; roll back. */
static int l_tx_gc(lua_State *L) {
    db_tx_handle *h = luaL_checkudata(L, 1, TX_MT);
    db_tx *tx = h->tx;
    h->tx = NULL;
    if (tx) {
        tx->handle = NULL;
        db_tx_abandon(tx);
    }
    return 0;
}

/* ---- the module ---------------------------------------------------------------------- */

/* Lets host/lua/db.lua add tx to host.db and to pools, on top of begin and finish. */
static void install_tx(lua_State *L, int api, int pool_methods, int app) {
    if (vm_require_embedded(L, "chathost.db") != 0) lua_error(L);
    lua_getfield(L, -1, "install");
    lua_pushvalue(L, api);
    lua_pushvalue(L, pool_methods);
    lua_pushvalue(L, app);
    lua_pushcclosure(L, l_tx_begin, 1);
    lua_pushvalue(L, app);
    lua_pushcclosure(L, l_tx_finish, 1);
    lua_call(L, 4, 0);
    lua_pop(L, 1);
}

int db_open(lua_State *L) {
    static const luaL_Reg api_fns[] = {
        {"query", l_query}, {"exec", l_exec}, {"stats", l_stats}, {"new", l_new}, {NULL, NULL}};
    static const luaL_Reg pool_fns[] = {{"query", l_pool_query},
                                        {"exec", l_pool_exec},
                                        {"stats", l_pool_stats},
                                        {"close", l_pool_close},
                                        {NULL, NULL}};
    static const luaL_Reg tx_fns[] = {{"query", l_tx_query}, {"exec", l_tx_exec}, {NULL, NULL}};
    struct app *app = lua_touserdata(L, -1);
    int app_idx = lua_gettop(L);
    if (!app->db_pools.next) list_init(&app->db_pools); /* app is zeroed: first open */
    if (mysql_library_init(0, NULL, NULL) != 0)
        return luaL_error(L, "cannot initialise the MariaDB client library");
    vm_class(L, TX_MT, tx_fns, NULL, l_tx_gc);
    vm_class(L, POOL_MT, pool_fns, NULL, l_pool_gc);
    luaL_getmetatable(L, POOL_MT);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_newtable(L);
    lua_pushvalue(L, app_idx);
    luaL_setfuncs(L, api_fns, 1);
    install_tx(L, lua_gettop(L), lua_gettop(L) - 1, app_idx);
    lua_remove(L, -2); /* the pool methods */
    return 1;
}
