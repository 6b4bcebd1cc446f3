/* bench/metrics_record.c: what recording one call costs on the hot paths (a gRPC call, a
 * chat message): two uv_hrtime, a counter add and a histogram observe on series looked up
 * beforehand, as grpc_stats_record and the chat server do. host/metrics.c is compiled in.
 * Build (from the repository root):
 *   cc -O2 -iquote host $(pkg-config --cflags luajit) -o /tmp/metrics_record \
 *      bench/metrics_record.c $(pkg-config --libs luajit) -luv -lm
 * Run: /tmp/metrics_record [N] */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "metrics.c"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    metric *calls =
        metrics_get(METRIC_COUNTER, "bench_calls_total", "method=\"m\",code=\"OK\"", "");
    metric *latency = metrics_get(METRIC_HISTOGRAM, "bench_call_seconds", "method=\"m\"", "");
    uint64_t t0 = uv_hrtime();
    for (long i = 0; i < n; i++) {
        uint64_t start = uv_hrtime();
        metric_add(calls, 1);
        metric_observe(latency, (double)(uv_hrtime() - start) / 1e9);
    }
    printf("one recording: %.1f ns (%ld in a loop)\n", (double)(uv_hrtime() - t0) / (double)n, n);
    return 0;
}
