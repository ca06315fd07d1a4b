/* The moonwire binary: command line, configuration, signals, the loop.
 *
 * Exit status: 0 after a clean run or a passing --check; 1 when the app or
 * a listener fails to start; 2 for a bad flag or configuration key.
 */
#include "lua_host.h"
#include "lua_state.h"
#include "moonwire/config.h"
#include "moonwire/deadline.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/net.h"
#include "moonwire/server.h"
#include "moonwire/tls.h"
#include "moonwire/version.h"
#include "moonwire/workers.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static const char usage[] =
    "usage: moonwire [options]\n"
    "\n"
    "  -c, --config FILE      configuration file (a Lua file returning a table)\n"
    "  -s, --script FILE      the app script (default scripts/relay.lua)\n"
    "  -l, --listen HOST:PORT address to listen on; repeat for several (default 127.0.0.1:8080)\n"
    "      --listen-tls HOST:PORT  a wss:// listener; repeat for several (needs --cert, --key)\n"
    "      --cert FILE        PEM certificate chain for the TLS listeners (tls.cert)\n"
    "      --key FILE         PEM private key for the TLS listeners (tls.key)\n"
    "      --node-id ID       this node's id, the first part of connection ids\n"
    "      --redis URL        share topics with other nodes through Redis (cluster.redis)\n"
    "      --workers N        fork N worker processes on the same ports (workers)\n"
    "      --static DIR       serve the files of DIR to plain GET/HEAD requests (static.root)\n"
    "      --log-level LEVEL  debug, info, warn, error or off\n"
    "      --check            load the configuration and the script, report, and exit\n"
    "  -V, --version          print the version and exit\n"
    "  -h, --help             print this help and exit\n"
    "\n"
    "Signals: SIGHUP reloads the configuration file, the script and the TLS certificate;\n"
    "SIGTERM/SIGINT drain and exit; SIGUSR1 reopens the log.\n"
    "Documentation: docs/getting-started.md and docs/configuration.md.\n";

enum {
    OPT_NODE_ID = 256, OPT_LOG_LEVEL, OPT_CHECK, OPT_STATIC, OPT_LISTEN_TLS, OPT_CERT, OPT_KEY,
    OPT_REDIS,
    OPT_WORKERS
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"script", required_argument, NULL, 's'},
    {"listen", required_argument, NULL, 'l'},
    {"listen-tls", required_argument, NULL, OPT_LISTEN_TLS},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"node-id", required_argument, NULL, OPT_NODE_ID},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"check", no_argument, NULL, OPT_CHECK},
    {"static", required_argument, NULL, OPT_STATIC},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

typedef struct {
    const char *config;
    const char *script;
    const char *node_id;
    const char *static_root;
    int log_level; /* -1: from the configuration */
    const char *cert;
    const char *key;
    const char *redis;
    int workers; /* -1: from the configuration */
    mw_strlist_t listen;
    mw_strlist_t listen_tls;
    int check;
} cli_t;

static struct {
    cli_t cli;      /* kept for reloads */
    mw_config_t cfg;
    int worker;     /* 1..n in a worker of --workers, 0 otherwise */
    mw_server_t *srv;
    mw_net_t *net;
    uv_loop_t *loop;
    uv_signal_t sig_hup, sig_usr1;
    uv_async_t stop; /* SIGTERM or SIGINT, from deadline.c's thread */
    int exit_code;
} app;

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "moonwire: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see moonwire --help)\n");
    return 2;
}

