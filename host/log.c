/* log.c: the process's log writer. Lines are assembled in one buffer and written with a
 * single write(2), so lines from several threads (DB workers) never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct {
    char who[96];
    enum log_level level;
} log_state = {"chathost", LOG_INFO};

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_setup(const char *role, const char *name) {
    if (name && *name && strcmp(name, role) != 0)
        snprintf(log_state.who, sizeof log_state.who, "%s/%s", role, name);
    else
        snprintf(log_state.who, sizeof log_state.who, "%s", role);
}

void log_set_level(enum log_level level) { log_state.level = level; }
int log_enabled(enum log_level level) { return level >= log_state.level && level < LOG_OFF; }

int log_parse_level(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

static size_t log_prefix(char *buf, size_t cap, enum log_level level) {
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(buf + n, cap - n, ".%03dZ %-5s %s ", (int)(tv.tv_usec / 1000),
                  level_names[level], log_state.who);
    return n;
}

/* Copies msg into out, turning line breaks into " | " so each event stays on one line. */
static size_t log_flatten(char *out, size_t cap, const char *msg, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < cap; i++) {
        char c = msg[i];
        if (c == '\n') {
            memcpy(out + n, " | ", 3);
            n += 3;
        } else if (c == '\r' || c == '\t') {
            out[n++] = ' ';
        } else {
            out[n++] = c;
        }
    }
    return n;
}

void log_raw(enum log_level level, const char *msg, size_t len) {
    if (!log_enabled(level)) return;
    char buf[8192];
    size_t n = log_prefix(buf, sizeof buf, level);
    n += log_flatten(buf + n, sizeof buf - n - 1, msg, len);
    buf[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, n);
    (void)w;
}

void log_msg(enum log_level level, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char msg[6144];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len >= sizeof msg) len = sizeof msg - 1;
    log_raw(level, msg, (size_t)len);
}
