/* Guest side of the guest-visible benchmark (Tests/e2e/bench-guest.sh).
 *
 *   fsbench --source TAG --fstype virtiofs|9p [--options MOUNT_DATA] [--dir /mnt]
 *           [--seq-mib N] [--files N] [--rand N]
 *
 * Mounts the shared file system itself, runs a fixed workload on it and prints one
 * machine-readable line per measurement on stdout (the serial console):
 *
 *   BENCH <metric> <value> <unit>
 *   BENCH_FAIL <metric> <reason>     (the run stops there)
 *   BENCH_DONE
 *
 * Phases, in order; "cold" means the file system is unmounted, the guest's caches
 * are dropped (echo 3 > /proc/sys/vm/drop_caches) and it is mounted again, so the
 * daemon sees a fresh mount and the guest kernel has nothing cached:
 *   seq_write  write N MiB in 1 MiB writes to a new file, then fsync   (MB/s)
 *   seq_read   cold, read that file in 1 MiB reads                     (MB/s)
 *   rand_read  cold, 4 KiB preads at random aligned offsets of it      (ops/s)
 *   create     create + write 4 KiB + close, N files in one directory  (ops/s)
 *   stat       cold, stat every one of those files by name             (ops/s)
 *   readdir    cold, list that directory                               (entries/s)
 *   unlink     unlink every file                                       (ops/s)
 * MB is 10^6 bytes. The random offsets come from a fixed seed, so every run reads
 * the same blocks. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1024 * 1024)
#define BLOCK 4096

static const char *dir = "/mnt";
static const char *source;
static const char *fstype;
static const char *options = "";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(const char *metric, const char *what) {
    printf("BENCH_FAIL %s %s: %s\n", metric, what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void report(const char *metric, double value, const char *unit) {
    printf("BENCH %s %.1f %s\n", metric, value, unit);
    fflush(stdout);
}

static void mount_fs(const char *metric) {
    if (mount(source, dir, fstype, 0, options) != 0) fail(metric, "mount");
}

/* A fresh mount and empty guest caches before a cold phase. */
static void cold(const char *metric) {
    sync();
    if (umount2(dir, 0) != 0) fail(metric, "umount");
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0 || write(fd, "3\n", 2) != 2) fail(metric, "drop_caches");
    close(fd);
    mount_fs(metric);
}

static void path_of(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void file_name(char *out, size_t size, long i) {
    snprintf(out, size, "%s/bench-files/f%06ld", dir, i);
}

int main(int argc, char **argv) {
    long seq_mib = 64, files = 2000, rand_reads = 2000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--dir")) dir = v;
        else if (!strcmp(k, "--source")) source = v;
        else if (!strcmp(k, "--fstype")) fstype = v;
        else if (!strcmp(k, "--options")) options = v;
        else if (!strcmp(k, "--seq-mib")) seq_mib = atol(v);
        else if (!strcmp(k, "--files")) files = atol(v);
        else if (!strcmp(k, "--rand")) rand_reads = atol(v);
        else { printf("BENCH_FAIL args unknown argument %s\n", k); return 2; }
    }
    if (!source || !fstype || seq_mib < 1 || files < 1 || rand_reads < 1) {
        printf("BENCH_FAIL args need --source, --fstype and positive sizes\n");
        return 2;
    }
    char *buf = aligned_alloc(BLOCK, CHUNK);
    if (!buf) fail("args", "aligned_alloc");
    for (int i = 0; i < CHUNK; i++) buf[i] = (char)(i * 131 + 7);
    char big[512], name[512];
    path_of(big, sizeof big, "bench-big.bin");
    mkdir(dir, 0755);
    mount_fs("mount");
    printf("BENCH_MOUNTED %s %s\n", fstype, options);
    fflush(stdout);

    /* seq_write */
    double t = now();
    int fd = open(big, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) fail("seq_write", "open");
    for (long i = 0; i < seq_mib; i++) {
        if (write(fd, buf, CHUNK) != CHUNK) fail("seq_write", "write");
    }
    if (fsync(fd) != 0) fail("seq_write", "fsync");
    if (close(fd) != 0) fail("seq_write", "close");
    double bytes = (double)seq_mib * CHUNK;
    report("seq_write", bytes / (now() - t) / 1e6, "MB/s");

    /* seq_read */
    cold("seq_read");
    t = now();
    fd = open(big, O_RDONLY);
    if (fd < 0) fail("seq_read", "open");
    long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0) fail("seq_read", "read");
        if (n == 0) break;
        total += n;
    }
    close(fd);
    if (total != (long)bytes) { errno = EIO; fail("seq_read", "short file"); }
    report("seq_read", bytes / (now() - t) / 1e6, "MB/s");

    /* rand_read */
    cold("rand_read");
    uint64_t state = 0x9e3779b97f4a7c15ull;
    long blocks = seq_mib * (CHUNK / BLOCK);
    t = now();
    fd = open(big, O_RDONLY);
    if (fd < 0) fail("rand_read", "open");
    for (long i = 0; i < rand_reads; i++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        off_t off = (off_t)(state % (uint64_t)blocks) * BLOCK;
        if (pread(fd, buf, BLOCK, off) != BLOCK) fail("rand_read", "pread");
    }
    close(fd);
    report("rand_read", rand_reads / (now() - t), "ops/s");
    if (unlink(big) != 0) fail("rand_read", "unlink");

    /* create */
    path_of(name, sizeof name, "bench-files");
    if (mkdir(name, 0755) != 0) fail("create", "mkdir");
    t = now();
    for (long i = 0; i < files; i++) {
        file_name(name, sizeof name, i);
        fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0) fail("create", "open");
        if (write(fd, buf, BLOCK) != BLOCK) fail("create", "write");
        if (close(fd) != 0) fail("create", "close");
    }
    report("create", files / (now() - t), "ops/s");

    /* stat */
    cold("stat");
    t = now();
    for (long i = 0; i < files; i++) {
        struct stat st;
        file_name(name, sizeof name, i);
        if (stat(name, &st) != 0) fail("stat", "stat");
        if (st.st_size != BLOCK) { errno = EIO; fail("stat", "wrong size"); }
    }
    report("stat", files / (now() - t), "ops/s");

    /* readdir */
    cold("readdir");
    path_of(name, sizeof name, "bench-files");
    t = now();
    DIR *d = opendir(name);
    if (!d) fail("readdir", "opendir");
    long seen = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) seen++;
    }
    if (errno != 0) fail("readdir", "readdir");
    closedir(d);
    if (seen != files) { errno = EIO; fail("readdir", "wrong entry count"); }
    report("readdir", files / (now() - t), "entries/s");

    /* unlink */
    t = now();
    for (long i = 0; i < files; i++) {
        file_name(name, sizeof name, i);
        if (unlink(name) != 0) fail("unlink", "unlink");
    }
    report("unlink", files / (now() - t), "ops/s");
    path_of(name, sizeof name, "bench-files");
    if (rmdir(name) != 0) fail("unlink", "rmdir");

    sync();
    if (umount2(dir, 0) != 0) fail("done", "umount");
    printf("BENCH_DONE\n");
    fflush(stdout);
    return 0;
}
