/* metrics.c: counters, gauges and histograms of the process, rendered in Prometheus text
 * format by the admin listener's /metrics. C code (the HTTP server) updates them directly;
 * scripts through host.metrics. A metric is a name plus a label string ('route="x"'); the
 * registry is a small open hash, bounded (label values from the outside must not grow it
 * without limit: beyond METRICS_MAX series, new series are dropped and counted). */
#include "metrics.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "modules.h"

#define METRICS_MAX 4096
#define TABLE_SIZE 8192 /* power of two, > METRICS_MAX */

static const double DEFAULT_BOUNDS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,    10};
#define NBOUNDS (sizeof DEFAULT_BOUNDS / sizeof DEFAULT_BOUNDS[0])

struct metric {
    char *name, *labels, *help;
    enum metric_kind kind;
    double value;          /* counter, gauge; histogram: sum */
    uint64_t count;        /* histogram */
    uint64_t buckets[NBOUNDS];
    metric *next_in_order; /* registration order, for stable output */
    unsigned order;
};

static metric *table[TABLE_SIZE];
static metric *first, *last;
static unsigned nmetrics;
static unsigned long dropped;

static unsigned hash(const char *name, const char *labels) {
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '|') * 16777619u;
    for (const char *p = labels; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

/* The kind of the series already named name, or dflt when there is none. Only on the path
 * that creates a series (rare), so a scan of the registry is fine. */
static enum metric_kind family_kind(const char *name, enum metric_kind dflt) {
    for (metric *m = first; m; m = m->next_in_order)
        if (strcmp(m->name, name) == 0) return m->kind;
    return dflt;
}

metric *metrics_get(enum metric_kind kind, const char *name, const char *labels, const char *help) {
    labels = labels ? labels : "";
    unsigned i = hash(name, labels) & (TABLE_SIZE - 1);
    while (table[i]) {
        metric *m = table[i];
        if (strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0)
            return m->kind == kind ? m : NULL;
        i = (i + 1) & (TABLE_SIZE - 1);
    }
    if (family_kind(name, kind) != kind) return NULL; /* one TYPE per name */
    if (nmetrics >= METRICS_MAX) {
        dropped++;
        return NULL;
    }
    metric *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name);
    m->labels = xstrdup(labels);
    m->help = xstrdup(help ? help : "");
    m->kind = kind;
    m->order = nmetrics;
    table[i] = m;
    nmetrics++;
    if (last)
        last->next_in_order = m;
    else
        first = m;
    last = m;
    return m;
}

void metric_add(metric *m, double v) {
    if (m) m->value += v;
}

void metric_set(metric *m, double v) {
    if (m) m->value = v;
}

void metric_observe(metric *m, double v) {
    if (!m) return;
    m->value += v;
    m->count++;
    for (size_t i = 0; i < NBOUNDS; i++)
        if (v <= DEFAULT_BOUNDS[i]) m->buckets[i]++;
}

/* ---- rendering ------------------------------------------------------------------------- */

static void out_printf(buf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(buf_t *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->data = buf_grow(o->data, &o->cap, o->len + (n >= 0 ? (size_t)n + 1 : o->cap + 1));
    }
}

/* v as Prometheus reads it, in the shortest decimal form that reads back as the same double
 * (0.028148892, not 0.028148892000000002), integers without a decimal point. Up to 15
 * significant digits never show binary noise; 16 or 17 only when fewer lose the value. */
static const char *format_value(double v, char buf[32]) {
    if (isnan(v)) return "NaN";
    if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (fabs(v) < 1e15 && v == (double)(long long)v) {
        snprintf(buf, 32, "%lld", (long long)v);
        return buf;
    }
    for (int digits = 15; digits < 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return buf;
    }
    snprintf(buf, 32, "%.17g", v);
    return buf;
}

static const char *kind_name(enum metric_kind k) {
    return k == METRIC_COUNTER ? "counter" : k == METRIC_GAUGE ? "gauge" : "histogram";
}

static void render_histogram(buf_t *o, const metric *m) {
    const char *sep = m->labels[0] ? "," : "";
    char num[32];
    for (size_t i = 0; i < NBOUNDS; i++)
        out_printf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", m->name, m->labels, sep,
                   format_value(DEFAULT_BOUNDS[i], num), (unsigned long long)m->buckets[i]);
    out_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name, m->labels, sep,
               (unsigned long long)m->count);
    const char *open = m->labels[0] ? "{" : "", *close = m->labels[0] ? "}" : "";
    out_printf(o, "%s_sum%s%s%s %s\n", m->name, open, m->labels, close,
               format_value(m->value, num));
    out_printf(o, "%s_count%s%s%s %llu\n", m->name, open, m->labels, close,
               (unsigned long long)m->count);
}

