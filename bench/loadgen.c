/* mw_loadgen: the WebSocket load generator of moonwire's benchmarks.
 *
 * One thread, epoll, non-blocking sockets, and an RFC 6455 client: the opening
 * handshake with its Sec-WebSocket-Accept checked, masked frames with a fresh
 * mask per frame, 7-, 16- and 64-bit payload lengths, any number of frames per
 * read and frames split across reads, fragmented messages, ping answered with
 * pong, and the closing handshake. Scenarios (see usage()):
 *
 *   echo     C connections, W messages in flight each, S-byte payloads; every
 *            echo is checked byte for byte against what was sent.
 *   relay    C clients in one room, P of them publish; every message must reach
 *            every other client (scripts/relay.lua). Window W per publisher, or
 *            a fixed rate R with no window.
 *   fanout   the same in N rooms of M members (?room=<n> in the path).
 *   connect  N connections opened and held idle; handshakes/s and the server's
 *            RSS per idle connection.
 *   soak     N connections to scripts/chat.lua, kept at N for D seconds while
 *            each lives a random time: it joins a room, says something now
 *            and then (sometimes not JSON), and ends with a close, a dropped
 *            socket, or a bad frame the server must close with 1002, 1007 or
 *            1009; then it connects again. The server's RSS is read every
 *            second: its growth from --ref seconds to the end is the figure.
 *   member   N connections to one room (the URL names it: /?room=all with
 *            bench/apps/fanout.lua), held while a publisher elsewhere sends
 *            rounds of "B<round> <CLOCK_MONOTONIC ns>". Prints "ready ..." on
 *            stdout once connected, records the arrival time of each round at
 *            each connection against the time in the message, and ends when
 *            stdin closes, on SIGTERM or after -d seconds. Several processes
 *            (bench/scale.py) together hold more sockets than one may open.
 *
 * With --pid, the server's CPU time (utime+stime of /proc/PID/stat) is read at
 * the start and end of the measured window, with the part of it spent in the
 * kernel (stime), and its RSS (VmRSS) before and after. One JSON object goes
 * to stdout; a summary to stderr. Every phase is bounded in time. */
#include "hist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define RBUF_SIZE (256 * 1024)
#define MAX_HANDSHAKE 16384
#define PUB_HEADER 33 /* 'P' + 6 hex publisher + 10 hex seq + 16 hex timestamp */
#define TIMER_ID UINT64_MAX
#define STDIN_ID (UINT64_MAX - 1)
#define MAX_ROUNDS 64 /* member: broadcast rounds counted */

enum { SC_ECHO, SC_RELAY, SC_FANOUT, SC_CONNECT, SC_SOAK, SC_MEMBER, SC__COUNT };
static const char *scenario_names[] = {"echo", "relay", "fanout", "connect", "soak", "member"};

enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_CLOSED };
enum { P_CONNECT, P_HOLD, P_WARMUP, P_MEASURE, P_SOAK, P_LISTEN, P_DRAIN, P_CLOSE, P_DONE };

/* How a soak connection ends, and the close code the server owes for it. */
enum { END_CLOSE, END_ABRUPT, END_UNMASKED, END_BAD_UTF8, END_OPCODE, END_TOO_BIG, END__COUNT };
static const char *end_names[] = {"close", "abrupt", "unmasked", "bad_utf8", "opcode", "too_big"};
static const uint16_t end_codes[] = {1000, 0, 1002, 1007, 1002, 1009};
static const uint32_t end_weights[] = {40, 20, 10, 10, 10, 10}; /* of 100 */
#define SOAK_TOO_BIG 70000 /* over the soak config's 64 KiB max_message_size */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

/* ------------------------------------------------------------------ options */

/* -u and -p may be repeated, for a cluster: connections are spread over the
 * URLs (one host, several ports) and the server CPU and RSS are the sums over
 * the processes. */
#define MAX_SERVERS 8

static struct {
    int scenario;
    char host[64];
    int port;           /* the first URL's; connection i goes to ports[i % nports] */
    int ports[MAX_SERVERS];
    uint32_t nports;
    char path[256];
    uint32_t conns;
    uint32_t window;
    uint32_t size;
    uint32_t publishers; /* per room */
    uint32_t rooms;
    uint32_t members;
    double rate; /* messages/s over all publishers; 0: windowed */
    double duration, warmup, drain, connect_timeout, close_timeout, hold, stall;
    int binary;
    int touch; /* connect: one echo per connection before it idles */
    double life_min, life_max; /* soak: seconds a connection lives */
    double say_min, say_max;   /* soak: seconds between two says */
    double ref;                /* soak: when the reference RSS is read */
    int spin; /* poll without sleeping: no wake-up latency on the generator's side */
    int pid;            /* the first -p; CPU and RSS are summed over pids[] */
    int pids[MAX_SERVERS];
    uint32_t npids;
    uint32_t src_addrs;
    uint32_t src_first; /* the first source is 127.0.0.(1 + src_first) */
    const char *samples; /* member: (round, latency ns) pairs written here */
    uint32_t concurrency;
    const char *label;
    int quiet;
} opt = {
    .scenario = SC_ECHO,
    .host = "127.0.0.1",
    .port = 8080,
    .path = "",
    .conns = 100,
    .window = 16,
    .size = 64,
    .publishers = 1,
    .rooms = 1,
    .members = 0,
    .duration = 10,
    .warmup = 2,
    .drain = 5,
    .connect_timeout = 60,
    .close_timeout = 5,
    .hold = 2,
    .stall = 2,
    .life_min = 5,
    .life_max = 30,
    .say_min = 2,
    .say_max = 10,
    .ref = 60,
    .concurrency = 256,
    .label = "",
};

/* ------------------------------------------------------------- connections */

typedef struct {
    uint64_t drops, retrans, probes;
} kstat_t;

typedef struct {
    uint64_t seq;
    uint64_t sent_ns;
    uint32_t count;
    uint8_t done;
} pubslot_t;

typedef struct {
    int fd;
    uint32_t idx;
    uint32_t room;
    int32_t pub; /* publisher number, or -1 */
    uint8_t state;
    uint8_t dirty;
    uint8_t want_out;
    uint8_t in_frag;
    uint8_t frag_op;
    uint8_t close_sent;
    uint8_t close_rcvd;
    uint8_t failed;
    char key[25];
    uint8_t *rbuf; /* unparsed input: the handshake reply, or a partial frame */
    uint32_t rlen, rcap;
    uint8_t *mbuf; /* a fragmented message being reassembled */
    uint32_t mlen, mcap;
    uint8_t *wbuf; /* output not yet written */
    uint32_t wlen, woff, wcap;
    uint64_t t_connect;
    /* echo */
    uint64_t sent, acked;
    uint64_t *ring; /* send times, window entries */
    /* publisher */
    pubslot_t *slots;
    uint64_t pub_next, pub_oldest;
    /* soak */
    uint32_t gen;          /* connections this slot has made */
    uint64_t t_end, t_say; /* when it ends, when it says something next */
    uint8_t end_kind;      /* END_* */
    uint8_t ending;        /* its end has begun */
} conn_t;

static conn_t *conns;
static conn_t **pubs;
static uint32_t npubs;
static uint32_t *dirty;
static uint32_t ndirty;
static int ep = -1;
static int tfd = -1;
static uint8_t *gbuf;
static uint8_t *scratch;
static uint8_t *pat;
static size_t pat_len;
static uint64_t rng_state;

/* ------------------------------------------------------------------- stats */

static struct {
    int phase;
    uint64_t t_start, t_phase, t_connect_first, t_connect_last;
    uint64_t t_measure0, t_measure1;
    uint32_t next_connect;
    uint32_t connecting;
    uint32_t opened, open_now, failed_connect, closed;
    uint32_t clean_closes, unclean_closes, server_closed;
    uint64_t mismatch, protocol, unexpected, handshake_bad, io_errors, stalled;
    uint64_t reads_window; /* reads that returned data in the window */
    uint32_t touch_sent, touch_done;
    uint64_t close_codes[8];
    uint16_t close_code_val[8];
    int emfile;
    /* echo */
    uint64_t echoes_total, echoes_window, sent_total;
    /* pub/sub */
    uint64_t published_total, published_window, received_total, deliveries_window;
    uint64_t expected_total;
    /* rate mode */
    uint64_t rate_t0, rate_sent;
    uint32_t rate_rr;
    /* server */
    double srv_cpu0, srv_cpu1, srv_cpu_connect0, srv_cpu_connect1;
    double srv_sys0, srv_sys1, srv_sys_connect0, srv_sys_connect1; /* their stime part */
    long rss_before, rss_after, rss_connected;
    double gen_cpu0, gen_cpu1;
    kstat_t k0, k1, kc0, kc1;
    int stop;
    /* soak */
    uint64_t soak_ends[END__COUNT], soak_says, soak_garbage, soak_received;
    uint64_t soak_expected_closes, soak_unexpected_closes, soak_reconnects;
    uint64_t t_soak0, t_soak1, t_tick, t_sample, t_log;
    long rss_ref, rss_end, rss_max, rss_now;
    int ref_done;
    long rss_trace[256]; /* every 10 s from the start of the soak */
    /* member */
    int stdin_closed;
    uint64_t rounds_got[MAX_ROUNDS]; /* connections that received each round */
    uint32_t rounds_seen;            /* the highest round number + 1 */
    uint64_t *samples;               /* (round, latency ns) pairs */
    size_t nsamples, samples_cap;
    uint32_t ntrace;
    char error[256];
} st;

static hist_t lat;
static hist_t conn_lat;

