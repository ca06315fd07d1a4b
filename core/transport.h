/* The table of functions behind which a connection's bytes travel
 * (Redis's ConnectionType): plain TCP, TLS, or the in-memory transport of
 * moonwire.sim. Everything above it — HTTP, WebSocket, the registry, Lua —
 * only ever calls these.
 */
#ifndef MOONWIRE_TRANSPORT_H
#define MOONWIRE_TRANSPORT_H

typedef struct mw_conn_s mw_conn_t;

typedef struct mw_transport_s {
    const char *name;
    /* Writes what c->outq holds, as far as the peer takes it. Called once per
     * loop turn for each connection with queued frames. */
    void (*flush)(mw_conn_t *c);
    /* c->outq has drained and nothing more will be sent: shut the write side
     * down, wait (bounded) for the peer to close, then close. */
    void (*finish)(mw_conn_t *c);
    /* Closes now, dropping anything unsent. */
    void (*abort)(mw_conn_t *c);
    /* Stops or resumes reading (input backpressure). */
    void (*pause)(mw_conn_t *c, int paused);
} mw_transport_t;

#endif
