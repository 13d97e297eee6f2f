// Guest-side file system checks for the end-to-end rig.
//
// Runs inside the test guest against the virtio-fs mount and prints one line per
// check on stdout (the serial console):
//     CHECK <name> PASS|FAIL|SKIP <detail>
// SKIP is used where the guest kernel lacks a feature, or the daemon declines an
// operation FUSE makes optional; the detail says which. The host pre-populates the shared directory (lib.sh) and
// run.sh afterwards verifies what the checks left in for-host/.
//
// Usage: checks --dir MOUNT [--xattr] [--xattrmap] [--locks] [--cache=MODE] [--big-tree=N] [--only NAME] [--host]
//        checks --pattern N      (host side: print the large-file byte pattern)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define FUSE_SUPER_MAGIC 0x65735546
#define BIG_SIZE (8u << 20)
#define MANY_FILES 1000

enum { PASS = 0, FAIL = 1, SKIP = 2 };

static char detail[512];
static int want_xattr;
static int want_xattrmap;
static int want_locks; // --locks: the daemon serves POSIX and flock locks
static int on_host; // --host: run against a plain host directory, leave the page cache alone
static const char *cache_mode = "auto";
static int passed, failed, skipped;
static long big_tree; // --big-tree=N: the host made N files under big/ (fd-limit config)

// Records why a check failed and returns FAIL, so checks read `return fail(...)`.
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return FAIL;
}

static int skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return SKIP;
}

#define E strerror(errno)

// The deterministic byte pattern of the large file and of data.bin; the host
// generates the same bytes with --pattern, so both sides agree without a copy.
static uint8_t pattern_byte(uint64_t i) {
    return (uint8_t)(((i * 0x9E3779B1u) >> 11) ^ (i >> 16));
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

// Reads up to cap-1 bytes of a file and NUL-terminates them; returns length or -1.
static ssize_t read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    buf[got] = 0;
    close(fd);
    return (ssize_t)got;
}

static int write_file(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return -1;
    if (write_all(fd, text, strlen(text)) < 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

// Asks the guest kernel to forget cached pages so later reads reach the daemon.
static void drop_caches(void) {
    if (on_host) return;
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd >= 0) {
        (void)write(fd, "3", 1);
        close(fd);
    }
}

static int expect_text(const char *path, const char *want) {
    char buf[256];
    ssize_t n = read_file(path, buf, sizeof buf);
    if (n < 0) return fail("read %s: %s", path, E);
    if (strcmp(buf, want) != 0) return fail("%s holds \"%s\", want \"%s\"", path, buf, want);
    return PASS;
}

// ---------------------------------------------------------------- read side

static int check_read_known(void) {
    int r = expect_text("hello.txt", "hello from the host\n");
    if (r != PASS) return r;
    static uint8_t buf[65536 + 1];
    int fd = open("data.bin", O_RDONLY);
    if (fd < 0) return fail("open data.bin: %s", E);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n < 0) return close(fd), fail("read data.bin: %s", E);
        if (n == 0) break;
        got += (size_t)n;
        if (got == sizeof buf) break;
    }
    close(fd);
    if (got != 65536) return fail("data.bin has %zu bytes, want 65536", got);
    for (size_t i = 0; i < got; i++)
        if (buf[i] != pattern_byte(i)) return fail("data.bin differs at byte %zu", i);
    // pread at an odd offset exercises offset handling in READ.
    fd = open("data.bin", O_RDONLY);
    if (fd < 0) return fail("reopen data.bin: %s", E);
    uint8_t small[100];
    ssize_t n = pread(fd, small, sizeof small, 40001);
    close(fd);
    if (n != (ssize_t)sizeof small) return fail("pread data.bin returned %zd", n);
    for (size_t i = 0; i < sizeof small; i++)
        if (small[i] != pattern_byte(40001 + i)) return fail("pread data differs at %zu", i);
    return PASS;
}

static int check_readdir(void) {
    static const char *want[] = {"hello.txt", "data.bin", "link-to-hello", "hl-a", "hl-b",
                                 "xattr-file", "tree", "suid-file", ".", ".."};
    enum { N = sizeof want / sizeof want[0] };
    int seen[N] = {0};
    DIR *d = opendir(".");
    if (!d) return fail("opendir: %s", E);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (int i = 0; i < N; i++) {
            if (strcmp(e->d_name, want[i]) != 0) continue;
            seen[i] = 1;
            if (strcmp(e->d_name, "tree") == 0 && e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) {
                closedir(d);
                return fail("tree has d_type %d, want DT_DIR", e->d_type);
            }
            if (strcmp(e->d_name, "link-to-hello") == 0 && e->d_type != DT_LNK && e->d_type != DT_UNKNOWN) {
                closedir(d);
                return fail("link-to-hello has d_type %d, want DT_LNK", e->d_type);
            }
        }
    }
    closedir(d);
    for (int i = 0; i < N; i++)
        if (!seen[i]) return fail("%s missing from the listing", want[i]);
    return PASS;
}

static int check_stat_sizes_modes(void) {
    struct stat st;
    if (stat("hello.txt", &st) < 0) return fail("stat hello.txt: %s", E);
    if (!S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0644 || st.st_size != 20)
        return fail("hello.txt mode %o size %lld, want 100644 20", st.st_mode, (long long)st.st_size);
    if (st.st_uid != 0 || st.st_gid != 0)
        return fail("hello.txt owner %u:%u, want 0:0", st.st_uid, st.st_gid);
    if (stat("data.bin", &st) < 0 || st.st_size != 65536) return fail("data.bin size wrong");
    if (stat("tree", &st) < 0) return fail("stat tree: %s", E);
    if (!S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0755)
        return fail("tree mode %o, want 040755", st.st_mode);
    if (stat("suid-file", &st) < 0) return fail("stat suid-file: %s", E);
    if ((st.st_mode & 07777) != 04755) return fail("suid-file mode %o, want 4755", st.st_mode & 07777);
    if (stat("no-such-file", &st) == 0 || errno != ENOENT)
        return fail("stat of a missing name: %s, want ENOENT", E);
    return PASS;
}

static int check_tree_walk(void) {
    int r = expect_text("tree/a/b/c/deep.txt", "deep\n");
    if (r != PASS) return r;
    // Walk one component at a time through directory fds, as a shell's cd would.
    int fd = open("tree", O_RDONLY | O_DIRECTORY);
    if (fd < 0) return fail("open tree: %s", E);
    const char *parts[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        int next = openat(fd, parts[i], O_RDONLY | O_DIRECTORY);
        close(fd);
        if (next < 0) return fail("openat %s: %s", parts[i], E);
        fd = next;
    }
    struct stat st;
    int ok = fstatat(fd, "deep.txt", &st, 0);
    close(fd);
    if (ok < 0 || st.st_size != 5) return fail("fstatat deep.txt failed or wrong size");
    int count = 0;
    DIR *d = opendir("tree");
    if (!d) return fail("opendir tree: %s", E);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') count++;
    closedir(d);
    if (count != 3) return fail("tree has %d entries, want 3 (a one.txt two.txt)", count);
    return PASS;
}

