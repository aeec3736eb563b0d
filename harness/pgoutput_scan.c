/* The INSERTs and commits of one table in a batch of pgoutput messages, scanned in C.
 *
 * harness/pgoutput.py documents the messages (PostgreSQL docs, "Logical Replication Message
 * Formats", protocol version 1); harness/pgdecode.py (Follower._apply_pgoutput) is the
 * pure-Python reader and this scanner's oracle (tests/unit/test_pgoutput.py).
 *
 * po_frame: a batch as the observer fetches it, each message preceded by its length (int32,
 *   big-endian) -> where each message starts and ends in `buf`; the number of messages, or -1
 *   when the lengths do not add up to `len` (or more than `cap` messages).
 *
 * po_scan walks messages start..n-1 of `buf` (message i is buf[starts[i]:ends[i]]):
 *   'I' of relation `rel`: one row: the id and key column values (text) appended to `ids` and
 *       `keys`, each ended by a NUL (PostgreSQL text never holds one); the seq and replica
 *       columns parsed as decimal int64 into `seqs`, `reps`; `nulls` per row: bit 0 id null,
 *       bit 1 key null, bit 2 seq null or not an int64, bit 3 replica null or not an int64.
 *       A column index of -1 (`want`) is not read (its bit set).
 *   'C': a commit: `commit_row` = rows before it (in this call), `commit_us` = its time
 *       (us since 2000-01-01 UTC). Its commit LSN must be the final LSN of the last Begin
 *       (counts[4], kept by the caller across calls): else the messages are not in the
 *       server's order, and the scan returns -1 - (the Commit's index).
 *   'B', and 'I' of another relation: skipped.
 *   anything else (a Relation, Update, Delete, Truncate, ...), a malformed message, or full
 *       outputs: the scan stops there and returns that message's index for the caller to
 *       read it in Python (n when all were read).
 * counts[0] = rows, counts[1] = commits, counts[2] = bytes used in ids, counts[3] in keys;
 * counts[4] = the last Begin's final LSN (in and out).
 * Capacities: rows and commits at most n - start each; ids_cap, keys_cap bytes.
 *
 * po_stream_*: the messages of a logical replication stream (START_REPLICATION ... LOGICAL, the
 *   CopyBoth sub-protocol; PostgreSQL docs, "Streaming Replication Protocol"), drained from libpq
 *   without blocking into a buffer this library owns (harness/pgstream.py is the caller):
 *   po_stream_drain takes every CopyData message libpq holds or can read from the socket now,
 *   through libpq's own PQgetCopyData, PQconsumeInput and PQfreemem (passed as pointers: the
 *   libpq the caller's psycopg loaded, whatever its build), until none is left (0) or whole
 *   transactions of `max_n` messages / `max_bytes` bytes are held (1); -1 when the server ended the copy, -2 on a libpq
 *   error, -3 on a malformed message or no memory. An XLogData ('w', a 24-byte header, then
 *   one pgoutput message) keeps its message; a Commit ('C') among them marks the end of whole
 *   transactions (`po_stream_info`: held[2], held[3]); a primary keepalive ('k') keeps the
 *   highest WAL end the server reported (held[4]) and whether it asked for a reply (held[5]).
 *   po_stream_shift drops the whole transactions (the caller copied them) and keeps the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int64_t be64(const unsigned char *p) {
    return (int64_t)(((uint64_t)be32(p) << 32) | (uint64_t)be32(p + 4));
}

/* decimal text -> int64; 0 when it is not one (empty, a sign alone, another char, overflow) */
static int parse_i64(const unsigned char *p, uint32_t len, int64_t *out) {
    uint32_t i = 0;
    int neg = 0;
    uint64_t v = 0;
    if (len > 0 && p[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= len || len - i > 19)
        return 0;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
        return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

int64_t po_frame(const unsigned char *buf, int64_t len, int64_t *starts, int64_t *ends, int64_t cap) {
    int64_t pos = 0, n = 0;
    while (pos < len) {
        uint32_t l;
        if (pos + 4 > len || n >= cap)
            return -1;
        l = be32(buf + pos);
        if ((int64_t)l > len - pos - 4)
            return -1;
        starts[n] = pos + 4;
        ends[n] = pos + 4 + (int64_t)l;
        pos += 4 + (int64_t)l;
        n++;
    }
    return n;
}

int64_t po_scan(const unsigned char *buf, const int64_t *starts, const int64_t *ends, int64_t start, int64_t n, uint32_t rel,
                const int32_t *want, char *ids, int64_t ids_cap, char *keys, int64_t keys_cap, int64_t *seqs,
                int64_t *reps, uint8_t *nulls, int64_t *commit_row, int64_t *commit_us, int64_t *counts) {
    int64_t rows = 0, commits = 0, id_len = 0, key_len = 0, final_lsn = counts[4];
    int64_t i;
    for (i = start; i < n; i++) {
        const unsigned char *m = buf + starts[i];
        int64_t len = ends[i] - starts[i];
        if (len < 1)
            break;
        if (m[0] == 'B') {
            if (len < 21)
                break;
            final_lsn = be64(m + 1);
            continue;
        }
        if (m[0] == 'C') {
            if (len < 26)
                break;
            if (be64(m + 2) != final_lsn) {
                i = -1 - i;
                break;
            }
            commit_row[commits] = rows;
            commit_us[commits] = be64(m + 18);
            commits++;
            continue;
        }
        if (m[0] != 'I' || len < 8)
            break;
        if (be32(m + 1) != rel)
            continue;
        if (m[5] != 'N')
            break;
        {
            int ncols = (m[6] << 8) | m[7];
            int64_t pos = 8;
            int c, bad = 0;
            const unsigned char *val[4] = {0, 0, 0, 0};
            uint32_t vlen[4] = {0, 0, 0, 0};
            for (c = 0; c < ncols && !bad; c++) {
                int k;
                if (pos >= len) {
                    bad = 1;
                    break;
                }
                if (m[pos] == 't' || m[pos] == 'b') {
                    uint32_t l;
                    if (pos + 5 > len) {
                        bad = 1;
                        break;
                    }
                    l = be32(m + pos + 1);
                    if ((int64_t)l > len - pos - 5) {
                        bad = 1;
                        break;
                    }
                    for (k = 0; k < 4; k++)
                        if (want[k] == c) {
                            val[k] = m + pos + 5;
                            vlen[k] = l;
                        }
                    pos += 5 + (int64_t)l;
                } else if (m[pos] == 'n' || m[pos] == 'u') {
                    pos += 1;
                } else {
                    bad = 1;
                }
            }
            if (bad || (val[0] && id_len + vlen[0] + 1 > ids_cap) || (val[1] && key_len + vlen[1] + 1 > keys_cap)
                || id_len + 1 > ids_cap || key_len + 1 > keys_cap)
                break;
            nulls[rows] = 0;
            if (val[0]) {
                memcpy(ids + id_len, val[0], vlen[0]);
                id_len += vlen[0];
            } else {
                nulls[rows] |= 1;
            }
            ids[id_len++] = 0;
            if (val[1]) {
                memcpy(keys + key_len, val[1], vlen[1]);
                key_len += vlen[1];
            } else {
                nulls[rows] |= 2;
            }
            keys[key_len++] = 0;
            if (!val[2] || !parse_i64(val[2], vlen[2], &seqs[rows])) {
                seqs[rows] = 0;
                nulls[rows] |= 4;
            }
            if (!val[3] || !parse_i64(val[3], vlen[3], &reps[rows])) {
                reps[rows] = 0;
                nulls[rows] |= 8;
            }
            rows++;
        }
    }
    counts[0] = rows;
    counts[1] = commits;
    counts[2] = id_len;
    counts[3] = key_len;
    counts[4] = final_lsn;
    return i;
}

typedef struct {
    unsigned char *buf;
    int64_t used, cap;
    int64_t *starts, *ends;
    int64_t n, ncap;
    int64_t whole_n, whole_used; /* messages and bytes up to the end of the last Commit held */
    int64_t wal_end, reply;
} po_stream;

typedef int (*po_getcopy_fn)(void *conn, char **buffer, int async);
typedef void (*po_free_fn)(void *ptr);
typedef int (*po_consume_fn)(void *conn);

po_stream *po_stream_new(void) {
    return (po_stream *)calloc(1, sizeof(po_stream));
}

void po_stream_free(po_stream *s) {
    if (s) {
        free(s->buf);
        free(s->starts);
        free(s->ends);
        free(s);
    }
}

/* held: [0] bytes, [1] messages, [2] messages of whole transactions, [3] their bytes,
 * [4] the highest keepalive WAL end, [5] a reply was asked for since the last call (cleared) */
void po_stream_info(po_stream *s, int64_t *held, unsigned char **buf, int64_t **starts, int64_t **ends) {
    held[0] = s->used;
    held[1] = s->n;
    held[2] = s->whole_n;
    held[3] = s->whole_used;
    held[4] = s->wal_end;
    held[5] = s->reply;
    s->reply = 0;
    *buf = s->buf;
    *starts = s->starts;
    *ends = s->ends;
}

void po_stream_shift(po_stream *s) {
    int64_t k = s->whole_n, b = s->whole_used, i;
    if (k == 0)
        return;
    memmove(s->buf, s->buf + b, (size_t)(s->used - b));
    for (i = k; i < s->n; i++) {
        s->starts[i - k] = s->starts[i] - b;
        s->ends[i - k] = s->ends[i] - b;
    }
    s->used -= b;
    s->n -= k;
    s->whole_n = s->whole_used = 0;
}

void po_stream_clear(po_stream *s) {
    s->used = s->n = s->whole_n = s->whole_used = 0;
}

static int grow(po_stream *s, int64_t bytes) {
    if (s->used + bytes > s->cap) {
        int64_t cap = s->cap ? s->cap : (1 << 20);
        unsigned char *b;
        while (cap < s->used + bytes)
            cap *= 2;
        b = (unsigned char *)realloc(s->buf, (size_t)cap);
        if (!b)
            return 0;
        s->buf = b;
        s->cap = cap;
    }
    if (s->n >= s->ncap) {
        int64_t cap = s->ncap ? s->ncap * 2 : 16384;
        int64_t *a = (int64_t *)realloc(s->starts, (size_t)cap * sizeof(int64_t));
        if (!a)
            return 0;
        s->starts = a;
        a = (int64_t *)realloc(s->ends, (size_t)cap * sizeof(int64_t));
        if (!a)
            return 0;
        s->ends = a;
        s->ncap = cap;
    }
    return 1;
}

int64_t po_stream_drain(po_stream *s, void *conn, void *get_fn, void *free_fn, void *consume_fn, int64_t max_n,
                        int64_t max_bytes) {
    po_getcopy_fn get = (po_getcopy_fn)get_fn;
    po_free_fn freemem = (po_free_fn)free_fn;
    po_consume_fn consume = (po_consume_fn)consume_fn;
    int consumed = 0;
    while (s->whole_n < max_n && s->whole_used < max_bytes) {
        char *p = NULL;
        int len = get(conn, &p, 1);
        if (len == 0) {
            if (consumed)
                return 0;
            if (!consume(conn))
                return -2;
            consumed = 1;
            continue;
        }
        if (len == -1)
            return -1;
        if (len < 0)
            return -2;
        consumed = 0;
        if (p[0] == 'w' && len > 25) {
            int64_t m = len - 25;
            if (!grow(s, m)) {
                freemem(p);
                return -3;
            }
            memcpy(s->buf + s->used, p + 25, (size_t)m);
            s->starts[s->n] = s->used;
            s->ends[s->n] = s->used + m;
            s->used += m;
            s->n++;
            if (p[25] == 'C') {
                s->whole_n = s->n;
                s->whole_used = s->used;
            }
        } else if (p[0] == 'k' && len >= 18) {
            int64_t end = be64((const unsigned char *)p + 1);
            if (end > s->wal_end)
                s->wal_end = end;
            if (p[17])
                s->reply = 1;
        } else if (p[0] != 'w') {
            freemem(p);
            return -3;
        }
        freemem(p);
    }
    return 1;
}
