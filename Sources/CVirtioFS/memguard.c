#define _GNU_SOURCE
#include "cvfs_memguard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// A slot is free while `start` is 0. Writers (add/remove) are serialised by
// `slots_lock`; the handler reads without locking: `start` is published last
// on add (release) and cleared first on remove, so a reader that sees a start
// also sees the end and eventfd written before it.
struct guard_slot {
    _Atomic uintptr_t start;
    _Atomic uintptr_t end;
    _Atomic int notify_fd;
};

static struct guard_slot slots[CVFS_MEMGUARD_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_errno;
static struct sigaction previous_action;
static uintptr_t page_mask;
static _Atomic uint64_t repaired;

static void on_sigbus(int signo, siginfo_t *info, void *context) {
    (void)context;
    int saved_errno = errno;
    // Only a fault the kernel raised for an access has a meaningful address.
    if (info != NULL && info->si_code > 0) {
        uintptr_t address = (uintptr_t)info->si_addr;
        for (int i = 0; i < CVFS_MEMGUARD_SLOTS; i++) {
            uintptr_t start = atomic_load_explicit(&slots[i].start, memory_order_acquire);
            if (start == 0 || address < start) continue;
            uintptr_t end = atomic_load_explicit(&slots[i].end, memory_order_relaxed);
            if (address >= end) continue;
            // Every page from the faulting one on lies past the file's new end.
            uintptr_t page = address & ~page_mask;
            int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
            void *p = mmap((void *)page, end - page, PROT_READ | PROT_WRITE, flags, -1, 0);
            // A hugetlbfs mapping splits only at huge page boundaries: replace all of it.
            if (p == MAP_FAILED) p = mmap((void *)start, end - start, PROT_READ | PROT_WRITE, flags, -1, 0);
            if (p == MAP_FAILED) break;
            atomic_fetch_add_explicit(&repaired, 1, memory_order_relaxed);
            int fd = atomic_load_explicit(&slots[i].notify_fd, memory_order_relaxed);
            if (fd >= 0) {
                uint64_t one = 1;
                ssize_t written = write(fd, &one, sizeof(one));
                (void)written;
            }
            errno = saved_errno;
            return;
        }
    }
    // Not a guest memory fault: restore what was there before. A fault raised by
    // an access happens again when the instruction restarts; a SIGBUS sent by
    // someone is sent again (it stays pending until this handler returns).
    sigaction(SIGBUS, &previous_action, NULL);
    if (info == NULL || info->si_code <= 0) raise(signo);
    errno = saved_errno;
}

static void install(void) {
    page_mask = (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous_action) != 0) install_errno = errno;
}

int cvfs_memguard_install(void) {
    pthread_once(&install_once, install);
    if (install_errno != 0) { errno = install_errno; return -1; }
    return 0;
}

int cvfs_memguard_add(void *base, size_t length, int notify_fd) {
    uintptr_t start = (uintptr_t)base;
    if (start == 0 || length == 0 || page_mask == 0 || (start & page_mask) != 0 || start + length < start) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < CVFS_MEMGUARD_SLOTS; i++) {
        if (atomic_load_explicit(&slots[i].start, memory_order_relaxed) != 0) continue;
        atomic_store_explicit(&slots[i].end, start + length, memory_order_relaxed);
        atomic_store_explicit(&slots[i].notify_fd, notify_fd, memory_order_relaxed);
        atomic_store_explicit(&slots[i].start, start, memory_order_release);
        pthread_mutex_unlock(&slots_lock);
        return 0;
    }
    pthread_mutex_unlock(&slots_lock);
    errno = ENOSPC;
    return -1;
}

void cvfs_memguard_remove(void *base) {
    uintptr_t start = (uintptr_t)base;
    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < CVFS_MEMGUARD_SLOTS; i++) {
        if (atomic_load_explicit(&slots[i].start, memory_order_relaxed) != start) continue;
        atomic_store_explicit(&slots[i].start, 0, memory_order_release);
        atomic_store_explicit(&slots[i].end, 0, memory_order_relaxed);
        atomic_store_explicit(&slots[i].notify_fd, -1, memory_order_relaxed);
        break;
    }
    pthread_mutex_unlock(&slots_lock);
}

uint64_t cvfs_memguard_repaired(void) { return atomic_load_explicit(&repaired, memory_order_relaxed); }
