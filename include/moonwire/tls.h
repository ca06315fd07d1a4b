/* TLS with OpenSSL over memory BIOs, independent of any socket or loop.
 *
 * The transport feeds ciphertext in and gets plaintext out (mw_tls_read),
 * hands plaintext in to be encrypted (mw_tls_write), and sends whatever
 * ciphertext the engine produced (mw_tls_take_out) in order. Handshake,
 * alerts and close_notify all travel through the same output.
 *
 * A context holds the certificate chain and key. mw_tls_ctx_reload() builds a
 * new OpenSSL context from the files and swaps it in only if that worked;
 * connections already open keep the context they started with (OpenSSL
 * reference-counts it), so a reload drops nobody.
 */
#ifndef MOONWIRE_TLS_H
#define MOONWIRE_TLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct ssl_ctx_st SSL_CTX;

typedef struct mw_tls_ctx_s {
    SSL_CTX *ctx;
    char *cert; /* PEM certificate chain file */
    char *key;  /* PEM private key file */
    uint64_t handshakes_failed;
} mw_tls_ctx_t;

typedef struct mw_tls_s mw_tls_t;

/* Loads cert and key into a new context (TLS 1.2 and 1.3, modern ciphers,
 * ALPN http/1.1). Returns 0, or MW_ECONFIG with the reason in err. */
int mw_tls_ctx_init(mw_tls_ctx_t *t, const char *cert, const char *key, char *err, size_t errlen);

/* Points the context at other files (for the next reload). Returns 0 or MW_ENOMEM. */
int mw_tls_ctx_set_files(mw_tls_ctx_t *t, const char *cert, const char *key);

/* Re-reads the files. On failure keeps the old context and returns
 * MW_ECONFIG with the reason in err. */
int mw_tls_ctx_reload(mw_tls_ctx_t *t, char *err, size_t errlen);

void mw_tls_ctx_close(mw_tls_ctx_t *t);

/* A server-side TLS session on the current context. NULL when out of memory. */
mw_tls_t *mw_tls_new(mw_tls_ctx_t *t);
void mw_tls_free(mw_tls_t *tls);

typedef void (*mw_tls_plain_cb)(void *ud, const uint8_t *data, size_t len);

/* Feeds ciphertext from the peer; calls on_plain for each decrypted piece
 * (on_plain may free nothing; the session stays valid during the call).
 * Returns 0, MW_ECLOSED when the peer sent close_notify, or MW_EPROTO when
 * the bytes are not TLS or the handshake failed (the reason is logged at
 * debug level; any alert is waiting in the output). */
int mw_tls_read(mw_tls_t *tls, const uint8_t *data, size_t len, mw_tls_plain_cb on_plain,
                void *ud);

/* Encrypts len bytes. Returns 0, MW_EAGAIN before the handshake is done
 * (nothing taken), or MW_EPROTO. */
int mw_tls_write(mw_tls_t *tls, const void *data, size_t len);

/* Queues a close_notify alert. */
void mw_tls_shutdown(mw_tls_t *tls);

/* Moves the pending ciphertext into a malloc'ed buffer (*out; the caller
 * frees it). Returns its length, 0 when nothing is pending. */
size_t mw_tls_take_out(mw_tls_t *tls, uint8_t **out);

/* True once the handshake has finished. */
int mw_tls_ready(const mw_tls_t *tls);

#endif
