// SPDX-License-Identifier: GPL-2.0
/*
 * An LD_PRELOAD shim that makes a regular file stand in for /dev/nta, so a
 * host test can run the real ntadump on records it laid out itself.
 *
 * The file holds what the module's mappings would (meta page, ring mapping,
 * pool), at the offsets its meta page names; mmap() of a file needs no help.
 * What a file cannot do is answered here: NTA's ioctls (attach succeeds; the
 * counters come from the file NTA_SHIM_ANSWERS names: struct
 * nta_reader_stats, struct nta_stats, struct nta_dev_stats, packed one after
 * the other) and poll() (the records are all there already: POLLIN at once).
 * Every other call goes to libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "nta_uapi.h"

struct answers {
	struct nta_reader_stats reader;
	struct nta_stats stats;
	struct nta_dev_stats dev;
};

static int load(struct answers *a)
{
	const char *path = getenv("NTA_SHIM_ANSWERS");
	FILE *f = path ? fopen(path, "rb") : NULL;
	size_t got;

	if (!f)
		return -1;
	got = fread(a, sizeof(*a), 1, f);
	fclose(f);
	return got == 1 ? 0 : -1;
}

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real)(int, unsigned long, void *);
	struct answers a;
	va_list ap;
	void *arg;
	int ifindex;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (_IOC_TYPE(request) != NTA_IOC_MAGIC) {
		if (!real)
			real = (int (*)(int, unsigned long, void *))dlsym(RTLD_NEXT, "ioctl");
		return real(fd, request, arg);
	}
	if (request == NTA_IOC_ATTACH)
		return 0;
	if (load(&a)) {
		errno = EIO;
		return -1;
	}
	switch (request) {
	case NTA_IOC_READER_STATS:
		memcpy(arg, &a.reader, sizeof(a.reader));
		return 0;
	case NTA_IOC_STATS:
		memcpy(arg, &a.stats, sizeof(a.stats));
		return 0;
	case NTA_IOC_DEV_STATS:
		ifindex = ((struct nta_dev_stats *)arg)->ifindex;
		if (ifindex != a.dev.ifindex) {
			errno = ENODEV;
			return -1;
		}
		memcpy(arg, &a.dev, sizeof(a.dev));
		return 0;
	}
	errno = ENOTTY;
	return -1;
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	nfds_t i;

	(void)timeout;
	/* ntadump polls for POLLIN only (glibc declares fds write-only: events unread). */
	for (i = 0; i < n; i++)
		fds[i].revents = POLLIN;
	return n;
}