static int check_symlink_readlink(void) {
    struct stat st;
    if (lstat("link-to-hello", &st) < 0) return fail("lstat: %s", E);
    if (!S_ISLNK(st.st_mode)) return fail("link-to-hello is not a symlink (mode %o)", st.st_mode);
    char buf[256];
    ssize_t n = readlink("link-to-hello", buf, sizeof buf - 1);
    if (n < 0) return fail("readlink: %s", E);
    buf[n] = 0;
    if (strcmp(buf, "hello.txt") != 0) return fail("readlink gave \"%s\"", buf);
    if (stat("link-to-hello", &st) < 0 || st.st_size != 20) return fail("stat through the link failed");
    if (symlink("some/where/else", "work/new-link") < 0) return fail("symlink: %s", E);
    n = readlink("work/new-link", buf, sizeof buf - 1);
    if (n < 0) return fail("readlink new link: %s", E);
    buf[n] = 0;
    if (strcmp(buf, "some/where/else") != 0) return fail("new link reads \"%s\"", buf);
    return PASS;
}

static int check_hardlink(void) {
    struct stat a, b;
    if (stat("hl-a", &a) < 0 || stat("hl-b", &b) < 0) return fail("stat hl-a/hl-b: %s", E);
    if (a.st_ino != b.st_ino) return fail("hl-a ino %llu != hl-b ino %llu",
                                          (unsigned long long)a.st_ino, (unsigned long long)b.st_ino);
    if (a.st_nlink != 2) return fail("hl-a nlink %lu, want 2", (unsigned long)a.st_nlink);
    if (write_file("work/link-src", "shared\n", 0644) < 0) return fail("create: %s", E);
    if (link("work/link-src", "work/link-dst") < 0) return fail("link: %s", E);
    if (stat("work/link-src", &a) < 0 || stat("work/link-dst", &b) < 0) return fail("stat new links: %s", E);
    if (a.st_ino != b.st_ino || a.st_nlink != 2 || b.st_nlink != 2)
        return fail("new link: ino %llu/%llu nlink %lu/%lu", (unsigned long long)a.st_ino,
                    (unsigned long long)b.st_ino, (unsigned long)a.st_nlink, (unsigned long)b.st_nlink);
    if (unlink("work/link-src") < 0) return fail("unlink one link: %s", E);
    if (stat("work/link-dst", &b) < 0 || b.st_nlink != 1) return fail("nlink after unlink not 1");
    return expect_text("work/link-dst", "shared\n");
}

// ---------------------------------------------------------------- xattrs

static int check_xattr_get_list(void) {
    char buf[256];
    ssize_t n = getxattr("xattr-file", "user.e2e.color", buf, sizeof buf - 1);
    if (n < 0) return fail("getxattr: %s", E);
    buf[n] = 0;
    if (strcmp(buf, "blue") != 0) return fail("user.e2e.color = \"%s\", want blue", buf);
    // Size probe: a zero-length buffer returns the value size.
    if (getxattr("xattr-file", "user.e2e.color", NULL, 0) != 4) return fail("size probe wrong");
    char list[1024];
    n = listxattr("xattr-file", list, sizeof list);
    if (n < 0) return fail("listxattr: %s", E);
    int found = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
        if (strcmp(list + i, "user.e2e.color") == 0) found = 1;
    if (!found) return fail("user.e2e.color not listed");
    if (getxattr("xattr-file", "user.nope", buf, sizeof buf) >= 0 || errno != ENODATA)
        return fail("missing xattr gave %s, want ENODATA", E);
    return PASS;
}

static int check_xattr_set_remove(void) {
    if (write_file("work/xa", "x", 0644) < 0) return fail("create: %s", E);
    if (setxattr("work/xa", "user.k", "v1", 2, 0) < 0) return fail("setxattr: %s", E);
    if (setxattr("work/xa", "user.k", "v2", 2, XATTR_CREATE) >= 0 || errno != EEXIST)
        return fail("XATTR_CREATE on existing: %s, want EEXIST", E);
    if (setxattr("work/xa", "user.k", "v3", 2, XATTR_REPLACE) < 0) return fail("XATTR_REPLACE: %s", E);
    char buf[16];
    ssize_t n = getxattr("work/xa", "user.k", buf, sizeof buf);
    if (n != 2 || memcmp(buf, "v3", 2) != 0) return fail("value after replace wrong");
    if (removexattr("work/xa", "user.k") < 0) return fail("removexattr: %s", E);
    if (getxattr("work/xa", "user.k", buf, sizeof buf) >= 0 || errno != ENODATA)
        return fail("removed xattr still readable");
    return PASS;
}

// Without the xattr option the daemon must refuse xattrs cleanly.
static int check_xattr_disabled(void) {
    char buf[64];
    if (getxattr("xattr-file", "user.e2e.color", buf, sizeof buf) >= 0)
        return fail("getxattr succeeded although xattr is off");
    if (errno != EOPNOTSUPP && errno != ENODATA) return fail("getxattr: %s, want EOPNOTSUPP", E);
    return PASS;
}

// ---------------------------------------------------------------- write side

