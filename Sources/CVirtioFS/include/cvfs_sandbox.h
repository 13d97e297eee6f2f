// Mount, namespace and process-control constants and calls the sandbox needs
// that Swift's Glibc module does not expose. No logic lives here.
#ifndef CVFS_SANDBOX_H
#define CVFS_SANDBOX_H

#include <sys/types.h>

// ---- mount(2) / umount2(2) flags ----
extern const unsigned long CVFS_MS_REC;
extern const unsigned long CVFS_MS_SLAVE;
extern const unsigned long CVFS_MS_PRIVATE;
extern const unsigned long CVFS_MS_BIND;
extern const unsigned long CVFS_MS_NOSUID;
extern const unsigned long CVFS_MS_NODEV;
extern const unsigned long CVFS_MS_NOEXEC;
extern const unsigned long CVFS_MS_RELATIME;
extern const int CVFS_MNT_DETACH;

// ---- prctl(2) options ----
extern const int CVFS_PR_SET_NO_NEW_PRIVS;
extern const int CVFS_PR_SET_PDEATHSIG;
extern const int CVFS_PR_GET_SECCOMP;

int cvfs_mount(const char *source, const char *target, const char *fstype,
               unsigned long flags, const void *data);
int cvfs_umount2(const char *target, int flags);
int cvfs_chroot(const char *path);
pid_t cvfs_fork(void);

#endif
