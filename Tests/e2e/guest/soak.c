/* Guest side of the soak (Tests/e2e/soak.sh): a mixed workload that keeps a
 * model of every file it owns and checks each answer of the file system against
 * it, then prints what must be on the host.
 *
 *   soak --dir D --seconds N [--workers W]    mixed workload, then a manifest
 *   soak --dir D --durable [--workers W]      append + fsync until killed
 *   soak --hash FILE                          (host) size and checksum of FILE
 *
 * Mixed workload: each worker owns D/wN/{a,b} and up to SLOTS files in them,
 * and does create, write, append, overwrite, truncate, rename (also across
 * directories), unlink, readdir, xattr set/get, chmod + stat, POSIX and flock
 * locks, read-back and fsync, chosen at random. Any failed call or answer that
 * differs from the model prints `SOAK ERROR ...`: the host causes none, so every
 * one is a fault. At the end every live file is fsync'd and listed as
 *   SOAK FILE path size fnv64 mode xattr-value
 * for the host to compare with its own copy, and the parent prints
 *   SOAK WORKER w ops=N written=B verified=B errors=E
 *   SOAK QUIESCED   (caches dropped: the host measures the daemon now)
 *   SOAK END errors=E
 *
 * Durable mode: each worker appends random records to its log files and, after
 * each fsync (and the directory's fsync for a new file), prints
 *   SOAK DURABLE path size fnv64-of-those-bytes
 * The host kills the daemon at some point and checks every claim: records
 * appended later never change a prefix that was fsync'd. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 40
#define MAX_SIZE (256 * 1024)
#define MAX_WORKERS 8

static uint64_t rng_state;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV_START 14695981039346656037ULL

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One line per printf, unbuffered, so lines of several workers do not mix. */
static void say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    if (write(1, line, n) < 0) { /* nothing to do */ }
}

struct file {
    int live;
    char path[96];
    unsigned char *data;
    size_t size;
    mode_t mode;
    char xattr[24]; /* "" when unset */
};

static struct file files[SLOTS];
static int worker;
static const char *root;
static unsigned long ops, errors;
static unsigned long long written, verified;
static unsigned generation;
static unsigned char scratch[MAX_SIZE + 8192];

static void fail(const char *op, const char *path, const char *fmt, ...) {
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    errors++;
    say("SOAK ERROR w%d %s %s: %s", worker, op, path, detail);
}

static void fill(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(rnd() >> 56);
}

static int write_all(int fd, const unsigned char *p, size_t n, off_t off, int use_offset) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = use_offset ? pwrite(fd, p + done, n - done, off + done) : write(fd, p + done, n - done);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        if (w == 0) { errno = EIO; return -1; }
        done += w;
    }
    written += n;
    return 0;
}

static void new_path(struct file *f) {
    snprintf(f->path, sizeof f->path, "%s/w%d/%c/f%u", root, worker, below(2) ? 'a' : 'b', generation++);
}

static struct file *pick(int live) {
    size_t start = below(SLOTS);
    for (size_t i = 0; i < SLOTS; i++) {
        struct file *f = &files[(start + i) % SLOTS];
        if (f->live == live) return f;
    }
    return NULL;
}

static void op_create(void) {
    struct file *f = pick(0);
    if (!f) return;
    new_path(f);
    int fd = open(f->path, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) { fail("create", f->path, "%s", strerror(errno)); return; }
    size_t n = below(16384);
    fill(f->data, n);
    if (write_all(fd, f->data, n, 0, 0) < 0) fail("write", f->path, "%s", strerror(errno));
    close(fd);
    f->live = 1;
    f->size = n;
    f->mode = 0644;
    f->xattr[0] = 0;
}

static void op_write(int append) {
    struct file *f = pick(1);
    if (!f) return;
    size_t n = 1 + below(32768);
    size_t off = append ? f->size : below(f->size + 4096);
    if (off + n > MAX_SIZE) return;
    int fd = open(f->path, append ? O_WRONLY | O_APPEND : O_WRONLY);
    if (fd < 0) { fail(append ? "append" : "pwrite", f->path, "open: %s", strerror(errno)); return; }
    if (off > f->size) memset(f->data + f->size, 0, off - f->size);
    fill(f->data + off, n);
    if (write_all(fd, f->data + off, n, off, !append) < 0) fail("write", f->path, "%s", strerror(errno));
    close(fd);
    if (off + n > f->size) f->size = off + n;
}

