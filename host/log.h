/* log.h: one line per event on stderr: time, level, role/instance, message. Used by every
 * other file; Lua reaches it through host.log (vm.c). */
#ifndef CHATHOST_LOG_H
#define CHATHOST_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

void log_setup(const char *role, const char *name);
void log_set_level(enum log_level level);
/* Returns the level for "debug", "info", "warn", "error" or "off"; -1 for anything else. */
int log_parse_level(const char *s);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes msg (len bytes, any content) as one line: newlines become " | ". */
void log_raw(enum log_level level, const char *msg, size_t len);

#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
