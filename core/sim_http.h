/* The HTTP client of moonwire.sim: moonwire.http.request answered by a
 * spec's stub, on virtual time (srv:http(stub); see sim_http.c).
 */
#ifndef MOONWIRE_SIM_HTTP_H
#define MOONWIRE_SIM_HTTP_H

typedef struct lua_State lua_State;
typedef struct mw_node_s mw_node_t;
typedef struct sim_http_s sim_http_t;

/* Makes the stub at idx of the spec's state L (a function or a table) the
 * node's HTTP client, in place of the one *h held (freed: its calls end with
 * "shutting down"), and lets hooks wait. nil at idx takes the stub away.
 * Raises for a wrong argument or memory. */
void sim_http_set(lua_State *L, int idx, mw_node_t *node, sim_http_t **h);

/* Ends the stub's calls ("shutting down") and frees it (NULL: nothing). */
void sim_http_free(mw_node_t *node, sim_http_t *h);

#endif
