#define _GNU_SOURCE
#include "cvfs_passthrough.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <sys/file.h>
#include <linux/falloc.h>
#include <linux/openat2.h>

const int CVFS_XATTR_CREATE = XATTR_CREATE;
const int CVFS_XATTR_REPLACE = XATTR_REPLACE;
const long CVFS_UTIME_NOW = UTIME_NOW;
const long CVFS_UTIME_OMIT = UTIME_OMIT;
const int CVFS_CLONE_FS = CLONE_FS;
const uint64_t CVFS_RESOLVE_BENEATH = RESOLVE_BENEATH;
const uint64_t CVFS_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const int CVFS_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;
_Static_assert(CVFS_DIRENT64_INO_OFFSET == offsetof(struct dirent64, d_ino), "d_ino");
_Static_assert(CVFS_DIRENT64_OFF_OFFSET == offsetof(struct dirent64, d_off), "d_off");
_Static_assert(CVFS_DIRENT64_RECLEN_OFFSET == offsetof(struct dirent64, d_reclen), "d_reclen");
_Static_assert(CVFS_DIRENT64_TYPE_OFFSET == offsetof(struct dirent64, d_type), "d_type");
_Static_assert(CVFS_DIRENT64_NAME_OFFSET == offsetof(struct dirent64, d_name), "d_name");

ssize_t cvfs_getdents64(int fd, void *buf, size_t len) {
    return (ssize_t)syscall(SYS_getdents64, fd, buf, len);
}

int cvfs_flock(int fd, int operation) { return flock(fd, operation); }

ssize_t cvfs_fgetxattr(int fd, const char *name, void *value, size_t size) {
    return fgetxattr(fd, name, value, size);
}
int cvfs_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags) {
    return fsetxattr(fd, name, value, size, flags);
}
ssize_t cvfs_flistxattr(int fd, char *list, size_t size) { return flistxattr(fd, list, size); }
int cvfs_fremovexattr(int fd, const char *name) { return fremovexattr(fd, name); }

ssize_t cvfs_getxattr(const char *path, const char *name, void *value, size_t size) {
    return getxattr(path, name, value, size);
}
int cvfs_setxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
    return setxattr(path, name, value, size, flags);
}
ssize_t cvfs_listxattr(const char *path, char *list, size_t size) { return listxattr(path, list, size); }
int cvfs_removexattr(const char *path, const char *name) { return removexattr(path, name); }
