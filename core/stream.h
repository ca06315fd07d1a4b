/* A reply body that goes out a chunk at a time as the connection's queue
 * drains, so a download costs a bounded amount of memory whatever the size
 * of the file and however slowly the client reads.
 *
 * The source is a region of an open file, read MW_STREAM_CHUNK bytes at a
 * time on libuv's thread pool (never on the loop), or a region of a frame
 * already in memory (a range of a cached file), copied a chunk at a time.
 * A chunk is read only while the connection has less than two chunks
 * queued and unwritten (so the next is read while the last is written), and
 * one read at most is in flight per stream: a client that never reads holds
 * about three chunks. Works on any transport, TLS included,
 * since chunks are frames in the ordinary write queue.
 *
 * The head of the reply is queued before the stream starts; when the last
 * chunk is queued the stream calls mw_conn_reply_end(). A file that changes
 * size or modification time while it is sent, or fails to read, cuts the
 * reply short (logged, counted): the head promised bytes that no longer
 * exist, so the connection is dropped and the client sees a short body.
 */
#ifndef MOONWIRE_STREAM_H
#define MOONWIRE_STREAM_H

#include "frame.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct mw_conn_s mw_conn_t;
typedef struct mw_stream_s mw_stream_t;

#define MW_STREAM_CHUNK (64 * 1024)

/* Streams len bytes of fd from off to c (HTTP state, with no stream yet),
 * after what c->outq holds. Takes over fd in every case (closed when the
 * stream ends). st is the file as the head described it. Returns 0 or
 * MW_ENOMEM (fd closed; the caller closes the connection). */
int mw_stream_file(mw_conn_t *c, int fd, const struct stat *st, uint64_t off, uint64_t len);

/* Streams f->bytes[off, off + len) to c; takes a reference of its own on f.
 * Returns 0 or MW_ENOMEM. */
int mw_stream_frame(mw_conn_t *c, mw_frame_t *f, size_t off, size_t len);

/* Files held open by streams of this process now (static.max_open_files
 * bounds it). */
size_t mw_stream_open_files(void);

#endif
