/* The benchmark's history generator in C (benchmarks/check_exactly_once.py compiles and runs it):
 * the same shape as the writer's histories, at about 60 MB/s of JSONL per core instead of the
 * pure-Python generator's 2.
 *
 *   gen_history OUT N_RECORDS SEED KEYS SINK_TMP
 *
 * Writes a history of about N_RECORDS records to OUT: interleaved sends (invoke, then ok 96.5% /
 * info 2% / fail 1.5% coming back out of order), one incremental observe per 1000 sends, a final
 * read with the sink's whole content. Injected at known rates, counted exactly: duplicates (an ok
 * effect applied twice, 1 in 2000 sends), lost (an ok send never applied, 1 in 5000), phantoms (an
 * effect of an id never sent, 1 per 100K sends), late effects of info sends (applied 50 ms later).
 * Prints the counts as one JSON object on stdout. SINK_TMP holds the final read's effects while
 * the history is written (removed at the end). Random numbers: splitmix64 seeded by SEED.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static inline uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t below(uint64_t n) { return rnd() % n; }
static inline double unit(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }

typedef struct { char *p; size_t n, cap; } buf;
static void grow(buf *b, size_t need) {
    if (b->n + need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + need) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) { perror("realloc"); exit(2); }
    b->cap = cap;
}
static inline void put(buf *b, const char *s, size_t n) { grow(b, n); memcpy(b->p + b->n, s, n); b->n += n; }
#define PUTS(b, s) put(b, s, sizeof(s) - 1)
static inline void put_u(buf *b, uint64_t v) {
    char t[24];
    int i = 24;
    do { t[--i] = '0' + v % 10; v /= 10; } while (v);
    put(b, t + i, 24 - i);
}
static inline void put_id(buf *b, uint64_t v) { /* "e-%09d" */
    char t[11] = {'e', '-'};
    for (int i = 10; i >= 2; i--) { t[i] = '0' + v % 10; v /= 10; }
    put(b, t, 11);
}

static FILE *out, *sink;
static buf line, obs, sinkbuf;
static uint64_t idx;

static void flush_line(int force) {
    if (line.n >= (8 << 20) || (force && line.n)) { fwrite(line.p, 1, line.n, out); line.n = 0; }
}
static void head(uint64_t t, const char *proc, const char *typ, const char *f) {
    PUTS(&line, "{\"index\":"); put_u(&line, idx++);
    PUTS(&line, ",\"time\":"); put_u(&line, t);
    PUTS(&line, ",\"process\":\""); put(&line, proc, strlen(proc));
    PUTS(&line, "\",\"type\":\""); put(&line, typ, strlen(typ));
    PUTS(&line, "\",\"f\":\""); put(&line, f, strlen(f));
    PUTS(&line, "\",\"value\":");
}
static void send_rec(uint64_t t, const char *typ, uint64_t id, uint32_t key, uint64_t seq) {
    head(t, "load", typ, "send");
    PUTS(&line, "{\"id\":\""); put_id(&line, id);
    PUTS(&line, "\",\"key\":\"k"); put_u(&line, key);
    PUTS(&line, "\",\"seq\":"); put_u(&line, seq);
    PUTS(&line, "}}\n");
    flush_line(0);
}

typedef struct { uint64_t id, seq; uint32_t key, r; } effect;
static uint64_t n_sink;
static void apply(const effect *e) {
    buf *bs[2] = {&obs, &sinkbuf};
    for (int i = 0; i < 2; i++) {
        buf *b = bs[i];
        if (i == 0 ? obs.n > 0 : n_sink > 0) PUTS(b, ",");
        PUTS(b, "[\""); put_id(b, e->id); PUTS(b, "\",\"k"); put_u(b, e->key);
        PUTS(b, "\","); put_u(b, e->seq); PUTS(b, ","); put_u(b, e->r); PUTS(b, "]");
    }
    n_sink++;
    if (sinkbuf.n >= (8 << 20)) { fwrite(sinkbuf.p, 1, sinkbuf.n, sink); sinkbuf.n = 0; }
}

