/* Private to sim.c, sim_client.c and sim_report.c: a sim server, the server side of its
 * in-memory connections, and the client objects specs hold.
 */
#ifndef MOONWIRE_SIM_INT_H
#define MOONWIRE_SIM_INT_H

#include "sim.h"
#include "sim_http.h"
#include "conn.h"
#include "frame.h"
#include "list.h"
#include "registry.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "moonwire/server.h"

#include <stddef.h>
#include <stdint.h>

#define SERVER_META "moonwire.sim.server"
#define CLIENT_META "moonwire.sim.client"

typedef struct sim_client_s sim_client_t;

/* The server side of an in-memory connection. */
typedef struct {
    mw_conn_t c;
    sim_server_t *ss;
    sim_client_t *client; /* NULL once the client object is collected */
    mw_list_t link;       /* in ss->conns, or ss->finished once the transport is done */
} sim_conn_t;

struct sim_server_s {
    mw_server_t *srv;
    mw_node_t *node; /* its parts */
    mw_config_t cfg;
    int alive;
    mw_list_t conns;
    mw_list_t finished; /* transports done, to release at the end of the pump */
    mw_list_t replies;  /* clients with an automatic reply to send */
    mw_sim_join_t join; /* its cluster: pump and advance go through it */
    int joined;
    mw_list_t live_link; /* in the list of live servers, while alive */
    sim_http_t *http;    /* the HTTP stub (sim_http.c), or NULL */
    int log_hook_errors; /* sim.new{hook_errors = "log"}: failures are not raised */
    int log_warnings;    /* sim.new{warnings = "log"}: warnings are not printed */
    char *failure;       /* the first hook failure since the spec's last call, or NULL */
    size_t failures;     /* how many */
};

/* The client object seen by specs. */
struct sim_client_s {
    sim_conn_t *sc; /* NULL once the connection is released */
    int status;     /* HTTP status of the handshake reply */
    char body[256]; /* body of a refusal */
    mw_frame_t **msgs; /* received data frames, in order (one reference each) */
    size_t nmsgs, capmsgs;
    int close_received;
    uint16_t close_code;
    char close_reason[124];
    size_t close_reason_len;
    int close_sent;
    int want_close_echo;
    uint8_t pong[125];
    int pong_len; /* -1: no pong owed */
    mw_list_t reply_link;
    char id[MW_ID_MAX];
};

/* Runs the server, and in a cluster every node and Redis, until nothing is
 * left to do. */
void mw__sim_pump(sim_server_t *ss);

/* Feeds bytes a client sent to the server side of its connection (nothing
 * once the connection is freed). */
void mw__sim_feed(sim_conn_t *sc, const uint8_t *data, size_t len);

/* Builds a frame as a client sends it (masked). Returns a malloc'ed buffer
 * and its length in *out, or NULL when out of memory. */
uint8_t *mw__sim_client_frame(int fin, uint8_t opcode, const uint8_t *data, size_t len,
                              size_t *out);

/* sim_report.c: the log capture and the host's reports. */

/* Reads sim.new's options hook_errors and warnings (in the table at opts)
 * into ss. Returns 0, or -1 with the error message pushed. */
int mw__sim_report_options(lua_State *L, int opts, sim_server_t *ss);

/* Before a server's app loads: the log goes to the capture at level, the
 * host's reports here, and those of a node not known yet to ss (NULL once
 * it has loaded). */
void mw__sim_report_loading(sim_server_t *ss, mw_log_level_t level);

/* The server is alive (its reports find it by node), or no longer. */
void mw__sim_report_live(sim_server_t *ss);
void mw__sim_report_dead(sim_server_t *ss);

/* What the spec gets from a server's finalizer: nothing raised, nothing kept. */
void mw__sim_report_forget(sim_server_t *ss);

/* Pushes the log lines captured since the last call (srv:logs), and forgets them. */
void mw__sim_logs_push(lua_State *L);

/* At the interpreter's end: the capture, the sink, the reporter and the
 * warnings printed go. */
void mw__sim_report_end(void);

#endif
