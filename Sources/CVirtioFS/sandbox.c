#define _GNU_SOURCE
#include "cvfs_sandbox.h"

#include <unistd.h>
#include <sys/mount.h>
#include <sys/prctl.h>

const unsigned long CVFS_MS_REC = MS_REC;
const unsigned long CVFS_MS_SLAVE = MS_SLAVE;
const unsigned long CVFS_MS_PRIVATE = MS_PRIVATE;
const unsigned long CVFS_MS_BIND = MS_BIND;
const unsigned long CVFS_MS_NOSUID = MS_NOSUID;
const unsigned long CVFS_MS_NODEV = MS_NODEV;
const unsigned long CVFS_MS_NOEXEC = MS_NOEXEC;
const unsigned long CVFS_MS_RELATIME = MS_RELATIME;
const int CVFS_MNT_DETACH = MNT_DETACH;

const int CVFS_PR_SET_NO_NEW_PRIVS = PR_SET_NO_NEW_PRIVS;
const int CVFS_PR_SET_PDEATHSIG = PR_SET_PDEATHSIG;
const int CVFS_PR_GET_SECCOMP = PR_GET_SECCOMP;

int cvfs_mount(const char *source, const char *target, const char *fstype,
               unsigned long flags, const void *data) {
    return mount(source, target, fstype, flags, data);
}

int cvfs_umount2(const char *target, int flags) { return umount2(target, flags); }

int cvfs_chroot(const char *path) { return chroot(path); }

pid_t cvfs_fork(void) { return fork(); }
