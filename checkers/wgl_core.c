/* The hot loop of checkers/linearizable.py (_searcher) in C, loaded with ctypes.
 *
 * The same search, step for step (so verdicts and longest prefixes are identical): Lowe's
 * just-in-time linearization over a doubly linked list of call/return entries, memoising
 * (linearized set, state) pairs. Model states are small integers interned by Python; a
 * transition (state, op) -> state' (or "not allowed") is asked of Python once (the search
 * returns WGL_NEED and is resumed after wgl_put) and cached here. The linearized set is a
 * bitset with a Zobrist hash kept up to date in O(1).
 *
 * Built by `onceproof setup` (targets/provision.py) into $ONCEPROOF_HOME/lib/libonceproof_wgl.so.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { WGL_VALID = 0, WGL_INVALID = 1, WGL_NEED = 2, WGL_YIELD = 3, WGL_NOMEM = 4 };

typedef struct {
    int n, words, head;
    int *nxt, *prv;
    int *stack_e, *stack_s, depth;
    int *best, best_len;
    uint64_t *lin, *zob, zhash;
    int state, entry;
    /* memo of (linearized set, state): open addressing, entries of words + 1 uint64 */
    uint64_t *memo, *memo_h;
    size_t memo_cap, memo_count;
    /* transitions: key state * n + op -> result + 2 (0 = empty slot) */
    int64_t *tr_key;
    int32_t *tr_val;
    size_t tr_cap, tr_count;
    int req_state, req_op;
    long long steps;
    int counted;
} wgl_t;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

void wgl_free(wgl_t *c) {
    if (!c) return;
    free(c->nxt); free(c->prv); free(c->stack_e); free(c->stack_s); free(c->best); free(c->lin);
    free(c->zob); free(c->memo); free(c->memo_h); free(c->tr_key); free(c->tr_val); free(c);
}

