/* Logging: one formatted line per call, written with a single write(2). */
#include "moonwire/log.h"
#include "moonwire/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct {
    mw_log_level_t level;
    int json;
    int fd;     /* 2 (stderr) or an opened file */
    char *path; /* NULL for stderr */
    mw_log_sink_cb sink;
    void *sink_ud;
} logger = {MW_LOG_INFO, 0, 2, NULL, NULL, NULL};

void mw_log_set_sink(mw_log_sink_cb fn, void *ud)
{
    logger.sink = fn;
    logger.sink_ud = ud;
}

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

int mw_log_level_parse(const char *name)
{
    for (int i = 0; i <= MW_LOG_OFF; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *mw_log_level_name(mw_log_level_t level)
{
    return level <= MW_LOG_OFF ? level_names[level] : "?";
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int mw_log_configure(mw_log_level_t level, int json, const char *file)
{
    int fd = 2;
    char *path = NULL;

    if (file != NULL) {
        fd = open_file(file);
        if (fd < 0)
            return MW_EIO;
        path = strdup(file);
        if (path == NULL) {
            close(fd);
            return MW_ENOMEM;
        }
    }
    if (logger.fd != 2)
        close(logger.fd);
    free(logger.path);
    logger.level = level;
    logger.json = json;
    logger.fd = fd;
    logger.path = path;
    return 0;
}

int mw_log_reopen(void)
{
    int fd;

    if (logger.path == NULL)
        return 0;
    fd = open_file(logger.path);
    if (fd < 0)
        return MW_EIO;
    dup2(fd, logger.fd);
    close(fd);
    return 0;
}

int mw_log_enabled(mw_log_level_t level)
{
    return level >= logger.level && level < MW_LOG_OFF;
}

/* Appends s to buf as the inside of a JSON string. Returns the new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    for (; *s != '\0' && len + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)ch;
        } else if (ch == '\n') {
            buf[len++] = '\\';
            buf[len++] = 'n';
        } else if (ch < 0x20) {
            memcpy(buf + len, "\\u00", 4);
            buf[len + 4] = hex[ch >> 4];
            buf[len + 5] = hex[ch & 15];
            len += 6;
        } else {
            buf[len++] = (char)ch;
        }
    }
    return len;
}

static int is_number(const char *v)
{
    if (*v == '-')
        v++;
    if (*v == '\0' || (*v == '0' && v[1] != '\0'))
        return 0;
    for (; *v; v++)
        if (*v < '0' || *v > '9')
            return 0;
    return 1;
}

/* Writes one line: msg, then the key/value pairs (kv[2i] = kv[2i+1]). */
static void emit(mw_log_level_t level, const char *msg, const char *const *kv, size_t npairs)
{
    char line[8192], ts[96];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int saved_errno = errno;

    if (logger.sink != NULL) {
        size_t used = (size_t)snprintf(line, sizeof(line), "%s", msg);
        for (size_t i = 0; i < npairs && used < sizeof(line); i++)
            used += (size_t)snprintf(line + used, sizeof(line) - used, " %s=%s", kv[2 * i],
                                     kv[2 * i + 1]);
        logger.sink(logger.sink_ud, level, line);
        return;
    }
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(tv.tv_usec / 1000));
    if (logger.json) {
        n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                             level_names[level]);
        n = json_escape(line, n, sizeof(line) - 8, msg);
        line[n++] = '"';
        for (size_t i = 0; i < npairs && n + 16 < sizeof(line); i++) {
            int num = is_number(kv[2 * i + 1]);
            line[n++] = ',';
            line[n++] = '"';
            n = json_escape(line, n, sizeof(line) - 8, kv[2 * i]);
            memcpy(line + n, num ? "\":" : "\":\"", num ? 2 : 3);
            n += num ? 2 : 3;
            n = json_escape(line, n, sizeof(line) - 8, kv[2 * i + 1]);
            if (!num)
                line[n++] = '"';
        }
        memcpy(line + n, "}\n", 2);
        n += 2;
    } else {
        int w = snprintf(line, sizeof(line), "%s %-5s %s", ts, level_names[level], msg);
        n = w < (int)sizeof(line) ? (size_t)w : sizeof(line) - 1;
        for (size_t i = 0; i < npairs && n + 4 < sizeof(line); i++) {
            const char *v = kv[2 * i + 1];
            int quote = *v == '\0' || strpbrk(v, " \t\"=") != NULL;
            w = snprintf(line + n, sizeof(line) - n, quote ? " %s=\"%s\"" : " %s=%s", kv[2 * i], v);
            n = w < (int)(sizeof(line) - n) ? n + (size_t)w : sizeof(line) - 2;
        }
        line[n++] = '\n';
    }
    /* A short write to a log is not worth more than one retry. */
    if (write(logger.fd, line, n) < 0 && errno == EINTR)
        (void)!write(logger.fd, line, n);
    errno = saved_errno;
}

void mw_logv(mw_log_level_t level, const char *fmt, va_list ap)
{
    char msg[4096];
    if (!mw_log_enabled(level))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    emit(level, msg, NULL, 0);
}

void mw_log_event(mw_log_level_t level, const char *event, const char *const *kv, size_t npairs)
{
    if (mw_log_enabled(level))
        emit(level, event, kv, npairs);
}

void mw_log(mw_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mw_logv(level, fmt, ap);
    va_end(ap);
}

int mw_log_gate_pass(mw_log_gate_t *g, uint64_t interval_ms, uint64_t *held_back)
{
    struct timespec ts;
    uint64_t now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (g->next_at != 0 && now < g->next_at) {
        g->held_back++;
        return 0;
    }
    *held_back = g->held_back;
    g->held_back = 0;
    g->next_at = now + (interval_ms > 0 ? interval_ms : 1);
    return 1;
}

const char *mw_log_held_back(uint64_t held_back, char *buf, size_t cap)
{
    if (held_back == 0 || cap == 0)
        return "";
    snprintf(buf, cap, "; %llu more since the last such line", (unsigned long long)held_back);
    return buf;
}
