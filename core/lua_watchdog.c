/* The CPU-time limit of Lua hook calls. See lua_watchdog.h. */
#include "lua_watchdog.h"
#include "moonwire/error.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TICK_SIGNAL SIGVTALRM

/* What the signal handler reads. It runs on the loop thread between two of
 * its instructions, so volatile is all the ordering needed: the fields are
 * written before `active` is set and after it is cleared. */
static struct {
    volatile sig_atomic_t active;  /* a call is running */
    volatile sig_atomic_t expired; /* and is past its limit */
    volatile sig_atomic_t seq;     /* counts calls, so a tick knows a new one */
    volatile sig_atomic_t seen;    /* the call the last tick saw */
    volatile sig_atomic_t ticks;   /* ticks that saw it after the first */
    volatile sig_atomic_t limit;   /* in ticks; 0: none */
    lua_State *volatile L;         /* the thread running it */
} watch;

static lua_Hook limit_hook;
static pid_t started_in; /* the process the timer belongs to */
static int users;
static timer_t timer;
static struct sigaction previous;

static void on_tick(int sig)
{
    int saved = errno;
    (void)sig;
    if (watch.active && watch.limit > 0) {
        if (watch.seen != watch.seq) {
            watch.seen = watch.seq;
            watch.ticks = 0;
        } else if (watch.expired || ++watch.ticks >= watch.limit) {
            /* Again at every tick while it runs: the thread may have changed
             * or had its hook reset since. */
            watch.expired = 1;
            lua_sethook(watch.L, limit_hook, LUA_MASKCOUNT, 1);
        }
    }
    errno = saved;
}

int mw_watchdog_start(lua_Hook hook)
{
    struct sigaction sa;
    struct sigevent sev;
    struct itimerspec its;

    limit_hook = hook;
    if (started_in != getpid())
        users = 0; /* a fork: the parent's timer did not come along */
    if (users > 0) {
        users++;
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_tick;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(TICK_SIGNAL, &sa, &previous) != 0)
        return MW_EIO;
    /* To this thread only: libuv's pool threads must not take it. */
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = TICK_SIGNAL;
    sev._sigev_un._tid = gettid();
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &timer) != 0) {
        sigaction(TICK_SIGNAL, &previous, NULL);
        return MW_EIO;
    }
    memset(&its, 0, sizeof(its));
    its.it_interval.tv_nsec = MW_WATCHDOG_TICK_MS * 1000000L;
    its.it_value = its.it_interval;
    if (timer_settime(timer, 0, &its, NULL) != 0) {
        timer_delete(timer);
        sigaction(TICK_SIGNAL, &previous, NULL);
        return MW_EIO;
    }
    started_in = getpid();
    users = 1;
    return 0;
}

void mw_watchdog_stop(void)
{
    struct sigaction ignore;

    if (users == 0 || started_in != getpid() || --users > 0)
        return;
    timer_delete(timer);
    /* SIG_IGN discards a tick already pending; then the action from before. */
    memset(&ignore, 0, sizeof(ignore));
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(TICK_SIGNAL, &ignore, NULL);
    sigaction(TICK_SIGNAL, &previous, NULL);
}

static void disarm(lua_State *L)
{
    if (L != NULL && lua_gethook(L) == limit_hook && limit_hook != NULL)
        lua_sethook(L, NULL, 0, 0);
}

void mw_watchdog_enter(lua_State *L, uint32_t limit_ms)
{
    watch.L = L;
    watch.expired = 0;
    /* In whole ticks, rounded up; 0 (no limit) stays 0. */
    watch.limit =
        (sig_atomic_t)(((uint64_t)limit_ms + MW_WATCHDOG_TICK_MS - 1) / MW_WATCHDOG_TICK_MS);
    watch.seq++;
    watch.active = 1;
}

void mw_watchdog_leave(void)
{
    watch.active = 0;
    /* Only an expired call had the hook set (on_tick, mw_watchdog_switch),
     * and with active cleared no tick sets it any more. */
    if (watch.expired)
        disarm(watch.L);
    watch.L = NULL;
}

lua_State *mw_watchdog_switch(lua_State *L)
{
    lua_State *was = watch.L;
    disarm(was);
    watch.L = L;
    if (watch.expired)
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, 1);
    return was;
}

int mw_watchdog_expired(void)
{
    return watch.active && watch.expired;
}

void mw_watchdog_check(lua_State *L)
{
    if (watch.active && watch.expired && limit_hook != NULL)
        limit_hook(L, NULL);
}
