// System calls and constants that Swift's Glibc module does not expose, or
// exposes with the wrong semantics for us. No logic lives here.
// _GNU_SOURCE stays in the .c file: defining it here breaks the module import.
#ifndef CVFS_SYS_H
#define CVFS_SYS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/stat.h>

// ---- GNU-only constants ----
extern const int CVFS_O_PATH;
extern const int CVFS_O_TMPFILE;
extern const int CVFS_O_DIRECT;
extern const int CVFS_O_NOATIME;
extern const int CVFS_AT_EMPTY_PATH;
extern const int CVFS_AT_SYMLINK_NOFOLLOW;
extern const int CVFS_AT_REMOVEDIR;
extern const int CVFS_AT_SYMLINK_FOLLOW;
extern const int CVFS_AT_NO_AUTOMOUNT;
extern const unsigned int CVFS_RENAME_NOREPLACE;
extern const unsigned int CVFS_RENAME_EXCHANGE;
extern const unsigned int CVFS_RENAME_WHITEOUT;
extern const int CVFS_SEEK_DATA;
extern const int CVFS_SEEK_HOLE;
extern const int CVFS_F_OFD_GETLK;
extern const int CVFS_F_OFD_SETLK;
extern const int CVFS_F_OFD_SETLKW;
extern const int CVFS_FALLOC_FL_KEEP_SIZE;
extern const int CVFS_FALLOC_FL_PUNCH_HOLE;
extern const int CVFS_CLONE_NEWNS;
extern const int CVFS_CLONE_NEWPID;
extern const int CVFS_CLONE_NEWNET;
extern const int CVFS_CLONE_NEWUSER;
extern const int CVFS_EFD_CLOEXEC;
extern const int CVFS_EFD_NONBLOCK;
extern const unsigned int CVFS_MFD_CLOEXEC;
extern const unsigned int CVFS_MFD_ALLOW_SEALING;
// File seals (fcntl F_ADD_SEALS / F_GET_SEALS on memfds and shmem files).
extern const int CVFS_F_ADD_SEALS;
extern const int CVFS_F_GET_SEALS;
extern const int CVFS_F_SEAL_SEAL;
extern const int CVFS_F_SEAL_SHRINK;
extern const int CVFS_F_SEAL_GROW;
extern const int CVFS_MAX_HANDLE_SZ;

// ---- per-thread credentials ----
// glibc's setresuid/setresgid/setgroups change every thread of the process
// (they broadcast a signal); the raw system calls change only the caller.
int cvfs_thread_setresuid(uid_t ruid, uid_t euid, uid_t suid);
int cvfs_thread_setresgid(gid_t rgid, gid_t egid, gid_t sgid);
int cvfs_thread_setgroups(size_t count, const gid_t *groups);
// Per-thread unshare of the filesystem attributes (umask, cwd).
int cvfs_unshare(int flags);

// ---- files ----
int cvfs_openat(int dirfd, const char *path, int flags, mode_t mode);
int cvfs_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
int cvfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
// Reads st_dev/st_ino and the mount id of `path` relative to dirfd in one call.
int cvfs_statx_identity(int dirfd, const char *path, int flags, struct stat *out, uint64_t *mnt_id);
ssize_t cvfs_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags);
int cvfs_fallocate(int fd, int mode, int64_t offset, int64_t len);
int cvfs_syncfs(int fd);
int cvfs_fcntl_int(int fd, int cmd, int arg);
int cvfs_fcntl_lock(int fd, int cmd, struct flock *lock);
int cvfs_ioctl_ptr(int fd, unsigned long request, void *arg);
// File handles: `handle` points at a buffer of CVFS_MAX_HANDLE_SZ + 8 bytes
// (struct file_handle); *mount_id receives the mount id.
int cvfs_name_to_handle_at(int dirfd, const char *path, void *handle, int *mount_id, int flags);
int cvfs_open_by_handle_at(int mount_fd, void *handle, int flags);
int cvfs_mknodat(int dirfd, const char *path, mode_t mode, dev_t dev);

// ---- processes, namespaces, mounts ----
int cvfs_pivot_root(const char *new_root, const char *put_old);
int cvfs_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);
int cvfs_memfd_create(const char *name, unsigned int flags);
int cvfs_eventfd(unsigned int initval, int flags);

// ---- unix sockets with SCM_RIGHTS ----
// Sends len bytes plus nfds descriptors in one message. Returns bytes sent or -1.
ssize_t cvfs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
// Receives up to len bytes; up to max_fds descriptors land in fds and *nfds.
// *truncated is set when the kernel dropped descriptors or data (MSG_CTRUNC).
ssize_t cvfs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated);

#endif