/* Parses argv into cli. Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, cli_t *cli)
{
    int ch;

    opterr = 0;
    memset(cli, 0, sizeof(*cli));
    cli->log_level = -1;
    cli->workers = -1;
    while ((ch = getopt_long(argc, argv, ":c:s:l:Vh", long_options, NULL)) != -1) {
        switch (ch) {
        case 'c':
            cli->config = optarg;
            break;
        case 's':
            cli->script = optarg;
            break;
        case 'l':
            if (mw_config_list_add(&cli->listen, optarg) != 0)
                return 1;
            break;
        case OPT_NODE_ID:
            cli->node_id = optarg;
            break;
        case OPT_LISTEN_TLS:
            if (mw_config_list_add(&cli->listen_tls, optarg) != 0)
                return 1;
            break;
        case OPT_CERT:
            cli->cert = optarg;
            break;
        case OPT_REDIS:
            cli->redis = optarg;
            break;
        case OPT_WORKERS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 0 || v > 256)
                return bad_usage("--workers takes a number from 0 to 256, not '%s'", optarg);
            cli->workers = (int)v;
            break;
        }
        case OPT_KEY:
            cli->key = optarg;
            break;
        case OPT_LOG_LEVEL:
            cli->log_level = mw_log_level_parse(optarg);
            if (cli->log_level < 0)
                return bad_usage("unknown log level '%s'", optarg);
            break;
        case OPT_CHECK:
            cli->check = 1;
            break;
        case OPT_STATIC:
            cli->static_root = optarg;
            break;
        case 'V':
            printf("moonwire %s\n", MW_VERSION);
            return 0;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case ':':
            return bad_usage("option '%s' needs a value", argv[optind - 1]);
        default:
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    return -1;
}

/* Loads the file and applies the flags over it. Returns 0, or 1 (out of
 * memory) or 2 (bad file, key or flag) with the reason in err. */
