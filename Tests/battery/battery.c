/*
 * battery: runs the same file operations in two directories, a FUSE mount served by
 * virtiofsd and a plain directory on the host filesystem that backs the share, and
 * compares what the kernel reports (return values, errno, mode, link count, size,
 * ownership, contents, listings).
 *
 *   battery MOUNT PLAIN [CHECK...]
 *
 * Prints "CHECK name PASS|FAIL detail" per check and "N passed, N failed" at the end.
 * Each check runs once per side in a fresh subdirectory, using only calls relative to
 * that directory's descriptor, and writes a transcript; the check passes when both
 * transcripts are equal and no absolute expectation failed on either side.
 * Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif

/* ---- transcript ---- */

static char transcript[1 << 20];
static size_t transcript_len;
static char broken[512];        /* first absolute expectation that failed on this side */
static const char *side;        /* "mount" or "plain" */
static const char *side_base;   /* the check's directory as a path, for path-only calls */
static int on_mount;
static char expected[512];      /* explained differences the mount showed in this check */
static int mount_writeback;     /* BATTERY_WRITEBACK=1: the mount caches writes in the kernel */
static int mount_direct_io;     /* BATTERY_CACHE=never: the mount bypasses the page cache */

/* A difference from a plain directory that the mount is known and allowed to show.
   Called on the mount side only; the explanation goes into the PASS line. */
static void expected_difference(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void expected_difference(const char *fmt, ...)
{
    size_t used = strlen(expected);
    if (used) used += (size_t)snprintf(expected + used, sizeof expected - used, "; ");
    if (used >= sizeof expected) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(expected + used, sizeof expected - used, fmt, ap);
    va_end(ap);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(transcript + transcript_len, sizeof transcript - transcript_len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    transcript_len += (size_t)n;
    if (transcript_len >= sizeof transcript - 2) transcript_len = sizeof transcript - 2;
    transcript[transcript_len++] = '\n';
    transcript[transcript_len] = 0;
}

/* An expectation that must hold on its own, not just match the other side. */
static void must(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void must(int ok, const char *fmt, ...)
{
    if (ok || broken[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(broken, sizeof broken, fmt, ap);
    va_end(ap);
}

static const char *err(long rv) { return rv < 0 ? strerrorname_np(errno) : "ok"; }

/* Records `expr`'s value and errno under `label`. */
#define R(label, expr) do { errno = 0; long rv_ = (long)(expr); \
    note("%s -> %ld %s", label, rv_ < 0 ? -1L : rv_, err(rv_)); } while (0)
/* Same, but only success/failure and errno (for descriptors and sizes that differ). */
#define E(label, expr) do { errno = 0; long rv_ = (long)(expr); \
    note("%s -> %s", label, err(rv_)); } while (0)

static void note_stat(const char *label, int dirfd, const char *name, int flags)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, flags) != 0) { note("stat %s -> %s", label, strerrorname_np(errno)); return; }
    note("stat %s -> mode=%o nlink=%lu size=%lld uid=%u gid=%u rdev=%u:%u", label, st.st_mode,
         (unsigned long)st.st_nlink, (long long)st.st_size, st.st_uid, st.st_gid,
         major(st.st_rdev), minor(st.st_rdev));
}

static void note_fstat(const char *label, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) { note("fstat %s -> %s", label, strerrorname_np(errno)); return; }
    note("fstat %s -> mode=%o nlink=%lu size=%lld uid=%u gid=%u", label, st.st_mode,
         (unsigned long)st.st_nlink, (long long)st.st_size, st.st_uid, st.st_gid);
}

/* FNV-1a over the whole file, and its length. */
static void note_content(const char *label, int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { note("content %s -> %s", label, strerrorname_np(errno)); return; }
    uint64_t h = 1469598103934665603ULL;
    long long total = 0;
    char buf[65536];
    ssize_t n;
    char head[41] = {0};
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (total < 40) memcpy(head + total, buf, (size_t)(n < 40 - total ? n : 40 - total));
        for (ssize_t i = 0; i < n; i++) { h ^= (unsigned char)buf[i]; h *= 1099511628211ULL; }
        total += n;
    }
    if (n < 0) note("content %s -> read %s", label, strerrorname_np(errno));
    for (int i = 0; i < 40; i++) if (head[i] && (head[i] < 32 || head[i] > 126)) head[i] = '.';
    note("content %s -> len=%lld fnv=%016llx head=\"%s\"", label, total, (unsigned long long)h, head);
    close(fd);
}

static int create_file(int dirfd, const char *name, mode_t mode, const char *content)
{
    int fd = openat(dirfd, name, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    size_t len = strlen(content);
    ssize_t w = write(fd, content, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

/* Sorted listing of a directory (without . and ..) in the transcript. */
static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static void note_listing(const char *label, int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { note("list %s -> %s", label, strerrorname_np(errno)); return; }
    DIR *dir = fdopendir(fd);
    char *names[256];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (count < 256) names[count++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, (size_t)count, sizeof names[0], compare_names);
    char line[4096] = "";
    for (int i = 0; i < count; i++) {
        strncat(line, names[i], sizeof line - strlen(line) - 2);
        strncat(line, " ", sizeof line - strlen(line) - 1);
        free(names[i]);
    }
    note("list %s -> [%s]", label, line);
}

/* Runs `body` in a child (optionally as uid/gid 1000) and appends its transcript. */
static void in_child(int as_user, void (*body)(int dirfd), int dirfd)
{
    int p[2];
    if (pipe(p) != 0) { must(0, "pipe: %s", strerror(errno)); return; }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        transcript_len = 0;
        transcript[0] = 0;
        broken[0] = 0;
        if (as_user) {
            gid_t none[1] = {1000};
            if (setgroups(1, none) != 0 || setresgid(1000, 1000, 1000) != 0 || setresuid(1000, 1000, 1000) != 0) {
                dprintf(p[1], "!credentials: %s\n", strerror(errno));
                _exit(1);
            }
        }
        body(dirfd);
        if (broken[0]) dprintf(p[1], "!%s\n", broken);
        if (write(p[1], transcript, transcript_len) < 0) _exit(1);
        _exit(0);
    }
    close(p[1]);
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = read(p[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)n;
    buf[got] = 0;
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    must(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child ended with status %#x", status);
    char *line = buf;
    while (line && *line) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] == '!') must(0, "child: %s", line + 1);
        else note("  %s", line);
        line = next;
    }
}

/* ---- checks ---- */

static void fill_pattern(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) buf[i] = (char)((i * 31 + seed) % 251);
}

