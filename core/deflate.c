/* permessage-deflate with zlib. See deflate.h. */
#include "deflate.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

struct mw_inflater_s {
    z_stream z;
    int bits;
    uint8_t ended;       /* the stream ended with a final block: what follows starts another */
    uint8_t pending;     /* the stream took bytes of this message that the tail must complete */
    mw_inflater_t *next; /* in the pool */
};

#define INFLATER_POOL_MAX 64
static mw_inflater_t *inflater_pool; /* 15-bit inflaters only: they decode every window */
static int inflater_pooled;

static z_stream *deflaters[16]; /* by window bits, made on first use */

/* Negotiation --------------------------------------------------------------------- */

typedef struct {
    int server_nct, client_nct;
    int server_bits; /* 0: not given */
    int client_bits; /* 0: not given, -1: given without a value */
} offer_t;

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Reads a token (or a quoted string) at p; returns the end and sets tok and len. */
static const char *read_token(const char *p, const char *end, const char **tok, size_t *len)
{
    p = skip_ws(p, end);
    if (p < end && *p == '"') {
        const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (q == NULL)
            q = end;
        *tok = p + 1;
        *len = (size_t)(q - p - 1);
        return q < end ? q + 1 : end;
    }
    *tok = p;
    while (p < end && *p != ';' && *p != ',' && *p != '=' && *p != ' ' && *p != '\t')
        p++;
    *len = (size_t)(p - *tok);
    return p;
}

static int is(const char *tok, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(tok, lit, len) == 0;
}

