// A SIGBUS guard over the guest memory mappings.
//
// The frontend shares guest memory as files (memfds, hugetlbfs or tmpfs files).
// If it shrinks one after we mapped it, the next access to a page past the new
// end raises SIGBUS, which by default kills the daemon without a word. The
// handler installed here repairs a fault inside a guarded range: it maps
// anonymous zero pages over the rest of the range so the faulting access
// completes, and writes to the range's eventfd so its owner logs the error and
// closes the connection. A SIGBUS anywhere else gets the disposition that was in
// place before (a real crash).
//
// The handler lives in C because it runs in signal context and may call only
// async-signal-safe functions; nothing in it allocates or takes a lock.
#ifndef CVFS_MEMGUARD_H
#define CVFS_MEMGUARD_H

#include <stddef.h>
#include <stdint.h>

// How many ranges can be guarded at once.
#define CVFS_MEMGUARD_SLOTS 256

// Installs the SIGBUS handler; later calls do nothing. 0, or -1 with errno set.
int cvfs_memguard_install(void);
// Guards the page-aligned range [base, base + length); a repaired fault in it
// adds 1 to the eventfd `notify_fd`. 0, or -1 with errno set (ENOSPC: every
// slot is taken; EINVAL: misaligned or empty range).
int cvfs_memguard_add(void *base, size_t length, int notify_fd);
// Stops guarding the range that starts at `base`; call before unmapping it.
void cvfs_memguard_remove(void *base);
// Faults repaired since the process started.
uint64_t cvfs_memguard_repaired(void);

#endif