static void say(const char *fmt, ...)
{
    if (opt.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL && n != 0)
        die("out of memory");
    return p;
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint32_t rnd32(void)
{
    /* xorshift64*: a fresh, unpredictable-enough mask per frame */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* --------------------------------------------------------- server readings */

/* utime+stime of pid in seconds, and stime alone in *sys; -1 if unreadable. */
static double proc_cpu_seconds(int pid, double *sys)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    unsigned long long ut = 0, stt = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
        return -1;
    *sys = (double)stt / (double)sysconf(_SC_CLK_TCK);
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(int pid);

/* The CPU seconds (and in *sys the kernel's part of them) and the RSS of
 * every server process given with -p, summed. */
static double servers_cpu_seconds(double *sys)
{
    double sum = 0, sys_one;
    *sys = 0;
    for (uint32_t i = 0; i < opt.npids; i++) {
        double s = proc_cpu_seconds(opt.pids[i], &sys_one);
        if (s < 0)
            return -1;
        sum += s;
        *sys += sys_one;
    }
    return sum;
}

static long servers_rss_kb(void)
{
    long sum = 0;
    for (uint32_t i = 0; i < opt.npids; i++) {
        long kb = proc_rss_kb(opt.pids[i]);
        if (kb < 0)
            return -1;
        sum += kb;
    }
    return sum;
}

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* Packets the kernel dropped from its per-CPU input queues (the second column
 * of /proc/net/softnet_stat, summed), and TCP segments retransmitted and tail
 * loss probes sent (/proc/net/snmp, /proc/net/netstat). On loopback a dropped
 * packet costs a retransmission timeout (200 ms or more) of latency. These are
 * counters of the whole network namespace: other processes count too. */
static uint64_t snmp_field(const char *path, const char *prefix, const char *name)
{
    char head[4096], vals[4096];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t out = 0;
    size_t plen = strlen(prefix);
    while (fgets(head, sizeof(head), f) != NULL && fgets(vals, sizeof(vals), f) != NULL) {
        if (strncmp(head, prefix, plen) != 0)
            continue;
        char *hs = NULL, *vs = NULL;
        char *h = strtok_r(head, " \n", &hs);
        char *v = strtok_r(vals, " \n", &vs);
        while (h != NULL && v != NULL) {
            if (strcmp(h, name) == 0) {
                out = strtoull(v, NULL, 10);
                break;
            }
            h = strtok_r(NULL, " \n", &hs);
            v = strtok_r(NULL, " \n", &vs);
        }
        break;
    }
    fclose(f);
    return out;
}

static kstat_t kstat_read(void)
{
    kstat_t k = {0, 0, 0};
    char line[512];
    FILE *f = fopen("/proc/net/softnet_stat", "r");
    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            unsigned long long a, b;
            if (sscanf(line, "%llx %llx", &a, &b) == 2)
                k.drops += b;
        }
        fclose(f);
    }
    k.retrans = snmp_field("/proc/net/snmp", "Tcp:", "RetransSegs");
    k.probes = snmp_field("/proc/net/netstat", "TcpExt:", "TCPLossProbes");
    return k;
}

static double self_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ base64 */

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
}

static void ws_accept_for(const char *key, char out[29])
{
    char buf[64];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int n = snprintf(buf, sizeof(buf), "%s" WS_GUID, key);
    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    b64(md, 20, out);
}

/* ---------------------------------------------------------------- payloads */

static const char hexd[] = "0123456789abcdef";

static inline void put_hex(uint8_t *p, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = (uint8_t)hexd[v & 15];
        v >>= 4;
    }
}

static inline int get_hex(const uint8_t *p, int digits, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        uint8_t ch = p[i];
        uint64_t d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static void pattern_init(size_t size)
{
    static const char letters[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!*'()";
    pat_len = size + 4096 + 64;
    pat = xrealloc(NULL, pat_len);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < pat_len; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        pat[i] = (uint8_t)letters[(s >> 33) % (sizeof(letters) - 1)];
    }
}

static inline size_t echo_off(uint32_t idx, uint64_t seq)
{
    return (size_t)((idx * 131u + seq * 17u) & 4095u);
}

static void echo_payload(uint8_t *out, uint32_t idx, uint64_t seq, uint32_t size)
{
    memcpy(out, pat + echo_off(idx, seq), size);
    if (size >= 8)
        put_hex(out, seq & 0xffffffffu, 8);
}

static int echo_check(const uint8_t *data, size_t len, uint32_t idx, uint64_t seq, uint32_t size)
{
    if (len != size)
        return -1;
    size_t off = echo_off(idx, seq);
    if (size >= 8) {
        uint8_t h[8];
        put_hex(h, seq & 0xffffffffu, 8);
        if (memcmp(h, data, 8) != 0 || memcmp(pat + off + 8, data + 8, size - 8) != 0)
            return -1;
        return 0;
    }
    return memcmp(pat + off, data, size) == 0 ? 0 : -1;
}

static inline size_t pub_off(uint32_t pub, uint64_t seq)
{
    return (size_t)((pub * 7u + seq * 13u) & 4095u);
}

static void pub_payload(uint8_t *out, uint32_t pub, uint64_t seq, uint64_t ts, uint32_t size)
{
    out[0] = 'P';
    put_hex(out + 1, pub, 6);
    put_hex(out + 7, seq, 10);
    put_hex(out + 17, ts, 16);
    memcpy(out + PUB_HEADER, pat + pub_off(pub, seq), size - PUB_HEADER);
}

static int pub_parse(const uint8_t *data, size_t len, uint32_t *pub, uint64_t *seq, uint64_t *ts)
{
    uint64_t p;
    if (len != opt.size || data[0] != 'P' || get_hex(data + 1, 6, &p) != 0 ||
        get_hex(data + 7, 10, seq) != 0 || get_hex(data + 17, 16, ts) != 0)
        return -1;
    *pub = (uint32_t)p;
    if (memcmp(pat + pub_off(*pub, *seq), data + PUB_HEADER, len - PUB_HEADER) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ output */

static void mark_dirty(conn_t *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        dirty[ndirty++] = c->idx;
    }
}

static uint8_t *wreserve(conn_t *c, size_t n)
{
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen + n > c->wcap) {
        if (c->woff > 0) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wlen + n > c->wcap) {
            size_t cap = c->wcap ? c->wcap : 256;
            while (cap < c->wlen + n)
                cap *= 2;
            c->wbuf = xrealloc(c->wbuf, cap);
            c->wcap = (uint32_t)cap;
        }
    }
    return c->wbuf + c->wlen;
}

static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, uint32_t key)
{
    uint8_t k[4];
    memcpy(k, &key, 4);
    uint64_t k8 = (uint64_t)key | (uint64_t)key << 32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 3];
}

/* Appends one masked frame (FIN set) to c's output, with a fresh mask. */
static void put_frame(conn_t *c, int op, const uint8_t *payload, size_t len)
{
    uint8_t *p = wreserve(c, len + 14);
    size_t h = 0;
    p[h++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        p[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(len >> 8);
        p[h++] = (uint8_t)len;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            p[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key = rnd32();
    memcpy(p + h, &key, 4);
    h += 4;
    mask_copy(p + h, payload, len, key);
    c->wlen += (uint32_t)(h + len);
    mark_dirty(c);
}

static void conn_fail(conn_t *c, const char *why);

static void set_out(conn_t *c, int on)
{
    if (c->want_out == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u64 = c->idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)on;
}

static void flush(conn_t *c)
{
    while (c->fd >= 0 && c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(c, 1);
            return;
        }
        st.io_errors++;
        conn_fail(c, "write");
        return;
    }
    c->woff = c->wlen = 0;
    if (c->wcap > 65536) {
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    set_out(c, 0);
}

static void flush_dirty(void)
{
    for (uint32_t i = 0; i < ndirty; i++) {
        conn_t *c = &conns[dirty[i]];
        c->dirty = 0;
        if (c->fd >= 0 && c->state != ST_CONNECTING)
            flush(c);
    }
    ndirty = 0;
}

/* ------------------------------------------------------------ the scenarios */

static int sending_allowed(void)
{
    return st.phase == P_WARMUP || st.phase == P_MEASURE;
}

static void echo_send(conn_t *c)
{
    uint64_t seq = c->sent++;
    c->ring[seq % opt.window] = now_ns();
    echo_payload(scratch, c->idx, seq, opt.size);
    put_frame(c, opt.binary ? OP_BINARY : OP_TEXT, scratch, opt.size);
    st.sent_total++;
}

static void echo_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t)
{
    if (c->acked == c->sent) {
        st.unexpected++;
        return;
    }
    uint64_t seq = c->acked++;
    if (op != (opt.binary ? OP_BINARY : OP_TEXT) ||
        echo_check(data, len, c->idx, seq, opt.size) != 0)
        st.mismatch++;
    st.echoes_total++;
    if (st.phase == P_MEASURE) {
        st.echoes_window++;
        hist_record(&lat, t - c->ring[seq % opt.window]);
    }
    if (sending_allowed())
        echo_send(c);
}

static uint32_t room_size(uint32_t room)
{
    (void)room;
    return opt.members;
}

static void pub_send(conn_t *c, uint64_t ts)
{
    uint64_t seq = c->pub_next++;
    if (opt.rate == 0) {
        pubslot_t *s = &c->slots[seq % opt.window];
        s->seq = seq;
        s->sent_ns = ts;
        s->count = 0;
        s->done = 0;
    }
    pub_payload(scratch, (uint32_t)c->pub, seq, ts, opt.size);
    put_frame(c, opt.binary ? OP_BINARY : OP_TEXT, scratch, opt.size);
    st.published_total++;
    st.expected_total += room_size(c->room) - 1;
    if (st.phase == P_MEASURE)
        st.published_window++;
}

/* Frees the publisher's window slots that are complete (or stalled past
 * --stall seconds) and sends as many new messages. */
static void pub_advance(conn_t *p, uint64_t t)
{
    while (p->pub_oldest < p->pub_next) {
        pubslot_t *s = &p->slots[p->pub_oldest % opt.window];
        if (!s->done) {
            /* t may be older than a message sent in this same turn */
            if (t <= s->sent_ns || t - s->sent_ns < (uint64_t)(opt.stall * 1e9))
                break;
            st.stalled++;
        }
        p->pub_oldest++;
    }
    while (sending_allowed() && p->fd >= 0 && p->state == ST_OPEN &&
           p->pub_next - p->pub_oldest < opt.window)
        pub_send(p, now_ns());
}

static void pub_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t)
{
    uint32_t pub;
    uint64_t seq, ts;
    if (op != (opt.binary ? OP_BINARY : OP_TEXT) || pub_parse(data, len, &pub, &seq, &ts) != 0 ||
        pub >= npubs) {
        st.mismatch++;
        return;
    }
    conn_t *p = pubs[pub];
    if (p == c || p->room != c->room || seq >= p->pub_next) {
        st.unexpected++;
        return;
    }
    st.received_total++;
    if (st.phase == P_MEASURE) {
        st.deliveries_window++;
        hist_record(&lat, t > ts ? t - ts : 0);
    }
    if (opt.rate == 0) {
        pubslot_t *s = &p->slots[seq % opt.window];
        if (s->seq == seq && !s->done && ++s->count >= room_size(p->room) - 1) {
            s->done = 1;
            if (seq == p->pub_oldest)
                pub_advance(p, t);
        }
    }
}

/* member: a broadcast round "B<round> <sent ns>" reached c at t. Each
 * connection must see each round once, in order. */
static void member_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t)
{
    char text[64];
    unsigned round;
    unsigned long long sent;
    if (op != OP_TEXT || len == 0 || len >= sizeof(text) || data[0] != 'B') {
        st.unexpected++;
        return;
    }
    memcpy(text, data, len);
    text[len] = 0;
    if (sscanf(text, "B%u %llu", &round, &sent) != 2 || round >= MAX_ROUNDS ||
        round < c->sent) {
        st.mismatch++; /* malformed, or a round seen twice or out of order */
        return;
    }
    c->sent = round + 1;
    st.rounds_got[round]++;
    if (round + 1 > st.rounds_seen)
        st.rounds_seen = round + 1;
    uint64_t d = t > sent ? t - sent : 0;
    hist_record(&lat, d);
    if (st.nsamples + 2 > st.samples_cap) {
        st.samples_cap = st.samples_cap ? st.samples_cap * 2 : 2 * 65536;
        st.samples = xrealloc(st.samples, st.samples_cap * sizeof(uint64_t));
    }
    st.samples[st.nsamples++] = round;
    st.samples[st.nsamples++] = d;
}

