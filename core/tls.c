/* TLS sessions over memory BIOs. See tls.h. */
#include "moonwire/tls.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mw_tls_s {
    SSL *ssl;
    BIO *in;  /* ciphertext from the peer, read by OpenSSL */
    BIO *out; /* ciphertext for the peer, written by OpenSSL */
};

/* TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 uses OpenSSL's
 * defaults, which are all modern. */
#define CIPHERS_TLS12 "ECDHE+AESGCM:ECDHE+CHACHA20"

static void openssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    snprintf(err, errlen, "tls: %s %s: %s", what, file, reason);
    ERR_clear_error();
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *selected;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof(http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN */
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *build(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        openssl_error(err, errlen, "creating a context for", cert);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_error(err, errlen, "loading the certificate chain", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        openssl_error(err, errlen, "loading the private key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, errlen, "matching the key to the certificate", key);
        goto fail;
    }
    return ctx;

fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int mw_tls_ctx_init(mw_tls_ctx_t *t, const char *cert, const char *key, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->cert = strdup(cert);
    t->key = strdup(key);
    if (t->cert == NULL || t->key == NULL) {
        mw_tls_ctx_close(t);
        return MW_ENOMEM;
    }
    t->ctx = build(cert, key, err, errlen);
    if (t->ctx == NULL) {
        mw_tls_ctx_close(t);
        return MW_ECONFIG;
    }
    return 0;
}

int mw_tls_ctx_set_files(mw_tls_ctx_t *t, const char *cert, const char *key)
{
    char *c = strdup(cert), *k = strdup(key);
    if (c == NULL || k == NULL) {
        free(c);
        free(k);
        return MW_ENOMEM;
    }
    free(t->cert);
    free(t->key);
    t->cert = c;
    t->key = k;
    return 0;
}

int mw_tls_ctx_reload(mw_tls_ctx_t *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = build(t->cert, t->key, err, errlen);
    if (ctx == NULL)
        return MW_ECONFIG;
    /* Open sessions hold their own reference to the old context. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}

void mw_tls_ctx_close(mw_tls_ctx_t *t)
{
    SSL_CTX_free(t->ctx);
    free(t->cert);
    free(t->key);
    memset(t, 0, sizeof(*t));
}

mw_tls_t *mw_tls_new(mw_tls_ctx_t *t)
{
    mw_tls_t *tls = calloc(1, sizeof(*tls));

    if (tls == NULL)
        return NULL;
    tls->ssl = SSL_new(t->ctx);
    tls->in = BIO_new(BIO_s_mem());
    tls->out = BIO_new(BIO_s_mem());
    if (tls->ssl == NULL || tls->in == NULL || tls->out == NULL) {
        BIO_free(tls->in);
        BIO_free(tls->out);
        SSL_free(tls->ssl);
        free(tls);
        return NULL;
    }
    /* An empty memory BIO reports "retry", not EOF. */
    BIO_set_mem_eof_return(tls->in, -1);
    SSL_set_bio(tls->ssl, tls->in, tls->out); /* the session owns both BIOs now */
    SSL_set_accept_state(tls->ssl);
    return tls;
}

void mw_tls_free(mw_tls_t *tls)
{
    if (tls == NULL)
        return;
    SSL_free(tls->ssl);
    free(tls);
}

int mw_tls_read(mw_tls_t *tls, const uint8_t *data, size_t len, mw_tls_plain_cb on_plain,
                void *ud)
{
    uint8_t buf[16384];

    if (len > 0 && BIO_write(tls->in, data, (int)len) != (int)len)
        return MW_ENOMEM;
    for (;;) {
        int n = SSL_read(tls->ssl, buf, sizeof(buf));
        if (n > 0) {
            on_plain(ud, buf, (size_t)n);
            continue;
        }
        switch (SSL_get_error(tls->ssl, n)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return 0;
        case SSL_ERROR_ZERO_RETURN:
            return MW_ECLOSED;
        default: {
            char reason[256] = "connection closed";
            unsigned long e = ERR_get_error();
            if (e != 0)
                ERR_error_string_n(e, reason, sizeof(reason));
            ERR_clear_error();
            mw_log_debug("tls: %s", reason);
            return MW_EPROTO;
        }
        }
    }
}

int mw_tls_write(mw_tls_t *tls, const void *data, size_t len)
{
    int n;

    if (!SSL_is_init_finished(tls->ssl))
        return MW_EAGAIN;
    if (len == 0)
        return 0;
    /* With a memory BIO underneath, a write is taken whole. */
    n = SSL_write(tls->ssl, data, (int)len);
    if (n == (int)len)
        return 0;
    ERR_clear_error();
    return MW_EPROTO;
}

void mw_tls_shutdown(mw_tls_t *tls)
{
    if (SSL_is_init_finished(tls->ssl))
        SSL_shutdown(tls->ssl);
    ERR_clear_error();
}

size_t mw_tls_take_out(mw_tls_t *tls, uint8_t **out)
{
    size_t n = BIO_ctrl_pending(tls->out);
    uint8_t *buf;

    *out = NULL;
    if (n == 0)
        return 0;
    buf = malloc(n);
    if (buf == NULL)
        return 0;
    if (BIO_read(tls->out, buf, (int)n) != (int)n) {
        free(buf);
        return 0;
    }
    *out = buf;
    return n;
}

int mw_tls_ready(const mw_tls_t *tls)
{
    return SSL_is_init_finished(tls->ssl);
}
