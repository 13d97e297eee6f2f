// Constants of the /dev/fuse character device that Swift cannot import
// (they are function-like macros in linux/fuse.h).
#ifndef CVFS_FUSE_H
#define CVFS_FUSE_H

// ioctl(new_fd, CVFS_FUSE_DEV_IOC_CLONE, &session_fd): attach a fresh open of
// /dev/fuse to an existing connection, so each thread reads its own channel.
extern const unsigned long CVFS_FUSE_DEV_IOC_CLONE;

#endif
