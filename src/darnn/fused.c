/* The fused CPU relaxation of darnn (darnn/fused.py compiles and loads this file).
 *
 * One call runs one phase of the zero-temperature dynamics s <- sign(h) for a whole batch:
 * the fixed-point check before every sweep, the synchronous or sequential sweep itself and
 * the field of every module, with no Python between the sweeps. The batch is cut into
 * blocks of LANES samples; a block's states and fields stay in cache and the block stops
 * as soon as each of its samples is at a fixed point (a fixed point never moves, so this
 * gives the states of sweeping the whole batch until every sample has settled).
 *
 * Every field is summed in one fixed order: external field + J_D s, then each coupling's
 * product (summed from zero in storage order) in turn: J, the forward, the backward one.
 * With CSR couplings that is the torch path's order (see add_row). The lanes of a block are
 * independent samples, so the result does not depend on the vector width the compiler
 * picks; it is compiled with -ffp-contract=off (no fused multiply-adds): the same rounding
 * on every x86-64 CPU.
 *
 * The end of the file holds the local rule's sparse update (darnn/sampled.py calls it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define LANES 16
#define MAX_LAYERS 64
#define MAX_THREADS 64
/* A single block is split across a team of threads (by units) when a sweep reads at least
 * this many stored couplings: enough work per barrier. */
#define TEAM_MIN_ENTRIES 16384
/* The C update takes batches of up to MAX_GROUPS groups of LANES samples. */
#define MAX_GROUPS 16

enum { NONE = 0, DENSE = 1, CSR = 2, IDENTITY = 3 };

/* One coupling matrix (n_out, n_in): dense row-major, CSR, or a diagonal vector. A CSR J
 * of a single module also has its pattern by columns: the rows of column j are
 * rows[ccol[j] .. ccol[j + 1]) (else both NULL). */
typedef struct {
    int32_t kind;
    int32_t n_out, n_in;
    const float *values;
    const int32_t *crow, *col;
    const int32_t *ccol, *rows;
} coupling_t;

/* A block's LANES values of one unit, as one vector (GCC/Clang vector extension: the
 * compiler uses the widest registers the CPU has, 1 to 4 per vector). */
