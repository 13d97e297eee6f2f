// Wire formats. FUSE and virtio rings come from the kernel's own headers; the
// vhost-user message bodies have no kernel header, so they are declared here
// from QEMU's docs/interop/vhost-user.rst.
#ifndef CVFS_WIRE_H
#define CVFS_WIRE_H

#include <stdint.h>
#include <linux/fuse.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_config.h>
#include <linux/virtio_fs.h>
#include <linux/vhost_types.h>

// Added to linux/fuse.h after the 6.1 headers Debian 12 ships (same 7.38 protocol).
#ifndef FUSE_CREATE_SUPP_GROUP
#define FUSE_CREATE_SUPP_GROUP (1ULL << 34)
#define CVFS_FUSE_EXT_GROUPS 32
struct fuse_supp_groups {
    uint32_t nr_groups;
    uint32_t groups[];
};
#else
#define CVFS_FUSE_EXT_GROUPS FUSE_EXT_GROUPS
#endif

// Protocol 7.39 (Linux 6.6): direct-I/O files may still be mmapped shared.
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif

// linux/fuse.h defines these as enums or unsigned long long macros that Swift
// imports unevenly; export them with fixed types.
static const uint64_t CVFS_FUSE_SECURITY_CTX = FUSE_SECURITY_CTX;
static const uint64_t CVFS_FUSE_CREATE_SUPP_GROUP = FUSE_CREATE_SUPP_GROUP;
static const uint64_t CVFS_FUSE_HAS_EXPIRE_ONLY = FUSE_HAS_EXPIRE_ONLY;
static const uint64_t CVFS_FUSE_DIRECT_IO_ALLOW_MMAP = FUSE_DIRECT_IO_ALLOW_MMAP;

// ---- split virtqueues: flags and feature bits from the kernel's headers ----
// linux/virtio_ring.h and linux/virtio_config.h spell these as untyped macros
// (bit numbers for features); export them with the types the rings and the
// feature words use, features as masks.
static const uint16_t CVFS_VRING_DESC_F_NEXT = VRING_DESC_F_NEXT;
static const uint16_t CVFS_VRING_DESC_F_WRITE = VRING_DESC_F_WRITE;
static const uint16_t CVFS_VRING_DESC_F_INDIRECT = VRING_DESC_F_INDIRECT;
static const uint16_t CVFS_VRING_USED_F_NO_NOTIFY = VRING_USED_F_NO_NOTIFY;
static const uint16_t CVFS_VRING_AVAIL_F_NO_INTERRUPT = VRING_AVAIL_F_NO_INTERRUPT;
static const uint64_t CVFS_VIRTIO_RING_F_INDIRECT_DESC_MASK = 1ULL << VIRTIO_RING_F_INDIRECT_DESC;
static const uint64_t CVFS_VIRTIO_RING_F_EVENT_IDX_MASK = 1ULL << VIRTIO_RING_F_EVENT_IDX;
static const uint64_t CVFS_VIRTIO_F_VERSION_1_MASK = 1ULL << VIRTIO_F_VERSION_1;
// VHOST_F_LOG_ALL (linux/vhost_types.h): the frontend may ask us to log the pages we write.
static const uint64_t CVFS_VHOST_F_LOG_ALL_MASK = 1ULL << VHOST_F_LOG_ALL;

// ---- vhost-user ----

#define CVFS_VHOST_USER_VERSION 0x1
#define CVFS_VHOST_USER_VERSION_MASK 0x3
#define CVFS_VHOST_USER_REPLY_MASK (0x1 << 2)
#define CVFS_VHOST_USER_NEED_REPLY_MASK (0x1 << 3)
#define CVFS_VHOST_USER_MAX_FDS 8
// Bit in SET_VRING_KICK/CALL/ERR payloads: no fd accompanies the message.
#define CVFS_VHOST_USER_VRING_NOFD_MASK (0x1 << 8)
#define CVFS_VHOST_USER_VRING_IDX_MASK 0xff

// Frontend -> backend requests.
enum cvfs_vhost_user_request {
    CVFS_VHOST_USER_GET_FEATURES = 1,
    CVFS_VHOST_USER_SET_FEATURES = 2,
    CVFS_VHOST_USER_SET_OWNER = 3,
    CVFS_VHOST_USER_RESET_OWNER = 4,
    CVFS_VHOST_USER_SET_MEM_TABLE = 5,
    CVFS_VHOST_USER_SET_LOG_BASE = 6,
    CVFS_VHOST_USER_SET_LOG_FD = 7,
    CVFS_VHOST_USER_SET_VRING_NUM = 8,
    CVFS_VHOST_USER_SET_VRING_ADDR = 9,
    CVFS_VHOST_USER_SET_VRING_BASE = 10,
    CVFS_VHOST_USER_GET_VRING_BASE = 11,
    CVFS_VHOST_USER_SET_VRING_KICK = 12,
    CVFS_VHOST_USER_SET_VRING_CALL = 13,
    CVFS_VHOST_USER_SET_VRING_ERR = 14,
    CVFS_VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    CVFS_VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    CVFS_VHOST_USER_GET_QUEUE_NUM = 17,
    CVFS_VHOST_USER_SET_VRING_ENABLE = 18,
    CVFS_VHOST_USER_SEND_RARP = 19,
    CVFS_VHOST_USER_NET_SET_MTU = 20,
    CVFS_VHOST_USER_SET_BACKEND_REQ_FD = 21,
    CVFS_VHOST_USER_IOTLB_MSG = 22,
    CVFS_VHOST_USER_SET_VRING_ENDIAN = 23,
    CVFS_VHOST_USER_GET_CONFIG = 24,
    CVFS_VHOST_USER_SET_CONFIG = 25,
    CVFS_VHOST_USER_CREATE_CRYPTO_SESSION = 26,
    CVFS_VHOST_USER_CLOSE_CRYPTO_SESSION = 27,
    CVFS_VHOST_USER_POSTCOPY_ADVISE = 28,
    CVFS_VHOST_USER_POSTCOPY_LISTEN = 29,
    CVFS_VHOST_USER_POSTCOPY_END = 30,
    CVFS_VHOST_USER_GET_INFLIGHT_FD = 31,
    CVFS_VHOST_USER_SET_INFLIGHT_FD = 32,
    CVFS_VHOST_USER_GPU_SET_SOCKET = 33,
    CVFS_VHOST_USER_RESET_DEVICE = 34,
    CVFS_VHOST_USER_VRING_KICK = 35,
    CVFS_VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    CVFS_VHOST_USER_ADD_MEM_REG = 37,
    CVFS_VHOST_USER_REM_MEM_REG = 38,
    CVFS_VHOST_USER_SET_STATUS = 39,
    CVFS_VHOST_USER_GET_STATUS = 40,
    CVFS_VHOST_USER_GET_SHARED_OBJECT = 41,
    CVFS_VHOST_USER_SET_DEVICE_STATE_FD = 42,
    CVFS_VHOST_USER_CHECK_DEVICE_STATE = 43,
};

