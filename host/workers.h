/* workers.h: the supervisor of a multi-process gate (gate.workers > 1). */
#ifndef CHATHOST_WORKERS_H
#define CHATHOST_WORKERS_H

/* Forks n workers and supervises them. In a worker, returns its index (0..n-1) and the
 * caller goes on starting the role; in the supervisor, returns -1 once every worker has
 * exited (after SIGTERM/SIGINT, or when they keep dying: *exit_code 1). Call before any
 * thread exists. */
int workers_supervise(int n, int *exit_code);

#endif