/* 8..15 written plainly; -1 otherwise. */
static int window_bits(const char *tok, size_t len)
{
    int v = 0;
    if (len == 0 || len > 2 || (len == 2 && tok[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return -1;
        v = v * 10 + (tok[i] - '0');
    }
    return v >= 8 && v <= 15 ? v : -1;
}

/* Parses the parameters of one offer, from p (after the name) to the comma.
 * Returns the position after the offer, and sets *ok when it is valid. */
static const char *parse_offer(const char *p, const char *end, offer_t *o, int *ok)
{
    *ok = 1;
    memset(o, 0, sizeof(*o));
    for (;;) {
        const char *name, *val = NULL;
        size_t nlen, vlen = 0;
        int has_value = 0;

        p = skip_ws(p, end);
        if (p >= end || *p == ',')
            break;
        if (*p != ';') {
            *ok = 0;
            while (p < end && *p != ',')
                p++;
            break;
        }
        p = read_token(p + 1, end, &name, &nlen);
        p = skip_ws(p, end);
        if (p < end && *p == '=') {
            p = read_token(p + 1, end, &val, &vlen);
            has_value = 1;
        }
        if (is(name, nlen, "server_no_context_takeover") && !has_value && !o->server_nct) {
            o->server_nct = 1;
        } else if (is(name, nlen, "client_no_context_takeover") && !has_value && !o->client_nct) {
            o->client_nct = 1;
        } else if (is(name, nlen, "server_max_window_bits") && has_value && o->server_bits == 0 &&
                   window_bits(val, vlen) > 0) {
            o->server_bits = window_bits(val, vlen);
        } else if (is(name, nlen, "client_max_window_bits") && o->client_bits == 0 &&
                   (!has_value || window_bits(val, vlen) > 0)) {
            o->client_bits = has_value ? window_bits(val, vlen) : -1;
        } else {
            *ok = 0; /* unknown, repeated or malformed: decline this offer */
        }
    }
    return p;
}

int mw_pmd_negotiate(const char *offers, size_t len, const mw_pmd_config_t *cfg, mw_pmd_t *out,
                     char *response, size_t cap)
{
    const char *p = offers, *end = offers + len;

    memset(out, 0, sizeof(*out));
    if (!cfg->enabled)
        return 0;
    while (p < end) {
        const char *name;
        size_t nlen;
        offer_t o;
        int ok, server_bits, client_bits, client_nct;
        size_t n;

        p = read_token(p, end, &name, &nlen);
        p = parse_offer(p, end, &o, &ok);
        if (p < end && *p == ',')
            p++;
        if (!is(name, nlen, "permessage-deflate") || !ok)
            continue;
        server_bits = cfg->server_max_window_bits;
        if (o.server_bits > 0 && o.server_bits < server_bits)
            server_bits = o.server_bits;
        if (server_bits < 9)
            continue; /* zlib makes no 8-bit raw deflate streams: cannot honour */
        client_bits = 15;
        if (o.client_bits != 0) {
            client_bits = cfg->client_max_window_bits;
            if (o.client_bits > 0 && o.client_bits < client_bits)
                client_bits = o.client_bits;
        }
        client_nct = o.client_nct || cfg->client_no_context_takeover;

        n = (size_t)snprintf(response, cap, "permessage-deflate; server_no_context_takeover%s",
                             client_nct ? "; client_no_context_takeover" : "");
        if (o.server_bits > 0 || server_bits < 15)
            n += (size_t)snprintf(response + n, n < cap ? cap - n : 0,
                                  "; server_max_window_bits=%d", server_bits);
        if (o.client_bits != 0)
            n += (size_t)snprintf(response + n, n < cap ? cap - n : 0,
                                  "; client_max_window_bits=%d", client_bits);
        if (n >= cap)
            return 0;
        out->enabled = 1;
        out->server_bits = (uint8_t)server_bits;
        out->client_bits = (uint8_t)client_bits;
        out->client_takeover = !client_nct;
        return 1;
    }
    return 0;
}

/* Inflate --------------------------------------------------------------------------- */

mw_inflater_t *mw_inflater_get(int bits)
{
    mw_inflater_t *z;

    if (bits == 15 && inflater_pool != NULL) {
        z = inflater_pool;
        inflater_pool = z->next;
        inflater_pooled--;
        return z;
    }
    z = calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    /* A raw stream; zlib allocates the window when the data needs it. */
    if (inflateInit2(&z->z, -bits) != Z_OK) {
        free(z);
        return NULL;
    }
    z->bits = bits;
    return z;
}

static void inflater_free(mw_inflater_t *z)
{
    inflateEnd(&z->z);
    free(z);
}

void mw_inflater_put(mw_inflater_t *z)
{
    if (z == NULL)
        return;
    z->ended = z->pending = 0;
    if (z->bits != 15 || inflater_pooled >= INFLATER_POOL_MAX || inflateReset(&z->z) != Z_OK) {
        inflater_free(z);
        return;
    }
    z->next = inflater_pool;
    inflater_pool = z;
    inflater_pooled++;
}

/* Starts a new DEFLATE stream after one that ended with a final block
 * (RFC 7692 7.2.3.3). The sliding window belongs to the connection, not to
 * one stream, so it stays: inflateResetKeep is inflateReset without dropping
 * the window, in constant time (zlib.h declares it among the functions its
 * manual leaves out; zlib-ng and zlib-rs have it too). */
static int restart(mw_inflater_t *z)
{
    if (inflateResetKeep(&z->z) != Z_OK)
        return MW_EPROTO;
    z->ended = 0;
    return 0;
}

static int inflate_some(mw_inflater_t *z, const uint8_t *data, size_t len, mw_inflate_sink sink,
                        void *ud)
{
    uint8_t out[16384];

    z->z.next_in = (Bytef *)data;
    z->z.avail_in = (uInt)len;
    for (;;) {
        int zr, r;
        size_t have;

        if (z->ended) {
            if (z->z.avail_in == 0)
                return 0;
            if ((r = restart(z)) != 0)
                return r;
        }
        if (z->z.avail_in > 0)
            z->pending = 1;
        z->z.next_out = out;
        z->z.avail_out = sizeof(out);
        zr = inflate(&z->z, Z_SYNC_FLUSH);
        if (zr != Z_OK && zr != Z_BUF_ERROR && zr != Z_STREAM_END)
            return MW_EPROTO;
        have = sizeof(out) - z->z.avail_out;
        if (have > 0 && (r = sink(ud, out, have)) != 0)
            return r; /* e.g. over max_message_size: stop inflating at once */
        if (zr == Z_STREAM_END) {
            z->ended = 1;
            z->pending = 0;
            continue;
        }
        if (have == 0 && z->z.avail_in > 0 && zr == Z_BUF_ERROR)
            return MW_EPROTO;
        if (z->z.avail_in == 0 && z->z.avail_out > 0)
            return 0;
    }
}

int mw_inflater_feed(mw_inflater_t *z, const uint8_t *data, size_t len, int end,
                     mw_inflate_sink sink, void *ud)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    int r = 0;

    if (len > 0)
        r = inflate_some(z, data, len, sink, ud);
    if (r == 0 && end) {
        /* The sender dropped the 00 00 ff ff its flush ended with (RFC 7692
         * 7.2.1). A message that ended its stream with a final block and
         * sent nothing after it has no such tail; the stream that the next
         * message starts keeps the window (with context takeover). */
        if (z->pending)
            r = inflate_some(z, tail, sizeof(tail), sink, ud);
        z->pending = 0;
    }
    return r;
}

/* Deflate --------------------------------------------------------------------------- */

static z_stream *deflater(int bits, int level)
{
    if (deflaters[bits] == NULL) {
        z_stream *z = calloc(1, sizeof(*z));
        if (z == NULL)
            return NULL;
        if (deflateInit2(z, level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return NULL;
        }
        deflaters[bits] = z;
    }
    return deflaters[bits];
}

mw_frame_t *mw_pmd_compress(mw_frame_t *f, int bits, int level)
{
    const uint8_t *payload = mw_frame_payload(f);
    size_t len = mw_frame_payload_len(f);
    uint8_t opcode = f->bytes[0] & 0x0f;
    z_stream *z;
    uint8_t *buf;
    size_t bound, clen;
    mw_frame_t *out = NULL;

    if (bits == 15 && f->alt_tried)
        return f->alt != NULL ? mw_frame_ref(f->alt) : NULL;
    if (bits < 9 || bits > 15 || (z = deflater(bits, level)) == NULL)
        return NULL;
    bound = deflateBound(z, len) + 16;
    buf = malloc(bound);
    if (buf == NULL)
        return NULL;
    deflateReset(z); /* server_no_context_takeover: every message stands alone */
    z->next_in = (Bytef *)payload;
    z->avail_in = (uInt)len;
    z->next_out = buf;
    z->avail_out = (uInt)bound;
    if (deflate(z, Z_SYNC_FLUSH) == Z_OK && z->avail_in == 0) {
        clen = bound - z->avail_out;
        /* RFC 7692 7.2.1: drop the 00 00 ff ff a sync flush ends with. */
        if (clen >= 4 && memcmp(buf + clen - 4, "\x00\x00\xff\xff", 4) == 0)
            clen -= 4;
        if (clen < len) {
            out = mw_frame_new(opcode, buf, clen);
            if (out != NULL) {
                out->bytes[0] |= 0x40; /* RSV1: this message is compressed */
                out->rsv = 4;
            }
        }
    }
    free(buf);
    if (bits == 15) {
        f->alt_tried = 1;
        f->alt = out != NULL ? mw_frame_ref(out) : NULL;
    }
    return out;
}

void mw_pmd_pool_drain(void)
{
    while (inflater_pool != NULL) {
        mw_inflater_t *z = inflater_pool;
        inflater_pool = z->next;
        inflater_free(z);
    }
    inflater_pooled = 0;
    for (int i = 0; i < 16; i++) {
        if (deflaters[i] != NULL) {
            deflateEnd(deflaters[i]);
            free(deflaters[i]);
            deflaters[i] = NULL;
        }
    }
}