typedef float lanes_t __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t mask_t __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline lanes_t load(const float *p) {
    lanes_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Whether any lane of a comparison's result is set (a lane loop compiles to extracts). */
static inline int any_lane(mask_t m) {
#ifdef __AVX512F__
    return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#else
    int any = 0;
    for (int k = 0; k < LANES; k++) any |= m[k];
    return any != 0;
#endif
}

/* acc + (c s)[row] for the LANES samples of a block; s is (n_in, LANES). The product is
 * summed from zero in storage order and then added to acc: the order of MKL's CSR product
 * into an output (torch.addmm), so a CSR chain gives the torch path's fields bit for bit. */
static inline lanes_t add_row(const coupling_t *c, int64_t row, const float *restrict s,
                              lanes_t acc) {
    lanes_t sum = {0};
    if (c->kind == CSR) {
        const float *restrict val = c->values;
        const int32_t *restrict col = c->col;
        for (int32_t p = c->crow[row]; p < c->crow[row + 1]; p++)
            sum += val[p] * load(s + (int64_t)col[p] * LANES);
    } else if (c->kind == DENSE) {
        const float *restrict w = c->values + row * (int64_t)c->n_in;
        for (int64_t j = 0; j < c->n_in; j++) sum += w[j] * load(s + j * LANES);
    } else if (c->kind == IDENTITY) {
        return acc + c->values[row] * load(s + row * LANES);
    } else {
        return acc;
    }
    return acc + sum;
}

typedef struct {
    int32_t n_layers;
    const int32_t *sizes;
    const coupling_t *J, *fwd, *bwd; /* fwd[l]: l-1 -> l (l >= 1); bwd[l]: l+1 -> l */
    float j_d;
} chain_t;

/* h_l = ext_l + J_D s_l + J_l s_l + F_l s_{l-1} + B_l s_{l+1} for one block, except in
 * the `frozen` lanes (-1), whose fields are kept; marks in `unstable` the lanes with a unit
 * whose s_i h_i <= 0. Block arrays are (N_l, LANES). */
typedef struct {
    int tid, nt; /* this thread's place in the team splitting the block's units */
} part_t;

/* The units [*lo, *hi) of n that thread p.tid of p.nt takes (contiguous, near-equal). */
static inline void units_of(part_t p, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = n * p.tid / p.nt;
    *hi = n * (p.tid + 1) / p.nt;
}

/* `stale`: NULL, or flags of the units whose field must be computed; the others read no
 * state that moved since their field was computed here, which would give the same bits
 * (same terms, same order): they keep it. */
static void module_field(const chain_t *ch, int l, float *const *s, const float *ext, float *h,
                         mask_t frozen, int32_t *unstable, const uint8_t *stale, part_t p) {
    int64_t lo, hi;
    units_of(p, ch->sizes[l], &lo, &hi);
    mask_t bad = {0}; /* -1 in the lanes with an unstable unit */
    for (int64_t i = lo; i < hi; i++) {
        const lanes_t si = load(s[l] + i * LANES);
        if (stale != NULL && !stale[i]) {
            bad |= si * load(h + i * LANES) <= 0.0f;
            continue;
        }
        lanes_t acc = load(ext + i * LANES) + ch->j_d * si;
        acc = add_row(&ch->J[l], i, s[l], acc);
        if (l > 0) acc = add_row(&ch->fwd[l], i, s[l - 1], acc);
        if (l < ch->n_layers - 1) acc = add_row(&ch->bwd[l], i, s[l + 1], acc);
        const mask_t kept = ((mask_t)load(h + i * LANES) & frozen) | ((mask_t)acc & ~frozen);
        acc = (lanes_t)kept;
        memcpy(h + i * LANES, &acc, sizeof acc);
        bad |= si * acc <= 0.0f;
    }
    for (int k = 0; k < LANES; k++) unstable[k] |= bad[k] != 0;
}

/* s <- sign(h); `moved` (if not NULL) flags the units whose state changed in some lane. */
static void set_signs(int64_t n, const float *restrict h, float *restrict s, uint8_t *moved,
                      part_t p) {
    int64_t lo, hi;
    units_of(p, n, &lo, &hi);
    if (moved == NULL) {
        for (int64_t i = lo * LANES; i < hi * LANES; i++) s[i] = h[i] >= 0.0f ? 1.0f : -1.0f;
        return;
    }
    const mask_t one = (mask_t)((lanes_t){0} + 1.0f), sign = (mask_t){0} + INT32_MIN;
    for (int64_t i = lo; i < hi; i++) {
        /* +1 or -1: one with the sign bit where not h >= 0 (a true comparison is -1). */
        const lanes_t next = (lanes_t)(one | (~(load(h + i * LANES) >= 0.0f) & sign));
        moved[i] = (uint8_t)any_lane(next != load(s + i * LANES));
        memcpy(s + i * LANES, &next, sizeof next);
    }
}

/* Flags in `stale` the units [lo, hi) of this thread that read a unit flagged in `moved`
 * (the rows of its column in J, and itself); 0 if more than n / MOVED_MAX_FRACTION moved,
 * when flagging would cost about what it saves. */
#define MOVED_MAX_FRACTION 16
static int stale_units(const coupling_t *J, int64_t n, const uint8_t *moved, uint8_t *stale,
                       part_t p) {
    int64_t count = 0, lo, hi;
    for (int64_t j = 0; j < n; j++) count += moved[j];
    if (count * MOVED_MAX_FRACTION > n) return 0;
    units_of(p, n, &lo, &hi);
    memset(stale + lo, 0, (size_t)(hi - lo));
    for (int64_t j = 0; j < n && count > 0; j++) {
        if (!moved[j]) continue;
        count--;
        if (j >= lo && j < hi) stale[j] = 1;
        for (int32_t q = J->ccol[j]; q < J->ccol[j + 1]; q++)
            if (J->rows[q] >= lo && J->rows[q] < hi) stale[J->rows[q]] = 1;
    }
    return 1;
}

static void count_unstable(const chain_t *ch, float *const *s, float *const *h, int32_t *unstable,
                           part_t p) {
    mask_t bad = {0};
    for (int l = 0; l < ch->n_layers; l++) {
        int64_t lo, hi;
        units_of(p, ch->sizes[l], &lo, &hi);
        for (int64_t i = lo; i < hi; i++)
            bad |= load(s[l] + i * LANES) * load(h[l] + i * LANES) <= 0.0f;
    }
    for (int k = 0; k < LANES; k++) unstable[k] |= bad[k] != 0;
}

/* A team's threads wait for each other (nothing to wait for alone). */
static inline void team_barrier(part_t p) {
#ifdef _OPENMP
    if (p.nt > 1) {
#pragma omp barrier
    }
#else
    (void)p;
#endif
}

/* Every thread's unstable lanes ORed together: each writes its own row of `rows` (one per
 * thread), then all read them all. */
static void team_unstable(part_t p, int32_t (*rows)[LANES], int32_t *unstable) {
    if (p.nt == 1) return;
    memcpy(rows[p.tid], unstable, sizeof rows[0]);
    team_barrier(p);
    for (int t = 0; t < p.nt; t++)
        for (int k = 0; k < LANES; k++) unstable[k] |= rows[t][k];
}

/* Copy lanes [b0, b0 + nb) of the batch-minor (n, B) array src into the (n, LANES) block;
 * the padding lanes get `pad`. */
static void load_block(int64_t n, int64_t B, int64_t b0, int nb, const float *src, float *dst,
                       float pad) {
    if (nb == LANES) {
        for (int64_t i = 0; i < n; i++) memcpy(dst + i * LANES, src + i * B + b0, sizeof(lanes_t));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + i * LANES, src + i * B + b0, (size_t)nb * sizeof(float));
        for (int k = nb; k < LANES; k++) dst[i * LANES + k] = pad;
    }
}

static void store_block(int64_t n, int64_t B, int64_t b0, int nb, const float *src, float *dst) {
    if (nb == LANES) {
        for (int64_t i = 0; i < n; i++) memcpy(dst + i * B + b0, src + i * LANES, sizeof(lanes_t));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + i * B + b0, src + i * LANES, (size_t)nb * sizeof(float));
}