static void on_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t)
{
    if (opt.scenario == SC_MEMBER) {
        member_message(c, op, data, len, t);
    } else if (opt.scenario == SC_SOAK) {
        /* The chat answers JSON objects only. */
        if (op != OP_TEXT || len == 0 || data[0] != '{')
            st.mismatch++;
        st.soak_received++;
    } else if (opt.scenario == SC_ECHO)
        echo_message(c, op, data, len, t);
    else if (opt.scenario == SC_RELAY || opt.scenario == SC_FANOUT)
        pub_message(c, op, data, len, t);
    else if (opt.touch && c->sent == 0) {
        c->sent = 1;
        if (op != OP_TEXT || echo_check(data, len, c->idx, 0, opt.size) != 0)
            st.mismatch++;
        st.touch_done++;
    } else
        st.unexpected++;
}

/* ---------------------------------------------------------- frame parsing */

static void send_close(conn_t *c, uint16_t code)
{
    if (c->close_sent)
        return;
    uint8_t b[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    put_frame(c, OP_CLOSE, b, code ? 2 : 0);
    c->close_sent = 1;
}

static void count_close_code(uint16_t code)
{
    for (int i = 0; i < 8; i++) {
        if (st.close_code_val[i] == code || st.close_code_val[i] == 0) {
            st.close_code_val[i] = code;
            st.close_codes[i]++;
            return;
        }
    }
}

static void on_frame_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t);

/* Parses as many whole frames of buf as there are. Returns the bytes used,
 * or -1 after a protocol error (the connection has been failed). */
static ssize_t parse_frames(conn_t *c, const uint8_t *buf, size_t len, uint64_t t)
{
    size_t pos = 0;
    while (c->fd >= 0 && len - pos >= 2) {
        const uint8_t *p = buf + pos;
        size_t avail = len - pos;
        int fin = p[0] & 0x80;
        int rsv = p[0] & 0x70;
        int op = p[0] & 0x0f;
        int masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t)p[2] << 8 | p[3];
            h = 4;
            if (plen < 126)
                goto bad;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[2 + i];
            h = 10;
            if (plen < 65536 || plen >> 63)
                goto bad;
        }
        if (rsv || masked)
            goto bad;
        if (plen > (64u << 20))
            goto bad;
        if (avail < h + plen) {
            /* make room for the whole frame in rbuf */
            if (c->rcap < h + plen) {
                c->rbuf = xrealloc(c->rbuf, h + plen);
                c->rcap = (uint32_t)(h + plen);
            }
            break;
        }
        const uint8_t *pl = p + h;
        pos += h + plen;
        if (op >= 8) {
            if (!fin || plen > 125)
                goto bad;
            if (op == OP_PING) {
                if (!c->close_sent)
                    put_frame(c, OP_PONG, pl, plen);
            } else if (op == OP_CLOSE) {
                uint16_t code = plen >= 2 ? (uint16_t)(pl[0] << 8 | pl[1]) : 1005;
                if (plen == 1)
                    goto bad;
                c->close_rcvd = 1;
                if (!c->close_sent) {
                    /* the server closed first */
                    if (opt.scenario != SC_SOAK)
                        st.server_closed++;
                    else if (c->ending && code == end_codes[c->end_kind])
                        st.soak_expected_closes++;
                    else
                        st.soak_unexpected_closes++;
                    count_close_code(code);
                    send_close(c, code == 1005 ? 1000 : code);
                }
                c->state = ST_CLOSING;
            } else if (op != OP_PONG) {
                goto bad;
            }
            continue;
        }
        if (c->close_rcvd)
            continue; /* nothing after a close frame counts */
        if (op == OP_CONT) {
            if (!c->in_frag)
                goto bad;
            if (c->mlen + plen > c->mcap) {
                c->mcap = (uint32_t)(c->mlen + plen) * 2;
                c->mbuf = xrealloc(c->mbuf, c->mcap);
            }
            memcpy(c->mbuf + c->mlen, pl, plen);
            c->mlen += (uint32_t)plen;
            if (fin) {
                c->in_frag = 0;
                on_frame_message(c, c->frag_op, c->mbuf, c->mlen, t);
                c->mlen = 0;
            }
        } else if (op == OP_TEXT || op == OP_BINARY) {
            if (c->in_frag)
                goto bad;
            if (fin) {
                on_frame_message(c, op, pl, plen, t);
            } else {
                c->in_frag = 1;
                c->frag_op = (uint8_t)op;
                if (plen > c->mcap) {
                    c->mcap = (uint32_t)plen * 2 + 64;
                    c->mbuf = xrealloc(c->mbuf, c->mcap);
                }
                memcpy(c->mbuf, pl, plen);
                c->mlen = (uint32_t)plen;
            }
        } else {
            goto bad;
        }
    }
    return (ssize_t)pos;
bad:
    st.protocol++;
    conn_fail(c, "protocol error");
    return -1;
}

/* --------------------------------------------------------------- handshake */

static void soak_opened(conn_t *c, uint64_t t);

static int handle_handshake(conn_t *c, uint64_t t)
{
    uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (end == NULL) {
        if (c->rlen > MAX_HANDSHAKE) {
            st.handshake_bad++;
            conn_fail(c, "handshake reply too long");
            return -1;
        }
        return 0;
    }
    size_t hlen = (size_t)(end - c->rbuf) + 4;
    char *h = (char *)c->rbuf;
    if (hlen < 13 || memcmp(h, "HTTP/1.1 101", 12) != 0) {
        st.handshake_bad++;
        conn_fail(c, "handshake refused");
        return -1;
    }
    char want[29];
    ws_accept_for(c->key, want);
    int ok = 0, upgrade = 0;
    char *line = memchr(h, '\n', hlen) + 1;
    while (line < (char *)end) {
        char *eol = memchr(line, '\n', (size_t)((char *)end + 2 - line));
        if (eol == NULL)
            break;
        char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - line);
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (nlen == 20 && strncasecmp(line, "sec-websocket-accept", 20) == 0 &&
                ve - v == 28 && memcmp(v, want, 28) == 0)
                ok = 1;
            if (nlen == 7 && strncasecmp(line, "upgrade", 7) == 0 && ve - v == 9 &&
                strncasecmp(v, "websocket", 9) == 0)
                upgrade = 1;
        }
        line = eol + 1;
    }
    if (!ok || !upgrade) {
        st.handshake_bad++;
        conn_fail(c, "bad Sec-WebSocket-Accept or Upgrade");
        return -1;
    }
    memmove(c->rbuf, c->rbuf + hlen, c->rlen - hlen);
    c->rlen -= (uint32_t)hlen;
    c->state = ST_OPEN;
    st.connecting--;
    st.opened++;
    st.open_now++;
    st.t_connect_last = t;
    hist_record(&conn_lat, t - c->t_connect);
    if (opt.scenario == SC_ECHO)
        c->ring = xrealloc(NULL, sizeof(uint64_t) * opt.window);
    if (opt.scenario == SC_CONNECT && opt.touch) {
        echo_payload(scratch, c->idx, 0, opt.size);
        put_frame(c, OP_TEXT, scratch, opt.size);
        st.touch_sent++;
    }
    if (opt.scenario == SC_SOAK)
        soak_opened(c, t);
    return 1;
}

static int self_mode;
static void self_on_message(conn_t *c, int op, const uint8_t *data, size_t len);

static void on_frame_message(conn_t *c, int op, const uint8_t *data, size_t len, uint64_t t)
{
    if (self_mode)
        self_on_message(c, op, data, len);
    else
        on_message(c, op, data, len, t);
}