static void op_truncate(void) {
    struct file *f = pick(1);
    if (!f) return;
    size_t n = below(f->size + 1);
    if (truncate(f->path, n) < 0) { fail("truncate", f->path, "%s", strerror(errno)); return; }
    f->size = n;
}

static void op_rename(void) {
    struct file *f = pick(1);
    if (!f) return;
    char old[sizeof f->path];
    memcpy(old, f->path, sizeof old);
    new_path(f);
    if (rename(old, f->path) < 0) {
        fail("rename", old, "%s", strerror(errno));
        memcpy(f->path, old, sizeof old);
    }
}

static void op_unlink(void) {
    struct file *f = pick(1);
    if (!f) return;
    if (unlink(f->path) < 0) { fail("unlink", f->path, "%s", strerror(errno)); return; }
    f->live = 0;
}

static void op_readdir(void) {
    for (char d = 'a'; d <= 'b'; d++) {
        char dir[96];
        snprintf(dir, sizeof dir, "%s/w%d/%c", root, worker, d);
        DIR *dp = opendir(dir);
        if (!dp) { fail("opendir", dir, "%s", strerror(errno)); continue; }
        int seen = 0, expected = 0;
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char path[400];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            int known = 0;
            for (int i = 0; i < SLOTS; i++) if (files[i].live && !strcmp(files[i].path, path)) known = 1;
            if (!known) fail("readdir", path, "listed but not in the model");
            seen++;
        }
        closedir(dp);
        size_t prefix = strlen(dir);
        for (int i = 0; i < SLOTS; i++)
            if (files[i].live && !strncmp(files[i].path, dir, prefix) && files[i].path[prefix] == '/') expected++;
        if (seen != expected) fail("readdir", dir, "%d entries, model has %d", seen, expected);
    }
}

static void op_xattr(void) {
    struct file *f = pick(1);
    if (!f) return;
    char value[24];
    snprintf(value, sizeof value, "v%u", (unsigned)below(1000000));
    if (setxattr(f->path, "user.soak", value, strlen(value), 0) < 0) {
        fail("setxattr", f->path, "%s", strerror(errno));
        return;
    }
    strcpy(f->xattr, value);
    char back[64];
    ssize_t n = getxattr(f->path, "user.soak", back, sizeof back - 1);
    if (n < 0) { fail("getxattr", f->path, "%s", strerror(errno)); return; }
    back[n] = 0;
    if (strcmp(back, value)) fail("getxattr", f->path, "'%s', set '%s'", back, value);
}

static void op_chmod_stat(void) {
    static const mode_t modes[] = {0600, 0640, 0644, 0664, 0444};
    struct file *f = pick(1);
    if (!f) return;
    mode_t m = modes[below(5)];
    if (chmod(f->path, m) < 0) { fail("chmod", f->path, "%s", strerror(errno)); return; }
    f->mode = m;
    struct stat st;
    if (stat(f->path, &st) < 0) { fail("stat", f->path, "%s", strerror(errno)); return; }
    if ((st.st_mode & 07777) != m || (size_t)st.st_size != f->size || !S_ISREG(st.st_mode))
        fail("stat", f->path, "mode %o size %lld, model %o %zu", st.st_mode & 07777, (long long)st.st_size, m, f->size);
}

static void op_locks(void) {
    struct file *f = pick(1);
    if (!f) return;
    /* Root opens any mode for writing; the lock calls are what is tested. */
    int fd = open(f->path, O_RDWR);
    if (fd < 0) { fail("lock-open", f->path, "%s", strerror(errno)); return; }
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)below(4096), .l_len = 1 + below(4096)};
    if (fcntl(fd, F_SETLK, &l) < 0) fail("setlk", f->path, "%s", strerror(errno));
    struct flock q = l;
    q.l_type = F_WRLCK;
    /* Our own lock never conflicts with ourselves. */
    if (fcntl(fd, F_GETLK, &q) < 0) fail("getlk", f->path, "%s", strerror(errno));
    else if (q.l_type != F_UNLCK) fail("getlk", f->path, "own lock reported as a conflict");
    l.l_type = F_UNLCK;
    if (fcntl(fd, F_SETLK, &l) < 0) fail("unlock", f->path, "%s", strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) fail("flock", f->path, "%s", strerror(errno));
    if (flock(fd, LOCK_UN) < 0) fail("flock-un", f->path, "%s", strerror(errno));
    close(fd);
}

