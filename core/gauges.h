/* The node's gauges, for /metrics and the other workers. */
#ifndef MOONWIRE_GAUGES_H
#define MOONWIRE_GAUGES_H

typedef struct mw_node_s mw_node_t;

/* Copies the node's gauges (connections, sockets, Lua memory, topics,
 * history, queues, static files, backplane) into node->metrics, where
 * /metrics and other workers read them, and adds what topics and history
 * counted since the last call. */
void mw_gauges_publish(const mw_node_t *node);

#endif