/* Takes n bytes read from c's socket. */
static void conn_input(conn_t *c, const uint8_t *data, size_t n, uint64_t t)
{
    if (c->rlen == 0 && c->state != ST_HANDSHAKE) {
        ssize_t used = parse_frames(c, data, n, t);
        if (used < 0 || c->fd < 0)
            return;
        size_t left = n - (size_t)used;
        if (left > 0) {
            if (c->rcap < left) {
                c->rbuf = xrealloc(c->rbuf, left < 4096 ? 4096 : left);
                c->rcap = (uint32_t)(left < 4096 ? 4096 : left);
            }
            memcpy(c->rbuf, data + used, left);
            c->rlen = (uint32_t)left;
        }
        return;
    }
    if (c->rlen + n > c->rcap) {
        size_t cap = c->rcap ? c->rcap : 4096;
        while (cap < c->rlen + n)
            cap *= 2;
        c->rbuf = xrealloc(c->rbuf, cap);
        c->rcap = (uint32_t)cap;
    }
    memcpy(c->rbuf + c->rlen, data, n);
    c->rlen += (uint32_t)n;
    if (c->state == ST_HANDSHAKE) {
        if (handle_handshake(c, t) <= 0)
            return;
    }
    ssize_t used = parse_frames(c, c->rbuf, c->rlen, t);
    if (used < 0 || c->fd < 0)
        return;
    memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
    c->rlen -= (uint32_t)used;
    if (c->rlen == 0 && c->rcap > 65536) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

/* ------------------------------------------------------------- connections */

static void conn_release(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE)
        st.connecting--;
    if (c->state == ST_OPEN || c->state == ST_CLOSING)
        st.open_now--;
    c->state = ST_CLOSED;
    st.closed++;
    free(c->rbuf);
    free(c->mbuf);
    free(c->wbuf);
    c->rbuf = c->mbuf = c->wbuf = NULL;
    c->rlen = c->rcap = c->mlen = c->mcap = c->wlen = c->wcap = c->woff = 0;
}

static void conn_fail(conn_t *c, const char *why)
{
    if (c->fd < 0)
        return;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        st.failed_connect++;
        if (st.failed_connect <= 3)
            say("connection %u failed: %s", c->idx, why);
    } else if (st.phase < P_CLOSE || !c->close_sent) {
        st.unclean_closes++;
        if (st.unclean_closes <= 3)
            say("connection %u lost: %s", c->idx, why);
    }
    c->failed = 1;
    conn_release(c);
}

static uint32_t src_count(void)
{
    if (opt.src_addrs)
        return opt.src_addrs;
    /* connect() prefers even ephemeral ports (about 14,000 of them); past
     * that the kernel's port search gets slow (4,000 handshakes/s at 19,800
     * connections from one address against 30,000 from two), and past about
     * 28,000 it fails. So: one 127.0.0.x source per 10,000 connections. */
    return (opt.conns + 9999) / 10000;
}

static void start_connect(conn_t *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    c->t_connect = now_ns();
    if (st.t_connect_first == 0)
        st.t_connect_first = c->t_connect;
    c->state = ST_CONNECTING;
    st.connecting++;
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE)
            st.emfile = 1;
        st.connecting--;
        st.failed_connect++;
        c->state = ST_CLOSED;
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint32_t k = src_count();
    if (k > 1 || opt.src_first > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + opt.src_first + c->idx % k);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            conn_fail(c, strerror(errno));
            return;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)opt.ports[c->idx % opt.nports])};
    inet_pton(AF_INET, opt.host, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        conn_fail(c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = c->idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        conn_fail(c, "epoll_ctl");
        return;
    }
}

static void path_for(conn_t *c, char *out, size_t n)
{
    if (opt.path[0] != 0 && strstr(opt.path, "%u") != NULL)
        snprintf(out, n, opt.path, c->room);
    else if (opt.path[0] != 0)
        snprintf(out, n, "%s", opt.path);
    else if (opt.scenario == SC_FANOUT)
        snprintf(out, n, "/?room=%u", c->room);
    else if (opt.scenario == SC_SOAK) /* a nick of its own, a room shared with others */
        snprintf(out, n, "/chat?nick=s%ux%u&room=r%u", c->idx, c->gen, c->idx % opt.rooms);
    else
        snprintf(out, n, "/");
}

static void connected(conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        conn_fail(c, strerror(err));
        return;
    }
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rnd32();
        memcpy(raw + i, &r, 4);
    }
    b64(raw, 16, c->key);
    char path[300];
    path_for(c, path, sizeof(path));
    char req[600];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nUser-Agent: mw_loadgen\r\n\r\n",
                     path, opt.host, opt.ports[c->idx % opt.nports], c->key);
    memcpy(wreserve(c, (size_t)n), req, (size_t)n);
    c->wlen += (uint32_t)n;
    c->state = ST_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = c->idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = 0;
    flush(c);
}

static void do_read(conn_t *c)
{
    ssize_t n = read(c->fd, gbuf, RBUF_SIZE);
    if (n > 0) {
        if (st.phase == P_MEASURE)
            st.reads_window++;
        conn_input(c, gbuf, (size_t)n, now_ns());
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n == 0 && c->close_rcvd && c->close_sent) {
        st.clean_closes++;
        conn_release(c);
        return;
    }
    if (n < 0)
        st.io_errors++;
    conn_fail(c, n == 0 ? "server closed TCP without a close handshake" : strerror(errno));
}

/* -------------------------------------------------------------------- soak */

/* A random time between lo and hi seconds from t. */
static uint64_t soak_after(uint64_t t, double lo, double hi)
{
    return t + (uint64_t)((lo + (hi - lo) * (rnd32() / 4294967296.0)) * 1e9);
}

static void soak_opened(conn_t *c, uint64_t t)
{
    uint32_t w = rnd32() % 100, k = 0;

    while (w >= end_weights[k]) {
        w -= end_weights[k];
        k++;
    }
    c->end_kind = (uint8_t)k;
    c->ending = 0;
    c->t_end = soak_after(t, opt.life_min, opt.life_max);
    c->t_say = soak_after(t, 0, opt.say_max);
}

static void soak_say(conn_t *c, uint64_t t)
{
    char text[160];
    int n;

    if (rnd32() % 20 == 0) { /* the chat answers an error and keeps the connection */
        n = snprintf(text, sizeof(text), "this is not json %u.%u", c->idx, c->gen);
        st.soak_garbage++;
    } else {
        n = snprintf(text, sizeof(text), "{\"type\":\"say\",\"text\":\"soak %u.%u at %.3f\"}",
                     c->idx, c->gen, (double)(t - st.t_soak0) / 1e9);
        st.soak_says++;
    }
    put_frame(c, OP_TEXT, (const uint8_t *)text, (size_t)n);
    c->t_say = soak_after(t, opt.say_min, opt.say_max);
}

static void soak_end(conn_t *c)
{
    static uint8_t big[SOAK_TOO_BIG];
    static const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
    static const uint8_t bad_utf8[] = {0xc3, 0x28};

    st.soak_ends[c->end_kind]++;
    c->ending = 1;
    switch (c->end_kind) {
    case END_CLOSE:
        send_close(c, 1000);
        break;
    case END_ABRUPT:
        conn_release(c); /* a reset if the server's last messages are unread */
        break;
    case END_UNMASKED:
        memcpy(wreserve(c, sizeof(unmasked)), unmasked, sizeof(unmasked));
        c->wlen += sizeof(unmasked);
        mark_dirty(c);
        break;
    case END_BAD_UTF8:
        put_frame(c, OP_TEXT, bad_utf8, sizeof(bad_utf8));
        break;
    case END_OPCODE:
        put_frame(c, 0x3, NULL, 0);
        break;
    default:
        memset(big, 'a', sizeof(big));
        put_frame(c, OP_TEXT, big, sizeof(big));
        break;
    }
}

/* Every 20 ms: ends, says, and a new connection in every free slot. */
static void soak_tick(uint64_t t)
{
    for (uint32_t i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->fd < 0) {
            if (st.connecting >= opt.concurrency)
                continue;
            c->gen++;
            c->close_sent = c->close_rcvd = c->in_frag = c->failed = c->ending = 0;
            c->want_out = 0;
            st.soak_reconnects++;
            start_connect(c);
            continue;
        }
        if (c->state != ST_OPEN || c->ending)
            continue;
        if (t >= c->t_end)
            soak_end(c);
        else if (t >= c->t_say)
            soak_say(c, t);
    }
}

static void soak_step(uint64_t t)
{
    double el = (double)(t - st.t_soak0) / 1e9;

    if (t - st.t_tick >= 20000000u) {
        st.t_tick = t;
        soak_tick(t);
    }
    if (t - st.t_sample >= 1000000000u) {
        st.t_sample = t;
        st.rss_now = opt.pid ? servers_rss_kb() : -1;
        if (st.rss_now > st.rss_max)
            st.rss_max = st.rss_now;
        if (!st.ref_done && el >= opt.ref) {
            st.ref_done = 1;
            st.rss_ref = st.rss_now;
            say("soak: %.0f s: server RSS %ld kB (the reference)", el, st.rss_ref);
        }
    }
    if (t - st.t_log >= 10000000000u) {
        st.t_log = t;
        if (st.ntrace < sizeof(st.rss_trace) / sizeof(st.rss_trace[0]))
            st.rss_trace[st.ntrace++] = st.rss_now;
        say("soak: %.0f s: %u open, %" PRIu64 " reconnects, %" PRIu64 " says, %" PRIu64
            " received, server RSS %ld kB",
            el, st.open_now, st.soak_reconnects, st.soak_says, st.soak_received, st.rss_now);
    }
}

/* ------------------------------------------------------------------ phases */

static void set_phase(int phase, uint64_t t)
{
    st.phase = phase;
    st.t_phase = t;
}

