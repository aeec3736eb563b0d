/*
 * onceproof_clock: move a process's wall clock while it runs (LD_PRELOAD).
 *
 * Why not libfaketime: measured on Debian 12 (libfaketime 0.9.10), redis-server does not
 * start under it (its jemalloc calls clock_gettime during malloc init, libfaketime's
 * dlsym then mallocs: "Unexpected recursive calls to clock_gettime()"), it moves
 * CLOCK_MONOTONIC too (backwards on a negative offset, which real clock skew never does),
 * and FAKETIME_DONT_FAKE_MONOTONIC=1 makes Python's time.sleep fail with EINVAL.
 *
 * This shim overrides clock_gettime / gettimeofday / time / clock_gettime64 for the
 * REALTIME clocks only. It never calls malloc or dlsym: it finds the kernel's vDSO
 * clock_gettime through the aux vector, and reads the offset (int64 nanoseconds, at byte 0)
 * from a file mapped once with MAP_SHARED, named by $ONCEPROOF_CLOCK_FILE. The harness
 * moves the clock by writing 8 bytes into that file; no restart, no signal.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*vdso_gettime_fn)(clockid_t, struct timespec *);

static vdso_gettime_fn vdso_gettime;
static volatile const int64_t *offset_ns;
static volatile int state; /* 0 = not yet, 1 = initialising, 2 = ready */

static vdso_gettime_fn find_vdso_clock_gettime(void) {
    uintptr_t base = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    if (!base) return 0;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)base;
    Elf64_Phdr *ph = (Elf64_Phdr *)(base + eh->e_phoff);
    uintptr_t load_offset = 0;
    Elf64_Dyn *dyn = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && load_offset == 0) load_offset = base + ph[i].p_offset - ph[i].p_vaddr;
        if (ph[i].p_type == PT_DYNAMIC) dyn = (Elf64_Dyn *)(base + ph[i].p_offset);
    }
    if (!dyn) return 0;
    Elf64_Sym *symtab = 0;
    const char *strtab = 0;
    uint32_t *hash = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB) symtab = (Elf64_Sym *)(dyn->d_un.d_ptr + load_offset);
        if (dyn->d_tag == DT_STRTAB) strtab = (const char *)(dyn->d_un.d_ptr + load_offset);
        if (dyn->d_tag == DT_HASH) hash = (uint32_t *)(dyn->d_un.d_ptr + load_offset);
    }
    if (!symtab || !strtab || !hash) return 0;
    uint32_t nsyms = hash[1];
    for (uint32_t i = 0; i < nsyms; i++) {
        if (symtab[i].st_shndx == SHN_UNDEF) continue;
        if (strcmp(strtab + symtab[i].st_name, "__vdso_clock_gettime") == 0)
            return (vdso_gettime_fn)(symtab[i].st_value + load_offset);
    }
    return 0;
}

static void init(void) {
    if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2) return;
    int expected = 0;
    if (!__atomic_compare_exchange_n(&state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != 2) { /* another thread is initialising */ }
        return;
    }
    vdso_gettime = find_vdso_clock_gettime();
    const char *path = getenv("ONCEPROOF_CLOCK_FILE");
    if (path && *path) {
        int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            void *p = (void *)syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) offset_ns = (volatile const int64_t *)p;
            syscall(SYS_close, fd);
        }
    }
    __atomic_store_n(&state, 2, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void onceproof_clock_ctor(void) { init(); }

static int real_gettime(clockid_t clk, struct timespec *ts) {
    if (vdso_gettime) return vdso_gettime(clk, ts);
    return (int)syscall(SYS_clock_gettime, clk, ts);
}

static int64_t current_offset(void) { return offset_ns ? *offset_ns : 0; }

static void shift(struct timespec *ts, int64_t off) {
    if (!off) return;
    int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + off;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
    if (ts->tv_nsec < 0) { ts->tv_nsec += 1000000000LL; ts->tv_sec -= 1; }
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    init();
    int rc = real_gettime(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) shift(ts, current_offset());
    return rc;
}

int __clock_gettime(clockid_t clk, struct timespec *ts) { return clock_gettime(clk, ts); }
int clock_gettime64(clockid_t clk, struct timespec *ts) { return clock_gettime(clk, ts); }

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