typedef struct { uint64_t done, id, seq; uint32_t key; int dup; } flight;

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: gen_history OUT N_RECORDS SEED KEYS SINK_TMP\n"); return 2; }
    uint64_t n_records = strtoull(argv[2], NULL, 10), seed = strtoull(argv[3], NULL, 10);
    uint32_t keys = (uint32_t)strtoul(argv[4], NULL, 10);
    rng_state = seed * 0x2545F4914F6CDD1DULL + 1;
    out = fopen(argv[1], "wb");
    sink = fopen(argv[5], "w+b");
    if (!out || !sink) { perror("fopen"); return 2; }
    uint64_t n_events = n_records > 8 ? (n_records - 8) * 1000 / 2004 : 1;
    if (!n_events) n_events = 1;
    uint64_t *seqs = calloc(keys, sizeof(uint64_t));
    uint64_t ok = 0, fail = 0, info = 0, dups = 0, late_n = 0, lost = 0, phantom = 0;
    head(0, "harness", "info", "start");
    PUTS(&line, "{\"run_id\":\"bench\",\"plan\":\"bench\",\"seed\":"); put_u(&line, seed);
    PUTS(&line, ",\"rate\":10000,\"duration_s\":"); put_u(&line, n_events / 10000);
    PUTS(&line, ",\"order\":null}}\n");
    uint64_t t = 1000000;
    flight fl[16];
    int nfl = 0;
    size_t lcap = 1 << 12, lhead = 0, ltail = 0; /* FIFO of late effects (their times only grow) */
    effect *late = malloc(lcap * sizeof(effect));
    uint64_t *late_t = malloc(lcap * sizeof(uint64_t));
    for (uint64_t i = 0; i < n_events; i++) {
        t += 50000 + below(100001);
        uint32_t k = (uint32_t)below(keys);
        send_rec(t, "invoke", i, k, seqs[k]);
        fl[nfl++] = (flight){t + 100000 + below(800001), i, seqs[k], k, unit() < 0.0005};
        seqs[k]++;
        while (nfl && (nfl > 8 || fl[0].done <= t)) {
            int j = (int)below(nfl < 4 ? nfl : 4); /* completions come back out of order */
            flight f = fl[j];
            memmove(fl + j, fl + j + 1, (nfl - j - 1) * sizeof(flight));
            nfl--;
            t = (t > f.done ? t : f.done) + 1;
            double r = unit();
            const char *typ = r < 0.965 ? "ok" : r < 0.985 ? "info" : "fail";
            if (typ[0] == 'o') ok++; else if (typ[0] == 'i') info++; else fail++;
            send_rec(t, typ, f.id, f.key, f.seq);
            effect e = {f.id, f.seq, f.key, (uint32_t)below(3)};
            if (typ[0] == 'o' && unit() < 0.0002) { lost++; continue; }
            if (typ[0] == 'o' || (typ[0] == 'i' && unit() < 0.5)) {
                if (typ[0] == 'i' && unit() < 0.3) {
                    if (ltail - lhead == lcap) { /* grow the ring */
                        effect *ne = malloc(2 * lcap * sizeof(effect));
                        uint64_t *nt = malloc(2 * lcap * sizeof(uint64_t));
                        for (size_t q = 0; q < lcap; q++) { ne[q] = late[(lhead + q) % lcap]; nt[q] = late_t[(lhead + q) % lcap]; }
                        free(late); free(late_t); late = ne; late_t = nt; ltail = lcap; lhead = 0; lcap *= 2;
                    }
                    late[ltail % lcap] = e; late_t[ltail % lcap] = t + 50000000; ltail++;
                    late_n++;
                } else {
                    apply(&e);
                    if (f.dup && typ[0] == 'o') { apply(&e); dups++; }
                }
            }
        }
        while (ltail > lhead && late_t[lhead % lcap] <= t) { apply(&late[lhead % lcap]); lhead++; }
        if (i % 100000 == 99999) { /* a phantom: an id never sent */
            effect e = {n_events + 1 + phantom, 0, (uint32_t)below(keys), 0};
            apply(&e);
            phantom++;
        }
        if (i % 1000 == 999) {
            t += 1;
            head(t, "observer", "invoke", "observe"); PUTS(&line, "null}\n");
            t += 1000;
            head(t, "observer", "ok", "observe"); PUTS(&line, "{\"full\":false,\"events\":[");
            put(&line, obs.p, obs.n); PUTS(&line, "]}}\n");
            obs.n = 0;
            flush_line(0);
        }
    }
    for (int j = 0; j < nfl; j++) {
        t = (t > fl[j].done ? t : fl[j].done) + 1;
        send_rec(t, "ok", fl[j].id, fl[j].key, fl[j].seq);
        ok++;
        effect e = {fl[j].id, fl[j].seq, fl[j].key, 0};
        apply(&e);
    }
    while (ltail > lhead) { apply(&late[lhead % lcap]); lhead++; }
    t += 1000000;
    head(t, "observer", "invoke", "final-read"); PUTS(&line, "null}\n");
    t += 1000000;
    head(t, "observer", "ok", "final-read"); PUTS(&line, "{\"full\":true,\"events\":[");
    flush_line(1);
    fwrite(sinkbuf.p, 1, sinkbuf.n, sink);
    sinkbuf.n = 0;
    fflush(sink);
    rewind(sink);
    static char copy[1 << 20];
    size_t got;
    while ((got = fread(copy, 1, sizeof copy, sink)) > 0) fwrite(copy, 1, got, out);
    fputs("]}}\n", out);
    if (fclose(out) || ferror(sink)) { perror("write"); return 2; }
    fclose(sink);
    remove(argv[5]);
    printf("{\"records\":%llu,\"events\":%llu,\"ok\":%llu,\"fail\":%llu,\"info\":%llu,\"duplicates\":%llu,"
           "\"late\":%llu,\"lost\":%llu,\"phantom\":%llu,\"effects\":%llu}\n",
           (unsigned long long)idx, (unsigned long long)n_events, (unsigned long long)ok, (unsigned long long)fail,
           (unsigned long long)info, (unsigned long long)dups, (unsigned long long)late_n, (unsigned long long)lost,
           (unsigned long long)phantom, (unsigned long long)n_sink);
    return 0;
}