// Protocol feature bits (GET/SET_PROTOCOL_FEATURES): bit numbers from the
// "Protocol features" section of QEMU's docs/interop/vhost-user.rst (no kernel
// header has them). Use them as masks through `cvfs_vhost_user_protocol_mask`.
enum cvfs_vhost_user_protocol_feature {
    CVFS_VHOST_USER_PROTOCOL_F_MQ = 0,
    CVFS_VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1,
    CVFS_VHOST_USER_PROTOCOL_F_RARP = 2,
    CVFS_VHOST_USER_PROTOCOL_F_REPLY_ACK = 3,
    CVFS_VHOST_USER_PROTOCOL_F_NET_MTU = 4,
    CVFS_VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5,
    CVFS_VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6,
    CVFS_VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7,
    CVFS_VHOST_USER_PROTOCOL_F_PAGEFAULT = 8,
    CVFS_VHOST_USER_PROTOCOL_F_CONFIG = 9,
    CVFS_VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10,
    CVFS_VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11,
    CVFS_VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12,
    CVFS_VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13,
    CVFS_VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14,
    CVFS_VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15,
    CVFS_VHOST_USER_PROTOCOL_F_STATUS = 16,
    CVFS_VHOST_USER_PROTOCOL_F_XEN_MMAP = 17,
    CVFS_VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18,
    CVFS_VHOST_USER_PROTOCOL_F_DEVICE_STATE = 19,
};

// Dirty-page logging (migration): the log has one bit per page of this size.
#define CVFS_VHOST_LOG_PAGE 0x1000
// SET_DEVICE_STATE_FD: transfer direction and migration phase, and the reply bit
// saying the back-end attached no fd of its own (the front-end's is used).
#define CVFS_VHOST_TRANSFER_STATE_DIRECTION_SAVE 0
#define CVFS_VHOST_TRANSFER_STATE_DIRECTION_LOAD 1
#define CVFS_VHOST_TRANSFER_STATE_PHASE_STOPPED 0
#define CVFS_VHOST_USER_DEVICE_STATE_NO_FD (1ULL << 8)

// Virtio feature bit of the vhost-user transport itself (vhost-user.rst:
// "VHOST_USER_F_PROTOCOL_FEATURES"), and its mask.
#define CVFS_VHOST_USER_F_PROTOCOL_FEATURES 30
static const uint64_t CVFS_VHOST_USER_F_PROTOCOL_FEATURES_MASK = 1ULL << CVFS_VHOST_USER_F_PROTOCOL_FEATURES;

// The mask of one protocol feature bit.
static inline uint64_t cvfs_vhost_user_protocol_mask(enum cvfs_vhost_user_protocol_feature bit) {
    return 1ULL << (unsigned)bit;
}

// Every message starts with this header; `size` bytes of payload follow.
struct cvfs_vhost_user_header {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} __attribute__((packed));

// One region of SET_MEM_TABLE, and the body of ADD_MEM_REG/REM_MEM_REG
// (which carry a leading 64-bit padding word before it).
struct cvfs_vhost_user_memory_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};

#define CVFS_VHOST_USER_MAX_RAM_SLOTS 8

struct cvfs_vhost_user_memory {
    uint32_t nregions;
    uint32_t padding;
    struct cvfs_vhost_user_memory_region regions[CVFS_VHOST_USER_MAX_RAM_SLOTS];
};

struct cvfs_vhost_user_single_memory_region {
    uint64_t padding;
    struct cvfs_vhost_user_memory_region region;
};

struct cvfs_vhost_user_vring_state {
    uint32_t index;
    uint32_t num;
};

struct cvfs_vhost_user_vring_addr {
    uint32_t index;
    uint32_t flags;
    uint64_t descriptor;
    uint64_t used;
    uint64_t available;
    uint64_t log;
};

struct cvfs_vhost_user_config_header {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
};

struct cvfs_vhost_user_log {
    uint64_t mmap_size;
    uint64_t mmap_offset;
};

#endif
