/* workers.c: `gate.workers = N` runs N gate processes that share the HTTP port
 * (SO_REUSEPORT: the kernel spreads connections over them) under a small supervisor: the
 * parent forks them before any thread or handle exists, forwards SIGTERM/SIGINT/SIGHUP,
 * and restarts a worker that dies, giving up when they keep dying. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "workers.h"

#define RESTART_WINDOW_S 10
#define RESTARTS_MAX 5     /* in the window: beyond, the supervisor gives up */

static volatile sig_atomic_t pending_signal;

static void on_signal(int sig) {
    if (sig != SIGCHLD) pending_signal = sig;
}

/* The supervisor's signals: blocked except while it waits in sigsuspend, so none can
 * arrive between looking for one and going to sleep. */
static sigset_t supervised, unblocked;

static void set_handlers(void (*h)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL); /* wakes sigsuspend when a worker exits */
}

/* Returns 0 in the child, the pid in the parent, -1 on failure. */
static pid_t fork_worker(pid_t parent) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    set_handlers(SIG_DFL);
    sigprocmask(SIG_SETMASK, &unblocked, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* an orphaned worker stops too */
    if (getppid() != parent) _exit(0);
    return 0;
}

static void forward(pid_t *pids, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], sig);
}

static void describe_exit(int status, char *buf, size_t len) {
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* Too many restarts in the recent window? (times: a ring of the last RESTARTS_MAX) */
static int restarting_too_often(time_t *times, int *next) {
    time_t now = time(NULL), oldest = times[*next];
    times[*next] = now;
    *next = (*next + 1) % RESTARTS_MAX;
    return oldest != 0 && now - oldest < RESTART_WINDOW_S;
}

int workers_supervise(int n, int *exit_code) {
    pid_t parent = getpid(), *pids = xcalloc((size_t)n, sizeof *pids);
    time_t times[RESTARTS_MAX] = {0};
    int next = 0, stopping = 0, failed = 0, alive = 0;
    sigemptyset(&supervised);
    sigaddset(&supervised, SIGTERM);
    sigaddset(&supervised, SIGINT);
    sigaddset(&supervised, SIGHUP);
    sigaddset(&supervised, SIGCHLD);
    sigprocmask(SIG_BLOCK, &supervised, &unblocked);
    set_handlers(on_signal);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork_worker(parent);
        if (pid == 0) return i;
        pids[i] = pid;
        alive += pid > 0;
    }
    log_info("supervising %d gate workers", n);
    while (alive > 0) {
        int sig = pending_signal, status;
        pending_signal = 0;
        if (sig) {
            if (sig != SIGHUP) stopping = 1;
            forward(pids, n, sig);
        }
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0) sigsuspend(&unblocked); /* until a signal or a worker's exit */
        if (pid < 0 && errno == ECHILD) break; /* none left to wait for */
        if (pid <= 0) continue;
        int i = 0;
        while (i < n && pids[i] != pid) i++;
        if (i == n) continue;
        pids[i] = 0;
        alive--;
        if (stopping) continue;
        char why[64];
        describe_exit(status, why, sizeof why);
        if (restarting_too_often(times, &next)) {
            log_error("gate worker %d %s; workers keep dying: stopping", i + 1, why);
            stopping = failed = 1;
            forward(pids, n, SIGTERM);
            continue;
        }
        log_warn("gate worker %d (pid %d) %s; restarting it", i + 1, (int)pid, why);
        pid = fork_worker(parent);
        if (pid == 0) return i;
        pids[i] = pid;
        alive += pid > 0;
    }
    free(pids);
    sigprocmask(SIG_SETMASK, &unblocked, NULL);
    *exit_code = failed;
    return -1;
}