typedef struct {
    const chain_t *ch;
    int32_t sequential, max_sweeps, unchecked, given_internal;
    int64_t B, first, stride; /* the blocks first, first + stride, ... of the batch */
    int64_t chunk;            /* the torch path's chunk (a multiple of LANES, or B) */
    const uint8_t *frozen;    /* (B) samples the torch path would never sweep */
    const uint8_t *chunk_swept; /* per chunk: the torch path swept it at least once */
    float *const *ext;
    float **s, **h, **h_int;
    int64_t *sweeps;
    uint8_t *converged;
    uint8_t *moved, *stale; /* (N) each, for a single CSR module with J by columns; else NULL */
    int status;
} job_t;

/* Relax the blocks of one job, one after the other, in a buffer of its own; or, when `p`
 * is a team of several threads, the one block of a batch of LANES, in place, each thread
 * taking its part of every module's units (every thread runs this function; `rows` holds
 * one row per thread for their unstable lanes). A unit's field is computed by one thread
 * whatever the team, so the results do not depend on it. */
static void relax_blocks(job_t *jb, part_t p, int32_t (*rows)[LANES]) {
    const chain_t *ch = jb->ch;
    const int L = ch->n_layers;
    const int64_t B = jb->B;
    const int main_thread = p.tid == 0;
    /* A batch of exactly one block is already laid out as one: it is swept in place. */
    const int in_place = B == LANES;
    int64_t total = 0;
    for (int l = 0; l < L; l++) total += ch->sizes[l];
    /* 64-byte rows (LANES floats) on 64-byte boundaries: a vector load never spans two lines. */
    float *buf = NULL;
    if (!in_place) {
        buf = aligned_alloc(64, (size_t)(3 * total * LANES) * sizeof(float));
        if (buf == NULL) { jb->status = -1; return; }
    }
    float *bs[MAX_LAYERS], *bh[MAX_LAYERS], *eb[MAX_LAYERS];
    const float *be[MAX_LAYERS];
    int64_t off = 0;
    for (int l = 0; l < L && !in_place; l++) {
        bs[l] = buf + off * LANES;
        bh[l] = buf + (total + off) * LANES;
        eb[l] = buf + (2 * total + off) * LANES;
        off += ch->sizes[l];
    }
    for (int64_t b0 = jb->first * LANES; b0 < B; b0 += jb->stride * LANES) {
        const int nb = (int)(B - b0 < LANES ? B - b0 : LANES);
        /* Padding lanes sit at s = h = 1 and are never counted as unstable. */
        for (int l = 0; l < L; l++) {
            if (in_place) {
                be[l] = jb->ext[l];
                bs[l] = jb->s[l];
                bh[l] = jb->h[l];
                continue;
            }
            load_block(ch->sizes[l], B, b0, nb, jb->ext[l], eb[l], 0.0f);
            be[l] = eb[l];
            load_block(ch->sizes[l], B, b0, nb, jb->s[l], bs[l], 1.0f);
            load_block(ch->sizes[l], B, b0, nb, jb->h[l], bh[l], 1.0f);
        }
        const int chunk_swept = jb->chunk_swept[b0 / jb->chunk];
        mask_t frozen = {0};
        for (int k = 0; k < nb; k++) frozen[k] = jb->frozen[b0 + k] ? -1 : 0;
        int32_t unstable[LANES];
        int settled = 0, swept = 0; /* swept: a sweep ran, and `unstable` is its check */
        for (int t = 0; t < jb->max_sweeps; t++) {
            if (!(t == 0 && jb->unchecked)) {
                if (!swept) {
                    memset(unstable, 0, sizeof unstable);
                    count_unstable(ch, bs, bh, unstable, p);
                    team_unstable(p, rows, unstable);
                }
                int any = 0;
                for (int k = 0; k < nb; k++) {
                    if (main_thread) jb->sweeps[b0 + k] += unstable[k] != 0;
                    any |= unstable[k];
                }
                /* Where the torch path sweeps the chunk, a settled block is swept once too:
                 * its fields are then computed afresh (s does not move), as there. */
                if (!any && !(t == 0 && chunk_swept)) { settled = 1; break; }
            }
            /* The sweep; the fields computed last also give the next check. */
            memset(unstable, 0, sizeof unstable);
            if (jb->sequential && L > 1) {
                for (int l = 0; l < L; l++) {
                    if (l > 0) {
                        int32_t ignored[LANES] = {0};
                        module_field(ch, l, bs, be[l], bh[l], frozen, ignored, NULL, p);
                        team_barrier(p); /* every thread has read s_l before it moves */
                    }
                    set_signs(ch->sizes[l], bh[l], bs[l], NULL, p);
                    team_barrier(p);
                }
            } else {
                for (int l = 0; l < L; l++) set_signs(ch->sizes[l], bh[l], bs[l], jb->moved, p);
                team_barrier(p);
            }
            /* Fields this call computed are kept where nothing they read moved (a single
             * module); the ones it started from (external + internal of the phase before)
             * are not its own sums, so the first sweep computes them all. */
            const int skip = swept && jb->moved != NULL &&
                             stale_units(&ch->J[0], ch->sizes[0], jb->moved, jb->stale, p);
            for (int l = 0; l < L; l++)
                module_field(ch, l, bs, be[l], bh[l], frozen, unstable, skip ? jb->stale : NULL, p);
            team_unstable(p, rows, unstable); /* its barrier: every field is in place */
            swept = 1;
        }
        if (!settled && !swept) {
            memset(unstable, 0, sizeof unstable);
            count_unstable(ch, bs, bh, unstable, p);
            team_unstable(p, rows, unstable);
        }
        for (int k = 0; k < nb && main_thread; k++)
            jb->converged[b0 + k] = settled || !unstable[k];
        for (int l = 0; l < L; l++) {
            const int64_t n = ch->sizes[l];
            if (!in_place) {
                store_block(n, B, b0, nb, bs[l], jb->s[l]);
                store_block(n, B, b0, nb, bh[l], jb->h[l]);
            }
            /* As the torch path: the given internal fields where it ran no sweep at all. */
            if (jb->given_internal && !chunk_swept) continue;
            int64_t lo, hi;
            units_of(p, n, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                for (int k = 0; k < nb; k++)
                    jb->h_int[l][i * B + b0 + k] = bh[l][i * LANES + k] - be[l][i * LANES + k];
        }
    }
    free(buf);
    if (main_thread) jb->status = 0;
}

/* Stored couplings a sweep reads: the work that pays for a team's barriers. */
static int64_t sweep_entries(const chain_t *ch) {
    int64_t total = 0;
    for (int l = 0; l < ch->n_layers; l++) {
        const coupling_t *cs[3] = {&ch->J[l], &ch->fwd[l], &ch->bwd[l]};
        for (int k = 0; k < 3; k++) {
            const coupling_t *c = cs[k];
            if (c->kind == CSR) total += c->crow[c->n_out];
            else if (c->kind == DENSE) total += (int64_t)c->n_out * c->n_in;
            else if (c->kind == IDENTITY) total += c->n_out;
        }
    }
    return total;
}

/* Which samples the torch path (darnn.dynamics) would sweep at least once, so that the
 * kernel computes a field afresh exactly where it does. The torch path relaxes the batch in
 * chunks of `chunk` samples; a chunk with an unstable sample at the first check is swept,
 * but if fewer than `compact_below` of its (at least `compact_min`) samples are unstable
 * there, the settled ones leave the working set first (all but the first few, which pad
 * the set to a multiple of `align`) and are never swept: their fields stay as given. */
static int plan_chunks(const chain_t *ch, int64_t B, int32_t max_sweeps, int32_t unchecked,
                       float *const *s, float *const *h, int64_t chunk, float compact_below,
                       int32_t align, int32_t compact_min, uint8_t *frozen,
                       uint8_t *chunk_swept) {
    memset(frozen, 0, (size_t)B);
    uint8_t *active = calloc((size_t)B, 1);
    if (active == NULL) return -1;
    /* LANES samples at a time, each kept in a vector until all units are read. */
    for (int64_t b0 = 0; b0 < B && !unchecked; b0 += LANES) {
        const int nb = (int)(B - b0 < LANES ? B - b0 : LANES);
        mask_t bad = {0};
        for (int l = 0; l < ch->n_layers; l++)
            for (int64_t i = 0; i < ch->sizes[l]; i++) {
                const float *si = s[l] + i * B + b0, *hi = h[l] + i * B + b0;
                if (nb == LANES) {
                    bad |= load(si) * load(hi) <= 0.0f;
                    continue;
                }
                for (int k = 0; k < nb; k++) bad[k] |= -(si[k] * hi[k] <= 0.0f);
            }
        for (int k = 0; k < nb; k++) active[b0 + k] = bad[k] != 0;
    }
    for (int64_t c0 = 0, c = 0; c0 < B; c0 += chunk, c++) {
        const int64_t size = B - c0 < chunk ? B - c0 : chunk;
        int64_t n_active = 0;
        for (int64_t b = c0; b < c0 + size; b++) n_active += active[b];
        chunk_swept[c] = max_sweeps > 0 && (unchecked || n_active > 0);
        if (unchecked || !chunk_swept[c] || size < compact_min ||
            !((float)n_active < compact_below * (float)size))
            continue;
        int64_t pad = (align - n_active % align) % align;
        for (int64_t b = c0; b < c0 + size; b++) {
            if (active[b]) continue;
            if (pad > 0) { pad--; continue; }
            frozen[b] = 1;
        }
    }
    free(active);
    return 0;
}

/* Relax one batch in place, on `threads` threads (blocks dealt out in turn).
 *
 * ext, s, h, h_int: n_layers pointers to batch-minor (N_l, B) float32 arrays: the external
 * fields, the states (in/out), the total fields at the states (in/out) and, out, the
 * internal fields h - ext (if `given_internal`, h_int holds the internal fields at the start
 * and is kept where no sweep runs). sweeps (in/out, B): sweeps already counted; converged
 * (out, B). unchecked: the start is s = 0, where every unit is unstable, so the first sweep
 * runs without a check (the caller counted it). chunk, compact_below, align, compact_min:
 * the torch path's chunking and compaction (see plan_chunks; chunk a multiple of LANES or
 * >= B). Returns 0; -1 if memory ran out; -2 for an invalid chain (no module, more than
 * MAX_LAYERS) or chunking. */
int darnn_relax_f32(const chain_t *ch, int32_t sequential, int64_t B, int32_t max_sweeps,
                    int32_t unchecked, int32_t given_internal, float *const *ext, float **s,
                    float **h, float **h_int, int64_t *sweeps, uint8_t *converged,
                    int32_t threads, int64_t chunk, float compact_below, int32_t align,
                    int32_t compact_min) {
    if (ch->n_layers < 1 || ch->n_layers > MAX_LAYERS || chunk < 1 || align < 1) return -2;
    if (chunk < B && chunk % LANES != 0) return -2;
    const int64_t blocks = (B + LANES - 1) / LANES;
    uint8_t *frozen = malloc((size_t)B + (size_t)(B / chunk + 1));
    if (frozen == NULL) return -1;
    uint8_t *chunk_swept = frozen + B;
    if (plan_chunks(ch, B, max_sweeps, unchecked, s, h, chunk, compact_below, align,
                    compact_min, frozen, chunk_swept) != 0) {
        free(frozen);
        return -1;
    }
    int64_t n_jobs = threads < 1 ? 1 : threads;
    if (n_jobs > blocks) n_jobs = blocks < 1 ? 1 : blocks;
    if (n_jobs > MAX_THREADS) n_jobs = MAX_THREADS;
    job_t jobs[MAX_THREADS];
    const int64_t n0 = ch->sizes[0]; /* a single CSR module: flags for the skip above */
    const int track = ch->n_layers == 1 && ch->J[0].kind == CSR && ch->J[0].ccol != NULL;
    uint8_t *flags = track ? malloc((size_t)(2 * n_jobs * n0)) : NULL;
    if (track && flags == NULL) {
        free(frozen);
        return -1;
    }
    for (int64_t j = 0; j < n_jobs; j++)
        jobs[j] = (job_t){ch, sequential, max_sweeps, unchecked, given_internal, B, j, n_jobs,
                          chunk < B ? chunk : B + LANES, frozen, chunk_swept,
                          ext, s, h, h_int, sweeps, converged,
                          track ? flags + 2 * j * n0 : NULL, track ? flags + (2 * j + 1) * n0 : NULL,
                          -1};
    /* OpenMP, not threads of our own: built with -fopenmp this is torch's libgomp, whose
     * pool is already awake (its workers spin after every torch operation and would keep
     * a core busy while another thread of ours waited for it). Without it: serial. */
#ifdef _OPENMP
    if (B == LANES && threads > 1 && sweep_entries(ch) >= TEAM_MIN_ENTRIES) {
        int32_t rows[MAX_THREADS][LANES];
        const int team = threads < MAX_THREADS ? threads : MAX_THREADS;
#pragma omp parallel num_threads(team)
        relax_blocks(&jobs[0], (part_t){omp_get_thread_num(), omp_get_num_threads()}, rows);
    } else
#endif
    {
#pragma omp parallel for num_threads(n_jobs) schedule(static, 1) if (n_jobs > 1)
        for (int64_t j = 0; j < n_jobs; j++) relax_blocks(&jobs[j], (part_t){0, 1}, NULL);
    }
    int status = 0;
    for (int64_t j = 0; j < n_jobs; j++)
        if (jobs[j].status != 0) status = jobs[j].status;
    free(flags);
    free(frozen);
    return status;
}

/* The input drives ext_l = W_in,l x of a batch (zero where w_in[l] is NONE); x is
 * batch-minor (D, B). Each row is summed from zero in storage order, as the torch path's
 * CSR product. A batch of one block is split by rows across the team; larger ones by
 * blocks. Returns 0, or -1 if memory ran out. */
static int input_drives(const chain_t *ch, const coupling_t *w_in, const float *x, int64_t D,
                        int64_t B, float *const *ext, int32_t threads) {
    const int L = ch->n_layers;
    const int one_block = B == LANES;
    const int64_t blocks = (B + LANES - 1) / LANES;
    int64_t entries = 0;
    for (int l = 0; l < L; l++)
        entries += w_in[l].kind == CSR     ? w_in[l].crow[w_in[l].n_out]
                   : w_in[l].kind == DENSE ? (int64_t)w_in[l].n_out * w_in[l].n_in
                                           : 0;
    const int team = threads > 1 && (!one_block || entries >= TEAM_MIN_ENTRIES);
    int status = 0;
#pragma omp parallel num_threads(threads) if (team)
    {
        part_t p = {0, 1};
#ifdef _OPENMP
        p = (part_t){omp_get_thread_num(), omp_get_num_threads()};
#endif
        float *xb = one_block ? NULL : aligned_alloc(64, (size_t)(D * LANES) * sizeof(float));
        if (!one_block && xb == NULL) {
#pragma omp atomic write
            status = -1;
        }
        const part_t rows = one_block ? p : (part_t){0, 1};
        for (int64_t blk = one_block ? 0 : p.tid; blk < blocks && (one_block || xb != NULL);
             blk += one_block ? 1 : p.nt) {
            const int64_t b0 = blk * LANES;
            const int nb = (int)(B - b0 < LANES ? B - b0 : LANES);
            if (!one_block) load_block(D, B, b0, nb, x, xb, 0.0f);
            const float *src = one_block ? x : xb;
            for (int l = 0; l < L; l++) {
                int64_t lo, hi;
                units_of(rows, ch->sizes[l], &lo, &hi);
                for (int64_t i = lo; i < hi; i++) {
                    const lanes_t v = add_row(&w_in[l], i, src, (lanes_t){0});
                    if (one_block) memcpy(ext[l] + i * LANES, &v, sizeof v);
                    else for (int k = 0; k < nb; k++) ext[l][i * B + b0 + k] = v[k];
                }
            }
        }
        free(xb);
    }
    return status;
}

/* The three phases of a training step in one call: the warm-up from s = 0 under the input
 * drives `ext`, the clamped phase (the label field `label`, contiguous (B, N_L), added to
 * the last module's drive) and the free phase, each from where the one before ended and
 * with exactly the arithmetic of the torch path (darnn.learning.three_phases): a phase
 * starts from the total fields external + internal of the one before. max_sweeps: the
 * three phases' caps. `clamped_ext` is a (N_L, B) buffer for the last module's clamped
 * external field. If w_in is not NULL, `ext` (out) gets the drives W_in x of the
 * batch-minor (D, B) inputs x first (see input_drives); else it holds them. s, h, h_int,
 * sweeps and converged end as the free phase's (see darnn_relax_f32, whose other arguments
 * these are). */
int darnn_phases_f32(const chain_t *ch, const coupling_t *w_in, const float *x, int64_t D,
                     int32_t sequential, int64_t B, const int32_t *max_sweeps, float *const *ext,
                     const float *label, float *clamped_ext, float **s, float **h, float **h_int,
                     int64_t *sweeps, uint8_t *converged, int32_t threads, int64_t chunk,
                     float compact_below, int32_t align, int32_t compact_min) {
    if (ch->n_layers < 1 || ch->n_layers > MAX_LAYERS) return -2;
    const int L = ch->n_layers;
    if (w_in != NULL && input_drives(ch, w_in, x, D, B, ext, threads) != 0) return -1;
    float *phase_ext[MAX_LAYERS];
    for (int l = 0; l < L; l++) {
        const int64_t n = ch->sizes[l] * B;
        memset(s[l], 0, (size_t)n * sizeof(float));
        memcpy(h[l], ext[l], (size_t)n * sizeof(float));
        phase_ext[l] = ext[l];
    }
    const int64_t n_last = ch->sizes[L - 1];
    for (int64_t i = 0; i < n_last; i++)
        for (int64_t b = 0; b < B; b++)
            clamped_ext[i * B + b] = ext[L - 1][i * B + b] + label[b * n_last + i];
    for (int phase = 0; phase < 3; phase++) {
        const int unchecked = phase == 0 && max_sweeps[0] > 0; /* from s = 0 */
        if (phase > 0) {
            phase_ext[L - 1] = phase == 1 ? clamped_ext : ext[L - 1];
            for (int l = 0; l < L; l++)
                for (int64_t i = 0; i < ch->sizes[l] * B; i++)
                    h[l][i] = phase_ext[l][i] + h_int[l][i];
        }
        for (int64_t b = 0; b < B; b++) sweeps[b] = unchecked;
        const int status = darnn_relax_f32(ch, sequential, B, max_sweeps[phase], unchecked,
                                           phase > 0, phase_ext, s, h, h_int, sweeps, converged,
                                           threads, chunk, compact_below, align, compact_min);
        if (status != 0) return status;
    }
    return 0;
}

/* ------------------------------------------------------------------ the local rule's update
 *
 * values <- alpha * (post^T pre)[stored] + beta * values for a CSR matrix and a batch of
 * 16, 32, ... 16 MAX_GROUPS samples, with the bits of torch.sparse.sampled_addmm on the CPU.
 * Its dot product of two batch-vectors is a product per lane, its vector's chunks added in
 * order, then a tree over the vector's lanes (ATen's map2_reduce_all); for 16 samples on an
 * 8-lane build: lanes l and l + 8, then l + 4, l + 2, l + 1. Here LANES stored entries are
 * reduced together: their product vectors are folded pairwise, each fold adding the same
 * lanes as the tree, so one vector ends with the LANES sums (half the time of one tree per
 * entry, which ends in one lane). The folds shuffle 512-bit registers: without AVX-512 they
 * cost more than they save, and the update stays torch's (darnn_update_compiled). The
 * rule's post-synaptic terms are in {-1, -0, +0, +1}: each product is exact, so whether
 * torch fuses a product with an addition cannot matter. A row whose post terms are all zero
 * only decays (a third of the rows in a trained recipe-A step): beta * value, block by
 * block, unless that is itself zero in the block (where the sign of a zero sum shows).
 * `combine` is how torch forms the result (darnn.sampled.calibrate finds it, and whether
 * its vectors hold 8 or 16 lanes): 0 fma(alpha, dot, beta value), 1 fma(beta, value,
 * alpha dot), 2 alpha dot + beta value. */

#ifdef __AVX512F__

/* The folds: fold_k(a, b) adds, in each vector, the lanes the tree's level k adds, and
 * packs a's sums and b's into one vector (3-operand shuffles, no index registers). Entry
 * e's 16 products: level 0 adds lanes l and l + 8 (128-bit quarters 0,1 + 2,3), level 1
 * quarters 0 + 1 of each half, level 2 lanes 0,1 + 2,3 of each quarter, level 3 lanes
 * 0 + 1. Where the entries' sums end: see ENTRY_LANE. */
#define QUARTERS(q0, q1, q2, q3) ((q0) | (q1) << 2 | (q2) << 4 | (q3) << 6)
static inline __m512 fold0(__m512 a, __m512 b) { /* -> [a: 8 sums | b: 8 sums] */
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, QUARTERS(0, 1, 0, 1)),
                         _mm512_shuffle_f32x4(a, b, QUARTERS(2, 3, 2, 3)));
}
static inline __m512 fold1(__m512 a, __m512 b) { /* two entries each -> one per quarter */
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, QUARTERS(0, 2, 0, 2)),
                         _mm512_shuffle_f32x4(a, b, QUARTERS(1, 3, 1, 3)));
}
static inline __m512 fold2(__m512 a, __m512 b) { /* quarter k: a's entry k, b's entry k */
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, QUARTERS(0, 1, 0, 1)),
                         _mm512_shuffle_ps(a, b, QUARTERS(2, 3, 2, 3)));
}
static inline __m512 fold3(__m512 a, __m512 b) { /* lane 4k + j: entry k + 4j */
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, QUARTERS(0, 2, 0, 2)),
                         _mm512_shuffle_ps(a, b, QUARTERS(1, 3, 1, 3)));
}
/* Entry q's sum ends in lane 4 (q % 4) + q / 4: the permutation that puts it in lane q. */
static const int32_t ENTRY_LANE[LANES] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