static void start_sending(uint64_t t)
{
    if (opt.scenario == SC_ECHO) {
        for (uint32_t i = 0; i < opt.conns; i++) {
            conn_t *c = &conns[i];
            for (uint32_t w = 0; w < opt.window && c->state == ST_OPEN; w++)
                echo_send(c);
        }
    } else if (opt.rate == 0) {
        for (uint32_t i = 0; i < npubs; i++)
            pub_advance(pubs[i], t);
    } else {
        uint64_t period = (uint64_t)(1e9 / opt.rate);
        struct itimerspec its = {
            .it_value = {.tv_sec = 0, .tv_nsec = 1000},
            .it_interval = {.tv_sec = (time_t)(period / 1000000000u),
                            .tv_nsec = (long)(period % 1000000000u)},
        };
        st.rate_t0 = t;
        timerfd_settime(tfd, 0, &its, NULL);
    }
}

static void rate_tick(void)
{
    uint64_t exp;
    if (read(tfd, &exp, sizeof(exp)) != sizeof(exp) || !sending_allowed())
        return;
    uint64_t period = (uint64_t)(1e9 / opt.rate);
    uint64_t t = now_ns();
    /* send every message that is due, stamped with the time it was due: a late
     * generator shows up as latency rather than as fewer samples */
    while (st.rate_t0 + st.rate_sent * period <= t) {
        uint64_t due = st.rate_t0 + st.rate_sent * period;
        st.rate_sent++;
        conn_t *p = pubs[st.rate_rr++ % npubs];
        if (p->state == ST_OPEN)
            pub_send(p, due);
    }
}

static int drained(void)
{
    if (opt.scenario == SC_ECHO) {
        for (uint32_t i = 0; i < opt.conns; i++)
            if (conns[i].state == ST_OPEN && conns[i].acked != conns[i].sent)
                return 0;
        return 1;
    }
    if (opt.scenario == SC_RELAY || opt.scenario == SC_FANOUT)
        return st.received_total >= st.expected_total;
    return 1;
}

static void begin_close(uint64_t t)
{
    set_phase(P_CLOSE, t);
    if (tfd >= 0) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timerfd_settime(tfd, 0, &off, NULL);
    }
    for (uint32_t i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->fd < 0)
            continue;
        if (c->state == ST_OPEN || c->state == ST_CLOSING)
            send_close(c, 1000);
        else
            conn_release(c); /* still connecting */
    }
}

static void step(uint64_t t)
{
    double el = (double)(t - st.t_phase) / 1e9;
    switch (st.phase) {
    case P_CONNECT: {
        while (!st.emfile && st.next_connect < opt.conns && st.connecting < opt.concurrency)
            start_connect(&conns[st.next_connect++]);
        int done = st.next_connect == opt.conns && st.connecting == 0 &&
                   st.touch_done >= st.touch_sent;
        if (done || el > opt.connect_timeout || st.stop ||
            (st.emfile && st.connecting == 0)) {
            st.srv_cpu_connect1 = opt.pid ? servers_cpu_seconds(&st.srv_sys_connect1) : 0;
            st.kc1 = kstat_read();
            say("%u of %u connections open in %.2f s (%u failed)", st.opened, opt.conns,
                (double)(st.t_connect_last - st.t_connect_first) / 1e9, st.failed_connect);
            if (opt.scenario == SC_CONNECT) {
                set_phase(P_HOLD, t);
            } else if (opt.scenario == SC_MEMBER) {
                /* whoever started us reads this line, then publishes */
                printf("ready %u %u %u %" PRIu64 " %" PRIu64 "\n", st.opened, opt.conns,
                       st.failed_connect, st.t_connect_first, st.t_connect_last);
                fflush(stdout);
                set_phase(P_LISTEN, t);
            } else if (st.opened < opt.conns) {
                snprintf(st.error, sizeof(st.error), "only %u of %u connections opened",
                         st.opened, opt.conns);
                begin_close(t);
            } else if (opt.scenario == SC_SOAK) {
                set_phase(P_SOAK, t);
                st.t_soak0 = st.t_tick = st.t_sample = st.t_log = t;
                st.srv_cpu0 = opt.pid ? servers_cpu_seconds(&st.srv_sys0) : 0;
                st.gen_cpu0 = self_cpu_seconds();
                st.rss_now = st.rss_max = opt.pid ? servers_rss_kb() : -1;
                st.rss_trace[st.ntrace++] = st.rss_now;
            } else {
                set_phase(P_WARMUP, t);
                start_sending(t);
            }
        }
        break;
    }
    case P_SOAK:
        soak_step(t);
        if (el >= opt.duration || st.stop) {
            st.t_soak1 = t;
            st.srv_cpu1 = opt.pid ? servers_cpu_seconds(&st.srv_sys1) : 0;
            st.gen_cpu1 = self_cpu_seconds();
            st.rss_end = opt.pid ? servers_rss_kb() : -1;
            if (!st.ref_done)
                snprintf(st.error, sizeof(st.error), "the soak ended before --ref");
            begin_close(t);
        }
        break;
    case P_LISTEN:
        if (st.stdin_closed || st.stop || el >= opt.duration) {
            if (!st.stdin_closed && !st.stop)
                snprintf(st.error, sizeof(st.error), "held %.0f s (-d) and stdin still open",
                         opt.duration);
            begin_close(t);
        }
        break;
    case P_HOLD:
        if (el >= opt.hold || st.stop) {
            st.rss_connected = opt.pid ? servers_rss_kb() : -1;
            begin_close(t);
        }
        break;
    case P_WARMUP:
        if (opt.rate == 0)
            for (uint32_t i = 0; i < npubs; i++)
                pub_advance(pubs[i], t);
        if (el >= opt.warmup || st.stop) {
            set_phase(P_MEASURE, t);
            st.t_measure0 = t;
            st.srv_cpu0 = opt.pid ? servers_cpu_seconds(&st.srv_sys0) : 0;
            st.gen_cpu0 = self_cpu_seconds();
            st.k0 = kstat_read();
            hist_reset(&lat);
        }
        break;
    case P_MEASURE:
        if (opt.rate == 0)
            for (uint32_t i = 0; i < npubs; i++)
                pub_advance(pubs[i], t);
        if (el >= opt.duration || st.stop) {
            st.t_measure1 = t;
            st.srv_cpu1 = opt.pid ? servers_cpu_seconds(&st.srv_sys1) : 0;
            st.gen_cpu1 = self_cpu_seconds();
            st.k1 = kstat_read();
            st.rss_after = opt.pid ? servers_rss_kb() : -1;
            set_phase(P_DRAIN, t);
        }
        break;
    case P_DRAIN:
        if (drained() || el >= opt.drain)
            begin_close(t);
        break;
    case P_CLOSE:
        if (st.open_now == 0 || el >= opt.close_timeout) {
            for (uint32_t i = 0; i < opt.conns; i++)
                if (conns[i].fd >= 0) {
                    st.unclean_closes++;
                    conn_release(&conns[i]);
                }
            set_phase(P_DONE, t);
        }
        break;
    }
}

/* ------------------------------------------------------------------ report */

static void json_latency(FILE *f, const char *name, const hist_t *h)
{
    fprintf(f,
            "\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
            "\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
            name, h->count, hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3,
            hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3, h->max / 1e3,
            h->count ? h->sum / (double)h->count / 1e3 : 0.0);
}

