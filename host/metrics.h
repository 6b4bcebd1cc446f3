/* metrics.h: the process's metrics registry (Prometheus text via host.metrics.render). */
#ifndef CHATHOST_METRICS_H
#define CHATHOST_METRICS_H

#include <lua.h>
#include <stdint.h>

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };
typedef struct metric metric;

/* Finds or creates the series name{labels}; labels is 'k="v",...' (already escaped) or
 * "". Counters are named *_total (Prometheus). NULL when the registry is full (the update
 * is then dropped and counted) or when name already has another kind (one TYPE per name);
 * metric_* take NULL and do nothing. */
metric *metrics_get(enum metric_kind kind, const char *name, const char *labels, const char *help);
void metric_add(metric *m, double v);
void metric_set(metric *m, double v);
void metric_observe(metric *m, double v); /* seconds, for latency histograms */

#endif
