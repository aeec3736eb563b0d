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
    struct model *model; /* a native model (no Python step per transition), or NULL */
} wgl_t;

/* Native models. cas-register: a state is a value id (0 = None), as interned by Python.
 * kv: a state is a vector of one value id per key (0 = absent; values are strings in an arena). */
enum { M_CAS = 1, M_KV = 2 };
typedef struct model {
    int kind, nkeys;
    int *f, *a, *b, *out;            /* per op; kv: a = key, b = arg length, out = output length (-1 unknown, -2 not a string) */
    int64_t *arg_off, *out_off;      /* kv: offsets of the op's argument and output in `text` */
    char *text;
    /* kv values: id -> (offset, length) in arena, interned by a hash table */
    char *arena; size_t arena_len, arena_cap;
    int64_t *v_off; int *v_len; size_t nv, v_cap;
    int *v_slot; size_t v_slot_cap;
    /* kv states: id -> nkeys value ids, interned */
    int *st; size_t ns, st_cap;
    int *s_slot; size_t s_slot_cap;
} model_t;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

static void model_free(model_t *m) {
    if (!m) return;
    free(m->f); free(m->a); free(m->b); free(m->out); free(m->arg_off); free(m->out_off); free(m->text);
    free(m->arena); free(m->v_off); free(m->v_len); free(m->v_slot); free(m->st); free(m->s_slot); free(m);
}

void wgl_free(wgl_t *c) {
    if (!c) return;
    model_free(c->model);
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
    c->memo_cap = 1024; c->memo = calloc(c->memo_cap * (c->words + 2), 8); c->memo_h = NULL;
    c->tr_cap = 1024; c->tr_key = calloc(c->tr_cap, 8); c->tr_val = calloc(c->tr_cap, 4);
    if (!c->nxt || !c->prv || !c->stack_e || !c->stack_s || !c->best || !c->lin || !c->zob || !c->memo || !c->tr_key || !c->tr_val) { wgl_free(c); return NULL; }
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

/* memo entries: [hash (0 = empty), state, linearized set words...] in one array (one cache line
 * per probe for small sets) */
static int memo_grow(wgl_t *c) {
    size_t cap = c->memo_cap * 2, w = c->words + 2;
    uint64_t *m = calloc(cap * w, 8);
    if (!m) return -1;
    for (size_t i = 0; i < c->memo_cap; i++) {
        uint64_t *e = c->memo + i * w;
        if (!e[0]) continue;
        size_t j = e[0] & (cap - 1);
        while (m[j * w]) j = (j + 1) & (cap - 1);
        memcpy(m + j * w, e, w * 8);
    }
    free(c->memo); c->memo = m; c->memo_cap = cap;
    return 0;
}

/* adds (lin, state) to the memo: 1 if new, 0 if already there, -1 out of memory */
static int memo_add(wgl_t *c, uint64_t zh, int state) {
    if ((c->memo_count + 1) * 2 > c->memo_cap && memo_grow(c)) return -1;
    size_t w = c->words + 2;
    uint64_t h = mix(zh ^ mix((uint64_t)state + 0x632be59bd9b4e019ULL)) | 1;
    size_t j = h & (c->memo_cap - 1);
    for (;;) {
        uint64_t *e = c->memo + j * w;
        if (!e[0]) break;
        if (e[0] == h && e[1] == (uint64_t)state && !memcmp(e + 2, c->lin, c->words * 8)) return 0;
        j = (j + 1) & (c->memo_cap - 1);
    }
    uint64_t *e = c->memo + j * w;
    e[0] = h;
    e[1] = (uint64_t)state;
    memcpy(e + 2, c->lin, c->words * 8);
    c->memo_count++;
    return 1;
}

static uint64_t hash_mem(const char *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ULL; }
    return mix(h);
}

static int *copy_ints(const int *src, int n) {
    int *d = malloc(sizeof(int) * (n > 0 ? n : 1));
    if (d && n > 0) memcpy(d, src, sizeof(int) * n);
    return d;
}