static int by_name(const void *a, const void *b) {
    const metric *x = *(metric *const *)a, *y = *(metric *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void render_series(buf_t *o, const metric *s) {
    char num[32];
    if (s->kind == METRIC_HISTOGRAM)
        render_histogram(o, s);
    else if (s->labels[0])
        out_printf(o, "%s{%s} %s\n", s->name, s->labels, format_value(s->value, num));
    else
        out_printf(o, "%s %s\n", s->name, format_value(s->value, num));
}

/* Pushes the whole registry as Prometheus text: series grouped by name, HELP/TYPE once. */
static int l_render(lua_State *L) {
    buf_t o = {0};
    metric **all = xmalloc((nmetrics ? nmetrics : 1) * sizeof *all);
    unsigned n = 0;
    for (metric *m = first; m; m = m->next_in_order) all[n++] = m;
    qsort(all, n, sizeof *all, by_name);
    for (unsigned i = 0; i < n; i++) {
        if (i == 0 || strcmp(all[i - 1]->name, all[i]->name) != 0)
            out_printf(&o, "# HELP %s %s\n# TYPE %s %s\n", all[i]->name, all[i]->help,
                       all[i]->name, kind_name(all[i]->kind));
        render_series(&o, all[i]);
    }
    free(all);
    out_printf(&o, "# HELP chathost_metrics_dropped_total Series not recorded: over %d.\n"
                   "# TYPE chathost_metrics_dropped_total counter\n"
                   "chathost_metrics_dropped_total %lu\n", METRICS_MAX, dropped);
    lua_pushlstring(L, o.data, o.len);
    free(o.data);
    return 1;
}

/* ---- Lua: host.metrics ---------------------------------------------------------------- */

/* Label strings from a table {route="x", status=200}, sorted by key, values escaped, by
 * chathost.metrics_labels (upvalue 1 of the host.metrics functions). */
static void push_labels(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) {
        lua_pushliteral(L, "");
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
}

static int is_total(const char *name) {
    size_t n = strlen(name);
    return n > 6 && strcmp(name + n - 6, "_total") == 0;
}

/* Series without labels found before, by the address of their name's Lua string (strings
 * are interned: the same name is the same address while it lives; a reused address is
 * caught by comparing the names). Series are never freed, so an entry never dangles. A
 * script's inc costs a pointer compare and a strcmp here instead of hashing the name
 * (chat.push counts ~6 events per message). */
#define FAST_SLOTS 256
static struct {
    const char *name;
    metric *m;
} fast[FAST_SLOTS];

static unsigned fast_slot(const char *name) {
    return (unsigned)(((uintptr_t)name >> 4) ^ ((uintptr_t)name >> 12)) & (FAST_SLOTS - 1);
}

/* The series for the call's name and labels. Naming mistakes are the script's: a counter
 * is named *_total and nothing else is; a name keeps the kind it was created with. */
static metric *check_metric(lua_State *L, enum metric_kind kind) {
    const char *name = luaL_checkstring(L, 1);
    int plain = lua_isnoneornil(L, 3);
    if (plain) {
        unsigned h = fast_slot(name);
        metric *m = fast[h].m;
        if (fast[h].name == name && m->kind == kind && strcmp(m->name, name) == 0) return m;
    }
    if (is_total(name) != (kind == METRIC_COUNTER))
        luaL_argerror(L, 1,
                      kind == METRIC_COUNTER ? "a counter's name ends in _total"
                                             : "only a counter's name ends in _total");
    push_labels(L, 3);
    metric *m = metrics_get(kind, name, lua_tostring(L, -1), luaL_optstring(L, 4, ""));
    lua_pop(L, 1);
    if (!m && family_kind(name, kind) != kind)
        luaL_argerror(L, 1,
                      lua_pushfstring(L, "%s is a %s", name, kind_name(family_kind(name, kind))));
    if (m && plain) {
        unsigned h = fast_slot(name);
        fast[h].name = name;
        fast[h].m = m;
    }
    return m;
}

/* inc(name, v?, labels?, help?): a counter goes up by v (1) */
static int l_inc(lua_State *L) {
    lua_Number v = luaL_optnumber(L, 2, 1);
    luaL_argcheck(L, v >= 0, 2, "a counter never goes down");
    metric_add(check_metric(L, METRIC_COUNTER), v);
    return 0;
}

/* set_total(name, total, labels?, help?): a counter whose running total is kept elsewhere
 * (read when scraped) */
static int l_set_total(lua_State *L) {
    metric_set(check_metric(L, METRIC_COUNTER), luaL_checknumber(L, 2));
    return 0;
}

/* set(name, v, labels?, help?): a gauge */
static int l_set(lua_State *L) {
    metric_set(check_metric(L, METRIC_GAUGE), luaL_checknumber(L, 2));
    return 0;
}

/* observe(name, seconds, labels?, help?): a histogram */
static int l_observe(lua_State *L) {
    metric_observe(check_metric(L, METRIC_HISTOGRAM), luaL_checknumber(L, 2));
    return 0;
}

int metrics_open(lua_State *L) {
    static const luaL_Reg fns[] = {{"inc", l_inc},       {"set_total", l_set_total},
                                   {"set", l_set},       {"observe", l_observe},
                                   {"render", l_render}, {NULL, NULL}};
    lua_newtable(L);
    if (vm_require_embedded(L, "chathost.metrics_labels") != 0) return lua_error(L);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
