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
 */
#include <stdint.h>
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
