#define _GNU_SOURCE
#include "cvfs_fuse.h"

#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/fuse.h>

const unsigned long CVFS_FUSE_DEV_IOC_CLONE = FUSE_DEV_IOC_CLONE;
