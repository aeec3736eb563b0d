/* The line scanner of checkers/history.py in C, loaded with ctypes.
 *
 * One pass over a span of a history (an mmap of the file, never copied). Send lines in the
 * writer's exact shape
 *   {"index":I,"time":T,"process":"load","type":"invoke|ok|fail|info","f":"send",
 *    "value":{"id":"<prefix><digits>" or a plain string,"key":"K","seq":S}}
 * go straight into preallocated columns (time, type, line offset; per send: record number,
 * id number and digit count, key code, seq); the byte range of every other line is reported
 * for the Python/orjson path. The accepted shape is exactly that of the regex of the pure
 * Python reader (its oracle): integers 0|[1-9][0-9]{0,17}, strings of printable ASCII without
 * '"' and '\', ids numeric when they are the prefix then 1 to 18 digits.
 *
 * hs_pack packs the spill rows of checkers/partitioned.py, grouped by partition (at the end).
 *
 * hs_effects reads the `events` array of an observation in the writer's shape
 * ["<prefix><digits>","K",S,R],... into id numbers and digit counts (-1: another shape).
 *
 * Built by `onceproof setup` (targets/provision.py) into $ONCEPROOF_HOME/lib/libonceproof_scan.so.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { HS_OK = 0, HS_FULL = 1, HS_NOMEM = 2 };

#define DROP_EVERY (32 << 20)

/* gives back the pages of [a, b) of a read-only file mapping (they stay in the page cache, and
 * come back on the next access): what was read does not count in the resident set */
static void drop_pages(const uint8_t *a, const uint8_t *b) {
    uintptr_t s = ((uintptr_t)a + 4095) & ~(uintptr_t)4095, e = (uintptr_t)b & ~(uintptr_t)4095;
    if (e > s) madvise((void *)s, e - s, MADV_DONTNEED);
}

typedef struct {
    int64_t cap_rec, cap_send, cap_other;
    int64_t *r_time, *r_off;
    int8_t *r_type;
    int64_t *s_rec, *s_num, *s_width, *s_seq;
    int32_t *s_key;
    int64_t *sid_send, *sid_start, *sid_end; /* sends whose id is text (capacity cap_send) */
    int64_t *o_rec, *o_start, *o_end;        /* other lines */
    int64_t *k_start, *k_end;                /* key table, code = row (capacity cap_send) */
    int64_t n_rec, n_send, n_other, n_sid, n_key;
    int64_t cut_start; /* start of a last line without a newline, else -1 */
} hs_out;

static inline int is_str(uint8_t c) { return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'; }
static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

#define LIT(s) do { size_t _l = sizeof(s) - 1; if ((size_t)(e - p) < _l || memcmp(p, s, _l)) return 0; p += _l; } while (0)

/* 0|[1-9][0-9]{0,17}; returns the new position or NULL */
static const uint8_t *parse_int(const uint8_t *p, const uint8_t *e, int64_t *v) {
    if (p >= e || !is_digit(*p)) return NULL;
    if (*p == '0') { *v = 0; return p + 1; }
    int64_t x = 0;
    int n = 0;
    while (p < e && is_digit(*p) && n < 18) { x = x * 10 + (*p - '0'); p++; n++; }
    *v = x;
    return p;
}

static const uint8_t *parse_sint(const uint8_t *p, const uint8_t *e, int64_t *v) {
    int neg = p < e && *p == '-';
    p = parse_int(p + neg, e, v);
    if (p && neg) *v = -*v;
    return p;
}

static const uint8_t *skip_str(const uint8_t *p, const uint8_t *e) { /* to the closing quote */
    while (p < e && is_str(*p)) p++;
    return p < e && *p == '"' ? p : NULL;
}

/* prefix + 1..18 digits + '"'; returns the position of the quote or NULL */
static const uint8_t *num_id(const uint8_t *p, const uint8_t *e, const uint8_t *pre, int plen, int64_t *num,
                             int64_t *width) {
    if (e - p < plen || memcmp(p, pre, plen)) return NULL;
    p += plen;
    int64_t x = 0;
    int n = 0;
    while (p < e && is_digit(*p) && n < 18) { x = x * 10 + (*p - '0'); p++; n++; }
    if (!n || p >= e || *p != '"') return NULL;
    *num = x; *width = n;
    return p;
}

typedef struct { int64_t *slots; size_t cap, count; } ktab;

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h ^ (h >> 29);
}