/* order: the 2n entries sorted by time (calls 0..n-1, returns n..2n-1) */
wgl_t *wgl_new(int n, const int *order, int init_state) {
    wgl_t *c = calloc(1, sizeof(wgl_t));
    if (!c) return NULL;
    c->n = n; c->words = (n + 63) / 64; c->head = 2 * n;
    c->nxt = malloc(sizeof(int) * (2 * n + 1)); c->prv = malloc(sizeof(int) * (2 * n + 1));
    c->stack_e = malloc(sizeof(int) * (n + 1)); c->stack_s = malloc(sizeof(int) * (n + 1));
    c->best = malloc(sizeof(int) * (n + 1));
    c->lin = calloc(c->words, 8); c->zob = malloc(8 * (size_t)n + 8);
    c->memo_cap = 1024; c->memo = calloc(c->memo_cap * (c->words + 1), 8); c->memo_h = calloc(c->memo_cap, 8);
    c->tr_cap = 1024; c->tr_key = calloc(c->tr_cap, 8); c->tr_val = calloc(c->tr_cap, 4);
    if (!c->nxt || !c->prv || !c->stack_e || !c->stack_s || !c->best || !c->lin || !c->zob || !c->memo ||
        !c->memo_h || !c->tr_key || !c->tr_val) { wgl_free(c); return NULL; }
    for (int i = 0; i < 2 * n + 1; i++) c->nxt[i] = c->prv[i] = -1;
    int prev = c->head;
    for (int i = 0; i < 2 * n; i++) { int e = order[i]; c->nxt[prev] = e; c->prv[e] = prev; prev = e; }
    for (int i = 0; i < n; i++) c->zob[i] = mix(0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
    c->state = init_state;
    c->entry = c->nxt[c->head];
    return c;
}

static int tr_grow(wgl_t *c) {
    size_t cap = c->tr_cap * 2;
    int64_t *k = calloc(cap, 8); int32_t *v = calloc(cap, 4);
    if (!k || !v) { free(k); free(v); return -1; }
    for (size_t i = 0; i < c->tr_cap; i++) {
        if (!c->tr_val[i]) continue;
        size_t j = mix((uint64_t)c->tr_key[i]) & (cap - 1);
        while (v[j]) j = (j + 1) & (cap - 1);
        k[j] = c->tr_key[i]; v[j] = c->tr_val[i];
    }
    free(c->tr_key); free(c->tr_val); c->tr_key = k; c->tr_val = v; c->tr_cap = cap;
    return 0;
}

/* result: the new state, or -1 when the model does not allow the op there */
int wgl_put(wgl_t *c, int state, int op, int result) {
    if ((c->tr_count + 1) * 2 > c->tr_cap && tr_grow(c)) return -1;
    int64_t key = (int64_t)state * c->n + op;
    size_t j = mix((uint64_t)key) & (c->tr_cap - 1);
    while (c->tr_val[j] && c->tr_key[j] != key) j = (j + 1) & (c->tr_cap - 1);
    if (!c->tr_val[j]) c->tr_count++;
    c->tr_key[j] = key; c->tr_val[j] = result + 2;
    return 0;
}

static int tr_get(const wgl_t *c, int state, int op) { /* -2 unknown */
    int64_t key = (int64_t)state * c->n + op;
    size_t j = mix((uint64_t)key) & (c->tr_cap - 1);
    while (c->tr_val[j]) {
        if (c->tr_key[j] == key) return c->tr_val[j] - 2;
        j = (j + 1) & (c->tr_cap - 1);
    }
    return -2;
}

static int memo_grow(wgl_t *c) {
    size_t cap = c->memo_cap * 2, w = c->words + 1;
    uint64_t *m = calloc(cap * w, 8), *h = calloc(cap, 8);
    if (!m || !h) { free(m); free(h); return -1; }
    for (size_t i = 0; i < c->memo_cap; i++) {
        if (!c->memo_h[i]) continue;
        size_t j = c->memo_h[i] & (cap - 1);
        while (h[j]) j = (j + 1) & (cap - 1);
        h[j] = c->memo_h[i];
        memcpy(m + j * w, c->memo + i * w, w * 8);
    }
    free(c->memo); free(c->memo_h); c->memo = m; c->memo_h = h; c->memo_cap = cap;
    return 0;
}

/* adds (lin, state) to the memo: 1 if new, 0 if already there, -1 out of memory */
static int memo_add(wgl_t *c, uint64_t zh, int state) {
    if ((c->memo_count + 1) * 2 > c->memo_cap && memo_grow(c)) return -1;
    size_t w = c->words + 1;
    uint64_t h = mix(zh ^ mix((uint64_t)state + 0x632be59bd9b4e019ULL)) | 1;
    size_t j = h & (c->memo_cap - 1);
    while (c->memo_h[j]) {
        if (c->memo_h[j] == h) {
            uint64_t *e = c->memo + j * w;
            if (e[0] == (uint64_t)state && !memcmp(e + 1, c->lin, c->words * 8)) return 0;
        }
        j = (j + 1) & (c->memo_cap - 1);
    }
    c->memo_h[j] = h;
    uint64_t *e = c->memo + j * w;
    e[0] = (uint64_t)state;
    memcpy(e + 1, c->lin, c->words * 8);
    c->memo_count++;
    return 1;
}

/* Runs until decided (VALID/INVALID), a transition is needed (NEED: req_state, req_op), or
 * the 4096th step since the last yield is reached (YIELD; budget = 0: never yield). */
int wgl_run(wgl_t *c, long long budget) {
    int n = c->n, head = c->head;
    int *nxt = c->nxt, *prv = c->prv;
    int entry = c->entry, state = c->state;
    int yield_every = budget != 0;
    if (entry < 0) return WGL_VALID;
    for (;;) {
        if (entry < n) {
            if (!c->counted) {  /* as the Python search: count the visit, every 4096th yields first */
                c->steps++;
                c->counted = 1;
                if (!(c->steps & 0xFFF) && yield_every) { c->entry = entry; c->state = state; return WGL_YIELD; }
            }
            int t = tr_get(c, state, entry);
            if (t == -2) {
                c->req_state = state; c->req_op = entry; c->entry = entry; c->state = state;
                return WGL_NEED;
            }
            c->counted = 0;
            if (t >= 0) {
                c->lin[entry >> 6] |= 1ULL << (entry & 63);
                uint64_t zh = c->zhash ^ c->zob[entry];
                int added = memo_add(c, zh, t);
                if (added < 0) { c->lin[entry >> 6] &= ~(1ULL << (entry & 63)); c->entry = entry; c->state = state; return WGL_NOMEM; }
                if (added) {
                    c->zhash = zh;
                    c->stack_e[c->depth] = entry; c->stack_s[c->depth] = state; c->depth++;
                    state = t;
                    int a = prv[entry], b = nxt[entry];
                    nxt[a] = b; prv[b] = a;
                    int r = entry + n;
                    a = prv[r]; b = nxt[r];
                    nxt[a] = b;
                    if (b >= 0) prv[b] = a;
                    entry = nxt[head];
                    if (entry < 0) { c->entry = entry; c->state = state; return WGL_VALID; }
                    continue;
                }
                c->lin[entry >> 6] &= ~(1ULL << (entry & 63));
            }
            entry = nxt[entry];
        } else {
            if (c->depth > c->best_len) {
                memcpy(c->best, c->stack_e, sizeof(int) * c->depth);
                c->best_len = c->depth;
            }
            if (!c->depth) { c->entry = entry; c->state = state; return WGL_INVALID; }
            c->depth--;
            entry = c->stack_e[c->depth]; state = c->stack_s[c->depth];
            c->lin[entry >> 6] &= ~(1ULL << (entry & 63));
            c->zhash ^= c->zob[entry];
            int r = entry + n;
            int a = prv[r], b = nxt[r];
            nxt[a] = r;
            if (b >= 0) prv[b] = r;
            a = prv[entry]; b = nxt[entry];
            nxt[a] = entry; prv[b] = entry;
            entry = nxt[entry];
        }
    }
}

int wgl_req_state(const wgl_t *c) { return c->req_state; }
int wgl_req_op(const wgl_t *c) { return c->req_op; }
long long wgl_steps(const wgl_t *c) { return c->steps; }
int wgl_depth(const wgl_t *c) { return c->depth; }
int wgl_best_len(const wgl_t *c) { return c->best_len; }
void wgl_stack(const wgl_t *c, int *out) { memcpy(out, c->stack_e, sizeof(int) * c->depth); }
void wgl_best(const wgl_t *c, int *out) { memcpy(out, c->best, sizeof(int) * c->best_len); }
