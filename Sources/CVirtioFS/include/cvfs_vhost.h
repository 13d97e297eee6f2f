// Signal and socket helpers the vhost-user layer needs that Swift's Glibc
// module does not expose (signalfd, SIG_IGN, a few socket option names).
#ifndef CVFS_VHOST_H
#define CVFS_VHOST_H

#include <signal.h>
#include <stdint.h>

// Returns a close-on-exec signalfd for `mask`, or -1 with errno set.
int cvfs_signalfd(const sigset_t *mask);
// Size of one record read from a signalfd (struct signalfd_siginfo).
extern const int CVFS_SIGNALFD_SIGINFO_SIZE;
// Sets the disposition of `signo` to SIG_IGN. Returns 0 or -1 with errno set.
int cvfs_ignore_signal(int signo);
/* Installs a handler that does nothing, without SA_RESTART: the signal only
 * interrupts a blocking call in the thread it is sent to. */
int cvfs_install_wakeup_handler(int signo);
// SO_DOMAIN is a GNU/Linux socket option name.
extern const int CVFS_SO_DOMAIN;
extern const int CVFS_SOCK_CLOEXEC;
extern const int CVFS_SOCK_NONBLOCK;
extern const int CVFS_SOCK_STREAM;
extern const int CVFS_MAP_NORESERVE;
// accept4 is a GNU extension: accepts one connection, close-on-exec.
int cvfs_accept_cloexec(int fd);

#endif
