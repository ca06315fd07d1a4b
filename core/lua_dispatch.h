/* The app's hooks for connections, which the server and the request router
 * call: on_upgrade, on_open, and the conn object's end at on_close.
 * on_message is lua_task.h's mw_lua_message.
 */
#ifndef MOONWIRE_LUA_DISPATCH_H
#define MOONWIRE_LUA_DISPATCH_H

typedef struct mw_conn_s mw_conn_t;
typedef struct mw_lua_s mw_lua_t;

/* What on_upgrade decided. */
typedef struct {
    int accept;
    int status;         /* when refused: 400..599 */
    char body[256];     /* when refused: the reply body */
    char protocol[128]; /* when accepted: the chosen subprotocol, or "" */
} mw_upgrade_decision_t;

/* Where on_upgrade's answer goes (the request router's). decided(c, d, err):
 * err is 0 with d filled, or MW_ELUA when the hook failed or returned values
 * of the wrong types (logged; d is NULL: reply 500). */
typedef struct {
    void (*decided)(mw_conn_t *c, const mw_upgrade_decision_t *d, int err);
} mw_upgrade_handler_t;

/* Builds the request table of c (from c->http) and runs on_upgrade, which
 * may wait (lua_task.h): h->decided runs when it has returned, at once when
 * it did not wait, or (with accept) when the app has no on_upgrade. A hook
 * that waits leaves c in MW_CONN_HTTP; when c has closed or been released by
 * its end (the client went away, handshake_timeout), decided is not called.
 * Returns 0 (decided), MW_EAGAIN (the hook waits), or MW_ELUA when the
 * request table could not be built (logged; decided is not called). */
int mw_lua_upgrade(mw_lua_t *lh, mw_conn_t *c, const mw_upgrade_handler_t *h);

/* Pushes the request table of c (from c->http), as on_upgrade gets it, on
 * the main state. Returns 0, or MW_ELUA when it could not be made (logged). */
int mw_lua_push_request(mw_lua_t *lh, mw_conn_t *c);

/* Creates c's conn object and runs on_open; c is failed with 1011 when the
 * object could not be made. */
void mw_lua_open(mw_lua_t *lh, mw_conn_t *c);

/* Runs on_close (when on_open ran), after on_error for a failure the core
 * saw, and detaches c's conn object. */
void mw_lua_close(mw_lua_t *lh, mw_conn_t *c);

/* Drops any reference the state holds for c (a refused upgrade's request,
 * its conn object, the messages it held): c is being released. */
void mw_lua_forget(mw_lua_t *lh, mw_conn_t *c);

#endif
