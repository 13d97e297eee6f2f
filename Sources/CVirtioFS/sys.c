#define _GNU_SOURCE
#include "cvfs_sys.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <stdio.h>
#include <linux/fs.h>
#include <linux/falloc.h>

const int CVFS_O_PATH = O_PATH;
const int CVFS_O_TMPFILE = O_TMPFILE;
const int CVFS_O_DIRECT = O_DIRECT;
const int CVFS_O_NOATIME = O_NOATIME;
const int CVFS_AT_EMPTY_PATH = AT_EMPTY_PATH;
const int CVFS_AT_SYMLINK_NOFOLLOW = AT_SYMLINK_NOFOLLOW;
const int CVFS_AT_REMOVEDIR = AT_REMOVEDIR;
const int CVFS_AT_SYMLINK_FOLLOW = AT_SYMLINK_FOLLOW;
const int CVFS_AT_NO_AUTOMOUNT = AT_NO_AUTOMOUNT;
const unsigned int CVFS_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int CVFS_RENAME_EXCHANGE = RENAME_EXCHANGE;
const unsigned int CVFS_RENAME_WHITEOUT = RENAME_WHITEOUT;
const int CVFS_SEEK_DATA = SEEK_DATA;
const int CVFS_SEEK_HOLE = SEEK_HOLE;
const int CVFS_F_OFD_GETLK = F_OFD_GETLK;
const int CVFS_F_OFD_SETLK = F_OFD_SETLK;
const int CVFS_F_OFD_SETLKW = F_OFD_SETLKW;
const int CVFS_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int CVFS_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int CVFS_CLONE_NEWNS = CLONE_NEWNS;
const int CVFS_CLONE_NEWPID = CLONE_NEWPID;
const int CVFS_CLONE_NEWNET = CLONE_NEWNET;
const int CVFS_CLONE_NEWUSER = CLONE_NEWUSER;
const int CVFS_EFD_CLOEXEC = EFD_CLOEXEC;
const int CVFS_EFD_NONBLOCK = EFD_NONBLOCK;
const unsigned int CVFS_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int CVFS_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;
const int CVFS_F_ADD_SEALS = F_ADD_SEALS;
const int CVFS_F_GET_SEALS = F_GET_SEALS;
const int CVFS_F_SEAL_SEAL = F_SEAL_SEAL;
const int CVFS_F_SEAL_SHRINK = F_SEAL_SHRINK;
const int CVFS_F_SEAL_GROW = F_SEAL_GROW;
const int CVFS_MAX_HANDLE_SZ = MAX_HANDLE_SZ;

int cvfs_thread_setresuid(uid_t ruid, uid_t euid, uid_t suid) {
    return (int)syscall(SYS_setresuid, ruid, euid, suid);
}

int cvfs_thread_setresgid(gid_t rgid, gid_t egid, gid_t sgid) {
    return (int)syscall(SYS_setresgid, rgid, egid, sgid);
}

int cvfs_thread_setgroups(size_t count, const gid_t *groups) {
    return (int)syscall(SYS_setgroups, count, groups);
}

int cvfs_unshare(int flags) { return unshare(flags); }

int cvfs_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}

int cvfs_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int cvfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

int cvfs_statx_identity(int dirfd, const char *path, int flags, struct stat *out, uint64_t *mnt_id) {
    struct statx stx;
    if (statx(dirfd, path, flags, STATX_BASIC_STATS | STATX_MNT_ID, &stx) < 0) return -1;
    memset(out, 0, sizeof(*out));
    out->st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    out->st_ino = stx.stx_ino;
    out->st_mode = stx.stx_mode;
    out->st_nlink = stx.stx_nlink;
    out->st_uid = stx.stx_uid;
    out->st_gid = stx.stx_gid;
    out->st_rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    out->st_size = (off_t)stx.stx_size;
    out->st_blksize = stx.stx_blksize;
    out->st_blocks = (blkcnt_t)stx.stx_blocks;
    out->st_atim.tv_sec = stx.stx_atime.tv_sec;
    out->st_atim.tv_nsec = stx.stx_atime.tv_nsec;
    out->st_mtim.tv_sec = stx.stx_mtime.tv_sec;
    out->st_mtim.tv_nsec = stx.stx_mtime.tv_nsec;
    out->st_ctim.tv_sec = stx.stx_ctime.tv_sec;
    out->st_ctim.tv_nsec = stx.stx_ctime.tv_nsec;
    *mnt_id = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0;
    return 0;
}

ssize_t cvfs_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    return copy_file_range(fd_in, (off64_t *)off_in, fd_out, (off64_t *)off_out, len, flags);
}

int cvfs_fallocate(int fd, int mode, int64_t offset, int64_t len) {
    return fallocate(fd, mode, offset, len);
}

int cvfs_syncfs(int fd) { return syncfs(fd); }

int cvfs_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }

int cvfs_fcntl_lock(int fd, int cmd, struct flock *lock) { return fcntl(fd, cmd, lock); }

int cvfs_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

int cvfs_name_to_handle_at(int dirfd, const char *path, void *handle, int *mount_id, int flags) {
    return name_to_handle_at(dirfd, path, (struct file_handle *)handle, mount_id, flags);
}

int cvfs_open_by_handle_at(int mount_fd, void *handle, int flags) {
    return open_by_handle_at(mount_fd, (struct file_handle *)handle, flags);
}

int cvfs_mknodat(int dirfd, const char *path, mode_t mode, dev_t dev) {
    return mknodat(dirfd, path, mode, dev);
}

int cvfs_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int cvfs_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5) {
    return prctl(option, arg2, arg3, arg4, arg5);
}

int cvfs_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int cvfs_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }

ssize_t cvfs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 16)];
    if (nfds > 16) { errno = EINVAL; return -1; }
    if (nfds > 0) {
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t cvfs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    char control[CMSG_SPACE(sizeof(int) * 16)];
    memset(&msg, 0, sizeof(msg));
    memset(control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *received = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds) {
                fds[(*nfds)++] = received[i];
            } else {
                // More descriptors than the caller takes: close them, report it.
                close(received[i]);
                *truncated = 1;
            }
        }
    }
    return n;
}
