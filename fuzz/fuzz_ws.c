/* libFuzzer harness: the WebSocket receive path (ws.c's parser of whole
 * data frames, wslay's frame parser for the rest, our message layer, UTF-8
 * and close handling), fed in reads of varying size. Checks the promises of
 * ws.h: nothing is reported after a close or a failure, text messages are
 * valid UTF-8, sizes stay under the limit. Half the inputs run with
 * permessage-deflate negotiated. The same input fed a byte at a time, which
 * leaves every frame to wslay (no read holds a whole one), must give the
 * same events: the two parsers agree.
 */
#include "ws.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE (256 * 1024)

typedef struct {
    int ended;
    uint64_t events; /* FNV-1a of every event and its bytes, in order */
} rec_t;

static void mix(rec_t *r, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        r->events = (r->events ^ b[i]) * 0x100000001b3ull;
}

static void mix_event(rec_t *r, unsigned what, const void *p, size_t len)
{
    uint64_t n = len;
    mix(r, &what, sizeof(what));
    mix(r, &n, sizeof(n));
    mix(r, p, len);
}

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
    mix_event(ud, (unsigned)opcode, data, len);
}

static void on_ping(void *ud, const uint8_t *data, size_t len)
{
    check_open(ud);
    if (len > 125)
        abort();
    mix_event(ud, 9, data, len);
}

static void on_close(void *ud, uint16_t code, const char *reason, size_t len)
{
    rec_t *r = ud;
    check_open(r);
    if (code != 1005 && !mw_ws_close_code_valid(code))
        abort();
    if (!mw_utf8_valid((const uint8_t *)reason, len))
        abort();
    mix_event(r, 0x10000u + code, reason, len);
    r->ended = 1;
}

static void on_fail(void *ud, uint16_t code, const char *why)
{
    rec_t *r = ud;
    (void)why;
    check_open(r);
    if (code != 1002 && code != 1007 && code != 1009 && code != 1011)
        abort();
    mix_event(r, 0x20000u + code, NULL, 0);
    r->ended = 1;
}

static const mw_ws_handler_t handler = {on_message, on_ping, on_ping, on_close, on_fail};

/* Feeds data[1..size) in reads of chunk bytes; returns what was reported. */
static rec_t run(const uint8_t *data, size_t size, size_t chunk)
{
    mw_ws_t ws;
    rec_t rec = {0, 0xcbf29ce484222325ull};
    size_t off = 1;

    mw_ws_init(&ws, MAX_MESSAGE);
    /* The top bits choose permessage-deflate, with or without client takeover. */
    ws.pmd.enabled = (data[0] & 0x80) != 0;
    ws.pmd.client_takeover = (data[0] & 0x40) != 0;
    ws.pmd.server_bits = ws.pmd.client_bits = 15;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        int r = mw_ws_feed(&ws, &handler, &rec, data + off, n);
        if (r != 0 && !rec.ended)
            abort(); /* stopped without telling the handler */
        off += n;
    }
    mw_ws_close(&ws);
    return rec;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_t chunked, bytewise;

    if (size < 1)
        return 0;
    chunked = run(data, size, (size_t)data[0] * 37 % 4099 + 1);
    bytewise = run(data, size, 1);
    if (chunked.ended != bytewise.ended || chunked.events != bytewise.events)
        abort(); /* the two parsers disagree */
    return 0;
}