static void report(void)
{
    double win = (double)(st.t_measure1 - st.t_measure0) / 1e9;
    double cpu = st.srv_cpu1 - st.srv_cpu0;
    double sys = st.srv_sys1 - st.srv_sys0;
    double conn_s = (double)(st.t_connect_last - st.t_connect_first) / 1e9;
    FILE *f = stdout;
    fprintf(f, "{\"scenario\":\"%s\",\"label\":\"%s\",\"url\":\"ws://%s:%d\",", scenario_names[opt.scenario],
            opt.label, opt.host, opt.port);
    fprintf(f, "\"conns\":%u,\"opened\":%u,\"connect_failed\":%u,\"connect_s\":%.3f,"
               "\"handshakes_per_s\":%.1f,",
            opt.conns, st.opened, st.failed_connect, conn_s, conn_s > 0 ? st.opened / conn_s : 0);
    json_latency(f, "handshake_us", &conn_lat);
    fprintf(f,
            ",\"src_addrs\":%u,\"connect_kernel\":{\"input_drops\":%" PRIu64
            ",\"tcp_retrans\":%" PRIu64 "}",
            src_count(), st.kc1.drops - st.kc0.drops, st.kc1.retrans - st.kc0.retrans);
    fprintf(f, ",\"server_pid\":%d,\"servers\":%u,\"rss_before_kb\":%ld,", opt.pid, opt.nports,
            st.rss_before);
    if (opt.scenario == SC_CONNECT) {
        double hcpu = st.srv_cpu_connect1 - st.srv_cpu_connect0;
        double hsys = st.srv_sys_connect1 - st.srv_sys_connect0;
        long d = st.rss_connected - st.rss_before;
        fprintf(f, "\"touch\":%s,\"touched\":%u,", opt.touch ? "true" : "false", st.touch_done);
        fprintf(f,
                "\"rss_connected_kb\":%ld,\"rss_per_conn_bytes\":%.1f,"
                "\"server_cpu_s\":%.3f,\"server_kernel_share\":%.3f,"
                "\"server_cpu_us_per_handshake\":%.2f,",
                st.rss_connected, st.opened ? d * 1024.0 / st.opened : 0, hcpu,
                hcpu > 0 ? hsys / hcpu : 0, st.opened ? hcpu * 1e6 / st.opened : 0);
    } else if (opt.scenario == SC_MEMBER) {
        fprintf(f, "\"connect_first_ns\":%" PRIu64 ",\"connect_last_ns\":%" PRIu64
                   ",\"rounds\":%u,\"rounds_got\":[",
                st.t_connect_first, st.t_connect_last, st.rounds_seen);
        for (uint32_t r = 0; r < st.rounds_seen; r++)
            fprintf(f, "%s%" PRIu64, r ? "," : "", st.rounds_got[r]);
        fprintf(f, "],");
        json_latency(f, "latency_us", &lat);
        fputc(',', f);
    } else if (opt.scenario == SC_SOAK) {
        double s = (double)(st.t_soak1 - st.t_soak0) / 1e9;
        double growth = st.rss_ref > 0 ? (double)st.rss_end / (double)st.rss_ref - 1 : 0;
        fprintf(f,
                "\"server_cpu_s\":%.3f,\"server_cpu_util\":%.3f,\"gen_cpu_util\":%.3f,"
                "\"soak\":{\"seconds\":%.1f,\"ref_s\":%.1f,\"rooms\":%u,"
                "\"rss_ref_kb\":%ld,\"rss_end_kb\":%ld,\"rss_max_kb\":%ld,"
                "\"rss_growth\":%.4f,\"reconnects\":%" PRIu64 ",\"connects_per_s\":%.1f,"
                "\"says\":%" PRIu64 ",\"not_json\":%" PRIu64 ",\"received\":%" PRIu64
                ",\"received_per_s\":%.1f,\"expected_closes\":%" PRIu64
                ",\"unexpected_closes\":%" PRIu64 ",\"ends\":{",
                st.srv_cpu1 - st.srv_cpu0, s > 0 ? (st.srv_cpu1 - st.srv_cpu0) / s : 0,
                s > 0 ? (st.gen_cpu1 - st.gen_cpu0) / s : 0, s, opt.ref, opt.rooms, st.rss_ref,
                st.rss_end, st.rss_max, growth, st.soak_reconnects,
                s > 0 ? st.soak_reconnects / s : 0, st.soak_says, st.soak_garbage,
                st.soak_received, s > 0 ? st.soak_received / s : 0, st.soak_expected_closes,
                st.soak_unexpected_closes);
        for (int k = 0; k < END__COUNT; k++)
            fprintf(f, "%s\"%s\":%" PRIu64, k ? "," : "", end_names[k], st.soak_ends[k]);
        fprintf(f, "},\"rss_every_10s_kb\":[");
        for (uint32_t i = 0; i < st.ntrace; i++)
            fprintf(f, "%s%ld", i ? "," : "", st.rss_trace[i]);
        fprintf(f, "]},");
    } else {
        double gen = st.gen_cpu1 - st.gen_cpu0;
        fprintf(f,
                "\"rss_after_kb\":%ld,\"window_s\":%.3f,\"server_cpu_s\":%.3f,"
                "\"server_kernel_share\":%.3f,\"server_cpu_util\":%.3f,\"gen_cpu_util\":%.3f,"
                "\"size\":%u,\"binary\":%s,"
                "\"spin\":%s,\"msgs_per_read\":%.2f,\"kernel\":{\"input_drops\":%" PRIu64
                ",\"tcp_retrans\":%" PRIu64 ",\"tcp_loss_probes\":%" PRIu64 "},",
                st.rss_after, win, cpu, cpu > 0 ? sys / cpu : 0, win > 0 ? cpu / win : 0,
                win > 0 ? gen / win : 0,
                opt.size, opt.binary ? "true" : "false", opt.spin ? "true" : "false",
                st.reads_window ? (double)(st.echoes_window + st.deliveries_window) /
                                      (double)st.reads_window
                                : 0.0,
                st.k1.drops - st.k0.drops, st.k1.retrans - st.k0.retrans,
                st.k1.probes - st.k0.probes);
        if (opt.scenario == SC_ECHO) {
            fprintf(f,
                    "\"window\":%u,\"messages\":%" PRIu64 ",\"msgs_per_s\":%.1f,"
                    "\"server_cpu_us_per_msg\":%.4f,\"server_kernel_us_per_msg\":%.4f,"
                    "\"sent_total\":%" PRIu64 ",\"echoed_total\":%" PRIu64
                    ",\"outstanding\":%" PRIu64 ",",
                    opt.window, st.echoes_window, win > 0 ? st.echoes_window / win : 0,
                    st.echoes_window ? cpu * 1e6 / (double)st.echoes_window : 0,
                    st.echoes_window ? sys * 1e6 / (double)st.echoes_window : 0, st.sent_total,
                    st.echoes_total, st.sent_total - st.echoes_total);
        } else {
            fprintf(f,
                    "\"rooms\":%u,\"members\":%u,\"publishers\":%u,\"window\":%u,\"rate\":%.1f,"
                    "\"published\":%" PRIu64 ",\"published_per_s\":%.1f,\"deliveries\":%" PRIu64
                    ",\"deliveries_per_s\":%.1f,\"server_cpu_us_per_delivery\":%.4f,"
                    "\"server_kernel_us_per_delivery\":%.4f,"
                    "\"published_total\":%" PRIu64 ",\"expected_total\":%" PRIu64
                    ",\"received_total\":%" PRIu64 ",\"loss\":%" PRId64 ",\"stalled\":%" PRIu64 ",",
                    opt.rooms, opt.members, npubs, opt.rate > 0 ? 0 : opt.window, opt.rate,
                    st.published_window, win > 0 ? st.published_window / win : 0,
                    st.deliveries_window, win > 0 ? st.deliveries_window / win : 0,
                    st.deliveries_window ? cpu * 1e6 / (double)st.deliveries_window : 0,
                    st.deliveries_window ? sys * 1e6 / (double)st.deliveries_window : 0,
                    st.published_total, st.expected_total, st.received_total,
                    (int64_t)st.expected_total - (int64_t)st.received_total, st.stalled);
        }
        json_latency(f, "latency_us", &lat);
        fputc(',', f);
    }
    st.unexpected += st.soak_unexpected_closes;
    fprintf(f,
            "\"errors\":{\"mismatch\":%" PRIu64 ",\"protocol\":%" PRIu64 ",\"unexpected\":%" PRIu64
            ",\"handshake\":%" PRIu64 ",\"io\":%" PRIu64 ",\"server_closed\":%u"
            ",\"unclean_closes\":%u},\"clean_closes\":%u,\"server_close_codes\":{",
            st.mismatch, st.protocol, st.unexpected, st.handshake_bad, st.io_errors,
            st.server_closed, st.unclean_closes, st.clean_closes);
    for (int i = 0, first = 1; i < 8; i++)
        if (st.close_codes[i]) {
            fprintf(f, "%s\"%u\":%" PRIu64, first ? "" : ",", st.close_code_val[i],
                    st.close_codes[i]);
            first = 0;
        }
    fprintf(f, "},\"error\":");
    if (st.error[0])
        fprintf(f, "\"%s\"}\n", st.error);
    else
        fprintf(f, "null}\n");
    fflush(f);

    if (opt.quiet)
        return;
    FILE *e = stderr;
    fprintf(e, "loadgen %s%s%s: %u conns, handshakes %.0f/s\n", scenario_names[opt.scenario],
            opt.label[0] ? " " : "", opt.label, st.opened, conn_s > 0 ? st.opened / conn_s : 0);
    if (opt.scenario == SC_SOAK) {
        fprintf(e,
                "  %.0f s: %" PRIu64 " reconnects, %" PRIu64 " says, %" PRIu64 " received, %" PRIu64
                " bad-frame closes as expected, %" PRIu64 " not\n"
                "  server RSS %ld kB at %.0f s, %ld kB at the end (%+.1f%%), %ld kB at most\n",
                (double)(st.t_soak1 - st.t_soak0) / 1e9, st.soak_reconnects, st.soak_says,
                st.soak_received, st.soak_expected_closes, st.soak_unexpected_closes, st.rss_ref,
                opt.ref, st.rss_end,
                st.rss_ref > 0 ? 100.0 * ((double)st.rss_end / (double)st.rss_ref - 1) : 0,
                st.rss_max);
    } else if (opt.scenario == SC_CONNECT) {
        fprintf(e, "  server RSS %ld -> %ld kB: %.0f bytes per idle connection\n", st.rss_before,
                st.rss_connected,
                st.opened ? (st.rss_connected - st.rss_before) * 1024.0 / st.opened : 0);
    } else if (opt.scenario == SC_ECHO) {
        fprintf(e,
                "  %.0f msgs/s, server %.3f us CPU/msg (%.0f%% busy, %.0f%% of it in the kernel), "
                "generator %.0f%% busy\n",
                win > 0 ? st.echoes_window / win : 0,
                st.echoes_window ? cpu * 1e6 / (double)st.echoes_window : 0,
                win > 0 ? 100 * cpu / win : 0, cpu > 0 ? 100 * sys / cpu : 0,
                win > 0 ? 100 * (st.gen_cpu1 - st.gen_cpu0) / win : 0);
    } else {
        fprintf(e,
                "  %.0f published/s, %.0f deliveries/s, server %.3f us CPU/delivery "
                "(%.0f%% busy, %.0f%% of it in the kernel), generator %.0f%% busy, loss %" PRId64
                "\n",
                win > 0 ? st.published_window / win : 0, win > 0 ? st.deliveries_window / win : 0,
                st.deliveries_window ? cpu * 1e6 / (double)st.deliveries_window : 0,
                win > 0 ? 100 * cpu / win : 0, cpu > 0 ? 100 * sys / cpu : 0,
                win > 0 ? 100 * (st.gen_cpu1 - st.gen_cpu0) / win : 0,
                (int64_t)st.expected_total - (int64_t)st.received_total);
    }
    if (opt.scenario != SC_CONNECT && opt.scenario != SC_SOAK)
        fprintf(e, "  kernel in window: %" PRIu64 " input drops, %" PRIu64 " TCP retransmits (%"
                   PRIu64 " loss probes)\n",
                st.k1.drops - st.k0.drops, st.k1.retrans - st.k0.retrans, st.k1.probes - st.k0.probes);
    if (opt.scenario != SC_CONNECT && opt.scenario != SC_SOAK)
        fprintf(e, "  latency us: p50 %.0f  p99 %.0f  max %.0f\n", hist_percentile(&lat, 50) / 1e3,
                hist_percentile(&lat, 99) / 1e3, lat.max / 1e3);
    if (st.mismatch || st.protocol || st.unexpected || st.handshake_bad || st.unclean_closes ||
        st.server_closed || st.error[0])
        fprintf(e,
                "  ERRORS: mismatch %" PRIu64 ", protocol %" PRIu64 ", unexpected %" PRIu64
                ", handshake %" PRIu64 ", server closed %u, unclean closes %u %s\n",
                st.mismatch, st.protocol, st.unexpected, st.handshake_bad, st.server_closed,
                st.unclean_closes, st.error);
}

