#define _GNU_SOURCE
#include "cvfs_vhost.h"

#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

const int CVFS_SIGNALFD_SIGINFO_SIZE = (int)sizeof(struct signalfd_siginfo);
const int CVFS_SO_DOMAIN = SO_DOMAIN;
const int CVFS_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int CVFS_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int CVFS_SOCK_STREAM = SOCK_STREAM;
const int CVFS_MAP_NORESERVE = MAP_NORESERVE;

int cvfs_signalfd(const sigset_t *mask) { return signalfd(-1, mask, SFD_CLOEXEC); }

int cvfs_ignore_signal(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = SIG_IGN;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

static void cvfs_wakeup_handler(int signo) { (void)signo; }

int cvfs_install_wakeup_handler(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = cvfs_wakeup_handler;
    sigemptyset(&action.sa_mask);
    /* No SA_RESTART: the point is that a blocking call returns EINTR. */
    action.sa_flags = 0;
    return sigaction(signo, &action, NULL);
}

int cvfs_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }
