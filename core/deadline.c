/* The deadline of a shutdown: a thread that takes SIGTERM and SIGINT, wakes
 * the loop, and ends the process if the loop has not done so in time. See
 * deadline.h.
 */
#include "moonwire/deadline.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static struct {
    uv_async_t *wake;
    uint32_t grace_ms; /* read and written with __atomic builtins */
    int signum;        /* likewise */
    sigset_t set;
} deadline;

static void *run(void *arg)
{
    struct timespec left;
    uint64_t ms;
    int sig = 0;
    (void)arg;

    while (sigwait(&deadline.set, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
        ;
    __atomic_store_n(&deadline.signum, sig, __ATOMIC_SEQ_CST);
    uv_async_send(deadline.wake);

    ms = (uint64_t)__atomic_load_n(&deadline.grace_ms, __ATOMIC_SEQ_CST) + MW_DEADLINE_MARGIN_MS;
    left.tv_sec = (time_t)(ms / 1000);
    left.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
    /* Still here: the loop did not get to exit (further signals were taken
     * and dropped meanwhile, by the mask). */
    mw_log_error("%s: the server did not stop within limits.shutdown_timeout (%llu ms) "
                 "and %d ms; exiting now (is a hook stuck in a call that does not return?)",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", (unsigned long long)(ms - MW_DEADLINE_MARGIN_MS),
                 MW_DEADLINE_MARGIN_MS);
    _exit(1);
    return NULL;
}

int mw_deadline_block(void)
{
    sigemptyset(&deadline.set);
    sigaddset(&deadline.set, SIGTERM);
    sigaddset(&deadline.set, SIGINT);
    return pthread_sigmask(SIG_BLOCK, &deadline.set, NULL) == 0 ? 0 : MW_EIO;
}

int mw_deadline_start(uv_async_t *wake, uint32_t grace_ms)
{
    pthread_attr_t attr;
    pthread_t thread;
    int r;

    deadline.wake = wake;
    mw_deadline_set_grace(grace_ms);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    r = pthread_create(&thread, &attr, run, NULL);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        errno = r;
        return MW_EIO;
    }
    return 0;
}

void mw_deadline_set_grace(uint32_t grace_ms)
{
    __atomic_store_n(&deadline.grace_ms, grace_ms, __ATOMIC_SEQ_CST);
}

int mw_deadline_signal(void)
{
    return __atomic_load_n(&deadline.signum, __ATOMIC_SEQ_CST);
}
