/* Free lists of blocks by size class, so that the per-message path takes
 * memory back from where it gave it instead of from malloc.
 *
 * Classes are steps of 1 << shift bytes, each a word short of the step:
 * glibc's chunks are multiples of 16 bytes with a word of header, so a block
 * of class k, (k + 1) * step - 8 bytes, fills its chunk as exactly as the
 * malloc of any size in that class would (a pool costs no memory per block).
 * A size past the largest class is malloc'ed and freed as usual. Every
 * block, pooled or not, is a malloc'ed pointer of at least its class's size,
 * so a block may move between a class and malloc (mw_pool_realloc). The free
 * lists hold at most max_free_bytes in all, past which a block goes back to
 * free(): after a burst an idle process keeps at most that. A pool is
 * touched by one thread, the loop's. Under AddressSanitizer a pooled block
 * is poisoned, so a use after it was given back is still reported, and so
 * is a taken block past the size it was asked for (mw_pool_fit). Under
 * valgrind's memcheck no size has a class (mw_pool_bypass): every block is malloc's,
 * of the size asked for, and freed when given back, so that memcheck sees a
 * read past a Lua string's end or into a freed one (Debian's liblua has no
 * ASan, so memcheck is what looks at the C code Lua calls).
 */
#ifndef MOONWIRE_POOL_H
#define MOONWIRE_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MW_POOL_POISON(b, n) ASAN_POISON_MEMORY_REGION((b), (n))
#define MW_POOL_UNPOISON(b, n) ASAN_UNPOISON_MEMORY_REGION((b), (n))
#else
#define MW_POOL_POISON(b, n) ((void)(b), (void)(n))
#define MW_POOL_UNPOISON(b, n) ((void)(b), (void)(n))
#endif

#define MW_POOL_CLASSES 64
#define MW_POOL_NONE 0xffu /* the class of a size no free list holds */
#define MW_POOL_SLACK 8u   /* the word each class size is short of its step */

typedef struct mw_pool_s {
    uint8_t shift;         /* the classes are steps of 1 << shift bytes (16 or more) */
    uint8_t nclasses;      /* at most MW_POOL_CLASSES */
    size_t max_free_bytes; /* kept at most in all the lists */
    size_t free_bytes;     /* kept now */
    void *head[MW_POOL_CLASSES];
} mw_pool_t;

/* An empty pool of n classes in steps of 1 << shift bytes, keeping at most
 * max_free bytes. */
#define MW_POOL_INIT(step_shift, n, max_free)                                                      \
    {                                                                                              \
        .shift = (step_shift), .nclasses = (n), .max_free_bytes = (max_free)                       \
    }

/* Set before main when the process runs under memcheck (pool.c): no size
 * has a class. */
extern uint8_t mw_pool_bypass;

/* The class of a block of size bytes (size > 0), or MW_POOL_NONE when it is
 * larger than the largest class. */
static inline unsigned mw_pool_class(const mw_pool_t *p, size_t size)
{
    size_t k = (size + MW_POOL_SLACK - 1) >> p->shift;
    return k < p->nclasses && !mw_pool_bypass ? (unsigned)k : MW_POOL_NONE;
}

/* The size of the blocks of class cls. */
static inline size_t mw_pool_class_size(const mw_pool_t *p, unsigned cls)
{
    return ((size_t)(cls + 1) << p->shift) - MW_POOL_SLACK;
}

/* A block of class cls (not MW_POOL_NONE): the last one given back, or a new
 * one. Returns NULL when out of memory. */
static inline void *mw_pool_get(mw_pool_t *p, unsigned cls)
{
    size_t size = mw_pool_class_size(p, cls);
    void *b = p->head[cls];

    if (b == NULL)
        return malloc(size);
    MW_POOL_UNPOISON(b, size);
    p->head[cls] = *(void **)b;
    p->free_bytes -= size;
    return b;
}

/* Marks block, of class cls, as holding size bytes: under ASan the rest of
 * its class is poisoned, so a read past the end of what was asked for is
 * reported as it would be for malloc's block of that size. Nothing
 * otherwise. */
static inline void mw_pool_fit(const mw_pool_t *p, unsigned cls, void *block, size_t size)
{
    MW_POOL_UNPOISON(block, size);
    MW_POOL_POISON((char *)block + size, mw_pool_class_size(p, cls) - size);
    (void)p, (void)cls;
}

/* Gives back a block of class cls (not MW_POOL_NONE). */
static inline void mw_pool_put(mw_pool_t *p, unsigned cls, void *block)
{
    size_t size = mw_pool_class_size(p, cls);

    if (p->free_bytes + size > p->max_free_bytes) {
        free(block);
        return;
    }
    MW_POOL_UNPOISON(block, sizeof(void *)); /* it held less than a word, maybe */
    *(void **)block = p->head[cls];
    MW_POOL_POISON(block, size);
    p->head[cls] = block;
    p->free_bytes += size;
}

/* Gives back a block of size bytes (the size it was asked for), or does
 * nothing for NULL. */
static inline void mw_pool_free(mw_pool_t *p, void *block, size_t size)
{
    unsigned cls;

    if (block == NULL)
        return;
    cls = mw_pool_class(p, size);
    if (cls != MW_POOL_NONE)
        mw_pool_put(p, cls, block);
    else
        free(block);
}

/* Resizes a block of osize bytes (or makes one when block is NULL) to nsize
 * > 0, keeping the first min(osize, nsize) bytes. A block that stays in its
 * class is returned as it is. Returns NULL when out of memory; the block is
 * then unchanged. */
static inline void *mw_pool_realloc(mw_pool_t *p, void *block, size_t osize, size_t nsize)
{
    unsigned cls = mw_pool_class(p, nsize);

    if (cls == MW_POOL_NONE)
        return realloc(block, nsize); /* malloc's when block is NULL */
    if (block == NULL)
        block = mw_pool_get(p, cls);
    else if (cls != mw_pool_class(p, osize))
        /* Between classes, or from malloc: every block is malloc's, and one
         * that lands in a class gets that class's whole size. */
        block = realloc(block, mw_pool_class_size(p, cls));
    if (block != NULL)
        mw_pool_fit(p, cls, block, nsize);
    return block;
}

/* Frees every pooled block. The pool stays usable. */
void mw_pool_drain(mw_pool_t *p);

#endif