/* --------------------------------------------------------------- self test */

static int self_msgs, self_ok;
static uint8_t self_last[200000];
static size_t self_last_len;
static int self_last_op;
static const size_t self_sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};

static void self_on_message(conn_t *c, int op, const uint8_t *data, size_t len)
{
    (void)c;
    if (self_msgs < 8 && op == OP_BINARY && len == self_sizes[self_msgs]) {
        int ok = 1;
        for (size_t i = 0; i < len; i++)
            ok &= data[i] == (uint8_t)('a' + i % 26);
        self_ok += ok;
    }
    self_msgs++;
    self_last_op = op;
    self_last_len = len;
    memcpy(self_last, data, len);
}

static size_t server_frame(uint8_t *out, int fin, int op, const uint8_t *pl, size_t len)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        out[h++] = (uint8_t)len;
    } else if (len < 65536) {
        out[h++] = 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + h, pl, len);
    return h + len;
}

static int self_test(void)
{
    int fails = 0;
    dirty = calloc(16, sizeof(uint32_t));
    opt.quiet = 1;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "self-test: %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
            fails++;                                                                         \
        }                                                                                    \
    } while (0)

    /* Sec-WebSocket-Accept, RFC 6455 section 1.3 */
    char acc[29];
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc);
    CHECK(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);

    /* masking: the fast path equals the byte loop, and masking twice is identity */
    uint8_t a[77], b[77], d[77];
    for (int i = 0; i < 77; i++)
        a[i] = (uint8_t)(i * 7 + 3);
    uint32_t key = 0xa1b2c3d4u;
    mask_copy(b, a, 77, key);
    uint8_t k[4];
    memcpy(k, &key, 4);
    for (int i = 0; i < 77; i++)
        CHECK(b[i] == (a[i] ^ k[i % 4]));
    mask_copy(d, b, 77, key);
    CHECK(memcmp(a, d, 77) == 0);

    /* frames of each length form, several per read, split at every byte count */
    const size_t *sizes = self_sizes;
    static uint8_t stream[400000], payload[70000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('a' + i % 26);
    size_t slen = 0;
    for (size_t i = 0; i < 8; i++)
        slen += server_frame(stream + slen, 1, OP_BINARY, payload, sizes[i]);
    /* a fragmented text message with a ping between its fragments */
    slen += server_frame(stream + slen, 0, OP_TEXT, (const uint8_t *)"hel", 3);
    slen += server_frame(stream + slen, 1, OP_PING, (const uint8_t *)"p", 1);
    slen += server_frame(stream + slen, 0, OP_CONT, (const uint8_t *)"lo ", 3);
    slen += server_frame(stream + slen, 1, OP_CONT, (const uint8_t *)"world", 5);
    size_t chunks[] = {1, 2, 3, 7, 100, 4096, 65537, sizeof(stream)};
    for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
        conn_t c;
        memset(&c, 0, sizeof(c));
        c.fd = 1000000; /* never used for I/O: flush is not called */
        c.state = ST_OPEN;
        self_msgs = self_ok = 0;
        for (size_t pos = 0; pos < slen;) {
            size_t n = chunks[ci] < slen - pos ? chunks[ci] : slen - pos;
            conn_input(&c, stream + pos, n, 0);
            pos += n;
        }
        CHECK(self_ok == 8);
        CHECK(c.fd == 1000000);
        CHECK(self_msgs == 9);
        CHECK(self_last_op == OP_TEXT && self_last_len == 11 &&
              memcmp(self_last, "hello world", 11) == 0);
        CHECK(c.rlen == 0);
        /* the ping was answered with a masked pong carrying "p" */
        CHECK(c.wlen == 7 && c.wbuf[0] == (0x80 | OP_PONG) && c.wbuf[1] == (0x80 | 1) &&
              (c.wbuf[6] ^ c.wbuf[2]) == 'p');
        free(c.rbuf);
        free(c.mbuf);
        free(c.wbuf);
    }
    ndirty = 0;

    /* client frames: the header forms and a fresh mask for each frame */
    {
        conn_t c;
        memset(&c, 0, sizeof(c));
        c.fd = 1000000;
        put_frame(&c, OP_TEXT, payload, 100);
        put_frame(&c, OP_TEXT, payload, 100);
        CHECK(c.wbuf[0] == 0x81 && c.wbuf[1] == (0x80 | 100));
        CHECK(memcmp(c.wbuf + 2, c.wbuf + 106 + 2, 4) != 0);
        c.wlen = 0;
        put_frame(&c, OP_BINARY, payload, 1000);
        CHECK(c.wbuf[1] == (0x80 | 126) && c.wbuf[2] == 1000 >> 8 && c.wbuf[3] == (1000 & 255));
        c.wlen = 0;
        put_frame(&c, OP_BINARY, payload, 70000);
        CHECK(c.wbuf[1] == (0x80 | 127) && c.wbuf[7] == 1 && c.wbuf[8] == 0x11 &&
              c.wbuf[9] == 0x70);
        uint8_t *m = c.wbuf + 10;
        int ok = 1;
        for (int i = 0; i < 70000; i++)
            ok &= (c.wbuf[14 + i] ^ m[i % 4]) == payload[i];
        CHECK(ok);
        free(c.wbuf);
        ndirty = 0;
    }

    /* a masked server frame and a reserved bit are protocol errors */
    {
        conn_t c;
        memset(&c, 0, sizeof(c));
        c.fd = -1; /* conn_fail is a no-op on a closed conn; parse returns -1 */
        uint8_t bad[] = {0x81, 0x81, 1, 2, 3, 4, 'x'};
        c.fd = 0;
        c.state = ST_OPEN;
        int saved = dup(0);
        uint64_t before = st.protocol;
        CHECK(parse_frames(&c, bad, sizeof(bad), 0) == -1);
        CHECK(st.protocol == before + 1);
        dup2(saved, 0);
        close(saved);
    }

    /* histogram */
    hist_t *h = malloc(sizeof(*h));
    hist_reset(h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(h, v * 1000);
    uint64_t p50 = hist_percentile(h, 50), p99 = hist_percentile(h, 99);
    CHECK(p50 >= 50000000 * 0.99 && p50 <= 50000000 * 1.01);
    CHECK(p99 >= 99000000 * 0.99 && p99 <= 99000000 * 1.01);
    CHECK(hist_percentile(h, 100) == 100000000);
    for (uint32_t i = 1; i < HIST_BUCKETS; i++)
        CHECK(hist_index(hist_bucket_top(i)) == i && hist_index(hist_bucket_top(i - 1) + 1) == i);
    free(h);

    /* payload round trips */
    pattern_init(1000);
    opt.size = 64;
    uint8_t pl[64];
    echo_payload(pl, 12, 345, 64);
    CHECK(echo_check(pl, 64, 12, 345, 64) == 0);
    CHECK(echo_check(pl, 64, 12, 346, 64) != 0);
    pl[40] ^= 1;
    CHECK(echo_check(pl, 64, 12, 345, 64) != 0);
    uint32_t pub;
    uint64_t seq, ts;
    pub_payload(pl, 77, 123456789, 987654321012345ull, 64);
    CHECK(pub_parse(pl, 64, &pub, &seq, &ts) == 0 && pub == 77 && seq == 123456789 &&
          ts == 987654321012345ull);
    pl[50] ^= 1;
    CHECK(pub_parse(pl, 64, &pub, &seq, &ts) != 0);

    fprintf(stderr, "self-test: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mw_loadgen [options] echo|relay|fanout|connect|soak|member\n"
            "       mw_loadgen --self-test\n"
            "  -u, --url ws://HOST:PORT[/PATH]  server (IPv4 literal); PATH may hold %%u (room).\n"
            "                          Repeated (same host): connection i goes to URL i %% count\n"
            "  -c, --conns N           connections (fanout: rooms x members)   [100]\n"
            "  -w, --window W          messages in flight per connection/publisher [16]\n"
            "  -s, --size S            payload bytes (relay/fanout: at least 33) [64]\n"
            "  -P, --publishers P      publishers (per room for fanout)         [1]\n"
            "  -r, --rate R            relay/fanout: R messages/s in all, no window\n"
            "      --rooms N --members M  fanout rooms and members per room\n"
            "  -d, --duration SEC      measured window                          [10]\n"
            "      --warmup SEC        sending before the window                [2]\n"
            "      --drain SEC         after the window, wait for answers       [5]\n"
            "      --connect-timeout SEC                                        [60]\n"
            "      --close-timeout SEC                                          [5]\n"
            "      --hold SEC          connect: idle time before reading RSS    [2]\n"
            "      --touch             connect: each connection has one message echoed\n"
            "                          (the server's echo app) before it idles\n"
            "      --life MIN:MAX      soak: seconds each connection lives      [5:30]\n"
            "      --say MIN:MAX       soak: seconds between two says           [2:10]\n"
            "      --ref SEC           soak: when the reference RSS is read     [60]\n"
            "                          (soak: -d is its length, --rooms its rooms [conns/20])\n"
            "      --stall SEC         a window slot unanswered this long is freed [2]\n"
            "      --concurrency K     connects in flight                       [256]\n"
            "      --src-addrs K       spread over 127.0.0.1..K (default: one per 10000)\n"
            "      --src-first F       sources start at 127.0.0.(1+F) instead    [0]\n"
            "      --samples FILE      member: (round, latency ns) as uint64 pairs\n"
            "                          (member: -d bounds the hold; stdin's close ends it)\n"
            "      --binary            binary messages instead of text\n"
            "      --spin              poll without sleeping while sending (the generator\n"
            "                          then shows 100%% busy; no wake-up latency on its side)\n"
            "  -p, --pid PID           the server, for CPU time and RSS (repeated: summed)\n"
            "  -l, --label NAME        copied into the JSON\n"
            "  -q, --quiet             no summary on stderr\n");
}