static void check_create_read_write(int d)
{
    int fd = openat(d, "f", O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
    note("create -> %s", err(fd));
    R("write", write(fd, "hello world", 11));
    char buf[64] = {0};
    R("pread", pread(fd, buf, sizeof buf - 1, 0));
    note("pread data \"%s\"", buf);
    R("pwrite middle", pwrite(fd, "W", 1, 6));
    note_fstat("after write", fd);
    close(fd);
    E("create again O_EXCL", openat(d, "f", O_CREAT | O_EXCL | O_RDWR, 0640));
    fd = openat(d, "f", O_WRONLY | O_APPEND | O_CLOEXEC);
    R("append", write(fd, " more", 5));
    R("append again", write(fd, "!", 1));
    close(fd);
    note_content("after append", d, "f");
    fd = openat(d, "f", O_RDWR | O_CLOEXEC);
    R("ftruncate 5", ftruncate(fd, 5));
    note_content("shrunk", d, "f");
    R("ftruncate 100", ftruncate(fd, 100));
    note_content("grown", d, "f");
    R("read past end", pread(fd, buf, 10, 200));
    close(fd);
    fd = openat(d, "f", O_RDWR | O_TRUNC | O_CLOEXEC);
    note_fstat("O_TRUNC", fd);
    close(fd);
    E("open missing", openat(d, "missing", O_RDONLY));
    E("open dir for write", openat(d, ".", O_WRONLY));
    E("mkdir", mkdirat(d, "sub", 0750));
    E("mkdir again", mkdirat(d, "sub", 0750));
    note_stat("sub", d, "sub", 0);
    E("open file as dir", openat(d, "f", O_RDONLY | O_DIRECTORY));
    E("rmdir nonempty parent", unlinkat(d, ".", AT_REMOVEDIR));
    E("create in sub", create_file(d, "sub/x", 0600, "x"));
    E("rmdir nonempty", unlinkat(d, "sub", AT_REMOVEDIR));
    E("unlink dir", unlinkat(d, "sub", 0));
    E("unlink sub/x", unlinkat(d, "sub/x", 0));
    E("rmdir empty", unlinkat(d, "sub", AT_REMOVEDIR));
    E("mknod fifo", mknodat(d, "fifo", S_IFIFO | 0644, 0));
    note_stat("fifo", d, "fifo", 0);
    note_listing("dir", d, ".");
}

static void check_rename_plain(int d)
{
    create_file(d, "a", 0644, "AAAA");
    create_file(d, "b", 0644, "BB");
    mkdirat(d, "dir", 0755);
    mkdirat(d, "dir2", 0755);
    create_file(d, "dir2/inner", 0644, "i");
    E("rename a->c", renameat(d, "a", d, "c"));
    E("rename c over b", renameat(d, "c", d, "b"));
    note_content("b", d, "b");
    E("rename missing", renameat(d, "nope", d, "x"));
    E("rename file over dir", renameat(d, "b", d, "dir"));
    E("rename dir over file", renameat(d, "dir", d, "b"));
    E("rename dir over nonempty dir", renameat(d, "dir", d, "dir2"));
    E("rename dir into itself", renameat(d, "dir", d, "dir/sub"));
    E("rename file into dir", renameat(d, "b", d, "dir/b"));
    E("rename dir over empty dir", renameat(d, "dir2/..", d, "x"));
    E("rename same name", renameat(d, "dir/b", d, "dir/b"));
    note_listing("top", d, ".");
    note_listing("dir", d, "dir");
}

static void check_rename_noreplace(int d)
{
    create_file(d, "a", 0644, "A");
    create_file(d, "b", 0644, "B");
    E("noreplace to new name", renameat2(d, "a", d, "c", RENAME_NOREPLACE));
    E("noreplace onto existing", renameat2(d, "c", d, "b", RENAME_NOREPLACE));
    note_content("b untouched", d, "b");
    note_content("c", d, "c");
    note_listing("dir", d, ".");
}

static void check_rename_exchange(int d)
{
    create_file(d, "x", 0600, "xxx");
    create_file(d, "y", 0644, "y");
    mkdirat(d, "dir", 0700);
    E("exchange files", renameat2(d, "x", d, "y", RENAME_EXCHANGE));
    note_content("x", d, "x");
    note_content("y", d, "y");
    note_stat("x", d, "x", 0);
    E("exchange file and dir", renameat2(d, "x", d, "dir", RENAME_EXCHANGE));
    note_stat("x now", d, "x", 0);
    note_stat("dir now", d, "dir", 0);
    E("exchange with missing", renameat2(d, "y", d, "missing", RENAME_EXCHANGE));
    E("exchange + noreplace", renameat2(d, "y", d, "x", RENAME_EXCHANGE | RENAME_NOREPLACE));
    note_listing("dir", d, ".");
}

static void check_rename_whiteout(int d)
{
    create_file(d, "upper", 0644, "u");
    E("whiteout rename", renameat2(d, "upper", d, "moved", RENAME_WHITEOUT));
    note_stat("whiteout left behind", d, "upper", AT_SYMLINK_NOFOLLOW);
    note_content("moved", d, "moved");
    note_listing("dir", d, ".");
}

static void check_hard_links(int d)
{
    create_file(d, "f", 0644, "linked");
    E("link f g", linkat(d, "f", d, "g", 0));
    note_stat("f", d, "f", 0);
    note_stat("g", d, "g", 0);
    E("link f h", linkat(d, "f", d, "h", 0));
    note_stat("g after 3rd", d, "g", 0);
    int fd = openat(d, "h", O_WRONLY | O_APPEND);
    R("write through h", write(fd, "+", 1));
    close(fd);
    note_content("f sees it", d, "f");
    E("unlink g", unlinkat(d, "g", 0));
    note_stat("f after unlink", d, "f", 0);
    E("link onto existing", linkat(d, "f", d, "h", 0));
    mkdirat(d, "dir", 0755);
    E("link dir", linkat(d, "dir", d, "dirlink", 0));
    note_stat("dir", d, "dir", 0);
    mkdirat(d, "dir/sub", 0755);
    note_stat("dir with sub", d, "dir", 0);
    E("link missing", linkat(d, "missing", d, "m2", 0));
}

static void check_symlinks(int d)
{
    create_file(d, "target", 0644, "pointed");
    E("symlink rel", symlinkat("target", d, "s"));
    E("symlink dangling", symlinkat("no/such/thing", d, "dangling"));
    E("symlink exists", symlinkat("x", d, "s"));
    char buf[256] = {0};
    R("readlink s", readlinkat(d, "s", buf, sizeof buf));
    note("readlink s \"%s\"", buf);
    memset(buf, 0, sizeof buf);
    R("readlink short buffer", readlinkat(d, "dangling", buf, 4));
    note("readlink short \"%s\"", buf);
    R("readlink non-link", readlinkat(d, "target", buf, sizeof buf));
    note_stat("lstat s", d, "s", AT_SYMLINK_NOFOLLOW);
    note_stat("stat s", d, "s", 0);
    note_stat("stat dangling", d, "dangling", 0);
    note_content("through s", d, "s");
    E("open O_NOFOLLOW", openat(d, "s", O_RDONLY | O_NOFOLLOW));
    int fd = openat(d, "s", O_PATH | O_NOFOLLOW);
    note("O_PATH|O_NOFOLLOW -> %s", err(fd));
    if (fd >= 0) close(fd);
    char longtarget[4000];
    memset(longtarget, 'a', sizeof longtarget - 1);
    longtarget[sizeof longtarget - 1] = 0;
    E("symlink 3999 bytes", symlinkat(longtarget, d, "long"));
    char longbuf[4096];
    R("readlink long", readlinkat(d, "long", longbuf, sizeof longbuf));
    E("unlink s", unlinkat(d, "s", 0));
    note_stat("target survives", d, "target", 0);
}

static void check_readdir_5000(int d)
{
    enum { N = 5000 };
    mkdirat(d, "big", 0755);
    int bd = openat(d, "big", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int created = 0;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "entry-%05d-with-a-longer-name", i);
        int fd = openat(bd, name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) { created++; close(fd); }
    }
    note("created %d", created);
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    int dups = 0, strays = 0, dots = 0, total = 0;
    DIR *dir = fdopendir(bd);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        total++;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) { dots++; continue; }
        int i;
        if (sscanf(e->d_name, "entry-%05d-with-a-longer-name", &i) != 1 || i < 0 || i >= N) { strays++; continue; }
        if (seen[i]++) dups++;
        if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) strays++;
    }
    closedir(dir);
    int missing = 0;
    for (int i = 0; i < N; i++) if (!seen[i]) missing++;
    note("total=%d dots=%d dups=%d missing=%d strays=%d", total, dots, dups, missing, strays);
    must(dups == 0 && missing == 0 && strays == 0 && dots == 2,
         "readdir: %d duplicates, %d missing, %d strays, %d dots", dups, missing, strays, dots);
    /* seekdir/telldir back to the middle must continue from there */
    bd = openat(d, "big", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    dir = fdopendir(bd);
    long pos = 0;
    char wanted[256] = "";
    for (int i = 0; i < 2500 && (e = readdir(dir)) != NULL; i++) pos = telldir(dir);
    if ((e = readdir(dir)) != NULL) snprintf(wanted, sizeof wanted, "%s", e->d_name);
    seekdir(dir, pos);
    e = readdir(dir);
    must(e && !strcmp(e->d_name, wanted), "seekdir to telldir did not resume at %s", wanted);
    closedir(dir);
}