/* alpha dot + beta value as torch forms it (`combine`), for LANES entries. */
static inline __m512 combine_lanes(int mode, __m512 a, __m512 dot, __m512 b, __m512 v) {
    if (mode == 0) return _mm512_fmadd_ps(a, dot, _mm512_mul_ps(b, v));
    if (mode == 1) return _mm512_fmadd_ps(b, v, _mm512_mul_ps(a, dot));
    return _mm512_add_ps(_mm512_mul_ps(a, dot), _mm512_mul_ps(b, v));
}

/* Entries e and f (pre-synaptic rows pe, pf of m groups of LANES samples) after the first
 * level of their sums, packed [e: 8 | f: 8] as fold0 packs them. Over several groups torch
 * first adds its vectors' chunks in order, then runs the tree on the last: chunks of 8
 * lanes (`wide` 0: the lower and upper half of each group in turn, whose first two already
 * make level 0) or of 16 (`wide` 1: the groups, then level 0). */
static inline __attribute__((always_inline)) __m512 first_level(const float *pe, const float *pf,
                                                                const __m512 *post, int m,
                                                                int wide) {
    __m512 se = _mm512_mul_ps(post[0], _mm512_loadu_ps(pe)),
           sf = _mm512_mul_ps(post[0], _mm512_loadu_ps(pf));
    if (wide) {
        for (int j = 1; j < m; j++) {
            se = _mm512_add_ps(se, _mm512_mul_ps(post[j], _mm512_loadu_ps(pe + j * LANES)));
            sf = _mm512_add_ps(sf, _mm512_mul_ps(post[j], _mm512_loadu_ps(pf + j * LANES)));
        }
        return fold0(se, sf);
    }
    __m512 acc = fold0(se, sf);
    for (int j = 1; j < m; j++) {
        const __m512 ej = _mm512_mul_ps(post[j], _mm512_loadu_ps(pe + j * LANES)),
                     fj = _mm512_mul_ps(post[j], _mm512_loadu_ps(pf + j * LANES));
        acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(ej, fj, QUARTERS(0, 1, 0, 1)));
        acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(ej, fj, QUARTERS(2, 3, 2, 3)));
    }
    return acc;
}