/* f: 0 read, 1 write, 2 cas; a: written value / cas old; b: cas new; out: read -> value id or -1
 * (unknown); cas -> -1 unknown, 0 false, 1 true, 2 anything else. State = value id, 0 = None. */
int wgl_set_cas(wgl_t *c, const int *f, const int *a, const int *b, const int *out) {
    model_t *m = calloc(1, sizeof(model_t));
    if (!m) return -1;
    m->kind = M_CAS;
    m->f = copy_ints(f, c->n); m->a = copy_ints(a, c->n); m->b = copy_ints(b, c->n); m->out = copy_ints(out, c->n);
    if (!m->f || !m->a || !m->b || !m->out) { model_free(m); return -1; }
    c->model = m;
    return 0;
}

/* a string value's id (interned; 1, 2, ...), -1 out of memory */
static int kv_value(model_t *m, const char *p, size_t n) {
    if ((m->nv + 1) * 2 > m->v_slot_cap) {
        size_t cap = m->v_slot_cap ? m->v_slot_cap * 2 : 256;
        int *sl = malloc(sizeof(int) * cap);
        if (!sl) return -1;
        for (size_t i = 0; i < cap; i++) sl[i] = 0;
        for (size_t v = 1; v < m->nv + 1; v++) {
            size_t j = hash_mem(m->arena + m->v_off[v], m->v_len[v], 14695981039346656037ULL) & (cap - 1);
            while (sl[j]) j = (j + 1) & (cap - 1);
            sl[j] = (int)v;
        }
        free(m->v_slot); m->v_slot = sl; m->v_slot_cap = cap;
    }
    size_t j = hash_mem(p, n, 14695981039346656037ULL) & (m->v_slot_cap - 1);
    while (m->v_slot[j]) {
        int v = m->v_slot[j];
        if ((size_t)m->v_len[v] == n && !memcmp(m->arena + m->v_off[v], p, n)) return v;
        j = (j + 1) & (m->v_slot_cap - 1);
    }
    if (m->nv + 2 > m->v_cap) {
        size_t cap = m->v_cap ? m->v_cap * 2 : 256;
        int64_t *o = realloc(m->v_off, 8 * cap);
        if (!o) return -1;
        m->v_off = o;
        int *l = realloc(m->v_len, sizeof(int) * cap);
        if (!l) return -1;
        m->v_len = l; m->v_cap = cap;
    }
    if (m->arena_len + n + 1 > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 4096;
        while (cap < m->arena_len + n + 1) cap *= 2;
        char *ar = realloc(m->arena, cap);
        if (!ar) return -1;
        m->arena = ar; m->arena_cap = cap;
    }
    int v = (int)++m->nv;
    memmove(m->arena + m->arena_len, p, n);
    m->v_off[v] = (int64_t)m->arena_len; m->v_len[v] = (int)n;
    m->arena_len += n;
    m->v_slot[j] = v;
    return v;
}

/* a state's id (interned), -1 out of memory */
static int kv_state(model_t *m, const int *vec) {
    int k = m->nkeys;
    if ((m->ns + 1) * 2 > m->s_slot_cap) {
        size_t cap = m->s_slot_cap ? m->s_slot_cap * 2 : 256;
        int *sl = malloc(sizeof(int) * cap);
        if (!sl) return -1;
        for (size_t i = 0; i < cap; i++) sl[i] = -1;
        for (size_t s = 0; s < m->ns; s++) {
            size_t j = hash_mem((const char *)(m->st + s * k), sizeof(int) * k, 7) & (cap - 1);
            while (sl[j] >= 0) j = (j + 1) & (cap - 1);
            sl[j] = (int)s;
        }
        free(m->s_slot); m->s_slot = sl; m->s_slot_cap = cap;
    }
    size_t j = hash_mem((const char *)vec, sizeof(int) * k, 7) & (m->s_slot_cap - 1);
    while (m->s_slot[j] >= 0) {
        int s = m->s_slot[j];
        if (!memcmp(m->st + (size_t)s * k, vec, sizeof(int) * k)) return s;
        j = (j + 1) & (m->s_slot_cap - 1);
    }
    if (m->ns + 1 > m->st_cap) {
        size_t cap = m->st_cap ? m->st_cap * 2 : 256;
        int *st = realloc(m->st, sizeof(int) * k * cap);
        if (!st) return -1;
        m->st = st; m->st_cap = cap;
    }
    int s = (int)m->ns++;
    memmove(m->st + (size_t)s * k, vec, sizeof(int) * k);
    m->s_slot[j] = s;
    return s;
}

