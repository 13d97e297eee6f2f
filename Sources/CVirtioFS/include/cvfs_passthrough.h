// System calls and constants the passthrough backend needs that Swift's Glibc
// module does not expose. No logic lives here.
#ifndef CVFS_PASSTHROUGH_H
#define CVFS_PASSTHROUGH_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <dirent.h>
// POSIX ACL xattr layout and tags (ACL_USER, ACL_GROUP, POSIX_ACL_XATTR_VERSION).
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>

extern const int CVFS_XATTR_CREATE;
extern const int CVFS_XATTR_REPLACE;
extern const long CVFS_UTIME_NOW;
extern const long CVFS_UTIME_OMIT;
extern const int CVFS_CLONE_FS;
extern const uint64_t CVFS_RESOLVE_BENEATH;
extern const uint64_t CVFS_RESOLVE_NO_MAGICLINKS;
extern const int CVFS_FALLOC_FL_ZERO_RANGE;

// Reads raw `struct linux_dirent64` records (d_ino u64, d_off s64, d_reclen u16,
// d_type u8, name) into buf.
ssize_t cvfs_getdents64(int fd, void *buf, size_t len);

// Where the fields of one getdents64 record lie: offsetof in glibc's
// `struct dirent64`, which has the kernel's `struct linux_dirent64` layout.
// Enum constants rather than `extern const`: Swift folds them, and READDIR reads
// them for every record. `struct dirent64` needs _GNU_SOURCE, which this header must
// not define, so they are taken from `struct dirent`; passthrough.c checks at compile
// time that each equals the `struct dirent64` offset.
enum {
    CVFS_DIRENT64_INO_OFFSET = offsetof(struct dirent, d_ino),
    CVFS_DIRENT64_OFF_OFFSET = offsetof(struct dirent, d_off),
    CVFS_DIRENT64_RECLEN_OFFSET = offsetof(struct dirent, d_reclen),
    CVFS_DIRENT64_TYPE_OFFSET = offsetof(struct dirent, d_type),
    CVFS_DIRENT64_NAME_OFFSET = offsetof(struct dirent, d_name),
};

// BSD whole-file lock (the Swift name clashes with `struct flock`).
int cvfs_flock(int fd, int operation);

// Extended attributes on an open descriptor.
ssize_t cvfs_fgetxattr(int fd, const char *name, void *value, size_t size);
int cvfs_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags);
ssize_t cvfs_flistxattr(int fd, char *list, size_t size);
int cvfs_fremovexattr(int fd, const char *name);
// Extended attributes by path (resolved from the thread's working directory).
ssize_t cvfs_getxattr(const char *path, const char *name, void *value, size_t size);
int cvfs_setxattr(const char *path, const char *name, const void *value, size_t size, int flags);
ssize_t cvfs_listxattr(const char *path, char *list, size_t size);
int cvfs_removexattr(const char *path, const char *name);

#endif
