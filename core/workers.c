/* The master of --workers: fork, supervise, forward signals. See workers.h.
 *
 * The master runs no event loop and holds no Lua state (libuv and Lua are
 * set up after the fork, in each worker). It waits for signals with
 * sigtimedwait, with all of them blocked, so nothing interrupts it halfway.
 */
#include "moonwire/workers.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256
#define QUICK_DEATH_MS 1000 /* a worker dying sooner than this is restarted after a pause */
#define QUICK_DEATHS_MAX 5  /* in a row: the worker cannot start; the master gives up */

typedef struct {
    pid_t pid;           /* 0 when not running */
    uint64_t started_at; /* ms */
    uint64_t restart_at; /* ms; 0 when no restart is due */
    int quick_deaths;    /* deaths in a row right after starting */
} worker_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static pid_t spawn(int index, mw_worker_fn fn, const sigset_t *old)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* The worker installs its own handlers through libuv. */
        sigprocmask(SIG_SETMASK, old, NULL);
        _exit(fn(index));
    }
    if (pid > 0)
        mw_log_info("workers: worker %d started (pid %d)", index, (int)pid);
    else
        mw_log_error("workers: cannot fork worker %d: %s", index, strerror(errno));
    return pid;
}

static void signal_all(worker_t *w, int n, int signum)
{
    for (int i = 0; i < n; i++)
        if (w[i].pid > 0)
            kill(w[i].pid, signum);
}

/* Collects every worker that exited. Returns how many are still running. */
static int reap(worker_t *w, int n, int stopping)
{
    int running = 0, status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (w[i].pid != pid)
                continue;
            w[i].pid = 0;
            mw_metrics_worker_gone(i + 1);
            if (stopping)
                break;
            if (WIFSIGNALED(status))
                mw_log_error("workers: worker %d (pid %d) was killed by signal %d; restarting",
                             i + 1, (int)pid, WTERMSIG(status));
            else
                mw_log_error("workers: worker %d (pid %d) exited with status %d; restarting",
                             i + 1, (int)pid, WEXITSTATUS(status));
            if (now_ms() - w[i].started_at < QUICK_DEATH_MS) {
                w[i].quick_deaths++;
                w[i].restart_at = now_ms() + QUICK_DEATH_MS;
            } else {
                w[i].quick_deaths = 0;
                w[i].restart_at = now_ms();
            }
            break;
        }
    }
    for (int i = 0; i < n; i++)
        running += w[i].pid > 0;
    return running;
}

int mw_workers_run(int n, uint32_t grace_ms, mw_worker_fn fn)
{
    worker_t w[MAX_WORKERS];
    sigset_t set, old;
    int stopping = 0, failed = 0;
    uint64_t deadline = 0;

    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    memset(w, 0, sizeof(w));
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, &old);

    mw_log_info("workers: master %d starting %d workers", (int)getpid(), n);
    for (int i = 0; i < n; i++) {
        w[i].started_at = now_ms();
        w[i].pid = spawn(i + 1, fn, &old);
        if (w[i].pid < 0) {
            signal_all(w, i, SIGTERM);
            while (reap(w, i, 1) > 0)
                usleep(10000);
            sigprocmask(SIG_SETMASK, &old, NULL);
            return 1;
        }
    }

    for (;;) {
        struct timespec wait = {0, 200 * 1000000};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &wait);
        uint64_t now = now_ms();

        if (sig == SIGTERM || sig == SIGINT) {
            if (!stopping) {
                mw_log_info("workers: %s: stopping every worker (up to %u ms)",
                            sig == SIGTERM ? "SIGTERM" : "SIGINT", grace_ms);
                stopping = 1;
                deadline = now + grace_ms;
                signal_all(w, n, SIGTERM);
            }
        } else if (sig == SIGHUP || sig == SIGUSR1) {
            signal_all(w, n, sig);
        }
        if (reap(w, n, stopping) == 0 && stopping)
            break;
        if (stopping && now > deadline) {
            mw_log_warn("workers: some workers did not stop in time; killing them");
            signal_all(w, n, SIGKILL);
            deadline = now + 5000;
        }
        for (int i = 0; !stopping && i < n; i++) {
            if (w[i].quick_deaths >= QUICK_DEATHS_MAX) {
                /* It cannot start (a port taken, a broken app): stop all, so a
                 * supervisor above sees the failure instead of a master that
                 * seems to run. */
                mw_log_error("workers: worker %d died %d times right after starting; giving up",
                             i + 1, w[i].quick_deaths);
                stopping = 1;
                failed = 1;
                deadline = now + grace_ms;
                signal_all(w, n, SIGTERM);
                break;
            }
            if (w[i].pid == 0 && w[i].restart_at != 0 && now >= w[i].restart_at) {
                w[i].restart_at = 0;
                w[i].started_at = now;
                w[i].pid = spawn(i + 1, fn, &old);
                if (w[i].pid < 0) {
                    w[i].pid = 0;
                    w[i].restart_at = now + QUICK_DEATH_MS;
                }
            }
        }
    }
    mw_log_info("workers: every worker stopped; exiting");
    sigprocmask(SIG_SETMASK, &old, NULL);
    return failed ? 1 : 0;
}
