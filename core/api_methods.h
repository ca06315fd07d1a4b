/* The server API's methods as they run in the node's Lua state: one
 * command (method and JSON params) in, an HTTP status and a JSON answer
 * out, for the HTTP API (api.c) and the queue (api_queue.c).
 */
#ifndef MOONWIRE_API_METHODS_H
#define MOONWIRE_API_METHODS_H

#include <stddef.h>

typedef struct lua_State lua_State;
typedef struct mw_lua_s mw_lua_t;

/* The answer to a command: its HTTP status (200, 400, 403, 404, 500, 503)
 * and the JSON text, {"result": ...} or {"error": {"code":, "message":}}.
 * body lives during the call only. */
typedef void (*mw_api_answer_cb)(void *ud, int status, const char *body, size_t len);

/* Runs method with params (a JSON object's text; "" or NULL: none) as a
 * task that may wait; cb runs exactly once, maybe before this returns. */
void mw_api_run(mw_lua_t *lh, const char *method, size_t mlen, const char *params, size_t plen,
                mw_api_answer_cb cb, void *ud);

/* The index of a method name in MW_METRICS_API_METHOD_MAP (MW_API_unknown
 * for any other name), and of a status in MW_METRICS_API_STATUS_MAP. */
int mw_api_method_index(const char *method, size_t len);
int mw_api_status_index(int status);

/* The Lua host only: loads the methods' chunk with the moonwire module on
 * top of L (before the app runs). Raises on failure (in open_state's
 * protected call). Returns 0. */
int mw__api_methods_open(lua_State *L);

#endif