static void on_signal(int sig)
{
    (void)sig;
    st.stop = 1;
}

static void parse_url(const char *url)
{
    char host[sizeof(opt.host)];
    int port;
    const char *p = url;
    if (strncmp(p, "ws://", 5) == 0)
        p += 5;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    if (colon == NULL || (slash && slash < colon))
        die("bad url %s (ws://IPV4:PORT[/PATH])", url);
    size_t hl = (size_t)(colon - p);
    if (hl >= sizeof(host))
        die("bad host in %s", url);
    memcpy(host, p, hl);
    host[hl] = 0;
    port = atoi(colon + 1);
    struct in_addr tmp;
    if (inet_pton(AF_INET, host, &tmp) != 1 || port <= 0 || port > 65535)
        die("bad url %s (ws://IPV4:PORT[/PATH])", url);
    if (opt.nports == MAX_SERVERS)
        die("at most %d URLs", MAX_SERVERS);
    if (opt.nports > 0 && strcmp(host, opt.host) != 0)
        die("every URL must have the host of the first (%s)", opt.host);
    if (opt.nports == 0) {
        memcpy(opt.host, host, hl + 1);
        opt.port = port;
        if (slash)
            snprintf(opt.path, sizeof(opt.path), "%s", slash);
    }
    opt.ports[opt.nports++] = port;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", 1, 0, 'u'},          {"conns", 1, 0, 'c'},       {"window", 1, 0, 'w'},
        {"size", 1, 0, 's'},         {"publishers", 1, 0, 'P'},  {"rate", 1, 0, 'r'},
        {"rooms", 1, 0, 1},          {"members", 1, 0, 2},       {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 3},         {"drain", 1, 0, 4},         {"connect-timeout", 1, 0, 5},
        {"close-timeout", 1, 0, 6},  {"hold", 1, 0, 7},          {"concurrency", 1, 0, 8},
        {"src-addrs", 1, 0, 9},      {"binary", 0, 0, 10},       {"pid", 1, 0, 'p'},
        {"label", 1, 0, 'l'},        {"quiet", 0, 0, 'q'},       {"self-test", 0, 0, 11},
        {"stall", 1, 0, 12},         {"spin", 0, 0, 13},         {"touch", 0, 0, 14},
        {"life", 1, 0, 15},          {"say", 1, 0, 16},          {"ref", 1, 0, 17},
        {"src-first", 1, 0, 18},     {"samples", 1, 0, 19},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch, conns_set = 0, rooms_set = 0;
    while ((ch = getopt_long(argc, argv, "u:c:w:s:P:r:d:p:l:qh", longs, NULL)) != -1) {
        switch (ch) {
        case 'u': parse_url(optarg); break;
        case 'c': opt.conns = (uint32_t)strtoul(optarg, NULL, 10); conns_set = 1; break;
        case 'w': opt.window = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 's': opt.size = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'P': opt.publishers = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'r': opt.rate = atof(optarg); break;
        case 1: opt.rooms = (uint32_t)strtoul(optarg, NULL, 10); rooms_set = 1; break;
        case 2: opt.members = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'd': opt.duration = atof(optarg); break;
        case 3: opt.warmup = atof(optarg); break;
        case 4: opt.drain = atof(optarg); break;
        case 5: opt.connect_timeout = atof(optarg); break;
        case 6: opt.close_timeout = atof(optarg); break;
        case 7: opt.hold = atof(optarg); break;
        case 8: opt.concurrency = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 9: opt.src_addrs = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 10: opt.binary = 1; break;
        case 'p':
            if (opt.npids == MAX_SERVERS)
                die("at most %d PIDs", MAX_SERVERS);
            opt.pids[opt.npids++] = atoi(optarg);
            opt.pid = opt.pids[0];
            break;
        case 'l': opt.label = optarg; break;
        case 'q': opt.quiet = 1; break;
        case 11: self_mode = 1; break;
        case 12: opt.stall = atof(optarg); break;
        case 13: opt.spin = 1; break;
        case 14: opt.touch = 1; break;
        case 15:
            if (sscanf(optarg, "%lf:%lf", &opt.life_min, &opt.life_max) != 2)
                die("--life MIN:MAX");
            break;
        case 16:
            if (sscanf(optarg, "%lf:%lf", &opt.say_min, &opt.say_max) != 2)
                die("--say MIN:MAX");
            break;
        case 17: opt.ref = atof(optarg); break;
        case 18: opt.src_first = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 19: opt.samples = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        seed = now_ns();
    rng_state = seed | 1;
    if (self_mode)
        return self_test();
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (opt.nports == 0)
        opt.ports[opt.nports++] = opt.port; /* no -u: the default URL */
    int found = 0;
    for (int i = 0; i < SC__COUNT; i++)
        if (strcmp(argv[optind], scenario_names[i]) == 0) {
            opt.scenario = i;
            found = 1;
        }
    if (!found)
        die("unknown scenario %s", argv[optind]);

    if (opt.scenario == SC_RELAY) {
        opt.rooms = 1;
        opt.members = opt.conns;
    } else if (opt.scenario == SC_SOAK) {
        if (!rooms_set)
            opt.rooms = opt.conns / 20 ? opt.conns / 20 : 1;
        if (opt.rooms == 0)
            die("--rooms must be at least 1");
        if (opt.life_min <= 0 || opt.life_max < opt.life_min || opt.say_min <= 0 ||
            opt.say_max < opt.say_min || opt.ref <= 0 || opt.ref >= opt.duration)
            die("soak needs 0 < --life MIN <= MAX, 0 < --say MIN <= MAX, 0 < --ref < -d");
    } else if (opt.scenario == SC_FANOUT) {
        if (opt.members == 0)
            opt.members = conns_set ? opt.conns / (opt.rooms ? opt.rooms : 1) : 100;
        opt.conns = opt.rooms * opt.members;
    }
    if (opt.conns == 0 || opt.window == 0 || opt.concurrency == 0)
        die("--conns, --window and --concurrency must be at least 1");
    if ((opt.scenario == SC_RELAY || opt.scenario == SC_FANOUT) &&
        (opt.size < PUB_HEADER || opt.members < 2 || opt.publishers == 0 ||
         opt.publishers > opt.members))
        die("relay/fanout need --size >= %d, at least 2 members and 1..members publishers",
            PUB_HEADER);
    if (opt.size > (32u << 20))
        die("--size is at most 32 MiB");

    /* room for every socket, as root past the hard limit too */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt.conns + 100;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
            rl.rlim_max = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            say("RLIMIT_NOFILE is %lu: fewer connections than asked may open",
                (unsigned long)rl.rlim_cur);
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    pattern_init(opt.size);
    gbuf = xrealloc(NULL, RBUF_SIZE);
    scratch = xrealloc(NULL, opt.size + 64);
    conns = calloc(opt.conns, sizeof(conn_t));
    dirty = calloc(opt.conns, sizeof(uint32_t));
    if (conns == NULL || dirty == NULL)
        die("out of memory");
    for (uint32_t i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        conns[i].idx = i;
        conns[i].pub = -1;
    }
    if (opt.scenario == SC_RELAY || opt.scenario == SC_FANOUT) {
        pubs = calloc((size_t)opt.rooms * opt.publishers, sizeof(*pubs));
        for (uint32_t i = 0; i < opt.conns; i++) {
            conn_t *c = &conns[i];
            c->room = i / opt.members;
            if (i % opt.members < opt.publishers) {
                c->pub = (int32_t)npubs;
                pubs[npubs++] = c;
                if (opt.rate == 0)
                    c->slots = calloc(opt.window, sizeof(pubslot_t));
            }
        }
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (opt.scenario == SC_MEMBER) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_ID};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) != 0)
            die("member: stdin must be a pipe (its close ends the run): %s", strerror(errno));
    }
    if (opt.rate > 0) {
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_ID};
        epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    }
    hist_reset(&lat);
    hist_reset(&conn_lat);
    if (opt.pid) {
        st.rss_before = servers_rss_kb();
        st.srv_cpu_connect0 = servers_cpu_seconds(&st.srv_sys_connect0);
        if (st.rss_before < 0)
            die("no process among the -p PIDs");
    }
    st.kc0 = kstat_read();
    uint64_t t = now_ns();
    st.t_start = t;
    set_phase(P_CONNECT, t);

    struct epoll_event evs[1024];
    while (st.phase != P_DONE) {
        step(now_ns());
        flush_dirty();
        if (st.phase == P_DONE)
            break;
        int timeout = st.phase == P_CONNECT ? 1 : 5;
        if (opt.spin && (st.phase == P_WARMUP || st.phase == P_MEASURE || st.phase == P_DRAIN))
            timeout = 0;
        int n = epoll_wait(ep, evs, 1024, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == TIMER_ID) {
                rate_tick();
                continue;
            }
            if (evs[i].data.u64 == STDIN_ID) {
                char b[256];
                ssize_t r = read(0, b, sizeof(b));
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    st.stdin_closed = 1;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            conn_t *c = &conns[evs[i].data.u64];
            if (c->fd < 0)
                continue;
            if (c->state == ST_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    connected(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                do_read(c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                flush(c);
        }
        flush_dirty();
    }
    if (opt.samples != NULL) {
        FILE *sf = fopen(opt.samples, "wb");
        if (sf == NULL || fwrite(st.samples, sizeof(uint64_t), st.nsamples, sf) != st.nsamples ||
            fclose(sf) != 0)
            snprintf(st.error, sizeof(st.error), "cannot write %s", opt.samples);
    }
    report();
    int bad = st.error[0] || st.mismatch || st.protocol || st.unexpected;
    return bad ? 1 : 0;
}