static void verify(struct file *f, const char *why) {
    int fd = open(f->path, O_RDONLY);
    if (fd < 0) { fail(why, f->path, "open: %s", strerror(errno)); return; }
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, scratch + got, sizeof scratch - got);
        if (n < 0) { if (errno == EINTR) continue; fail(why, f->path, "read: %s", strerror(errno)); break; }
        if (n == 0) break;
        got += n;
        if (got == sizeof scratch) break;
    }
    close(fd);
    if (got != f->size) fail(why, f->path, "%zu bytes, model %zu", got, f->size);
    else if (memcmp(scratch, f->data, got)) fail(why, f->path, "content differs from what was written");
    else verified += got;
}

static void op_read(void) {
    struct file *f = pick(1);
    if (f) verify(f, "read");
}

static void op_fsync(void) {
    struct file *f = pick(1);
    if (!f) return;
    int fd = open(f->path, O_WRONLY);
    if (fd < 0) { fail("fsync-open", f->path, "%s", strerror(errno)); return; }
    if (fsync(fd) < 0) fail("fsync", f->path, "%s", strerror(errno));
    close(fd);
}

static void make_dirs(void) {
    char d[96];
    snprintf(d, sizeof d, "%s/w%d", root, worker);
    mkdir(root, 0755);
    mkdir(d, 0755);
    for (char c = 'a'; c <= 'b'; c++) {
        snprintf(d, sizeof d, "%s/w%d/%c", root, worker, c);
        if (mkdir(d, 0755) < 0 && errno != EEXIST) fail("mkdir", d, "%s", strerror(errno));
    }
}

static void run_mixed(double seconds) {
    for (int i = 0; i < SLOTS; i++) files[i].data = malloc(MAX_SIZE);
    make_dirs();
    double start = now(), last = start;
    while (now() - start < seconds) {
        switch (below(16)) {
        case 0: case 1: op_create(); break;
        case 2: case 3: op_write(1); break;
        case 4: op_write(0); break;
        case 5: op_truncate(); break;
        case 6: op_rename(); break;
        case 7: op_unlink(); break;
        case 8: op_readdir(); break;
        case 9: op_xattr(); break;
        case 10: op_chmod_stat(); break;
        case 11: op_locks(); break;
        case 12: case 13: op_read(); break;
        default: op_fsync(); break;
        }
        ops++;
        if (now() - last >= 30) {
            last = now();
            say("SOAK PROGRESS w%d t=%.0f ops=%lu written=%llu verified=%llu errors=%lu",
                worker, last - start, ops, written, verified, errors);
        }
    }
    /* The end: everything read back once more, fsync'd, and listed for the host. */
    for (int i = 0; i < SLOTS; i++) {
        struct file *f = &files[i];
        if (!f->live) continue;
        verify(f, "final-read");
        int fd = open(f->path, O_WRONLY);
        if (fd < 0 || fsync(fd) < 0) fail("final-fsync", f->path, "%s", strerror(errno));
        if (fd >= 0) close(fd);
        say("SOAK FILE %s %zu %016llx %o %s", f->path + strlen(root) + 1, f->size,
            (unsigned long long)fnv(f->data, f->size, FNV_START), f->mode, f->xattr[0] ? f->xattr : "-");
    }
    say("SOAK WORKER w%d ops=%lu written=%llu verified=%llu errors=%lu", worker, ops, written, verified, errors);
}

static void fsync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0 || fsync(fd) < 0) fail("fsync", path, "%s", strerror(errno));
    if (fd >= 0) close(fd);
}

