// SPDX-License-Identifier: GPL-2.0
/*
 * preload.c - puts ntadump on pysniff's fake module, for host tests
 * (LD_PRELOAD; tests/fakenta.py builds and drives it).
 *
 * open() of $FAKENTA_PATH returns a copy of $FAKENTA_MEMFD, the fake's memory:
 * its meta page, rings and pool at the mmap offsets its meta page gives, so
 * ntadump maps it as it maps /dev/nta. Its ioctl(), poll() and close() on that
 * file become a request over $FAKENTA_LINK (a SOCK_SEQPACKET socket) to the
 * test, where pysniff.fake answers as the module does. Everything else goes to
 * libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/types.h>

enum fake_op { FAKE_IOCTL = 1, FAKE_POLL, FAKE_CLOSE };

/* The request and its answer (tests/fakenta.py packs them the same way). */
struct fake_msg {
	__u32 op;
	__u32 request;		/* ioctl */
	__s32 timeout_ms;	/* poll */
	__u32 len;		/* bytes of data: the ioctl argument */
	unsigned char data[512];
};

struct fake_reply {
	__s32 ret;		/* what the call returns: poll's revents */
	__s32 err;		/* its errno when ret < 0 */
	unsigned char data[512];
};

static int nta_fd = -1;

static int env_fd(const char *name)
{
	const char *value = getenv(name);

	return value ? atoi(value) : -1;
}

/* One request, one answer. A signal does not cut it short: the answer would be left behind. */
static int call(struct fake_msg *m, struct fake_reply *rep)
{
	int link = env_fd("FAKENTA_LINK");
	ssize_t n;

	do {
		n = send(link, m, sizeof(*m), MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != sizeof(*m))
		abort();
	do {
		n = recv(link, rep, sizeof(*rep), 0);
	} while (n < 0 && errno == EINTR);
	if (n != sizeof(*rep))
		abort();
	if (rep->ret < 0)
		errno = rep->err;
	return rep->ret;
}

int open(const char *path, int flags, ...)
{
	static int (*real_open)(const char *path, int flags, ...);
	const char *fake = getenv("FAKENTA_PATH");
	mode_t mode = 0;
	va_list ap;

	if (fake && !strcmp(path, fake)) {
		nta_fd = fcntl(env_fd("FAKENTA_MEMFD"), F_DUPFD_CLOEXEC, 0);
		return nta_fd;
	}
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (!real_open)
		real_open = dlsym(RTLD_NEXT, "open");
	return real_open(path, flags, mode);
}

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real_ioctl)(int fd, unsigned long request, ...);
	struct fake_msg m = { .op = FAKE_IOCTL, .request = request, .len = _IOC_SIZE(request) };
	struct fake_reply rep;
	void *arg;
	va_list ap;
	int ret;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (nta_fd < 0 || fd != nta_fd) {
		if (!real_ioctl)
			real_ioctl = dlsym(RTLD_NEXT, "ioctl");
		return real_ioctl(fd, request, arg);
	}
	if (m.len > sizeof(m.data))
		abort();
	if (_IOC_DIR(request) & _IOC_WRITE)
		memcpy(m.data, arg, m.len);
	ret = call(&m, &rep);
	if (ret >= 0 && (_IOC_DIR(request) & _IOC_READ))
		memcpy(arg, rep.data, m.len);
	return ret;
}

/*
 * glibc declares poll()'s fds write-only (access attribute), which poll()
 * itself may not read without a warning: it reads which fd is asked for.
 */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	static int (*real_poll)(struct pollfd *fds, nfds_t nfds, int timeout);
	struct fake_msg m = { .op = FAKE_POLL, .timeout_ms = timeout };
	struct fake_reply rep;

	if (nta_fd < 0 || nfds != 1 || fds[0].fd != nta_fd) {
		if (!real_poll)
			real_poll = dlsym(RTLD_NEXT, "poll");
		return real_poll(fds, nfds, timeout);
	}
	if (call(&m, &rep) < 0)
		return -1;
	fds[0].revents = rep.ret & (fds[0].events | POLLERR | POLLHUP);
	return fds[0].revents ? 1 : 0;
}

int close(int fd)
{
	static int (*real_close)(int fd);
	struct fake_msg m = { .op = FAKE_CLOSE };
	struct fake_reply rep;

	if (nta_fd >= 0 && fd == nta_fd) {
		call(&m, &rep);
		nta_fd = -1;
	}
	if (!real_close)
		real_close = dlsym(RTLD_NEXT, "close");
	return real_close(fd);
}