static int check_create_write_read(void) {
    int fd = open("work/new.txt", O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return fail("create: %s", E);
    if (write_all(fd, "abc123", 6) < 0) return close(fd), fail("write: %s", E);
    close(fd);
    if (open("work/new.txt", O_WRONLY | O_CREAT | O_EXCL, 0644) >= 0 || errno != EEXIST)
        return fail("O_EXCL on an existing file: %s, want EEXIST", E);
    struct stat st;
    if (stat("work/new.txt", &st) < 0 || st.st_size != 6 || (st.st_mode & 0777) != 0644)
        return fail("new file size/mode wrong");
    drop_caches();
    return expect_text("work/new.txt", "abc123");
}

static int check_append(void) {
    if (write_file("work/app.txt", "abc", 0644) < 0) return fail("create: %s", E);
    for (int i = 0; i < 2; i++) {
        int fd = open("work/app.txt", O_WRONLY | O_APPEND);
        if (fd < 0) return fail("open O_APPEND: %s", E);
        // Seeking must not matter for O_APPEND writes.
        lseek(fd, 0, SEEK_SET);
        if (write_all(fd, "x", 1) < 0) return close(fd), fail("append write: %s", E);
        close(fd);
    }
    return expect_text("work/app.txt", "abcxx");
}

static int check_truncate(void) {
    if (write_file("work/trunc", "0123456789", 0644) < 0) return fail("create: %s", E);
    if (truncate("work/trunc", 3) < 0) return fail("truncate: %s", E);
    int r = expect_text("work/trunc", "012");
    if (r != PASS) return r;
    int fd = open("work/trunc", O_RDWR);
    if (fd < 0) return fail("open: %s", E);
    if (ftruncate(fd, 100) < 0) return close(fd), fail("ftruncate grow: %s", E);
    char buf[100];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    if (n != 100) return fail("read after grow gave %zd bytes", n);
    for (int i = 3; i < 100; i++)
        if (buf[i] != 0) return fail("byte %d after grow is %d, want 0", i, buf[i]);
    // O_TRUNC on open empties the file.
    fd = open("work/trunc", O_WRONLY | O_TRUNC);
    if (fd < 0) return fail("open O_TRUNC: %s", E);
    close(fd);
    struct stat st;
    if (stat("work/trunc", &st) < 0 || st.st_size != 0) return fail("O_TRUNC left %lld bytes", (long long)st.st_size);
    return PASS;
}

static int check_rename(void) {
    if (write_file("work/ren-a", "A", 0644) < 0 || write_file("work/ren-b", "B", 0644) < 0)
        return fail("create: %s", E);
    if (rename("work/ren-a", "work/ren-c") < 0) return fail("rename: %s", E);
    struct stat st;
    if (stat("work/ren-a", &st) == 0 || errno != ENOENT) return fail("old name still there");
    int r = expect_text("work/ren-c", "A");
    if (r != PASS) return r;
    // Over an existing name: the target is replaced.
    if (rename("work/ren-c", "work/ren-b") < 0) return fail("rename over existing: %s", E);
    r = expect_text("work/ren-b", "A");
    if (r != PASS) return r;
    // Across directories.
    if (mkdir("work/ren-dir", 0755) < 0) return fail("mkdir: %s", E);
    if (rename("work/ren-b", "work/ren-dir/moved") < 0) return fail("rename across dirs: %s", E);
    return expect_text("work/ren-dir/moved", "A");
}

static int check_rename_noreplace(void) {
    if (write_file("work/nr-a", "A", 0644) < 0 || write_file("work/nr-b", "B", 0644) < 0)
        return fail("create: %s", E);
    if (renameat2(AT_FDCWD, "work/nr-a", AT_FDCWD, "work/nr-b", RENAME_NOREPLACE) == 0)
        return fail("RENAME_NOREPLACE replaced an existing file");
    if (errno == EINVAL) return skip("guest kernel refuses RENAME_NOREPLACE here (EINVAL)");
    if (errno != EEXIST) return fail("RENAME_NOREPLACE: %s, want EEXIST", E);
    if (renameat2(AT_FDCWD, "work/nr-a", AT_FDCWD, "work/nr-c", RENAME_NOREPLACE) < 0)
        return fail("RENAME_NOREPLACE to a free name: %s", E);
    int r = expect_text("work/nr-b", "B");
    return r != PASS ? r : expect_text("work/nr-c", "A");
}

static int check_rename_exchange(void) {
    if (write_file("work/ex-a", "A", 0644) < 0 || write_file("work/ex-b", "B", 0644) < 0)
        return fail("create: %s", E);
    if (renameat2(AT_FDCWD, "work/ex-a", AT_FDCWD, "work/ex-b", RENAME_EXCHANGE) < 0)
        return fail("RENAME_EXCHANGE: %s", E);
    drop_caches();
    int r = expect_text("work/ex-a", "B");
    return r != PASS ? r : expect_text("work/ex-b", "A");
}

static int check_mkdir_rmdir(void) {
    if (mkdir("work/d1", 0750) < 0) return fail("mkdir: %s", E);
    struct stat st;
    if (stat("work/d1", &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0750)
        return fail("new dir mode %o, want 040750", st.st_mode);
    if (mkdir("work/d1", 0750) == 0 || errno != EEXIST) return fail("second mkdir: %s, want EEXIST", E);
    if (write_file("work/d1/f", "f", 0644) < 0) return fail("create inside: %s", E);
    if (rmdir("work/d1") == 0 || errno != ENOTEMPTY) return fail("rmdir non-empty: %s, want ENOTEMPTY", E);
    if (unlink("work/d1/f") < 0) return fail("unlink: %s", E);
    if (rmdir("work/d1") < 0) return fail("rmdir: %s", E);
    if (stat("work/d1", &st) == 0 || errno != ENOENT) return fail("dir still there after rmdir");
    return PASS;
}

static int check_unlink(void) {
    if (write_file("work/gone", "bye", 0644) < 0) return fail("create: %s", E);
    int fd = open("work/gone", O_RDWR);
    if (fd < 0) return fail("open: %s", E);
    if (unlink("work/gone") < 0) return close(fd), fail("unlink: %s", E);
    struct stat st;
    if (stat("work/gone", &st) == 0 || errno != ENOENT) return close(fd), fail("name still there");
    // An open file stays usable after its name is gone.
    char buf[8] = {0};
    if (pwrite(fd, "!", 1, 3) != 1) return close(fd), fail("write after unlink: %s", E);
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    if (n != 4 || strcmp(buf, "bye!") != 0) return fail("unlinked file reads \"%s\"", buf);
    if (unlink("work/gone") == 0 || errno != ENOENT) return fail("second unlink: %s, want ENOENT", E);
    return PASS;
}

static int check_chmod_chown(void) {
    if (write_file("work/perm", "p", 0644) < 0) return fail("create: %s", E);
    if (chmod("work/perm", 0600) < 0) return fail("chmod: %s", E);
    struct stat st;
    if (stat("work/perm", &st) < 0 || (st.st_mode & 07777) != 0600) return fail("mode %o after chmod 600", st.st_mode & 07777);
    int fd = open("work/perm", O_RDONLY);
    if (fd < 0) return fail("open: %s", E);
    int rc = fchmod(fd, 0640);
    close(fd);
    if (rc < 0) return fail("fchmod: %s", E);
    if (stat("work/perm", &st) < 0 || (st.st_mode & 07777) != 0640) return fail("mode %o after fchmod 640", st.st_mode & 07777);
    if (chown("work/perm", 1234, 5678) < 0) return fail("chown: %s", E);
    if (stat("work/perm", &st) < 0 || st.st_uid != 1234 || st.st_gid != 5678)
        return fail("owner %u:%u after chown 1234:5678", st.st_uid, st.st_gid);
    if (lchown("work/new-link", 42, 43) < 0) return fail("lchown symlink: %s", E);
    if (lstat("work/new-link", &st) < 0 || st.st_uid != 42) return fail("symlink owner %u, want 42", st.st_uid);
    return PASS;
}

static int check_utimensat(void) {
    if (write_file("work/times", "t", 0644) < 0) return fail("create: %s", E);
    struct timespec ts[2] = {{1000000000, 0}, {1234567890, 500000000}};
    if (utimensat(AT_FDCWD, "work/times", ts, 0) < 0) return fail("utimensat: %s", E);
    struct stat st;
    if (stat("work/times", &st) < 0) return fail("stat: %s", E);
    if (st.st_atim.tv_sec != 1000000000 || st.st_mtim.tv_sec != 1234567890 || st.st_mtim.tv_nsec != 500000000)
        return fail("atime %lld mtime %lld.%09ld", (long long)st.st_atim.tv_sec,
                    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    // UTIME_OMIT leaves atime alone; UTIME_NOW moves mtime to the present.
    struct timespec now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    if (utimensat(AT_FDCWD, "work/times", now, 0) < 0) return fail("utimensat NOW: %s", E);
    if (stat("work/times", &st) < 0) return fail("stat: %s", E);
    if (st.st_atim.tv_sec != 1000000000) return fail("UTIME_OMIT changed atime to %lld", (long long)st.st_atim.tv_sec);
    if (st.st_mtim.tv_sec <= 1234567890) return fail("UTIME_NOW left mtime at %lld", (long long)st.st_mtim.tv_sec);
    return PASS;
}

static int check_mknod_fifo(void) {
    if (mkfifo("work/fifo", 0600) < 0) return fail("mkfifo: %s", E);
    struct stat st;
    if (stat("work/fifo", &st) < 0) return fail("stat: %s", E);
    if (!S_ISFIFO(st.st_mode) || (st.st_mode & 0777) != 0600) return fail("fifo mode %o", st.st_mode);
    // The fifo lives in the guest kernel: a writer and reader meet without the daemon.
    int rd = open("work/fifo", O_RDONLY | O_NONBLOCK);
    if (rd < 0) return fail("open fifo for reading: %s", E);
    int wr = open("work/fifo", O_WRONLY | O_NONBLOCK);
    if (wr < 0) return close(rd), fail("open fifo for writing: %s", E);
    char c = 0;
    int ok = write(wr, "z", 1) == 1 && read(rd, &c, 1) == 1 && c == 'z';
    close(wr);
    close(rd);
    if (!ok) return fail("data did not pass through the fifo");
    return PASS;
}

static int check_fsync(void) {
    int fd = open("work/synced", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create: %s", E);
    if (write_all(fd, "durable", 7) < 0) return close(fd), fail("write: %s", E);
    if (fsync(fd) < 0) return close(fd), fail("fsync: %s", E);
    if (fdatasync(fd) < 0) return close(fd), fail("fdatasync: %s", E);
    close(fd);
    int dfd = open("work", O_RDONLY | O_DIRECTORY);
    if (dfd < 0) return fail("open dir: %s", E);
    int rc = fsync(dfd);
    close(dfd);
    if (rc < 0) return fail("fsync on a directory: %s", E);
    return expect_text("work/synced", "durable");
}

static int check_statfs(void) {
    struct statfs s;
    if (statfs(".", &s) < 0) return fail("statfs: %s", E);
    if ((unsigned long)s.f_type != FUSE_SUPER_MAGIC) return fail("f_type %#lx, want FUSE %#x", (unsigned long)s.f_type, FUSE_SUPER_MAGIC);
    if (s.f_blocks == 0 || s.f_bsize == 0) return fail("f_blocks %llu f_bsize %ld", (unsigned long long)s.f_blocks, (long)s.f_bsize);
    if (s.f_bfree > s.f_blocks || s.f_bavail > s.f_blocks) return fail("free blocks exceed total");
    if (s.f_namelen < 255) return fail("f_namelen %ld", (long)s.f_namelen);
    return PASS;
}

static int check_mmap_read(void) {
    int fd = open("data.bin", O_RDONLY);
    if (fd < 0) return fail("open: %s", E);
    // MAP_PRIVATE: a shared mapping of a direct-I/O file (cache=none) is refused by the kernel.
    uint8_t *p = mmap(NULL, 65536, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return fail("mmap: %s", E);
    for (size_t i = 0; i < 65536; i++)
        if (p[i] != pattern_byte(i)) {
            munmap(p, 65536);
            return fail("mapped byte %zu differs", i);
        }
    munmap(p, 65536);
    return PASS;
}

static int check_mmap_shared_write(void) {
    int fd = open("work/mapped", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create: %s", E);
    if (ftruncate(fd, 4096) < 0) return close(fd), fail("ftruncate: %s", E);
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        close(fd);
        if (err == ENODEV && strcmp(cache_mode, "none") == 0)
            return skip("guest kernel refuses shared mappings of direct-I/O files (cache=none)");
        return fail("mmap MAP_SHARED: %s", strerror(err));
    }
    memcpy(p, "via-mmap", 8);
    int rc = msync(p, 4096, MS_SYNC);
    munmap(p, 4096);
    close(fd);
    if (rc < 0) return fail("msync: %s", E);
    drop_caches();
    char buf[16] = {0};
    fd = open("work/mapped", O_RDONLY);
    if (fd < 0) return fail("reopen: %s", E);
    ssize_t n = read(fd, buf, 8);
    close(fd);
    if (n != 8 || memcmp(buf, "via-mmap", 8) != 0) return fail("file reads \"%s\" after msync", buf);
    return PASS;
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int check_large_file(void) {
    static uint8_t buf[1 << 20];
    uint64_t want = 0xcbf29ce484222325ull, got = want;
    int fd = open("for-host/big.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create: %s", E);
    for (uint64_t off = 0; off < BIG_SIZE; off += sizeof buf) {
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = pattern_byte(off + i);
        want = fnv1a(want, buf, sizeof buf);
        if (write_all(fd, buf, sizeof buf) < 0) return close(fd), fail("write at %llu: %s", (unsigned long long)off, E);
    }
    if (close(fd) < 0) return fail("close: %s", E);
    drop_caches();
    fd = open("for-host/big.bin", O_RDONLY);
    if (fd < 0) return fail("reopen: %s", E);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) return close(fd), fail("read at %llu: %s", (unsigned long long)total, E);
        if (n == 0) break;
        got = fnv1a(got, buf, (size_t)n);
        total += (uint64_t)n;
    }
    close(fd);
    if (total != BIG_SIZE) return fail("read back %llu bytes, want %u", (unsigned long long)total, BIG_SIZE);
    if (got != want) return fail("checksum %016llx, want %016llx", (unsigned long long)got, (unsigned long long)want);
    snprintf(detail, sizeof detail, "8 MiB fnv1a %016llx", (unsigned long long)got);
    return PASS;
}

static int check_many_files(void) {
    if (mkdir("for-host/many", 0755) < 0) return fail("mkdir: %s", E);
    char name[64], text[16];
    for (int i = 0; i < MANY_FILES; i++) {
        snprintf(name, sizeof name, "for-host/many/f%04d", i);
        snprintf(text, sizeof text, "%d\n", i);
        if (write_file(name, text, 0644) < 0) return fail("create %s: %s", name, E);
    }
    static char seen[MANY_FILES];
    memset(seen, 0, sizeof seen);
    DIR *d = opendir("for-host/many");
    if (!d) return fail("opendir: %s", E);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int i;
        if (sscanf(e->d_name, "f%4d", &i) != 1 || i < 0 || i >= MANY_FILES) {
            closedir(d);
            return fail("unexpected entry %s", e->d_name);
        }
        if (seen[i]++) {
            closedir(d);
            return fail("%s listed twice", e->d_name);
        }
        count++;
    }
    closedir(d);
    if (count != MANY_FILES) return fail("listed %d entries, want %d", count, MANY_FILES);
    return expect_text("for-host/many/f0777", "777\n");
}

// Root holds CAP_FSETID, so the kernel keeps the setuid bit when root writes.
static int check_suid_kept_on_root_write(void) {
    if (write_file("work/suid-root", "a", 0755) < 0) return fail("create: %s", E);
    if (chmod("work/suid-root", 04755) < 0) return fail("chmod: %s", E);
    int fd = open("work/suid-root", O_WRONLY | O_APPEND);
    if (fd < 0) return fail("open: %s", E);
    int rc = write_all(fd, "b", 1);
    close(fd);
    if (rc < 0) return fail("write: %s", E);
    drop_caches();
    struct stat st;
    if (stat("work/suid-root", &st) < 0) return fail("stat: %s", E);
    if ((st.st_mode & 07777) != 04755) return fail("mode %o after root write, want 4755", st.st_mode & 07777);
    return PASS;
}

// A writer without CAP_FSETID loses the setuid and setgid bits (kill-priv).
static int check_suid_cleared_on_user_write(void) {
    if (write_file("work/suid-user", "a", 0777) < 0) return fail("create: %s", E);
    if (chmod("work/suid-user", 06777) < 0) return fail("chmod: %s", E);
    pid_t pid = fork();
    if (pid < 0) return fail("fork: %s", E);
    if (pid == 0) {
        if (setgid(1000) < 0 || setuid(1000) < 0) _exit(2);
        int fd = open("work/suid-user", O_WRONLY | O_APPEND);
        if (fd < 0) _exit(3);
        if (write(fd, "b", 1) != 1) _exit(4);
        _exit(close(fd) < 0 ? 5 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail("unprivileged writer failed (step %d)", WEXITSTATUS(status));
    drop_caches();
    struct stat st;
    if (stat("work/suid-user", &st) < 0) return fail("stat: %s", E);
    if (st.st_mode & (S_ISUID | S_ISGID)) return fail("mode %o after uid 1000 wrote, want 0777", st.st_mode & 07777);
    if (st.st_size != 2) return fail("size %lld, want 2", (long long)st.st_size);
    return PASS;
}

// Opening with O_TRUNC as a user who is neither root nor the owner drops setuid and
// setgid: the guest kernel's own mode change is lost when OPEN truncates (atomic
// O_TRUNC), so without killpriv v2 only the daemon can do it.
static int check_suid_cleared_on_user_trunc(void) {
    if (write_file("work/suid-trunc", "program", 0777) < 0) return fail("create: %s", E);
    if (chmod("work/suid-trunc", 06777) < 0) return fail("chmod: %s", E);
    pid_t pid = fork();
    if (pid < 0) return fail("fork: %s", E);
    if (pid == 0) {
        if (setgid(1000) < 0 || setuid(1000) < 0) _exit(2);
        int fd = open("work/suid-trunc", O_WRONLY | O_TRUNC);
        if (fd < 0) _exit(3);
        _exit(close(fd) < 0 ? 4 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail("unprivileged O_TRUNC failed (step %d)", WEXITSTATUS(status));
    drop_caches();
    struct stat st;
    if (stat("work/suid-trunc", &st) < 0) return fail("stat: %s", E);
    if (st.st_size != 0) return fail("size %lld, want 0", (long long)st.st_size);
    if (st.st_mode & (S_ISUID | S_ISGID)) return fail("mode %o after uid 1000 truncated, want 0777", st.st_mode & 07777);
    return PASS;
}

// Changing the owner of a setuid file drops the bit, even for root (Linux >= 2.2.13).
static int check_suid_cleared_on_chown(void) {
    if (write_file("work/suid-chown", "a", 0755) < 0) return fail("create: %s", E);
    if (chmod("work/suid-chown", 04755) < 0) return fail("chmod: %s", E);
    if (chown("work/suid-chown", 1000, 1000) < 0) return fail("chown: %s", E);
    drop_caches();
    struct stat st;
    if (stat("work/suid-chown", &st) < 0) return fail("stat: %s", E);
    if (st.st_mode & S_ISUID) return fail("mode %o after chown, want setuid cleared", st.st_mode & 07777);
    return PASS;
}

static int check_tmpfile_linkat(void) {
    int fd = open("work", O_TMPFILE | O_RDWR, 0600);
    if (fd < 0) {
        // The kernel (FUSE 7.37+) sends FUSE_TMPFILE; a daemon that answers ENOSYS makes it
        // EOPNOTSUPP. The op is optional (QEMU's C daemon lacks it), so this is not a failure.
        if (errno == EOPNOTSUPP)
            return skip("O_TMPFILE: %s (daemon does not implement the optional FUSE_TMPFILE)", E);
        return fail("O_TMPFILE: %s", E);
    }
    if (write_all(fd, "anon", 4) < 0) return close(fd), fail("write: %s", E);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int rc = linkat(AT_FDCWD, proc, AT_FDCWD, "work/from-tmpfile", AT_SYMLINK_FOLLOW);
    close(fd);
    if (rc < 0) return fail("linkat: %s", E);
    return expect_text("work/from-tmpfile", "anon");
}

static int check_fallocate(void) {
    int fd = open("work/falloc", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create: %s", E);
    if (fallocate(fd, 0, 0, 1 << 20) < 0) return close(fd), fail("fallocate: %s", E);
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size != (1 << 20)) return close(fd), fail("size %lld after fallocate 1 MiB", (long long)st.st_size);
    if (st.st_blocks < 2048) return close(fd), fail("only %lld blocks allocated", (long long)st.st_blocks);
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) < 0) return close(fd), fail("fallocate KEEP_SIZE: %s", E);
    if (fstat(fd, &st) < 0 || st.st_size != (1 << 20)) return close(fd), fail("KEEP_SIZE changed size to %lld", (long long)st.st_size);
    if (pwrite(fd, "xxxx", 4, 0) != 4) return close(fd), fail("pwrite: %s", E);
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0)
        return close(fd), fail("punch hole: %s", E);
    char buf[4] = {1, 1, 1, 1};
    ssize_t n = pread(fd, buf, 4, 0);
    close(fd);
    if (n != 4 || buf[0] || buf[1] || buf[2] || buf[3]) return fail("punched range does not read as zeros");
    return PASS;
}

static int check_lseek_data_hole(void) {
    int fd = open("work/sparse", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create: %s", E);
    static char block[4096];
    memset(block, 'd', sizeof block);
    if (pwrite(fd, block, sizeof block, 0) != (ssize_t)sizeof block ||
        pwrite(fd, block, sizeof block, 1 << 20) != (ssize_t)sizeof block)
        return close(fd), fail("pwrite: %s", E);
    if (fsync(fd) < 0) return close(fd), fail("fsync: %s", E);
    off_t d0 = lseek(fd, 0, SEEK_DATA);
    off_t h0 = lseek(fd, 0, SEEK_HOLE);
    off_t d1 = lseek(fd, 8192, SEEK_DATA);
    off_t h1 = lseek(fd, (1 << 20) + 10, SEEK_HOLE);
    off_t past = lseek(fd, (1 << 20) + 8192, SEEK_DATA);
    int past_errno = errno;
    close(fd);
    // The host file system (ext4) keeps the hole, and the daemon must report it.
    if (d0 != 0 || h0 != 4096 || d1 != (1 << 20) || h1 != (1 << 20) + 4096)
        return fail("SEEK_DATA 0->%lld, SEEK_HOLE 0->%lld, SEEK_DATA 8192->%lld, SEEK_HOLE ->%lld",
                    (long long)d0, (long long)h0, (long long)d1, (long long)h1);
    if (past != -1 || past_errno != ENXIO) return fail("SEEK_DATA past the end gave %lld, want ENXIO", (long long)past);
    return PASS;
}

static int check_flock(void) {
    if (write_file("work/flocked", "l", 0644) < 0) return fail("create: %s", E);
    int a = open("work/flocked", O_RDWR), b = open("work/flocked", O_RDWR);
    if (a < 0 || b < 0) return fail("open: %s", E);
    int r = PASS;
    if (flock(a, LOCK_EX) < 0) r = fail("flock LOCK_EX: %s", E);
    else if (flock(b, LOCK_EX | LOCK_NB) == 0) r = fail("second exclusive flock was granted");
    else if (errno != EWOULDBLOCK) r = fail("second flock: %s, want EWOULDBLOCK", E);
    else if (flock(a, LOCK_UN) < 0) r = fail("unlock: %s", E);
    else if (flock(b, LOCK_EX | LOCK_NB) < 0) r = fail("flock after unlock: %s", E);
    close(a);
    close(b);
    return r;
}

static int check_fcntl_locks(void) {
    if (write_file("work/posix-locked", "0123456789", 0644) < 0) return fail("create: %s", E);
    int fd = open("work/posix-locked", O_RDWR);
    if (fd < 0) return fail("open: %s", E);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 5};
    if (fcntl(fd, F_SETLK, &fl) < 0) return close(fd), fail("F_SETLK: %s", E);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return close(fd), fail("fork: %s", E);
    if (pid == 0) {
        int cfd = open("work/posix-locked", O_RDWR);
        if (cfd < 0) _exit(2);
        struct flock c = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 1};
        if (fcntl(cfd, F_SETLK, &c) == 0) _exit(3);                  // conflict not seen
        if (errno != EAGAIN && errno != EACCES) _exit(4);
        if (fcntl(cfd, F_GETLK, &c) < 0) _exit(5);
        // With --locks the daemon holds the lock as an open-file-description lock, which
        // has no owning process: the guest is told pid 0.
        if (c.l_type != F_WRLCK || (c.l_pid != parent && !(want_locks && c.l_pid == 0))) _exit(6); // wrong owner
        struct flock free_range = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 5};
        if (fcntl(cfd, F_SETLK, &free_range) < 0) _exit(7);          // disjoint range must lock
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(fd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail("lock test in child failed at step %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return PASS;
}

// A lock request that has to wait must not hold up the share: while one process blocks in
// F_SETLKW (or a blocking flock), another's lookup on the share completes; the waiter gets
// the lock once the holder lets go; and a signal meanwhile never surfaces as errno 512
// (ERESTARTSYS, what the guest made of an EINTR the daemon sent without a signal pending).
// Run with --locks (daemon -o posix_lock,flock), so the locks reach the daemon.
static volatile sig_atomic_t lock_waiter_signalled;
static void on_lock_waiter_signal(int signo) { (void)signo; lock_waiter_signalled = 1; }

// 1 when fd has something to read within ms milliseconds.
static int readable_within(int fd, int ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR) {}
    return n > 0;
}

// Waits up to `seconds` for child pid; its exit status, or -1 (then it is killed).
static int wait_child(pid_t pid, int seconds) {
    int status;
    for (int i = 0; i < seconds * 100; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    return -1;
}

static int lock_wait_case(const char *path, int use_flock) {
    if (write_file(path, "0123456789", 0644) < 0) return fail("create: %s", E);
    int fd = open(path, O_RDWR);
    if (fd < 0) return fail("open: %s", E);
    struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if ((use_flock ? flock(fd, LOCK_EX) : fcntl(fd, F_SETLK, &whole)) < 0) return close(fd), fail("first lock: %s", E);
    int report[2];
    if (pipe(report) < 0) return close(fd), fail("pipe: %s", E);
    pid_t waiter = fork();
    if (waiter < 0) return close(fd), fail("fork: %s", E);
    if (waiter == 0) {
        // No SA_RESTART: an interrupted wait would come back as EINTR.
        struct sigaction sa = {.sa_handler = on_lock_waiter_signal};
        sigaction(SIGUSR1, &sa, NULL);
        int cfd = open(path, O_RDWR);
        if (cfd < 0) _exit(2);
        if (write(report[1], "s", 1) != 1) _exit(3);
        struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        int rc = use_flock ? flock(cfd, LOCK_EX) : fcntl(cfd, F_SETLKW, &w);
        int e = rc < 0 ? errno : 0;
        if (write(report[1], &e, sizeof e) != sizeof e) _exit(4);
        _exit(0);
    }
    close(report[1]);
    int r = PASS;
    int interrupted = 0; // the signal ended the wait (with EINTR, as on a local file system)
    char started;
    if (read(report[0], &started, 1) != 1) r = fail("the waiter did not start");
    // Give the waiter time to be inside its lock request on the daemon.
    if (r == PASS) usleep(500000);
    if (r == PASS && readable_within(report[0], 0)) r = fail("the second lock was granted while the first was held");
    if (r == PASS) {
        // A third process looks up a name nobody looked up before: a request to the daemon,
        // on the same queue as the waiting lock.
        pid_t prober = fork();
        if (prober == 0) {
            char name[64];
            snprintf(name, sizeof name, "work/lock-probe-%d-%d", (int)getpid(), use_flock);
            struct stat st;
            _exit(stat(name, &st) < 0 && errno == ENOENT ? 0 : 1);
        }
        int status = prober < 0 ? -2 : wait_child(prober, 60);
        if (status != 0) r = fail("lookup beside the waiting lock: status %d", status);
        // The lookup came back while the lock request still waits.
        else if (readable_within(report[0], 0)) r = fail("the lookup was answered only after the waiting lock request ended");
    }
    if (r == PASS) {
        // Over virtio-fs the guest kernel does not pass a signal on to the daemon: the wait goes on.
        kill(waiter, SIGUSR1);
        usleep(300000);
        if (readable_within(report[0], 0)) {
            int e = 0;
            if (read(report[0], &e, sizeof e) != sizeof e) r = fail("lost the waiter's report");
            else if (e != EINTR)
                r = fail("a signal ended the wait with errno %d (%s)", e, e == 512 ? "ERESTARTSYS leaked" : strerror(e));
            else {
                interrupted = 1;
                snprintf(detail, sizeof detail, "the signal ended the wait with EINTR");
            }
        }
    }
    // The holder lets go: the waiter gets the lock.
    if (use_flock) flock(fd, LOCK_UN);
    else {
        whole.l_type = F_UNLCK;
        fcntl(fd, F_SETLK, &whole);
    }
    if (r == PASS && !interrupted) {
        int e = -1;
        if (!readable_within(report[0], 60000) || read(report[0], &e, sizeof e) != sizeof e)
            r = fail("the waiter never got the lock after it was released");
        else if (e == 512) r = fail("the wait ended with errno 512 (ERESTARTSYS leaked)");
        else if (e != 0 && e != EINTR) r = fail("the wait ended with %s", strerror(e));
        else snprintf(detail, sizeof detail, "%s after the release", e == 0 ? "granted" : "EINTR");
    }
    close(report[0]);
    close(fd);
    if (wait_child(waiter, 60) != 0 && r == PASS) r = fail("waiter exited badly");
    return r;
}

static int check_lock_wait_fcntl(void) { return lock_wait_case("work/lock-wait-fcntl", 0); }
static int check_lock_wait_flock(void) { return lock_wait_case("work/lock-wait-flock", 1); }

// A file the host replaces (new inode under the old name) while the guest holds it in
// its caches must show the new content once the cache timeout (cache=auto: 1 s) has
// passed. run.sh watches for the request file and does the replacing. Not run with
// cache=always, where stale data is what the user asked for.
static int check_host_replace_seen(void) {
    int r = expect_text("changing.txt", "version 1\n");
    if (r != PASS) return r;
    if (write_file("work/please-replace", "now", 0644) < 0) return fail("create request: %s", E);
    struct stat st;
    int waited = 0;
    while (stat("work/replaced", &st) < 0) {
        if (++waited > 300) return fail("the host never answered the request (30 s)");
        usleep(100000);
    }
    char buf[64] = "";
    for (int i = 0; i < 50; i++) { // up to 5 s: well past the 1 s timeout of cache=auto
        if (read_file("changing.txt", buf, sizeof buf) >= 0 && strcmp(buf, "version 2\n") == 0) return PASS;
        usleep(100000);
    }
    return fail("changing.txt still reads \"%s\" 5 s after the host replaced it (%s)", buf,
                buf[0] ? "stale" : strerror(errno));
}

// Stats every file of a tree larger than the daemon's descriptor limit. The guest
// kernel keeps all those inodes cached, so a daemon holding one open fd per inode
// runs out (EMFILE) unless it falls back to file handles.
static int check_big_tree_walk(void) {
    long ok = 0, errors = 0;
    char first_error[1024] = "";
    DIR *top = opendir("big");
    if (!top) return fail("opendir big: %s", E);
    struct dirent *d;
    while ((d = readdir(top)) != NULL) {
        if (d->d_name[0] == '.') continue;
        char path[300];
        snprintf(path, sizeof path, "big/%s", d->d_name);
        DIR *sub = opendir(path);
        if (!sub) {
            if (!errors++) snprintf(first_error, sizeof first_error, "opendir %s: %s", path, E);
            continue;
        }
        struct dirent *f;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.') continue;
            struct stat st;
            if (fstatat(dirfd(sub), f->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) ok++;
            else if (!errors++) snprintf(first_error, sizeof first_error, "stat %s/%s: %s", path, f->d_name, E);
        }
        closedir(sub);
    }
    closedir(top);
    if (errors || ok != big_tree)
        return fail("stat'ed %ld of %ld files, %ld errors; first: %s", ok, big_tree, errors, first_error);
    // The walked inodes stay referenced by the guest; known files must still open.
    if (expect_text("hello.txt", "hello from the host\n") != PASS) return FAIL;
    snprintf(detail, sizeof detail, "%ld files", ok);
    return PASS;
}

// Leaves a known set of objects in for-host/ that run.sh inspects from the host.
static int check_files_for_host(void) {
    if (write_file("for-host/guest-wrote.txt", "written by the guest\n", 0644) < 0) return fail("create: %s", E);
    if (chmod("for-host/guest-wrote.txt", 0640) < 0) return fail("chmod: %s", E);
    if (chown("for-host/guest-wrote.txt", 1234, 5678) < 0) return fail("chown: %s", E);
    if (mkdir("for-host/guest-dir", 0750) < 0) return fail("mkdir: %s", E);
    if (write_file("for-host/guest-dir/inner.txt", "inner\n", 0600) < 0) return fail("create inner: %s", E);
    if (symlink("guest-wrote.txt", "for-host/guest-symlink") < 0) return fail("symlink: %s", E);
    if (link("for-host/guest-wrote.txt", "for-host/guest-hardlink") < 0) return fail("link: %s", E);
    if (write_file("for-host/before-rename.txt", "renamed\n", 0644) < 0) return fail("create: %s", E);
    if (rename("for-host/before-rename.txt", "for-host/after-rename.txt") < 0) return fail("rename: %s", E);
    if (write_file("for-host/removed.txt", "x", 0644) < 0 || unlink("for-host/removed.txt") < 0)
        return fail("create+unlink: %s", E);
    if (mkfifo("for-host/fifo", 0640) < 0) return fail("mkfifo: %s", E);
    struct timespec ts[2] = {{1500000000, 0}, {1234567890, 0}};
    if (write_file("for-host/dated.txt", "d", 0644) < 0 || utimensat(AT_FDCWD, "for-host/dated.txt", ts, 0) < 0)
        return fail("utimensat: %s", E);
    if (write_file("for-host/truncated.txt", "0123456789", 0644) < 0 || truncate("for-host/truncated.txt", 4) < 0)
        return fail("truncate: %s", E);
    if (want_xattr && setxattr("for-host/guest-wrote.txt", "user.guest.note", "from-guest", 10, 0) < 0)
        return fail("setxattr: %s", E);
    return PASS;
}

// ---------------------------------------------------------------- xattr mapping
// Run with the daemon's rules ":prefix:all::user.virtiofs.::bad:all:::": every guest
// name is stored under "user.virtiofs." on the host, and host names without that
// prefix are invisible to the guest.

static int check_xattrmap_hides_host_names(void) {
    char buf[256];
    if (getxattr("xattr-file", "user.e2e.color", buf, sizeof buf) >= 0)
        return fail("the host's unprefixed user.e2e.color is visible");
    if (errno != ENODATA) return fail("getxattr: %s, want ENODATA", E);
    ssize_t n = listxattr("xattr-file", buf, sizeof buf);
    if (n < 0) return fail("listxattr: %s", E);
    if (n != 0) return fail("listxattr shows %zd bytes of host names", n);
    return PASS;
}

static int check_xattrmap_trusted_round_trip(void) {
    if (write_file("for-host/mapped.txt", "m", 0644) < 0) return fail("create: %s", E);
    if (setxattr("for-host/mapped.txt", "trusted.overlay.x", "1", 1, 0) < 0)
        return fail("setxattr trusted.overlay.x: %s", E);
    char buf[256];
    ssize_t n = getxattr("for-host/mapped.txt", "trusted.overlay.x", buf, sizeof buf);
    if (n != 1 || buf[0] != '1') return fail("getxattr gave %zd: %s", n, n < 0 ? E : "wrong value");
    n = listxattr("for-host/mapped.txt", buf, sizeof buf);
    if (n != (ssize_t)sizeof "trusted.overlay.x" || memcmp(buf, "trusted.overlay.x", (size_t)n) != 0)
        return fail("listxattr gave %zd bytes, want only trusted.overlay.x", n);
    return PASS;
}

struct check {
    const char *name;
    int (*fn)(void);
    int when; // 1: only with xattrs on, -1: only with xattrs off, 2: not with cache=always,
              // 3: only with --big-tree, 4: only with --xattrmap, 5: only with --locks, 0: always
};

static const struct check checks[] = {
    {"read_known", check_read_known, 0},
    {"readdir", check_readdir, 0},
    {"stat_sizes_modes", check_stat_sizes_modes, 0},
    {"tree_walk", check_tree_walk, 0},
    {"symlink_readlink", check_symlink_readlink, 0},
    {"hardlink", check_hardlink, 0},
    {"xattr_get_list", check_xattr_get_list, 1},
    {"xattr_set_remove", check_xattr_set_remove, 1},
    {"xattr_disabled", check_xattr_disabled, -1},
    {"xattrmap_hides_host_names", check_xattrmap_hides_host_names, 4},
    {"xattrmap_trusted_round_trip", check_xattrmap_trusted_round_trip, 4},
    {"create_write_read", check_create_write_read, 0},
    {"append", check_append, 0},
    {"truncate", check_truncate, 0},
    {"rename", check_rename, 0},
    {"rename_noreplace", check_rename_noreplace, 0},
    {"rename_exchange", check_rename_exchange, 0},
    {"mkdir_rmdir", check_mkdir_rmdir, 0},
    {"unlink", check_unlink, 0},
    {"chmod_chown", check_chmod_chown, 0},
    {"utimensat", check_utimensat, 0},
    {"mknod_fifo", check_mknod_fifo, 0},
    {"fsync", check_fsync, 0},
    {"statfs", check_statfs, 0},
    {"mmap_read", check_mmap_read, 0},
    {"mmap_shared_write", check_mmap_shared_write, 0},
    {"large_file_8m", check_large_file, 0},
    {"many_files_1000", check_many_files, 0},
    {"suid_kept_root_write", check_suid_kept_on_root_write, 0},
    {"suid_cleared_user_write", check_suid_cleared_on_user_write, 0},
    {"suid_cleared_user_trunc", check_suid_cleared_on_user_trunc, 0},
    {"suid_cleared_chown", check_suid_cleared_on_chown, 0},
    {"tmpfile_linkat", check_tmpfile_linkat, 0},
    {"fallocate", check_fallocate, 0},
    {"lseek_data_hole", check_lseek_data_hole, 0},
    {"flock", check_flock, 0},
    {"fcntl_locks", check_fcntl_locks, 0},
    {"lock_wait_fcntl", check_lock_wait_fcntl, 5},
    {"lock_wait_flock", check_lock_wait_flock, 5},
    {"host_replace_seen", check_host_replace_seen, 2},
    {"files_for_host", check_files_for_host, 0},
    {"big_tree_walk", check_big_tree_walk, 3},
};

static int print_pattern(const char *count) {
    char *end;
    unsigned long long n = strtoull(count, &end, 10);
    if (*end) return 2;
    static uint8_t buf[1 << 16];
    for (unsigned long long off = 0; off < n;) {
        size_t chunk = n - off < sizeof buf ? (size_t)(n - off) : sizeof buf;
        for (size_t i = 0; i < chunk; i++) buf[i] = pattern_byte(off + i);
        if (write_all(1, buf, chunk) < 0) return 1;
        off += chunk;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pattern") == 0 && i + 1 < argc) return print_pattern(argv[i + 1]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else if (strcmp(argv[i], "--xattr") == 0) want_xattr = 1;
        else if (strcmp(argv[i], "--xattrmap") == 0) want_xattrmap = 1;
        else if (strcmp(argv[i], "--locks") == 0) want_locks = 1;
        else if (strcmp(argv[i], "--host") == 0) on_host = 1;
        else if (strncmp(argv[i], "--cache=", 8) == 0) cache_mode = argv[i] + 8;
        else if (strncmp(argv[i], "--big-tree=", 11) == 0) big_tree = strtol(argv[i] + 11, NULL, 10);
        else {
            fprintf(stderr, "usage: checks --dir MOUNT [--xattr] [--xattrmap] [--locks] [--cache=MODE] [--big-tree=N] [--only NAME] [--host] | --pattern N\n");
            return 2;
        }
    }
    if (!dir) return fprintf(stderr, "checks: --dir is required\n"), 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (chdir(dir) < 0) return printf("CHECK chdir FAIL %s: %s\n", dir, E), 1;
    umask(022);
    if (mkdir("work", 0755) < 0 && errno != EEXIST) return printf("CHECK setup FAIL mkdir work: %s\n", E), 1;
    if (mkdir("for-host", 0755) < 0 && errno != EEXIST) return printf("CHECK setup FAIL mkdir for-host: %s\n", E), 1;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        const struct check *c = &checks[i];
        if ((c->when == 1 && !want_xattr) || (c->when == -1 && want_xattr)) continue;
        if (c->when == 2 && strcmp(cache_mode, "always") == 0) continue;
        if (c->when == 3 && big_tree <= 0) continue;
        if (c->when == 4 && !want_xattrmap) continue;
        if (c->when == 5 && !want_locks) continue;
        if (only && strcmp(only, c->name) != 0) continue;
        detail[0] = 0;
        errno = 0;
        int r = c->fn();
        if (r == PASS) passed++;
        else if (r == FAIL) failed++;
        else skipped++;
        printf("CHECK %s %s %s\n", c->name, r == PASS ? "PASS" : r == FAIL ? "FAIL" : "SKIP",
               detail[0] ? detail : "-");
    }
    printf("CHECKS_DONE %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
