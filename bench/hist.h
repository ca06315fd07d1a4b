/* A log-linear latency histogram in the manner of HdrHistogram: values below
 * 256 are exact, and above that each power of two is cut into 128 buckets, so
 * a recorded value is off by less than 1/128 (0.8%). Values are nanoseconds;
 * 2^46 ns (about 19 hours) is the largest bucket. The maximum is kept exactly. */
#ifndef MW_BENCH_HIST_H
#define MW_BENCH_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_SHIFT 40
#define HIST_BUCKETS ((HIST_MAX_SHIFT + 2) * HIST_SUB)

typedef struct {
    uint64_t count;
    uint64_t max;
    uint64_t min;
    double sum;
    uint64_t buckets[HIST_BUCKETS];
} hist_t;

static inline void hist_reset(hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static inline uint32_t hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (uint32_t)v;
    uint32_t msb = 63 - (uint32_t)__builtin_clzll(v);
    uint32_t shift = msb - HIST_SUB_BITS;
    if (shift > HIST_MAX_SHIFT)
        return HIST_BUCKETS - 1;
    return (shift + 1) * HIST_SUB + (uint32_t)((v >> shift) - HIST_SUB);
}

/* The highest value that falls in bucket i (what a percentile reports). */
static inline uint64_t hist_bucket_top(uint32_t i)
{
    if (i < 2 * HIST_SUB)
        return i;
    uint32_t shift = i / HIST_SUB - 1;
    uint64_t sub = i % HIST_SUB + HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static inline void hist_record(hist_t *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

/* The value at percentile p (0..100): the smallest bucket top at or below
 * which p% of the recorded values fall, capped at the exact maximum. */
static inline uint64_t hist_percentile(const hist_t *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
    if (want < 1)
        want = 1;
    if (want > h->count)
        want = h->count;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            uint64_t top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

#endif