static void check_unlink_while_open(int d)
{
    create_file(d, "f", 0644, "still readable");
    int fd = openat(d, "f", O_RDWR | O_CLOEXEC);
    E("unlink", unlinkat(d, "f", 0));
    note_stat("gone", d, "f", 0);
    note_fstat("open fd", fd);
    char buf[64] = {0};
    R("read after unlink", pread(fd, buf, sizeof buf - 1, 0));
    note("data \"%s\"", buf);
    R("write after unlink", pwrite(fd, "STILL", 5, 0));
    memset(buf, 0, sizeof buf);
    R("read again", pread(fd, buf, sizeof buf - 1, 0));
    note("data \"%s\"", buf);
    R("ftruncate after unlink", ftruncate(fd, 3));
    note_fstat("truncated", fd);
    E("fchmod after unlink", fchmod(fd, 0600));
    note_fstat("chmodded", fd);
    close(fd);
    note_listing("dir", d, ".");
}

static struct timespec now_ts(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t; }

static void check_chmod_chown_utimens(int d)
{
    create_file(d, "f", 0644, "t");
    mkdirat(d, "dir", 0755);
    symlinkat("f", d, "link");
    E("chmod 751", fchmodat(d, "f", 0751, 0));
    note_stat("f", d, "f", 0);
    E("chmod 4755", fchmodat(d, "f", 04755, 0));
    note_stat("f suid", d, "f", 0);
    E("chmod dir 1777", fchmodat(d, "dir", 01777, 0));
    note_stat("dir sticky", d, "dir", 0);
    E("chown 1000:1000", fchownat(d, "f", 1000, 1000, 0));
    note_stat("f after chown (suid cleared)", d, "f", 0);
    E("chown -1:2000", fchownat(d, "f", (uid_t)-1, 2000, 0));
    note_stat("f group only", d, "f", 0);
    E("lchown link", fchownat(d, "link", 1234, 1234, AT_SYMLINK_NOFOLLOW));
    note_stat("link itself", d, "link", AT_SYMLINK_NOFOLLOW);
    note_stat("target unchanged", d, "f", 0);
    E("chown missing", fchownat(d, "missing", 0, 0, 0));

    struct timespec ts[2] = {{100, 123456789}, {200, 987654321}};
    E("utimensat exact", utimensat(d, "f", ts, 0));
    struct stat st;
    fstatat(d, "f", &st, 0);
    note("times atime=%ld.%09ld mtime=%ld.%09ld", (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
         (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {300, 1}};
    E("utimensat omit atime", utimensat(d, "f", omit, 0));
    fstatat(d, "f", &st, 0);
    note("times atime=%ld.%09ld mtime=%ld.%09ld", (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
         (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec before = now_ts();
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    E("utimensat now atime", utimensat(d, "f", now, 0));
    struct timespec after = now_ts();
    fstatat(d, "f", &st, 0);
    int atime_now = st.st_atim.tv_sec >= before.tv_sec - 1 && st.st_atim.tv_sec <= after.tv_sec + 1;
    note("atime is now: %d, mtime=%ld.%09ld", atime_now, (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    must(atime_now, "UTIME_NOW gave atime %ld, not %ld", (long)st.st_atim.tv_sec, (long)before.tv_sec);
    E("utimensat NULL (both now)", utimensat(d, "f", NULL, 0));
    fstatat(d, "f", &st, 0);
    note("mtime is now: %d", st.st_mtim.tv_sec >= before.tv_sec - 1);
    struct timespec link_ts[2] = {{50, 5}, {60, 6}};
    E("utimensat link nofollow", utimensat(d, "link", link_ts, AT_SYMLINK_NOFOLLOW));
    fstatat(d, "link", &st, AT_SYMLINK_NOFOLLOW);
    note("link mtime=%ld.%09ld", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    int fd = openat(d, "f", O_RDONLY);
    struct timespec fts[2] = {{400, 4}, {500, 5}};
    E("futimens", futimens(fd, fts));
    E("fchmod 600", fchmod(fd, 0600));
    E("fchown 0:0", fchown(fd, 0, 0));
    close(fd);
    fstatat(d, "f", &st, 0);
    note("after f-calls mode=%o uid=%u mtime=%ld.%09ld", st.st_mode, st.st_uid, (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

static void note_xattr_list(const char *label, ssize_t n, char *list)
{
    if (n < 0) { note("listxattr %s -> %s", label, strerrorname_np(errno)); return; }
    /* order is the filesystem's; sort so only the set counts */
    char *names[64];
    int count = 0;
    for (char *p = list; p < list + n && count < 64; p += strlen(p) + 1) names[count++] = p;
    qsort(names, (size_t)count, sizeof names[0], compare_names);
    char line[2048] = "";
    for (int i = 0; i < count; i++) {
        if (strncmp(names[i], "user.", 5) != 0) continue; /* security.* labels are the host's business */
        strncat(line, names[i], sizeof line - strlen(line) - 2);
        strncat(line, " ", sizeof line - strlen(line) - 1);
    }
    note("listxattr %s -> [%s]", label, line);
}

static void check_xattrs(int d)
{
    create_file(d, "f", 0644, "x");
    mkdirat(d, "dir", 0755);
    symlinkat("f", d, "link");
    char path[4096], dpath[4096], lpath[4096];
    snprintf(path, sizeof path, "%s/f", side_base);
    snprintf(dpath, sizeof dpath, "%s/dir", side_base);
    snprintf(lpath, sizeof lpath, "%s/link", side_base);
    E("set user.a", setxattr(path, "user.a", "1234567890", 10, 0));
    E("set user.a CREATE (exists)", setxattr(path, "user.a", "x", 1, XATTR_CREATE));
    E("set user.b REPLACE (missing)", setxattr(path, "user.b", "x", 1, XATTR_REPLACE));
    E("set user.b CREATE", setxattr(path, "user.b", "", 0, XATTR_CREATE));
    E("set user.a REPLACE", setxattr(path, "user.a", "abcdefghijkl", 12, XATTR_REPLACE));
    char buf[256] = {0};
    R("get size query", getxattr(path, "user.a", NULL, 0));
    R("get", getxattr(path, "user.a", buf, sizeof buf));
    note("value \"%s\"", buf);
    R("get small buffer", getxattr(path, "user.a", buf, 3));
    R("get empty value", getxattr(path, "user.b", buf, sizeof buf));
    R("get missing", getxattr(path, "user.none", buf, sizeof buf));
    R("get unknown namespace", getxattr(path, "bogus.x", buf, sizeof buf));
    char list[4096];
    ssize_t n = listxattr(path, NULL, 0);
    note("list size query ok: %d", n > 0);
    n = listxattr(path, list, sizeof list);
    note_xattr_list("f", n, list);
    R("list small buffer", listxattr(path, list, 2));
    int fd = openat(d, "f", O_RDONLY);
    E("fsetxattr user.c", fsetxattr(fd, "user.c", "fd", 2, 0));
    memset(buf, 0, sizeof buf);
    R("fgetxattr user.c", fgetxattr(fd, "user.c", buf, sizeof buf));
    note("value \"%s\"", buf);
    n = flistxattr(fd, list, sizeof list);
    note_xattr_list("f via fd", n, list);
    E("fremovexattr user.c", fremovexattr(fd, "user.c"));
    close(fd);
    E("remove user.a", removexattr(path, "user.a"));
    E("remove user.a again", removexattr(path, "user.a"));
    n = listxattr(path, list, sizeof list);
    note_xattr_list("f after remove", n, list);
    E("set on dir", setxattr(dpath, "user.d", "dv", 2, 0));
    memset(buf, 0, sizeof buf);
    R("get on dir", getxattr(dpath, "user.d", buf, sizeof buf));
    note("value \"%s\"", buf);
    E("lsetxattr user.* on symlink", lsetxattr(lpath, "user.l", "l", 1, 0));
    R("lgetxattr on symlink", lgetxattr(lpath, "user.l", buf, sizeof buf));
    E("setxattr through symlink", setxattr(lpath, "user.via", "v", 1, 0));
    R("get via target", getxattr(path, "user.via", buf, sizeof buf));
    char big[65536];
    memset(big, 'v', sizeof big);
    E("set 4000-byte value", setxattr(path, "user.big", big, 4000, 0));
    R("get 4000-byte value", getxattr(path, "user.big", big, sizeof big));
    E("set 65536-byte value", setxattr(path, "user.huge", big, 65536, 0));
    char longname[300] = "user.";
    memset(longname + 5, 'n', 260);
    longname[265] = 0;
    E("set name > 255", setxattr(path, longname, "v", 1, 0));
}

static void check_posix_locks(int d)
{
    create_file(d, "f", 0666, "0123456789abcdefghij");
    int ready[2], go[2];
    if (pipe(ready) || pipe(go)) { must(0, "pipe"); return; }
    pid_t pid = fork();
    if (pid == 0) {
        int fd = openat(d, "f", O_RDWR);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        char ok = fcntl(fd, F_SETLK, &fl) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) _exit(1);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        _exit(0); /* exit releases the lock */
    }
    char c = 0;
    if (read(ready[0], &c, 1) != 1) c = '?';
    note("child locked: %c", c);
    int fd = openat(d, "f", O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    E("conflicting F_SETLK write", fcntl(fd, F_SETLK, &fl));
    fl.l_type = F_RDLCK;
    E("conflicting F_SETLK read", fcntl(fd, F_SETLK, &fl));
    struct flock other = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10};
    E("disjoint F_SETLK", fcntl(fd, F_SETLK, &other));
    struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 1};
    E("F_GETLK", fcntl(fd, F_GETLK, &probe));
    note("F_GETLK type=%s start=%ld len=%ld", probe.l_type == F_WRLCK ? "W" : probe.l_type == F_UNLCK ? "U" : "R",
         (long)probe.l_start, (long)probe.l_len);
    if (probe.l_pid != pid) {
        if (on_mount) expected_difference("F_GETLK l_pid %d, not the holder %d: the daemon holds the lock as an "
                                          "open-file-description lock, which has no owning process", probe.l_pid, pid);
        else must(0, "F_GETLK l_pid %d, not the holder %d", probe.l_pid, pid);
    }
    must(probe.l_type == F_WRLCK, "F_GETLK did not report the child's lock");
    if (write(go[1], "g", 1) != 1) must(0, "pipe write");
    int status;
    waitpid(pid, &status, 0);
    fl.l_type = F_WRLCK;
    E("F_SETLK after child exit", fcntl(fd, F_SETLK, &fl));
    fl.l_type = F_UNLCK;
    E("unlock", fcntl(fd, F_SETLK, &fl));
    close(fd);
    close(ready[0]); close(ready[1]); close(go[0]); close(go[1]);
}

static void check_flock(int d)
{
    create_file(d, "f", 0666, "lock me");
    int ready[2], go[2];
    if (pipe(ready) || pipe(go)) { must(0, "pipe"); return; }
    pid_t pid = fork();
    if (pid == 0) {
        int fd = openat(d, "f", O_RDONLY);
        char ok = flock(fd, LOCK_EX | LOCK_NB) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) _exit(1);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        flock(fd, LOCK_UN);
        if (write(ready[1], "u", 1) != 1) _exit(1);
        if (read(go[0], &c, 1) != 1) _exit(1);
        _exit(0);
    }
    char c = 0;
    if (read(ready[0], &c, 1) != 1) c = '?';
    note("child locked: %c", c);
    int fd = openat(d, "f", O_RDONLY);
    E("flock EX|NB while held", flock(fd, LOCK_EX | LOCK_NB));
    E("flock SH|NB while held", flock(fd, LOCK_SH | LOCK_NB));
    if (write(go[1], "g", 1) != 1) must(0, "pipe write");
    if (read(ready[0], &c, 1) != 1) c = '?';
    E("flock EX|NB after unlock", flock(fd, LOCK_EX | LOCK_NB));
    E("flock UN", flock(fd, LOCK_UN));
    E("flock SH", flock(fd, LOCK_SH | LOCK_NB));
    if (write(go[1], "g", 1) != 1) must(0, "pipe write");
    int status;
    waitpid(pid, &status, 0);
    close(fd);
    close(ready[0]); close(ready[1]); close(go[0]); close(go[1]);
}

static void as_user_1000(int d)
{
    E("read 0600 root file", openat(d, "secret", O_RDONLY));
    E("read 0644 root file", openat(d, "public", O_RDONLY));
    E("write 0644 root file", openat(d, "public", O_WRONLY));
    E("open in 0700 root dir", openat(d, "private/inside", O_RDONLY));
    E("list 0700 root dir", openat(d, "private", O_RDONLY | O_DIRECTORY));
    note_stat("stat in 0700 dir", d, "private/inside", 0);
    E("create in 0755 root dir", openat(d, "pub/new", O_CREAT | O_WRONLY, 0644));
    E("unlink in 0755 root dir", unlinkat(d, "pub/file", 0));
    E("chmod root file", fchmodat(d, "public", 0777, 0));
    E("chown root file to self", fchownat(d, "public", 1000, 1000, 0));
    E("utimensat root file explicit", utimensat(d, "public", (struct timespec[2]){{1, 0}, {1, 0}}, 0));
    char path[4096];
    snprintf(path, sizeof path, "%s/public", side_base);
    E("setxattr user.* on root file", setxattr(path, "user.x", "1", 1, 0));
    int fd = openat(d, "open/mine", O_CREAT | O_EXCL | O_WRONLY, 0640);
    note("create in 0777 dir -> %s", err(fd));
    if (fd >= 0) { note_fstat("created as 1000", fd); close(fd); }
    E("mkdir in 0777 dir", mkdirat(d, "open/mydir", 0750));
    note_stat("mydir", d, "open/mydir", 0);
    E("unlink root file in sticky dir", unlinkat(d, "sticky/rootfile", 0));
    E("rename root file in sticky dir", renameat(d, "sticky/rootfile", d, "sticky/stolen"));
    E("symlink in 0777 dir", symlinkat("x", d, "open/mylink"));
    note_stat("mylink", d, "open/mylink", AT_SYMLINK_NOFOLLOW);
    E("chmod own file", fchmodat(d, "open/mine", 0600, 0));
    E("chown own file to root", fchownat(d, "open/mine", 0, 0, 0));
    E("chgrp own file to other group", fchownat(d, "open/mine", (uid_t)-1, 0, 0));
    E("read group-readable root file", openat(d, "group1000", O_RDONLY));
    E("write group-readable root file", openat(d, "group1000", O_WRONLY));
}

static void check_permissions_uid1000(int d)
{
    create_file(d, "secret", 0600, "top secret");
    fchmodat(d, "secret", 0600, 0);
    create_file(d, "public", 0644, "everyone");
    create_file(d, "group1000", 0640, "group");
    fchownat(d, "group1000", 0, 1000, 0);
    mkdirat(d, "private", 0700);
    create_file(d, "private/inside", 0644, "hidden");
    mkdirat(d, "pub", 0755);
    create_file(d, "pub/file", 0644, "f");
    mkdirat(d, "open", 0777);
    fchmodat(d, "open", 0777, 0);
    mkdirat(d, "sticky", 0777);
    fchmodat(d, "sticky", 01777, 0);
    create_file(d, "sticky/rootfile", 0666, "r");
    fchmodat(d, "sticky/rootfile", 0666, 0);
    in_child(1, as_user_1000, d);
}

static void writer_1000(int d)
{
    int fd = openat(d, "suid-sgid", O_WRONLY);
    R("write 06777 file", write(fd, "x", 1));
    close(fd);
    fd = openat(d, "sgid-noexec", O_WRONLY);
    R("write 02666 file", write(fd, "x", 1));
    close(fd);
    fd = openat(d, "sgid-only", O_WRONLY);
    R("write 02777 file", pwrite(fd, "y", 1, 100));
    close(fd);
    fd = openat(d, "sgid-own-group", O_WRONLY);
    R("write 02666 file of own group", write(fd, "x", 1));
    close(fd);
    fd = openat(d, "trunc-me", O_WRONLY);
    R("ftruncate 06777 file", ftruncate(fd, 1));
    close(fd);
}

static void check_setgid_cleared_on_write(int d)
{
    create_file(d, "suid-sgid", 0777, "data");
    fchmodat(d, "suid-sgid", 06777, 0);
    create_file(d, "sgid-noexec", 0666, "data");
    fchmodat(d, "sgid-noexec", 02666, 0);
    create_file(d, "sgid-only", 0777, "data");
    fchmodat(d, "sgid-only", 02777, 0);
    create_file(d, "sgid-own-group", 0666, "data");
    fchownat(d, "sgid-own-group", 0, 1000, 0);
    fchmodat(d, "sgid-own-group", 02666, 0);
    create_file(d, "trunc-me", 0777, "data");
    fchmodat(d, "trunc-me", 06777, 0);
    note_stat("before", d, "suid-sgid", 0);
    in_child(1, writer_1000, d);
    note_stat("suid-sgid after write", d, "suid-sgid", 0);
    note_stat("sgid-noexec after write", d, "sgid-noexec", 0);
    note_stat("sgid-only after write", d, "sgid-only", 0);
    note_stat("sgid-own-group after write", d, "sgid-own-group", 0);
    note_stat("trunc-me after ftruncate", d, "trunc-me", 0);
    struct stat st;
    fstatat(d, "suid-sgid", &st, 0);
    must((st.st_mode & (S_ISUID | S_ISGID)) == 0, "write by a non-owner left mode %o", st.st_mode);
    /* root (CAP_FSETID) writing keeps the bits */
    fchmodat(d, "sgid-only", 02777, 0);
    int fd = openat(d, "sgid-only", O_WRONLY);
    R("root write", write(fd, "z", 1));
    close(fd);
    note_stat("sgid-only after root write", d, "sgid-only", 0);
}

static void creator_1000(int d)
{
    int fd = openat(d, "shared/by1000", O_CREAT | O_WRONLY | O_CLOEXEC, 0664);
    note("create in setgid dir -> %s", err(fd));
    if (fd >= 0) close(fd);
    E("mkdir in setgid dir", mkdirat(d, "shared/dir1000", 0775));
    E("access W_OK on 0644 root file", faccessat(d, "public-ro", W_OK, 0));
    E("access R_OK on 0644 root file", faccessat(d, "public-ro", R_OK, 0));
    E("utimensat UTIME_NOW on 0666 root file", utimensat(d, "public-rw", NULL, 0));
    E("utimensat explicit on 0666 root file", utimensat(d, "public-rw", (struct timespec[2]){{5, 0}, {5, 0}}, 0));
}

static void check_umask_and_setgid_directories(int d)
{
    mode_t old = umask(027);
    int fd = openat(d, "masked", O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    note("create under umask 027 -> %s", err(fd));
    if (fd >= 0) close(fd);
    note_stat("masked", d, "masked", 0);
    E("mkdir under umask 027", mkdirat(d, "maskdir", 0777));
    note_stat("maskdir", d, "maskdir", 0);
    umask(old);
    /* a setgid directory of group 2000: new entries take its group; subdirectories keep the bit */
    create_file(d, "public-ro", 0644, "r");
    create_file(d, "public-rw", 0666, "w");
    fchmodat(d, "public-rw", 0666, 0);
    E("root access X_OK on 0644 file", faccessat(d, "public-ro", X_OK, 0));
    E("root access W_OK on 0444 file", (fchmodat(d, "public-ro", 0444, 0), faccessat(d, "public-ro", W_OK, 0)));
    fchmodat(d, "public-ro", 0644, 0);
    mkdirat(d, "shared", 0777);
    fchownat(d, "shared", 0, 2000, 0);
    E("chmod 2777", fchmodat(d, "shared", 02777, 0));
    in_child(1, creator_1000, d);
    note_stat("file made by 1000", d, "shared/by1000", 0);
    note_stat("dir made by 1000", d, "shared/dir1000", 0);
    E("root mkdir in setgid dir", mkdirat(d, "shared/rootdir", 0755));
    note_stat("dir made by root", d, "shared/rootdir", 0);
}

static void check_large_offsets(int d)
{
    int fd = openat(d, "big", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    off_t far = (off_t)5 << 30; /* past 4 GiB: 64-bit offsets end to end */
    R("pwrite at 5 GiB", pwrite(fd, "far away", 8, far));
    char buf[16] = {0};
    R("pread at 5 GiB", pread(fd, buf, 8, far));
    note("data \"%s\"", buf);
    R("pread in the hole", pread(fd, buf, 8, 1 << 30));
    note("hole byte %d", buf[0]);
    note_fstat("big", fd);
    static char chunk[1 << 20];
    fill_pattern(chunk, sizeof chunk, 5);
    long total = 0;
    for (int i = 0; i < 8; i++) { ssize_t w = pwrite(fd, chunk, sizeof chunk, (off_t)i * (off_t)sizeof chunk); if (w > 0) total += w; }
    note("wrote 8 MiB: %ld", total);
    R("fsync", fsync(fd));
    R("truncate to 3 MiB + 1", ftruncate(fd, (3 << 20) + 1));
    close(fd);
    note_content("big", d, "big");
    char path[4096];
    snprintf(path, sizeof path, "%s/big", side_base);
    E("truncate(2) by path", truncate(path, 1000));
    note_stat("after path truncate", d, "big", 0);
    fd = openat(d, "big", O_RDONLY | O_DIRECT | O_CLOEXEC);
    note("O_DIRECT open -> %s", err(fd));
    if (fd >= 0) close(fd);
}

static void check_directory_link_counts(int d)
{
    mkdirat(d, "a", 0755);
    mkdirat(d, "b", 0755);
    mkdirat(d, "a/child", 0755);
    note_stat("a with child", d, "a", 0);
    note_stat("b empty", d, "b", 0);
    E("move child to b", renameat(d, "a/child", d, "b/child"));
    note_stat("a after move", d, "a", 0);
    note_stat("b after move", d, "b", 0);
    note_stat("child", d, "b/child", 0);
    E("rmdir child", unlinkat(d, "b/child", AT_REMOVEDIR));
    note_stat("b after rmdir", d, "b", 0);
    note_stat("top", d, ".", 0);
    E("rmdir a", unlinkat(d, "a", AT_REMOVEDIR));
    E("stat removed", fstatat(d, "a", &(struct stat){0}, 0));
    note_listing("top", d, ".");
}

static void check_tmpfile(int d)
{
    int fd = openat(d, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0640);
    note("O_TMPFILE -> %s", err(fd));
    if (fd < 0) return;
    R("write", write(fd, "temporary", 9));
    note_fstat("unnamed", fd);
    note_listing("no name yet", d, ".");
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    E("linkat via /proc/self/fd", linkat(AT_FDCWD, proc, d, "named", AT_SYMLINK_FOLLOW));
    note_stat("named", d, "named", 0);
    note_content("named", d, "named");
    E("linkat AT_EMPTY_PATH", linkat(fd, "", d, "second", AT_EMPTY_PATH));
    note_fstat("two names", fd);
    close(fd);
    fd = openat(d, ".", O_TMPFILE | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    note("O_TMPFILE|O_EXCL -> %s", err(fd));
    if (fd >= 0) {
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        E("link O_EXCL tmpfile", linkat(AT_FDCWD, proc, d, "never", AT_SYMLINK_FOLLOW));
        close(fd);
    }
    E("O_TMPFILE on a file", openat(d, "named", O_TMPFILE | O_RDWR, 0600));
    note_listing("dir", d, ".");
}


static void check_copy_file_range(int d)
{
    static char buf[300000];
    fill_pattern(buf, sizeof buf, 7);
    int src = openat(d, "src", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    R("write src", write(src, buf, sizeof buf));
    int dst = openat(d, "dst", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    R("write dst", write(dst, "prefix", 6));
    loff_t in = 1000, out = 3;
    R("copy_file_range 200000", copy_file_range(src, &in, dst, &out, 200000, 0));
    note("offsets in=%lld out=%lld", (long long)in, (long long)out);
    in = 299990;
    R("copy past end of source", copy_file_range(src, &in, dst, &out, 100, 0));
    in = 400000;
    R("copy at end of source", copy_file_range(src, &in, dst, &out, 100, 0));
    R("copy with flags", copy_file_range(src, NULL, dst, NULL, 10, 1));
    int ro = openat(d, "src", O_RDONLY | O_CLOEXEC);
    R("copy into read-only fd", copy_file_range(src, NULL, ro, NULL, 10, 0));
    R("copy using file offsets", copy_file_range(src, NULL, dst, NULL, 4096, 0));
    close(ro);
    close(src);
    close(dst);
    note_content("dst", d, "dst");
    note_stat("dst", d, "dst", 0);
}

static void check_seek_data_hole(int d)
{
    int fd = openat(d, "sparse", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    char block[4096];
    fill_pattern(block, sizeof block, 3);
    R("write head", pwrite(fd, block, sizeof block, 0));
    R("write tail", pwrite(fd, block, sizeof block, 1 << 20));
    if (on_mount && mount_writeback) {
        /* The kernel does not write back dirty pages before FUSE_LSEEK: until then the
           host file the daemon asks is still empty. */
        off_t early = lseek(fd, 0, SEEK_DATA);
        if (early != 0) expected_difference("SEEK_DATA before fsync gave %ld (%s): with writeback caching the kernel "
                                            "asks the daemon before flushing dirty pages", (long)early, err(early));
        fsync(fd);
    }
    R("SEEK_DATA 0", lseek(fd, 0, SEEK_DATA));
    R("SEEK_HOLE 0", lseek(fd, 0, SEEK_HOLE));
    R("SEEK_DATA 8192", lseek(fd, 8192, SEEK_DATA));
    R("SEEK_HOLE 1M", lseek(fd, 1 << 20, SEEK_HOLE));
    R("SEEK_DATA at end", lseek(fd, (1 << 20) + 4096, SEEK_DATA));
    R("SEEK_HOLE past end", lseek(fd, 10 << 20, SEEK_HOLE));
    R("SEEK_END", lseek(fd, 0, SEEK_END));
    R("SEEK_SET negative", lseek(fd, -1, SEEK_SET));
    close(fd);
    note_stat("sparse", d, "sparse", 0);
}

static void note_blocks(const char *label, int fd)
{
    struct stat st;
    fstat(fd, &st);
    note("%s size=%lld blocks=%lld", label, (long long)st.st_size, (long long)st.st_blocks);
}

static void check_fallocate(int d)
{
    int fd = openat(d, "f", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    R("fallocate 64K", fallocate(fd, 0, 0, 65536));
    note_blocks("allocated", fd);
    R("fallocate KEEP_SIZE to 128K", fallocate(fd, FALLOC_FL_KEEP_SIZE, 65536, 65536));
    note_blocks("kept size", fd);
    char buf[65536];
    fill_pattern(buf, sizeof buf, 9);
    R("fill", pwrite(fd, buf, sizeof buf, 0));
    R("fsync", fsync(fd));
    R("punch 4K..12K", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192));
    note_blocks("punched", fd);
    char back[8192];
    R("read hole", pread(fd, back, sizeof back, 4096));
    int zero = 1;
    for (size_t i = 0; i < sizeof back; i++) if (back[i]) zero = 0;
    note("hole reads zeros: %d", zero);
    must(zero, "punched range does not read back as zeros");
    R("punch without KEEP_SIZE", fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));
    R("zero range", fallocate(fd, FALLOC_FL_ZERO_RANGE, 20000, 100));
    R("negative length", fallocate(fd, 0, 0, -1));
    close(fd);
    note_content("after", d, "f");
    fd = openat(d, "f", O_RDONLY);
    R("fallocate read-only fd", fallocate(fd, 0, 0, 4096));
    close(fd);
}

static struct statfs plain_statfs; /* the plain side runs second: compare against the mount's */
static struct statfs mount_statfs;

static void check_statfs(int d)
{
    struct statfs s;
    R("fstatfs", fstatfs(d, &s));
    if (on_mount) mount_statfs = s; else plain_statfs = s;
    note("bsize>0: %d blocks>0: %d bfree<=blocks: %d bavail<=bfree: %d files>0: %d namelen=%ld",
         s.f_bsize > 0, s.f_blocks > 0, s.f_bfree <= s.f_blocks, s.f_bavail <= s.f_bfree, s.f_files > 0, (long)s.f_namelen);
    if (!on_mount) {
        /* the same filesystem underneath: the same size in bytes, free space nearly the same */
        unsigned long long mb = (unsigned long long)mount_statfs.f_blocks * (unsigned long long)mount_statfs.f_frsize;
        unsigned long long pb = (unsigned long long)plain_statfs.f_blocks * (unsigned long long)plain_statfs.f_frsize;
        must(mb == pb, "total bytes differ: mount %llu, plain %llu", mb, pb);
        must(mount_statfs.f_files == plain_statfs.f_files, "f_files differ: %llu vs %llu",
             (unsigned long long)mount_statfs.f_files, (unsigned long long)plain_statfs.f_files);
        unsigned long long mf = (unsigned long long)mount_statfs.f_bfree * (unsigned long long)mount_statfs.f_frsize;
        unsigned long long pf = (unsigned long long)plain_statfs.f_bfree * (unsigned long long)plain_statfs.f_frsize;
        unsigned long long diff = mf > pf ? mf - pf : pf - mf;
        must(diff < (1ULL << 30), "free bytes differ by %llu", diff);
        must(mount_statfs.f_type != plain_statfs.f_type, "FUSE should report its own f_type");
    }
}

static int mmap_skipped_on_mount;
static void check_mmap_shared(int d)
{
    if (!on_mount && mmap_skipped_on_mount) { mmap_skipped_on_mount = 0; return; }
    int fd = openat(d, "f", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    R("ftruncate 8192", ftruncate(fd, 8192));
    char *map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED && on_mount && mount_direct_io && errno == ENODEV) {
        expected_difference("shared writable mmap is ENODEV with cache=never (direct I/O without FUSE_DIRECT_IO_ALLOW_MMAP)");
        mmap_skipped_on_mount = 1;
        transcript_len = 0; /* the plain side skips too */
        transcript[0] = 0;
        close(fd);
        return;
    }
    note("mmap -> %s", map == MAP_FAILED ? strerrorname_np(errno) : "ok");
    if (map == MAP_FAILED) { close(fd); return; }
    memcpy(map + 100, "written through the map", 23);
    memcpy(map + 5000, "second page", 11);
    char buf[32] = {0};
    R("read(2) sees it", pread(fd, buf, 23, 100));
    note("read \"%s\"", buf);
    R("pwrite", pwrite(fd, "PW", 2, 5000));
    note("map sees pwrite: %d", memcmp(map + 5000, "PWcond page", 11) == 0);
    R("msync", msync(map, 8192, MS_SYNC));
    munmap(map, 8192);
    close(fd);
    note_content("after unmap", d, "f");
    char *ro = NULL;
    fd = openat(d, "f", O_RDONLY | O_CLOEXEC);
    ro = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    note("writable map of read-only fd -> %s", ro == MAP_FAILED ? strerrorname_np(errno) : "ok");
    if (ro != MAP_FAILED) munmap(ro, 8192);
    close(fd);
}

static void check_many_open_files(int d)
{
    enum { N = 2000 };
    static int fds[N];
    mkdirat(d, "many", 0755);
    int md = openat(d, "many", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int opened = 0, written = 0, readback = 0;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%04d", i);
        fds[i] = openat(md, name, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
        if (fds[i] >= 0) opened++;
    }
    for (int i = 0; i < N; i++) {
        if (fds[i] < 0) continue;
        char tag[16];
        int len = snprintf(tag, sizeof tag, "#%d", i);
        if (pwrite(fds[i], tag, (size_t)len, 0) == len) written++;
    }
    for (int i = 0; i < N; i++) {
        if (fds[i] < 0) continue;
        char tag[16], want[16];
        int len = snprintf(want, sizeof want, "#%d", i);
        if (pread(fds[i], tag, sizeof tag, 0) == len && !memcmp(tag, want, (size_t)len)) readback++;
        close(fds[i]);
    }
    close(md);
    note("opened=%d written=%d readback=%d", opened, written, readback);
    must(opened == N && written == N && readback == N, "only %d/%d/%d of %d", opened, written, readback, N);
}

/* ---- driver ---- */

struct check { const char *name; void (*run)(int dirfd); };
static const struct check checks[] = {
    {"create_read_write_append_truncate", check_create_read_write},
    {"rename_plain", check_rename_plain},
    {"rename_noreplace", check_rename_noreplace},
    {"rename_exchange", check_rename_exchange},
    {"rename_whiteout", check_rename_whiteout},
    {"hard_links_nlink", check_hard_links},
    {"symlinks_readlink", check_symlinks},
    {"readdir_5000", check_readdir_5000},
    {"unlink_while_open", check_unlink_while_open},
    {"chmod_chown_utimensat", check_chmod_chown_utimens},
    {"xattr_user", check_xattrs},
    {"posix_locks", check_posix_locks},
    {"flock", check_flock},
    {"permissions_uid1000", check_permissions_uid1000},
    {"setgid_cleared_on_write", check_setgid_cleared_on_write},
    {"umask_and_setgid_directories", check_umask_and_setgid_directories},
    {"large_offsets_truncate", check_large_offsets},
    {"directory_link_counts", check_directory_link_counts},
    {"tmpfile_linkat", check_tmpfile},
    {"copy_file_range", check_copy_file_range},
    {"seek_data_hole", check_seek_data_hole},
    {"fallocate_punch_hole", check_fallocate},
    {"statfs", check_statfs},
    {"mmap_shared", check_mmap_shared},
    {"many_open_files", check_many_open_files},
};

/* Runs one check on one side; returns a malloc'd transcript, sets *why when it broke. */
static char *run_side(const struct check *c, const char *root, int mount_side, char *why, size_t why_len)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, c->name);
    transcript_len = 0;
    transcript[0] = 0;
    broken[0] = 0;
    if (mount_side) expected[0] = 0;
    side = mount_side ? "mount" : "plain";
    side_base = dir;
    on_mount = mount_side;
    if (mkdir(dir, 0755) != 0 || chmod(dir, 0755) != 0) {
        snprintf(why, why_len, "%s: mkdir %s: %s", side, dir, strerror(errno));
        return strdup("");
    }
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) {
        snprintf(why, why_len, "%s: open %s: %s", side, dir, strerror(errno));
        return strdup("");
    }
    c->run(d);
    close(d);
    if (broken[0]) snprintf(why, why_len, "%s: %s", side, broken);
    return strdup(transcript);
}

/* The first line where the transcripts differ, both versions. */
static void first_difference(const char *a, const char *b, char *out, size_t len)
{
    int line = 1;
    while (*a || *b) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la)) {
            snprintf(out, len, "line %d: mount \"%.*s\" vs plain \"%.*s\"", line, (int)la, a, (int)lb, b);
            return;
        }
        a += la + (ea ? 1 : 0);
        b += lb + (eb ? 1 : 0);
        line++;
    }
    snprintf(out, len, "no difference");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MOUNT PLAIN [CHECK...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    umask(022);
    /* 2000 files at once, plus the rest */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int verbose = getenv("BATTERY_VERBOSE") != NULL;
    const char *cache = getenv("BATTERY_CACHE");
    mount_direct_io = cache && !strcmp(cache, "never");
    const char *wb = getenv("BATTERY_WRITEBACK");
    mount_writeback = wb && !strcmp(wb, "1");
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        const struct check *c = &checks[i];
        if (argc > 3) {
            int wanted = 0;
            for (int a = 3; a < argc; a++) if (!strcmp(argv[a], c->name)) wanted = 1;
            if (!wanted) continue;
        }
        struct timespec started = now_ts();
        char why_mount[4800] = "", why_plain[4800] = "";
        char *m = run_side(c, argv[1], 1, why_mount, sizeof why_mount);
        char *p = run_side(c, argv[2], 0, why_plain, sizeof why_plain);
        char detail[4800];
        int ok = 0;
        if (why_mount[0]) snprintf(detail, sizeof detail, "%s", why_mount);
        else if (why_plain[0]) snprintf(detail, sizeof detail, "%s", why_plain);
        else if (strcmp(m, p) != 0) first_difference(m, p, detail, sizeof detail);
        else ok = 1;
        if (ok) {
            int lines = 0;
            for (const char *s = m; *s; s++) if (*s == '\n') lines++;
            snprintf(detail, sizeof detail, "%d observations match%s%s", lines,
                     expected[0] ? "; expected difference: " : "", expected);
        }
        struct timespec ended = now_ts();
        long ms = (ended.tv_sec - started.tv_sec) * 1000 + (ended.tv_nsec - started.tv_nsec) / 1000000;
        printf("CHECK %s %s %s (%ld ms)\n", c->name, ok ? "PASS" : "FAIL", detail, ms);
        if (verbose) printf("---- mount transcript\n%s---- plain transcript\n%s----\n", m, p);
        if (ok) passed++; else failed++;
        free(m);
        free(p);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