/* Append-only logs: a fsync'd prefix never changes afterwards. */
static void run_durable(void) {
    enum { LOGS = 6 };
    char paths[LOGS][160];
    uint64_t hash[LOGS];
    size_t size[LOGS];
    int fds[LOGS];
    char dir[96];
    snprintf(dir, sizeof dir, "%s/w%d", root, worker);
    mkdir(root, 0755);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) fail("mkdir", dir, "%s", strerror(errno));
    fsync_path(root, O_RDONLY | O_DIRECTORY);
    int made = 0;
    for (;;) {
        if (made < LOGS || below(200) == 0) {
            /* A new log in place of an old one (the old stays on the host as it was). */
            int i = made < LOGS ? made : (int)below(LOGS);
            if (made >= LOGS) close(fds[i]);
            snprintf(paths[i], sizeof paths[i], "%s/log%u", dir, generation++);
            fds[i] = open(paths[i], O_CREAT | O_EXCL | O_WRONLY | O_APPEND, 0644);
            if (fds[i] < 0) { fail("create", paths[i], "%s", strerror(errno)); return; }
            fsync_path(dir, O_RDONLY | O_DIRECTORY);
            hash[i] = FNV_START;
            size[i] = 0;
            if (made < LOGS) made++;
        }
        int i = (int)below(made);
        size_t n = 1 + below(8192);
        fill(scratch, n);
        if (write_all(fds[i], scratch, n, 0, 0) < 0) { fail("append", paths[i], "%s", strerror(errno)); return; }
        hash[i] = fnv(scratch, n, hash[i]);
        size[i] += n;
        ops++;
        if (below(4) == 0) {
            if (fsync(fds[i]) < 0) { fail("fsync", paths[i], "%s", strerror(errno)); return; }
            say("SOAK DURABLE %s %zu %016llx", paths[i] + strlen(root) + 1, size[i], (unsigned long long)hash[i]);
        }
    }
}

static int hash_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); return 1; }
    uint64_t h = FNV_START;
    size_t total = 0;
    /* With a size limit: the checksum of the first LIMIT bytes (a fsync'd prefix). */
    const char *limit_env = getenv("SOAK_PREFIX");
    size_t limit = limit_env ? strtoull(limit_env, NULL, 10) : (size_t)-1;
    for (;;) {
        size_t want = sizeof scratch;
        if (limit - total < want) want = limit - total;
        if (want == 0) break;
        ssize_t n = read(fd, scratch, want);
        if (n < 0) { perror(path); return 1; }
        if (n == 0) break;
        h = fnv(scratch, n, h);
        total += n;
    }
    close(fd);
    printf("%zu %016llx\n", total, (unsigned long long)h);
    return 0;
}

int main(int argc, char **argv) {
    double seconds = 60;
    int workers = 2, durable = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--durable")) durable = 1;
        else if (!strcmp(argv[i], "--hash") && i + 1 < argc) return hash_file(argv[++i]);
        else { fprintf(stderr, "soak: unknown argument %s\n", argv[i]); return 2; }
    }
    if (!root || workers < 1 || workers > MAX_WORKERS) { fprintf(stderr, "soak: --dir D required, 1-8 workers\n"); return 2; }
    sync();
    int dc = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (dc >= 0) { if (write(dc, "3", 1) < 0) { /* best effort */ } close(dc); }
    say("SOAK START workers=%d %s", workers, durable ? "durable" : "mixed");
    /* The host measures the daemon's starting point now. */
    sleep(5);
    pid_t pids[MAX_WORKERS];
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            worker = w;
            rng_state = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(w + 1) << 32) ^ (uint64_t)time(NULL);
            if (durable) run_durable(); else run_mixed(seconds);
            _exit(errors ? 1 : 0);
        }
    }
    int failed = 0;
    for (int w = 0; w < workers; w++) {
        int st = 0;
        waitpid(pids[w], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    }
    sync();
    dc = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (dc >= 0) { if (write(dc, "3", 1) < 0) { /* best effort */ } close(dc); }
    say("SOAK QUIESCED");
    sleep(8);
    say("SOAK END failed_workers=%d", failed);
    return failed ? 1 : 0;
}