static int fill_config(const cli_t *cli, mw_config_t *cfg, char *err, size_t errlen)
{
    if (mw_config_init(cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    if (cli->config != NULL && mw_config_load(cfg, cli->config, err, errlen) != 0)
        return 2;
    if (cli->script != NULL)
        mw_config_set_str(&cfg->script, cli->script);
    if (cli->node_id != NULL)
        mw_config_set_str(&cfg->node_id, cli->node_id);
    if (cli->static_root != NULL)
        mw_config_set_str(&cfg->static_root, cli->static_root);
    if (cli->log_level >= 0)
        cfg->log_level = cli->log_level;
    /* The flags are checked as flags, so the message names them. */
    for (int l = 0; l < 2; l++) {
        const mw_strlist_t *list = l == 0 ? &cli->listen : &cli->listen_tls;
        for (size_t i = 0; i < list->n; i++) {
            if (mw_config_check_addr(list->items[i]) != 0) {
                snprintf(err, errlen,
                         "%s: '%s' is not HOST:PORT (an IPv4 address or a host name), "
                         "[IPV6]:PORT or :PORT",
                         l == 0 ? "--listen" : "--listen-tls", list->items[i]);
                return 2;
            }
        }
    }
    if (cli->listen.n > 0) {
        mw_config_list_clear(&cfg->listen);
        for (size_t i = 0; i < cli->listen.n; i++)
            mw_config_list_add(&cfg->listen, cli->listen.items[i]);
    }
    if (cli->listen_tls.n > 0) {
        mw_config_list_clear(&cfg->tls_listen);
        for (size_t i = 0; i < cli->listen_tls.n; i++)
            mw_config_list_add(&cfg->tls_listen, cli->listen_tls.items[i]);
    }
    if (cli->redis != NULL) {
        mw_config_list_clear(&cfg->cluster_redis);
        mw_config_list_add(&cfg->cluster_redis, cli->redis);
    }
    if (cli->workers >= 0)
        cfg->workers = (uint32_t)cli->workers;
    if (app.worker > 0) {
        /* A worker is a node of its own: its id tells it from its siblings. */
        char id[48];
        snprintf(id, sizeof(id), "%s-w%d", cfg->node_id ? cfg->node_id : "mw", app.worker);
        mw_config_set_str(&cfg->node_id, id);
        cfg->reuseport = 1;
    }
    if (cli->cert != NULL)
        mw_config_set_str(&cfg->tls_cert, cli->cert);
    if (cli->key != NULL)
        mw_config_set_str(&cfg->tls_key, cli->key);
    /* The default address, unless something was said about listening. */
    if (cfg->listen.n == 0 && cfg->tls_listen.n == 0 && !cfg->listen_set)
        mw_config_list_add(&cfg->listen, "127.0.0.1:8080");
    if (cfg->listen.n == 0 && cfg->tls_listen.n == 0) {
        snprintf(err, errlen, "config: no address to listen on (set 'listen' or --listen)");
        return 2;
    }
    if (mw_config_validate(cfg, err, errlen) != 0)
        return 2;
    return 0;
}

/* The configuration file with the command line over it, checked; on failure
 * err says why and cfg holds nothing. */
static int build_config(const cli_t *cli, mw_config_t *cfg, char *err, size_t errlen)
{
    int r = fill_config(cli, cfg, err, errlen);
    if (r != 0)
        mw_config_close(cfg);
    return r;
}

static void close_signal(uv_signal_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, NULL);
}

static void on_drained(mw_server_t *srv)
{
    mw_log_info("drained; exiting");
    /* Hooks still waiting on an HTTP call hear "shutting down" and may still
     * reach Redis: the backplane stops after. */
    mw_server_stop_http(srv);
    mw_server_stop_cluster(srv);
    mw_net_close(app.net);
    uv_close((uv_handle_t *)&app.stop, NULL);
    close_signal(&app.sig_hup);
    close_signal(&app.sig_usr1);
}

/* SIGHUP: the configuration file again (its reloadable parts), the app, and
 * the TLS certificate. A file that does not load changes nothing. */
static void reload(mw_server_t *srv)
{
    mw_config_t fresh;
    char err[512];
    int r;

    if (app.cli.config != NULL)
        mw_log_info("SIGHUP: reloading %s and %s", app.cli.config, app.cfg.script);
    else
        mw_log_info("SIGHUP: reloading %s", app.cfg.script);
    r = build_config(&app.cli, &fresh, err, sizeof(err));
    if (r != 0) {
        mw_server_metrics(srv)->reloads++;
        mw_server_metrics(srv)->reload_failures++;
        mw_log_error("reload failed, the previous configuration and app keep serving: %s", err);
        return;
    }
    mw_server_apply_config(srv, &fresh);
    mw_config_close(&fresh); /* now holds what was replaced */
    if (mw_log_configure((mw_log_level_t)app.cfg.log_level, app.cfg.log_json, app.cfg.log_file) !=
        0)
        mw_log_error("reload: cannot open log file '%s'; logging where it did", app.cfg.log_file);
    mw_server_reload(srv);
    mw_net_reload(app.net);
    mw_server_run_deferred(srv);
}

/* SIGTERM or SIGINT (deadline.c wakes the loop once, for the first). */
static void on_stop(uv_async_t *h)
{
    mw_server_t *srv = h->data;

    mw_server_set_now(srv, uv_now(h->loop));
    if (mw_server_draining(srv))
        return;
    mw_log_info("%s: closing connections (up to %u ms)",
                mw_deadline_signal() == SIGINT ? "SIGINT" : "SIGTERM", app.cfg.shutdown_timeout);
    /* The listeners stay open while draining: /healthz answers 503 and
     * upgrades are refused with 503, so a load balancer sees the node
     * leave instead of a refused connection. They close when drained. */
    mw_server_drain(srv, on_drained);
}

static void on_signal(uv_signal_t *h, int signum)
{
    mw_server_t *srv = h->data;

    mw_server_set_now(srv, uv_now(h->loop));
    switch (signum) {
    case SIGHUP:
        reload(srv);
        mw_deadline_set_grace(app.cfg.shutdown_timeout);
        break;
    case SIGUSR1:
        if (mw_log_reopen() != 0)
            mw_log_error("SIGUSR1: could not reopen the log file");
        break;
    }
}

static void watch_signal(uv_signal_t *s, int signum)
{
    uv_signal_init(app.loop, s);
    s->data = app.srv;
    uv_signal_start(s, on_signal, signum);
}

/* Runs one node with app.cfg, which it closes. */
static int serve_node(void);

/* A worker of --workers: its own configuration (and node id), then a node. */
static int run_worker(int index)
{
    char err[1024];
    int r;

    mw_config_close(&app.cfg); /* the master's, inherited by fork */
    app.worker = index;
    r = build_config(&app.cli, &app.cfg, err, sizeof(err));
    if (r != 0) {
        mw_log_error("worker %d: %s", index, err);
        return r;
    }
    return serve_node();
}

/* Warnings about the app while --check loads it (they are on stderr). */
static int check_warnings;

static void on_check_report(mw_node_t *node, int level, const char *text, const char *tb)
{
    (void)node;
    (void)text;
    (void)tb;
    if (level == MW_LOG_WARN)
        check_warnings++;
}

/* Everything after the command line; app.cli stays for reloads. */
static int serve(void)
{
    cli_t *cli = &app.cli;
    char err[1024];
    int r;

    r = build_config(cli, &app.cfg, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "moonwire: %s\n", err);
        return r;
    }
    /* --check answers on the terminal, also what it would log to a file. */
    if (mw_log_configure(app.cfg.log_level, app.cfg.log_json,
                         cli->check ? NULL : app.cfg.log_file) != 0) {
        fprintf(stderr, "moonwire: config: cannot open log file '%s'\n", app.cfg.log_file);
        mw_config_close(&app.cfg);
        return 2;
    }
    if (app.cfg.workers > 1 && !cli->check) {
        if (!mw_config_clustered(&app.cfg))
            mw_log_warn("workers without cluster.redis (or sentinels) share no topics: each is a node of its own");
        if (mw_metrics_share((int)app.cfg.workers) != 0)
            mw_log_warn("workers: no shared memory for metrics; /metrics shows one worker's");
        r = mw_workers_run((int)app.cfg.workers, app.cfg.shutdown_timeout + 2000, run_worker);
        mw_config_close(&app.cfg);
        return r;
    }
    return serve_node();
}