static int key_code(ktab *t, hs_out *o, const uint8_t *buf, const uint8_t *ks, const uint8_t *ke) {
    if ((t->count + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        int64_t *s = malloc(cap * sizeof(int64_t));
        if (!s) return -1;
        for (size_t i = 0; i < cap; i++) s[i] = -1;
        for (size_t i = 0; i < t->cap; i++) {
            int64_t c = t->slots[i];
            if (c < 0) continue;
            size_t j = hash_bytes(buf + o->k_start[c], o->k_end[c] - o->k_start[c]) & (cap - 1);
            while (s[j] >= 0) j = (j + 1) & (cap - 1);
            s[j] = c;
        }
        free(t->slots); t->slots = s; t->cap = cap;
    }
    size_t n = ke - ks;
    size_t j = hash_bytes(ks, n) & (t->cap - 1);
    for (;;) {
        int64_t c = t->slots[j];
        if (c < 0) break;
        if ((size_t)(o->k_end[c] - o->k_start[c]) == n && !memcmp(buf + o->k_start[c], ks, n)) return (int)c;
        j = (j + 1) & (t->cap - 1);
    }
    int64_t c = o->n_key++;
    o->k_start[c] = ks - buf; o->k_end[c] = ke - buf;
    t->slots[j] = c; t->count++;
    return (int)c;
}

/* 1: a fast send (columns filled), 0: another line, -1: out of memory */
static int send_line(const uint8_t *buf, const uint8_t *p, const uint8_t *e, const uint8_t *pre, int plen,
                     hs_out *o, ktab *kt, int64_t rec) {
    int64_t v, t, seq, num = -1, width = 0;
    int typ;
    LIT("{\"index\":");
    if (!(p = parse_sint(p, e, &v))) return 0;
    LIT(",\"time\":");
    if (!(p = parse_int(p, e, &t))) return 0;
    LIT(",\"process\":\"load\",\"type\":\"");
    if (e - p >= 7 && !memcmp(p, "invoke\"", 7)) { typ = 0; p += 7; }
    else if (e - p >= 3 && !memcmp(p, "ok\"", 3)) { typ = 1; p += 3; }
    else if (e - p >= 5 && !memcmp(p, "fail\"", 5)) { typ = 2; p += 5; }
    else if (e - p >= 5 && !memcmp(p, "info\"", 5)) { typ = 3; p += 5; }
    else return 0;
    LIT(",\"f\":\"send\",\"value\":{\"id\":\"");
    const uint8_t *ids = p, *q = num_id(p, e, pre, plen, &num, &width);
    if (!q) {
        num = -1; width = 0;
        if (!(q = skip_str(p, e))) return 0;
    }
    const uint8_t *ide = q;
    p = q + 1;
    LIT(",\"key\":\"");
    const uint8_t *ks = p, *ke = skip_str(p, e);
    if (!ke) return 0;
    p = ke + 1;
    LIT(",\"seq\":");
    if (!(p = parse_int(p, e, &seq))) return 0;
    LIT("}}");
    if (p != e) return 0;
    int kc = key_code(kt, o, buf, ks, ke);
    if (kc < 0) return -1;
    int64_t s = o->n_send++;
    o->r_time[rec] = t; o->r_type[rec] = (int8_t)typ;
    o->s_rec[s] = rec; o->s_num[s] = num; o->s_width[s] = width; o->s_seq[s] = seq; o->s_key[s] = kc;
    if (num < 0) {
        int64_t k = o->n_sid++;
        o->sid_send[k] = s; o->sid_start[k] = ids - buf; o->sid_end[k] = ide - buf;
    }
    return 1;
}

int hs_scan(const uint8_t *buf, int64_t start, int64_t end, const uint8_t *pre, int plen, hs_out *o, int drop) {
    ktab kt = {NULL, 0, 0};
    int64_t pos = start, dropped = start;
    o->n_rec = o->n_send = o->n_other = o->n_sid = o->n_key = 0;
    o->cut_start = -1;
    int rc = HS_OK;
    while (pos < end) {
        const uint8_t *nl = memchr(buf + pos, '\n', end - pos);
        int64_t le = nl ? nl - buf : end;
        int64_t i = pos;
        while (i < le && is_ws(buf[i])) i++;
        if (i == le) { pos = le + 1; continue; }
        if (!nl) o->cut_start = pos;
        int64_t rec = o->n_rec;
        if (rec >= o->cap_rec || o->n_send >= o->cap_send) { rc = HS_FULL; break; }
        int got = buf[pos] == '{' ? send_line(buf, buf + pos, buf + le, pre, plen, o, &kt, rec) : 0;
        if (got < 0) { rc = HS_NOMEM; break; }
        if (!got) {
            if (o->n_other >= o->cap_other) { rc = HS_FULL; break; }
            int64_t k = o->n_other++;
            o->o_rec[k] = rec; o->o_start[k] = pos; o->o_end[k] = le;
            o->r_time[rec] = 0; o->r_type[rec] = 0;
        }
        o->r_off[rec] = pos;
        o->n_rec++;
        pos = le + 1;
        if (drop && pos - dropped >= DROP_EVERY) { drop_pages(buf + dropped, buf + pos); dropped = pos; }
    }
    if (drop) drop_pages(buf + dropped, buf + (pos < end ? pos : end));
    free(kt.slots);
    return rc;
}

/* ["<prefix><digits>","K",S,R],... over [start, end): the number of effects, or -1 */
int64_t hs_effects(const uint8_t *buf, int64_t start, int64_t end, const uint8_t *pre, int plen, int64_t *num,
                   int64_t *width, int64_t cap, int drop) {
    const uint8_t *p = buf + start, *e = buf + end, *dropped = p;
    int64_t k = 0, v;
    for (;;) {
        if (drop && p - dropped >= DROP_EVERY) { drop_pages(dropped, p); dropped = p; }
        if (k >= cap || e - p < 2 || p[0] != '[' || p[1] != '"') return -1;
        const uint8_t *q = num_id(p + 2, e, pre, plen, num + k, width + k);
        if (!q) return -1;
        p = q + 1;
        if (e - p < 2 || p[0] != ',' || p[1] != '"') return -1;
        if (!(q = skip_str(p + 2, e))) return -1;
        p = q + 1;
        if (p >= e || *p != ',') return -1;
        if (!(p = parse_sint(p + 1, e, &v))) return -1;
        if (p >= e || *p != ',') return -1;
        if (!(p = parse_sint(p + 1, e, &v))) return -1;
        if (p >= e || *p != ']') return -1;
        p++;
        k++;
        if (p == e) { if (drop) drop_pages(dropped, p); return k; }
        if (*p != ',') return -1;
        p++;
    }
}

/* hs_pack: the spill of checkers/partitioned.py. Packs row i (0 <= i < n) of `ncols` columns
 * (column c: `sizes[c]` bytes per element, 1, 2, 4 or 8) into a record of `rowsize` bytes
 * (column c at byte offs[c]) at out + (at[dest[i]]++) * rowsize: the rows of each partition
 * together, in their order (a counting sort's scatter; `at` starts as each partition's first
 * row). One pass instead of numpy's field-by-field assignment and a gather of packed records. */
void hs_pack(int64_t n, int ncols, const void *const *cols, const int32_t *sizes, const int32_t *offs,
             int32_t rowsize, const uint8_t *dest, int64_t *at, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t *row = out + (at[dest[i]]++) * (int64_t)rowsize;
        for (int c = 0; c < ncols; c++) {
            uint8_t *d = row + offs[c];
            switch (sizes[c]) {
            case 8: memcpy(d, (const int64_t *)cols[c] + i, 8); break;
            case 4: memcpy(d, (const int32_t *)cols[c] + i, 4); break;
            case 2: memcpy(d, (const int16_t *)cols[c] + i, 2); break;
            default: *d = ((const uint8_t *)cols[c])[i]; break;
            }
        }
    }
}