/* f: 0 get, 1 put, 2 append; key: 0..nkeys-1; the argument (put/append) and the output (get:
 * length -1 = unknown, -2 = not a string) are bytes of `text` (UTF-8). State 0: every key absent. */
int wgl_set_kv(wgl_t *c, int nkeys, const int *f, const int *key, const int64_t *arg_off, const int *arg_len,
               const int64_t *out_off, const int *out_len, const char *text, int64_t text_len) {
    int n = c->n;
    model_t *m = calloc(1, sizeof(model_t));
    if (!m) return -1;
    m->kind = M_KV; m->nkeys = nkeys > 0 ? nkeys : 1;
    m->f = copy_ints(f, n); m->a = copy_ints(key, n); m->b = copy_ints(arg_len, n); m->out = copy_ints(out_len, n);
    m->arg_off = malloc(8 * (n > 0 ? n : 1)); m->out_off = malloc(8 * (n > 0 ? n : 1));
    m->text = malloc(text_len > 0 ? text_len : 1);
    int *zero = calloc(m->nkeys, sizeof(int));
    if (!m->f || !m->a || !m->b || !m->out || !m->arg_off || !m->out_off || !m->text || !zero) {
        free(zero); model_free(m); return -1;
    }
    memcpy(m->arg_off, arg_off, 8 * n); memcpy(m->out_off, out_off, 8 * n);
    if (text_len > 0) memcpy(m->text, text, text_len);
    int s0 = kv_state(m, zero);
    free(zero);
    if (s0 != 0) { model_free(m); return -1; }
    c->model = m;
    return 0;
}

/* the state after op `op` from `state`, -1 not allowed, -3 out of memory */
static int model_step(wgl_t *c, int state, int op) {
    model_t *m = c->model;
    if (m->kind == M_CAS) {
        int f = m->f[op];
        if (f == 0) return (m->out[op] < 0 || m->out[op] == state) ? state : -1;
        if (f == 1) return m->a[op];
        int hit = m->a[op] == state, o = m->out[op];
        if (o >= 0 && o != hit) return -1;
        return hit ? m->b[op] : state;
    }
    int k = m->nkeys, key = m->a[op], f = m->f[op];
    int cur = m->st[(size_t)state * k + key];
    const char *cp = cur ? m->arena + m->v_off[cur] : "";
    size_t cl = cur ? (size_t)m->v_len[cur] : 0;
    if (f == 0) {
        int ol = m->out[op];
        if (ol == -1) return state;
        if (ol < 0 || (size_t)ol != cl) return -1;
        return memcmp(cp, m->text + m->out_off[op], cl) ? -1 : state;
    }
    int v;
    if (f == 1) {
        v = kv_value(m, m->text + m->arg_off[op], m->b[op]);
    } else {
        size_t al = m->b[op];
        char *tmp = malloc(cl + al + 1);
        if (!tmp) return -3;
        memcpy(tmp, cp, cl); memcpy(tmp + cl, m->text + m->arg_off[op], al);
        v = kv_value(m, tmp, cl + al);
        free(tmp);
    }
    if (v < 0) return -3;
    int *vec = malloc(sizeof(int) * k);
    if (!vec) return -3;
    memcpy(vec, m->st + (size_t)state * k, sizeof(int) * k);
    vec[key] = v;
    int s = kv_state(m, vec);
    free(vec);
    return s < 0 ? -3 : s;
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
            if (t == -2 && c->model) {
                t = model_step(c, state, entry);
                if (t == -3 || wgl_put(c, state, entry, t)) { c->entry = entry; c->state = state; return WGL_NOMEM; }
            }
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