static int serve_node(void)
{
    cli_t *cli = &app.cli;
    char err[1024];
    int r;

    signal(SIGPIPE, SIG_IGN);
#if defined(__GLIBC__)
    /* glibc hands the top of its heap back (brk) on a free() that leaves
     * 128 KiB free there: a stream of large messages, whose buffers are
     * freed once delivered, then shrank and grew the heap on every message,
     * each new page a fault (echo-70k: 3,600 brk calls and 110,000 page
     * faults in 3 s, 300 us of CPU a message). Freed memory goes back in the
     * sweep instead (malloc_trim after a burst, mw_bp_sweep), or here past
     * 8 MiB at the top. Setting it fixes the mmap threshold, which glibc
     * would otherwise raise up to 32 MiB as it saw large blocks: raised
     * here at once, so that no message's buffer is an mmap of its own. */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
    /* Before anything starts a thread: SIGTERM and SIGINT go to deadline.c's. */
    if (mw_deadline_block() != 0)
        mw_log_warn("cannot block SIGTERM and SIGINT: %s", strerror(errno));
    app.loop = uv_default_loop();

    if (cli->check)
        mw_lua_set_reporter(on_check_report);
    app.srv = mw_server_new(&app.cfg, uv_now(app.loop), err, sizeof(err));
    if (app.srv == NULL) {
        fprintf(stderr, "moonwire: %s\n", err);
        if (!cli->check && app.cfg.log_file != NULL)
            mw_log_error("cannot start: %s", err);
        mw_config_close(&app.cfg);
        return 1;
    }
    if (mw_metrics_block(app.worker) != NULL)
        /* Summed by every worker's /metrics. */
        mw_server_set_metrics(app.srv, mw_metrics_block(app.worker));
    if (cli->check && app.cfg.tls_listen.n > 0) {
        mw_tls_ctx_t tls;
        if (mw_tls_ctx_init(&tls, app.cfg.tls_cert, app.cfg.tls_key, err, sizeof(err)) != 0) {
            fprintf(stderr, "moonwire: %s\n", err);
            mw_server_free(app.srv);
            mw_config_close(&app.cfg);
            mw_server_pools_drain();
            return 1;
        }
        mw_tls_ctx_close(&tls);
    }
    if (cli->check) {
        if (check_warnings > 0)
            printf("moonwire: %s%s and script %s load, with %d warning%s about the app (on "
                   "stderr)\n",
                   app.cfg.path ? "configuration " : "", app.cfg.path ? app.cfg.path : "defaults",
                   app.cfg.script, check_warnings, check_warnings == 1 ? "" : "s");
        else
            printf("moonwire: %s%s and script %s are OK\n", app.cfg.path ? "configuration " : "",
                   app.cfg.path ? app.cfg.path : "defaults", app.cfg.script);
        mw_server_free(app.srv);
        mw_config_close(&app.cfg);
        mw_server_pools_drain();
        return 0;
    }

    r = mw_net_start(app.srv, app.loop, &app.net, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "moonwire: %s\n", err);
        if (app.cfg.log_file != NULL)
            mw_log_error("cannot start: %s", err);
        uv_run(app.loop, UV_RUN_DEFAULT);
        mw_net_free(app.net);
        mw_server_free(app.srv);
        mw_config_close(&app.cfg);
        uv_loop_close(app.loop);
        mw_server_pools_drain();
        return 1;
    }
    r = mw_server_start_cluster(app.srv, app.loop, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "moonwire: %s\n", err);
        mw_net_close(app.net);
        uv_run(app.loop, UV_RUN_DEFAULT);
        mw_net_free(app.net);
        mw_server_free(app.srv);
        mw_config_close(&app.cfg);
        uv_loop_close(app.loop);
        mw_server_pools_drain();
        return r == MW_ECONFIG ? 2 : 1;
    }
    r = mw_server_start_http(app.srv, app.loop, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "moonwire: %s\n", err);
        mw_log_error("cannot start: %s", err);
        mw_server_stop_cluster(app.srv);
        mw_net_close(app.net);
        uv_run(app.loop, UV_RUN_DEFAULT);
        mw_net_free(app.net);
        mw_server_free(app.srv);
        mw_config_close(&app.cfg);
        uv_loop_close(app.loop);
        mw_server_pools_drain();
        return 1;
    }
    uv_async_init(app.loop, &app.stop, on_stop);
    app.stop.data = app.srv;
    if (mw_deadline_start(&app.stop, app.cfg.shutdown_timeout) != 0) {
        fprintf(stderr, "moonwire: cannot start the signal thread: %s\n", strerror(errno));
        mw_log_error("cannot start: no thread for SIGTERM (%s)", strerror(errno));
        uv_close((uv_handle_t *)&app.stop, NULL);
        mw_server_stop_http(app.srv);
        mw_server_stop_cluster(app.srv);
        mw_net_close(app.net);
        uv_run(app.loop, UV_RUN_DEFAULT);
        mw_net_free(app.net);
        mw_server_free(app.srv);
        mw_config_close(&app.cfg);
        uv_loop_close(app.loop);
        mw_server_pools_drain();
        return 1;
    }
    watch_signal(&app.sig_hup, SIGHUP);
    watch_signal(&app.sig_usr1, SIGUSR1);

    for (size_t i = 0; i < app.cfg.listen.n; i++) {
        size_t idlen;
        const char *id = mw_server_id(app.srv, &idlen);
        mw_log_info("moonwire %s listening on %s (app %s, node %.*s)", MW_VERSION,
                    app.cfg.listen.items[i], app.cfg.script, (int)idlen, id);
    }
    for (size_t i = 0; i < app.cfg.tls_listen.n; i++)
        mw_log_info("moonwire %s listening on %s with TLS (app %s)", MW_VERSION,
                    app.cfg.tls_listen.items[i], app.cfg.script);
    mw_server_start(app.srv);
    mw_server_run_deferred(app.srv);

    uv_run(app.loop, UV_RUN_DEFAULT);

    mw_net_free(app.net);
    mw_server_free(app.srv);
    mw_config_close(&app.cfg);
    r = uv_loop_close(app.loop);
    if (r != 0)
        mw_log_warn("loop closed with handles left: %s", uv_strerror(r));
    mw_server_pools_drain();
    return app.exit_code;
}

int main(int argc, char **argv)
{
    int r = parse_args(argc, argv, &app.cli);
    if (r < 0)
        r = serve();
    mw_config_list_clear(&app.cli.listen);
    mw_config_list_clear(&app.cli.listen_tls);
    return r;
}
