/* libFuzzer harness: the WebSocket receive path (wslay's frame parser, our
 * message layer, UTF-8 and close handling), fed in reads of varying size.
 * Checks the promises of ws.h: nothing is reported after a close or a
 * failure, text messages are valid UTF-8, sizes stay under the limit. Half
 * the inputs run with permessage-deflate negotiated.
 */
#include "ws.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE (256 * 1024)

typedef struct {
    int ended;
} rec_t;

static void check_open(rec_t *r)
{
    if (r->ended)
        abort(); /* an event after the close or the failure */
}

static void on_message(void *ud, int opcode, const uint8_t *data, size_t len)
{
    check_open(ud);
    if (len > MAX_MESSAGE || (opcode != 1 && opcode != 2))
        abort();
    if (opcode == 1 && !mw_utf8_valid(data, len))
        abort();
}

static void on_ping(void *ud, const uint8_t *data, size_t len)
{
    (void)data;
    check_open(ud);
    if (len > 125)
        abort();
}

static void on_close(void *ud, uint16_t code, const char *reason, size_t len)
{
    rec_t *r = ud;
    check_open(r);
    if (code != 1005 && !mw_ws_close_code_valid(code))
        abort();
    if (!mw_utf8_valid((const uint8_t *)reason, len))
        abort();
    r->ended = 1;
}

static void on_fail(void *ud, uint16_t code, const char *why)
{
    rec_t *r = ud;
    (void)why;
    check_open(r);
    if (code != 1002 && code != 1007 && code != 1009 && code != 1011)
        abort();
    r->ended = 1;
}

static const mw_ws_handler_t handler = {on_message, on_ping, on_ping, on_close, on_fail};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_ws_t ws;
    rec_t rec = {0};
    size_t chunk, off = 1;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] * 37 % 4099 + 1;
    mw_ws_init(&ws, &handler, &rec, MAX_MESSAGE);
    /* The top bits choose permessage-deflate, with or without client takeover. */
    ws.pmd.enabled = (data[0] & 0x80) != 0;
    ws.pmd.client_takeover = (data[0] & 0x40) != 0;
    ws.pmd.server_bits = ws.pmd.client_bits = 15;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        int r = mw_ws_feed(&ws, data + off, n);
        if (r != 0 && !rec.ended)
            abort(); /* stopped without telling the handler */
        off += n;
    }
    mw_ws_close(&ws);
    return 0;
}