/* One row's stored entries [begin, end), LANES at a time, for a batch of m groups of LANES
 * samples; post: the row's post terms. A row whose post terms are all zero has zero sums:
 * there a block only decays (beta value), unless that is itself zero in some entry (then
 * the zero's sign shows: the block is summed). */
static inline __attribute__((always_inline)) void update_row(
    int32_t begin, int32_t end, const int32_t *restrict col, float *restrict values,
    const float *post, const float *restrict pre, float alpha, float beta, int mode, int m,
    int wide) {
    __m512 post_v[MAX_GROUPS];
    int active = 0;
    for (int j = 0; j < m; j++) {
        post_v[j] = _mm512_loadu_ps(post + j * LANES);
        active |= _mm512_cmp_ps_mask(post_v[j], _mm512_setzero_ps(), _CMP_NEQ_UQ) != 0;
    }
    const __m512 a = _mm512_set1_ps(alpha), b = _mm512_set1_ps(beta);
    const __m512i entry_lane = _mm512_loadu_si512(ENTRY_LANE);
    const int64_t K = (int64_t)m * LANES;
    /* Entry q's pre-synaptic row; in a block's tail, q past the row's end repeats its last
     * entry (lanes that are never stored). */
#define PRE(q) (pre + (int64_t)col[p0 + ((q) < n ? (q) : n - 1)] * K)
#define FOUR(q) \
    fold1(first_level(PRE(q), PRE((q) + 1), post_v, m, wide), \
          first_level(PRE((q) + 2), PRE((q) + 3), post_v, m, wide))
    for (int32_t p0 = begin; p0 < end; p0 += LANES) {
        const int n = end - p0 < LANES ? end - p0 : LANES;
        const __mmask16 stored = (__mmask16)((1u << n) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(stored, values + p0);
        if (!active) {
            const __m512 decayed = _mm512_mul_ps(b, v);
            if (!_mm512_mask_cmp_ps_mask(stored, decayed, _mm512_setzero_ps(), _CMP_EQ_OQ)) {
                _mm512_mask_storeu_ps(values + p0, stored, decayed);
                continue;
            }
        }
        __m512 dot;
        if (n == LANES) {
            dot = fold3(fold2(FOUR(0), FOUR(4)), fold2(FOUR(8), FOUR(12)));
        } else { /* the tail: only the quarters it fills, each other one a copy */
            const __m512 f0 = FOUR(0), f1 = n > 4 ? FOUR(4) : f0;
            const __m512 lo = fold2(f0, f1);
            const __m512 hi = n > 8 ? fold2(FOUR(8), n > 12 ? FOUR(12) : FOUR(8)) : lo;
            dot = fold3(lo, hi);
        }
        dot = _mm512_permutexvar_ps(entry_lane, dot);
        _mm512_mask_storeu_ps(values + p0, stored, combine_lanes(mode, a, dot, b, v));
    }
#undef FOUR
#undef PRE
}

static __attribute__((noinline)) void update_row_16(int32_t begin, int32_t end,
                                                     const int32_t *col, float *values,
                                                     const float *post, const float *pre,
                                                     float alpha, float beta, int mode) {
    update_row(begin, end, col, values, post, pre, alpha, beta, mode, 1, 1);
}

static __attribute__((noinline)) void update_row_groups(int32_t begin, int32_t end,
                                                        const int32_t *col, float *values,
                                                        const float *post, const float *pre,
                                                        float alpha, float beta, int mode, int m,
                                                        int wide) {
    update_row(begin, end, col, values, post, pre, alpha, beta, mode, m, wide);
}

#endif /* __AVX512F__ */

/* The update of a CSR matrix (n_out, n_in) from batch-minor post (n_out, batch) and pre
 * (n_in, batch) terms, for a batch of 16 to 16 MAX_GROUPS samples in groups of 16; `wide`:
 * torch's vectors hold 16 lanes (else 8; see first_level). Returns 0; 1 without touching
 * `values` when an operand is outside what this exact path covers (another batch, a post
 * term not in {-1, 0, 1}, a pre term not finite), and always without AVX-512: the caller
 * then runs torch's own. */
int darnn_sampled_update_f32(int64_t n_out, const int32_t *crow, const int32_t *col,
                             float *values, const float *post, const float *pre, int64_t n_in,
                             int64_t batch, double alpha, double beta, int32_t combine,
                             int32_t wide, int32_t threads) {
#ifndef __AVX512F__
    (void)n_out, (void)crow, (void)col, (void)values, (void)post, (void)pre, (void)n_in;
    (void)batch, (void)alpha, (void)beta, (void)combine, (void)wide, (void)threads;
    return 1;
#else
    const int m = (int)(batch / LANES);
    if (batch % LANES != 0 || m < 1 || m > MAX_GROUPS) return 1;
    /* Branch-free scans (they vectorize): x - x is 0 for a finite x, NaN otherwise. */
    int odd = 0;
    for (int64_t i = 0; i < n_out * batch; i++)
        odd |= (post[i] != 0.0f) & (post[i] != 1.0f) & (post[i] != -1.0f);
    for (int64_t i = 0; i < n_in * batch; i++) odd |= pre[i] - pre[i] != 0.0f;
    if (odd) return 1;
    const float a = (float)alpha, b = (float)beta;
    const int team = threads > 1 && crow[n_out] * m >= TEAM_MIN_ENTRIES;
#pragma omp parallel for num_threads(threads) schedule(static) if (team)
    for (int64_t i = 0; i < n_out; i++) {
        const float *row_post = post + i * batch;
        if (m == 1) /* the recipes' training batch: a loop compiled for it */
            update_row_16(crow[i], crow[i + 1], col, values, row_post, pre, a, b, combine);
        else
            update_row_groups(crow[i], crow[i + 1], col, values, row_post, pre, a, b, combine,
                              m, wide);
    }
    return 0;
#endif
}

/* The rule's post-synaptic terms of a (rows, cols) array: s where s h <= threshold, else 0 s
 * (a zero with s's sign), as torch's (s h <= threshold) * s; returns how many have
 * s h <= threshold. s (dense: contiguous or transposed) and h at their strides; post is laid
 * out as s. */
int64_t darnn_post_f32(int64_t rows, int64_t cols, const float *restrict s, int64_t s_row,
                       int64_t s_col, const float *restrict h, int64_t h_row, int64_t h_col,
                       float threshold, float *restrict post) {
    int64_t below = 0;
    if (s_row == h_row && s_col == h_col) { /* laid out alike: one pass over the memory */
        for (int64_t i = 0; i < rows * cols; i++) {
            const int le = s[i] * h[i] <= threshold;
            post[i] = (le ? 1.0f : 0.0f) * s[i];
            below += le;
        }
        return below;
    }
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            const int64_t at = i * s_row + j * s_col;
            const int le = s[at] * h[i * h_row + j * h_col] <= threshold;
            post[at] = (le ? 1.0f : 0.0f) * s[at];
            below += le;
        }
    return below;
}

/* Whether darnn_sampled_update_f32 does the update here (with AVX-512) or declines it all. */
int darnn_update_compiled(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
