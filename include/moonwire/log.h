/* Process-wide logging: levels, plain or JSON lines, stderr or a file.
 *
 * A plain line is "2026-11-26T10:00:00.123Z info  message"; a JSON line is
 * {"ts":"...","level":"info","msg":"..."}. Lines are written whole with one
 * write(2), so they never interleave between processes sharing the file.
 */
#ifndef MOONWIRE_LOG_H
#define MOONWIRE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { MW_LOG_DEBUG = 0, MW_LOG_INFO, MW_LOG_WARN, MW_LOG_ERROR, MW_LOG_OFF } mw_log_level_t;

/* Parses "debug", "info", "warn", "error" or "off". Returns the level, or -1. */
int mw_log_level_parse(const char *name);

const char *mw_log_level_name(mw_log_level_t level);

/* Sets where and how lines are written. file NULL means stderr.
 * Returns 0 or MW_EIO when the file can not be opened (the old target stays). */
int mw_log_configure(mw_log_level_t level, int json, const char *file);

/* Reopens the log file (after rotation). Returns 0 or MW_EIO. */
int mw_log_reopen(void);

/* Whether a line of this level is written: 1 or 0. */
int mw_log_enabled(mw_log_level_t level);

/* Sends lines to fn instead of the file (moonwire.sim captures them for
 * specs). line is the message without timestamp or level. NULL restores. */
typedef void (*mw_log_sink_cb)(void *ud, mw_log_level_t level, const char *line);
void mw_log_set_sink(mw_log_sink_cb fn, void *ud);

void mw_log(mw_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mw_logv(mw_log_level_t level, const char *fmt, va_list ap);

/* Logs an event with fields: kv holds npairs key/value string pairs. Plain
 * lines read "conn.close id=mw.x.1 code=1000"; JSON lines put each pair in
 * its own field (digits-only values as numbers). */
void mw_log_event(mw_log_level_t level, const char *event, const char *const *kv, size_t npairs);

/* A condition that a client can repeat at will (a refused subscription) is
 * logged at most once per interval: the gate opens for the first event, then
 * for the first one after interval_ms, and tells how many it held back in
 * between (so an attacker can not flood the log, and no event goes untold). */
typedef struct {
    uint64_t next_at;    /* monotonic ms before which the gate stays shut */
    uint64_t held_back;  /* events since the last line */
} mw_log_gate_t;

/* Returns 1 when this event should be logged, with *held_back set to the
 * events left out since the last logged one; 0 when it is to be left out. */
int mw_log_gate_pass(mw_log_gate_t *g, uint64_t interval_ms, uint64_t *held_back);

/* "" for 0, else "; N more since the last such line", written into buf. */
const char *mw_log_held_back(uint64_t held_back, char *buf, size_t cap);

#define mw_log_debug(...) mw_log(MW_LOG_DEBUG, __VA_ARGS__)
#define mw_log_info(...) mw_log(MW_LOG_INFO, __VA_ARGS__)
#define mw_log_warn(...) mw_log(MW_LOG_WARN, __VA_ARGS__)
#define mw_log_error(...) mw_log(MW_LOG_ERROR, __VA_ARGS__)

#endif
