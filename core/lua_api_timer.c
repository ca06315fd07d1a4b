/* moonwire.timer(ms, fn), moonwire.every(ms, fn) and moonwire.sleep(seconds).
 *
 * A timer is a userdata that embeds its entry in the server's timer heap
 * and pins itself in the Lua registry while scheduled, so it lives exactly
 * as long as it can fire. Timers belong to the app: a reload cancels them.
 * A sleep is a hook that waits (lua_task.h) for an entry of the same heap,
 * which wakes it: real time in the server, virtual time in moonwire.sim.
 * A reload does not cut it short: the hook goes on in the code it began in.
 */
#include "lua_api_timer.h"
#include "lua_api_int.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "scheduler.h"
#include "timer.h"
#include "moonwire/config.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    mw_timer_t t;
    mw_list_t link;      /* in the api's timer list while scheduled */
    lua_State *L;        /* the main state */
    int fn_ref;          /* the callback, while scheduled */
    int self_ref;        /* pins this userdata while scheduled */
    uint32_t generation; /* the app load that made it (see mw_lua_api_cancel_timers) */
} ltimer_t;

static void timer_release(ltimer_t *lt)
{
    mw_timer_stop(mw_lua_node(lt->L)->timers, &lt->t);
    if (mw_list_linked(&lt->link))
        mw_list_remove(&lt->link);
    luaL_unref(lt->L, LUA_REGISTRYINDEX, lt->fn_ref);
    luaL_unref(lt->L, LUA_REGISTRYINDEX, lt->self_ref);
    lt->fn_ref = lt->self_ref = LUA_NOREF;
}

static void on_lua_timer(mw_timer_t *t)
{
    ltimer_t *lt = t->data;
    lua_State *L = lt->L;
    mw_node_t *node = mw_lua_node(L);

    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->fn_ref);
    if (!mw_timer_active(&lt->t))
        timer_release(lt); /* a one-shot timer is done; its callback is on the stack */
    mw_lua_spawn(node->lua, NULL, "timer callback", 0);
    mw_sched_run(node->sched);
}

static int start_timer(lua_State *L, int repeat)
{
    lua_Number ms = luaL_checknumber(L, 1);
    mw_node_t *node = mw_lua_node(L);
    ltimer_t *lt;
    uint64_t after;

    luaL_argcheck(L, ms >= 0 && ms < 1e12, 1, "milliseconds must be from 0 to 1e12");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    after = (uint64_t)ms;
    if (repeat && after == 0)
        after = 1; /* every(0) would starve the loop */
    lt = lua_newuserdatauv(L, sizeof(*lt), 0);
    mw_timer_init(&lt->t, on_lua_timer, lt);
    mw_list_init(&lt->link);
    /* The main thread, not node->lua: a script may start timers while it loads. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lt->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    lt->generation = mw__lua_api(L)->generation;
    lt->fn_ref = lt->self_ref = LUA_NOREF;
    luaL_setmetatable(L, MW_TIMER_META);
    if (mw_timer_start(node->timers, &lt->t, after, repeat ? after : 0) != 0)
        return luaL_error(L, "out of memory");
    lua_pushvalue(L, 2);
    lt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    lt->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    mw_list_insert_tail(&mw__lua_api(L)->timers, &lt->link);
    return 1;
}

static int api_timer(lua_State *L)
{
    return start_timer(L, 0);
}

static int api_every(lua_State *L)
{
    return start_timer(L, 1);
}

static int timer_cancel(lua_State *L)
{
    ltimer_t *lt = luaL_checkudata(L, 1, MW_TIMER_META);
    int was = lt->self_ref != LUA_NOREF;
    if (was)
        timer_release(lt);
    lua_pushboolean(L, was);
    return 1;
}

static int timer_active(lua_State *L)
{
    ltimer_t *lt = luaL_checkudata(L, 1, MW_TIMER_META);
    lua_pushboolean(L, lt->self_ref != LUA_NOREF);
    return 1;
}

/* A hook in moonwire.sleep: its entry in the timer heap, and its task. */
typedef struct {
    mw_timer_t t;
    mw_list_t link; /* in the api's sleepers */
    mw_lua_task_t *task;
} lsleep_t;

static int push_nothing(lua_State *co, void *ud)
{
    (void)co;
    (void)ud;
    return 0;
}

static void on_sleep_over(mw_timer_t *t)
{
    lsleep_t *s = t->data;
    mw_lua_task_t *task = s->task;

    mw_list_remove(&s->link);
    free(s);
    mw_lua_wake(task, push_nothing, NULL);
}

/* moonwire.sleep(seconds): the hook waits that long (fractions allowed, at
 * most lua.max_sleep) while the loop serves everyone else; returns nothing. */
static int api_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    mw_node_t *node = mw_lua_node(L);
    uint32_t max = node->cfg->max_sleep;
    mw_lua_task_t *task;
    lsleep_t *s;
    uint64_t ms;

    if (!(secs >= 0 && secs * 1000 <= (lua_Number)max))
        return luaL_argerror(L, 1, lua_pushfstring(L, "seconds must be from 0 to lua.max_sleep (%f)",
                                                   (lua_Number)max / 1000));
    ms = (uint64_t)llround(secs * 1000);
    if (ms == 0 && secs > 0)
        ms = 1;
    task = mw_lua_wait(L); /* raises outside a hook that can wait, and past lua.max_waiting */
    s = malloc(sizeof(*s));
    if (s != NULL) {
        mw_timer_init(&s->t, on_sleep_over, s);
        s->task = task;
        if (mw_timer_start(node->timers, &s->t, ms, 0) != 0) {
            free(s);
            s = NULL;
        }
    }
    if (s == NULL) {
        mw_lua_unwait(task);
        return luaL_error(L, "not enough memory");
    }
    mw_list_insert_tail(&mw__lua_api(L)->sleepers, &s->link);
    return mw_lua_yield(L);
}

void mw__lua_close_sleeps(lua_State *L, mw__api_t *api)
{
    mw_list_t *it, *tmp;

    mw_list_foreach_safe(it, tmp, &api->sleepers)
    {
        lsleep_t *s = MW_CONTAINER_OF(it, lsleep_t, link);
        mw_timer_stop(mw_lua_node(L)->timers, &s->t);
        mw_list_remove(&s->link);
        free(s);
    }
}

uint32_t mw_lua_api_new_generation(lua_State *L)
{
    mw__api_t *api = mw__lua_api(L);
    return api != NULL ? ++api->generation : 0;
}

void mw_lua_api_cancel_timers(lua_State *L, uint32_t generation, int keep)
{
    mw__api_t *api = mw__lua_api(L);
    mw_list_t *it, *tmp;

    if (api == NULL)
        return;
    mw_list_foreach_safe(it, tmp, &api->timers)
    {
        ltimer_t *lt = MW_CONTAINER_OF(it, ltimer_t, link);
        if (keep ? lt->generation != generation : lt->generation == generation)
            timer_release(lt);
    }
}

void mw__lua_open_timers(lua_State *L)
{
    static const luaL_Reg methods[] = {{"cancel", timer_cancel}, {"active", timer_active}, {NULL, NULL}};

    luaL_newmetatable(L, MW_TIMER_META);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, api_timer);
    lua_setfield(L, -2, "timer");
    lua_pushcfunction(L, api_every);
    lua_setfield(L, -2, "every");
    lua_pushcfunction(L, api_sleep);
    lua_setfield(L, -2, "sleep");
}
