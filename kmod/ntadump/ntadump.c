// SPDX-License-Identifier: GPL-2.0
/*
 * ntadump - the native reader of NTA's zero-copy sniffer (the seed's
 * "userspace utility"): the frames of the interfaces it attaches, read in
 * place from its pool and written to a pcap file, the chunks handed back
 * through the commit ring.
 *
 *	ntadump -i IFACE [-i IFACE ...] [-c COUNT] [-w FILE] [-q] [--json] [-D DEVICE]
 *		[-Q in|out|inout] [-f EXPR | EXPR ...]
 *
 * IFACE is a name or an interface index (as "ip link" numbers them). -Q
 * chooses the frames captured as tcpdump's does: received, sent, or both
 * (the default). The filter expression (-f, or the words after the
 * options, as tcpdump takes it) is compiled by libpcap on a live handle of
 * the first interface, as tcpdump compiles it (on Linux only a live handle
 * gets the kernel's "VLAN tag present" load, and the stack takes tags out
 * of frames before any tap sees them), and attached to the reader before
 * the interfaces are: the module runs it before a frame costs anything. A
 * bad expression ends ntadump with status 2 before it attaches anything.
 *
 * Per wakeup: every ready frame goes out in writev() calls (a record header
 * and the frame's bytes, straight from the mapping, a stripped VLAN tag as a
 * buffer of its own), then every chunk goes back as an entry in the commit
 * ring (a store: no system call unless the module sets
 * NTA_COMMIT_NEED_WAKEUP). The only system call per batch is the poll()
 * that waits for it. Without -w it writes nothing; without -q, -w and
 * --json it prints a line per frame. SIGINT and SIGTERM end the capture; the
 * summary on stderr says, per interface, what the device received and what
 * this reader did not get, and why (as tcpdump's "dropped by kernel"), and
 * the bad commits the module refused from every reader since it loaded. It
 * also ends, with the summary and exit status 1, when every interface it
 * attached is gone (as tcpdump does; what was still in the ring is taken
 * first) and when its output cannot be written (a reader of -w gone). A
 * frame it cannot write (see frame_check) is said, counted, and committed.
 *
 * With --json the same summary is also printed on stdout as one JSON
 * object, for programs (the lab's benchmark reads it):
 *
 *	{"frames": N, "bytes": N, "rejected": N, "syscalls": N, "wakeups": N,
 *	 "records": N, "committed": N, "refused": {"length": N, ...},
 *	 "interfaces": {"eth0": {"captured": N, "received": N, "sent": N,
 *	   "published": N, "filtered": N, "unserved": N, "not_shared": N,
 *	   "ring_full": N, "skipped": N, "fault_dropped": N, "gone": false}}}
 *
 * bytes are the captured frames' lengths on the wire (the pcap records'
 * len), rejected the frames it could not write. wakeups, records and
 * committed are the module's counts for this reader (NTA_IOC_READER_STATS),
 * refused its bad-commit counters by reason (NTA_IOC_STATS: module-wide,
 * every reader's since the module loaded, not this reader's), the
 * interfaces' counters NTA_IOC_DEV_STATS: null where the module would not
 * say.
 *
 * Built with the host's compiler from kmod/nta_uapi.h alone (ntalab build).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nta_uapi.h"

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;

#define MAX_IFACES	8
#define GONE_CHECK_POLLS	2	/* idle polls (of 1 s) between looks at NTA_DEV_GONE */
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define IOV_BATCH	1024	/* writev's IOV_MAX */
/* A frame's buffers in one batch: its pcap header, its pieces, and a piece split by the tag. */
#define MAX_PIECES	(IOV_BATCH - 3)
#define PCAP_NSEC_MAGIC	0xa1b23c4dU
#define SNAPLEN		262144	/* tcpdump's: a longer frame is cut there */
#define LINKTYPE_ETHERNET	1

struct pcap_head {
	u32 magic;
	u16 major;
	u16 minor;
	s32 thiszone;
	u32 sigfigs;
	u32 snaplen;
	u32 linktype;
};

struct pcap_rec {
	u32 sec;
	u32 nsec;
	u32 caplen;
	u32 len;
};

struct reader {
	int fd;
	const struct nta_meta *meta;
	u8 *ring;
	/* Each pool slot's mapping (NULL: not mapped yet) and its geometry, as mapped. */
	const u8 *pools[NTA_MAX_POOLS];
	u32 pool_nodes[NTA_MAX_POOLS];
	u32 pool_node_size[NTA_MAX_POOLS];
	u64 *producer;		/* kernel writes */
	u64 *consumer;		/* we write */
	u64 *commit_producer;	/* we write */
	u64 *commit_consumer;	/* kernel writes */
	u32 *commit_flags;		/* kernel writes */
	const struct nta_record *records;
	struct nta_commit *commits;
	u64 cons;			/* our copy of the consumer index */
	u64 cprod;			/* our copy of the commit producer index */
	unsigned long syscalls;
	unsigned long rejected;		/* frames not written (reject_frame) */
	int write_errno;		/* why writing the output failed: the capture ends */
	unsigned int idle_polls;	/* polls in a row that timed out */
	unsigned long long bytes;	/* of the frames captured, as long as on the wire */
	bool copy_writes;		/* writev() from the pool failed: copy (write_copied) */
};

struct iface {
	char name[IF_NAMESIZE];
	int ifindex;
	unsigned long captured;
};

/* Set by the signal handler, read by the capture loop: a relaxed atomic is all it takes. */
static int stop;

static void on_signal(int sig)
{
	(void)sig;
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
}

static void die(const char *what)
{
	fprintf(stderr, "ntadump: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void bad_usage(void)
{
	fprintf(stderr,
		"usage: ntadump -i IFACE [-i IFACE ...] [-c COUNT] [-w FILE] [-q] [--json] [-D DEVICE]\n"
		"               [-Q in|out|inout] [-f EXPR | EXPR ...]\n");
	exit(2);
}

static void *map(int fd, u64 offset, u64 size, int prot)
{
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, (off_t)offset);

	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* The meta page, checked as pysniff checks it: a mismatch is a clear error, never wrong frames. */
static void reader_open(struct reader *r, const char *path)
{
	const struct nta_meta *m;

	r->fd = open(path, O_RDWR | O_CLOEXEC);
	if (r->fd < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "ntadump: no %s: is the nta module loaded?\n", path);
		else
			fprintf(stderr, "ntadump: cannot open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	m = map(r->fd, NTA_MMAP_META_OFFSET, sysconf(_SC_PAGESIZE), PROT_READ);
	if (m->magic != NTA_MAGIC || m->abi_version != NTA_ABI_VERSION ||
	    m->meta_size != sizeof(*m) || m->record_size != sizeof(struct nta_record) ||
	    m->commit_size != sizeof(struct nta_commit)) {
		fprintf(stderr, "ntadump: the module speaks ABI %u (magic %#x), ntadump %u\n",
			m->abi_version, m->magic, NTA_ABI_VERSION);
		exit(1);
	}
	r->meta = m;
	if (m->max_pools != NTA_MAX_POOLS || m->pool_info_size != sizeof(struct nta_pool_info)) {
		fprintf(stderr, "ntadump: the module has %u pool slots of %u bytes, we %d of %zu\n",
			m->max_pools, m->pool_info_size, NTA_MAX_POOLS, sizeof(*m->pools));
		exit(1);
	}
	r->ring = map(r->fd, m->ring_mmap_offset, m->ring_mmap_size, PROT_READ | PROT_WRITE);
	r->producer = (u64 *)(r->ring + m->ring_producer_offset);
	r->consumer = (u64 *)(r->ring + m->ring_consumer_offset);
	r->commit_producer = (u64 *)(r->ring + m->commit_producer_offset);
	r->commit_consumer = (u64 *)(r->ring + m->commit_consumer_offset);
	r->commit_flags = (u32 *)(r->ring + m->commit_flags_offset);
	r->records = (const struct nta_record *)(r->ring + m->ring_records_offset);
	r->commits = (struct nta_commit *)(r->ring + m->commit_entries_offset);
	r->cons = *r->consumer;
	r->cprod = *r->commit_producer;
}

/*
 * Pool @p mapped, if its slot is bound (the module writes the slot before
 * any record naming it is published: the producer index's acquire orders
 * this read after it); whether it is. A slot whose geometry does not add up
 * is a clear error, never a mapping read past its end.
 */
static bool pool_map(struct reader *r, u32 p)
{
	const struct nta_pool_info *pi;
	u64 size;

	if (p >= NTA_MAX_POOLS)
		return false;
	if (r->pools[p])
		return true;
	pi = &r->meta->pools[p];
	size = __atomic_load_n(&pi->mmap_size, __ATOMIC_ACQUIRE);
	if (!size)
		return false;
	if ((u64)pi->node_count * pi->node_size != size || !pi->node_size ||
	    pi->node_size % r->meta->page_size) {
		fprintf(stderr, "ntadump: pool %u: %u nodes of %u bytes in a mapping of %llu\n",
			p, pi->node_count, pi->node_size, (unsigned long long)size);
		exit(1);
	}
	r->pool_nodes[p] = pi->node_count;
	r->pool_node_size[p] = pi->node_size;
	r->pools[p] = map(r->fd, pi->mmap_offset, size, PROT_READ);
	return true;
}

static void reader_attach(struct reader *r, struct iface *ifc)
{
	struct nta_attach req = { .abi_version = NTA_ABI_VERSION };
	char *end;
	u32 p;

	/* A name, or an interface index as "ip link" shows it. */
	ifc->ifindex = if_nametoindex(ifc->name);
	if (!ifc->ifindex && ifc->name[0] >= '1' && ifc->name[0] <= '9') {
		unsigned long index = strtoul(ifc->name, &end, 10);

		if (!*end && index <= INT_MAX)
			ifc->ifindex = index;
	}
	if (!ifc->ifindex) {
		fprintf(stderr, "ntadump: no such interface: %s\n", ifc->name);
		exit(1);
	}
	req.ifindex = ifc->ifindex;
	if (ioctl(r->fd, NTA_IOC_ATTACH, &req)) {
		fprintf(stderr, "ntadump: cannot attach %s: ", ifc->name);
		if (errno == EUSERS)
			fprintf(stderr, "it already has %d readers\n", NTA_POOL_READERS);
		else if (errno == ENOSPC)
			fprintf(stderr, "this reader has bound %d pools\n", NTA_MAX_POOLS);
		else
			fprintf(stderr, "%s\n", strerror(errno));
		exit(1);
	}
	r->syscalls++;
	for (p = 0; p < NTA_MAX_POOLS; p++)
		pool_map(r, p);
}

static void set_direction(struct reader *r, const char *name)
{
	struct nta_direction req = { 0 };

	if (!strcmp(name, "in"))
		req.direction = NTA_DIR_IN;
	else if (!strcmp(name, "out"))
		req.direction = NTA_DIR_OUT;
	else
		req.direction = NTA_DIR_INOUT;
	if (ioctl(r->fd, NTA_IOC_SET_DIRECTION, &req)) {
		fprintf(stderr, "ntadump: the module refused -Q %s: %s\n", name, strerror(errno));
		exit(1);
	}
}

/*
 * @expr compiled as tcpdump compiles it, on a live handle of @iface (see the
 * top of this file), before /dev/nta is opened: exit status 2 for an
 * expression libpcap does not take.
 */
static void compile_filter(const char *iface, const char *expr, struct bpf_program *prog)
{
	char err[PCAP_ERRBUF_SIZE];
	pcap_t *p = pcap_create(iface, err);

	if (!p || pcap_set_snaplen(p, SNAPLEN) || pcap_set_buffer_size(p, 1 << 16) ||
	    pcap_activate(p) < 0) {
		fprintf(stderr, "ntadump: cannot compile the filter on %s: %s\n", iface,
			p ? pcap_geterr(p) : err);
		exit(2);
	}
	if (pcap_compile(p, prog, expr, 1, PCAP_NETMASK_UNKNOWN)) {
		fprintf(stderr, "ntadump: cannot compile the filter '%s': %s\n", expr,
			pcap_geterr(p));
		exit(2);
	}
	pcap_close(p);
}

/* The program to the reader, before any attach; exit status 2 if the module refuses it. */
static void set_filter(struct reader *r, struct bpf_program *prog)
{
	struct nta_filter req = {
		.len = prog->bf_len,
		.insns = (u64)(uintptr_t)prog->bf_insns,
	};

	if (ioctl(r->fd, NTA_IOC_SET_FILTER, &req)) {
		fprintf(stderr, "ntadump: the module refused the filter program: %s\n",
			strerror(errno));
		exit(2);
	}
	r->syscalls++;
	pcap_freecode(prog);
}

/* The words after the options, as one expression (tcpdump's way); NULL for none. */
static char *join_words(char **words, int n)
{
	size_t len = 1;
	char *expr;
	int i;

	if (!n)
		return NULL;
	for (i = 0; i < n; i++)
		len += strlen(words[i]) + 1;
	expr = calloc(1, len);
	if (!expr)
		die("calloc");
	for (i = 0; i < n; i++) {
		strcat(expr, words[i]);
		if (i + 1 < n)
			strcat(expr, " ");
	}
	return expr;
}

/* Hands chunks back in the commit ring; a system call only when the module asks for one. */
static void commit_chunks(struct reader *r, const struct nta_commit *cm, unsigned int n)
{
	u32 entries = r->meta->commit_entries;
	unsigned int i = 0;

	while (i < n) {
		u64 kernel = __atomic_load_n(r->commit_consumer, __ATOMIC_ACQUIRE);
		u64 room = entries - (r->cprod - kernel);

		if (!room) {
			struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

			/* Full: poll() makes the module take the ring. */
			poll(&pfd, 1, 0);
			r->syscalls++;
			continue;
		}
		for (; i < n && room; i++, room--)
			r->commits[r->cprod++ & (entries - 1)] = cm[i];
		/* The entries are written before the module can see the new producer. */
		__atomic_store_n(r->commit_producer, r->cprod, __ATOMIC_RELEASE);
	}
	if (__atomic_load_n(r->commit_flags, __ATOMIC_ACQUIRE) & NTA_COMMIT_NEED_WAKEUP) {
		struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

		poll(&pfd, 1, 0);
		r->syscalls++;
	}
}

/* Whether all of @buf was written; a failure is kept in r->write_errno. */
static bool write_buf(int fd, const u8 *buf, size_t len, struct reader *r)
{
	while (len) {
		ssize_t done = write(fd, buf, len);

		r->syscalls++;
		if (done < 0) {
			if (errno == EINTR)
				continue;
			r->write_errno = errno;
			return false;
		}
		buf += done;
		len -= done;
	}
	return true;
}

/*
 * A filesystem that pins the user pages it writes from (9p's zero-copy path,
 * FUSE, O_DIRECT) cannot pin the pool: it is mapped by page frame, without
 * page references, and writev() fails with EFAULT. From then on the frames
 * go through a buffer of our own, as tcpdump's stdio does.
 */
static void write_copied(int fd, const struct iovec *iov, int n, struct reader *r)
{
	static u8 buf[1 << 18];
	size_t used = 0;

	for (; n > 0; iov++, n--) {
		const u8 *from = iov->iov_base;
		size_t left = iov->iov_len;

		while (left) {
			size_t take = left < sizeof(buf) - used ? left : sizeof(buf) - used;

			memcpy(buf + used, from, take);
			used += take;
			from += take;
			left -= take;
			if (used == sizeof(buf)) {
				if (!write_buf(fd, buf, used, r))
					return;
				used = 0;
			}
		}
	}
	write_buf(fd, buf, used, r);
}

static void write_all(int fd, struct iovec *iov, int n, struct reader *r)
{
	while (n > 0 && !r->copy_writes) {
		ssize_t done = writev(fd, iov, n);

		r->syscalls++;
		if (done < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EFAULT) {
				r->write_errno = errno;
				return;
			}
			r->copy_writes = true;
			break;
		}
		/* Past what was written: whole buffers, then the rest of a partial one. */
		while (n > 0 && (size_t)done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (u8 *)iov->iov_base + done;
			iov->iov_len -= done;
		}
	}
	if (n > 0)
		write_copied(fd, iov, n, r);
}

struct batch {
	struct iovec iov[IOV_BATCH];
	struct pcap_rec hdr[IOV_BATCH / 2];
	u16 tag[IOV_BATCH / 2][2];
	struct nta_commit commits[IOV_BATCH];
	int niov;
	unsigned int nhdr;
	unsigned int ncommit;
};

static struct iface *iface_of(struct iface *ifs, int n, int ifindex)
{
	int i;

	for (i = 0; i < n; i++) {
		if (ifs[i].ifindex == ifindex)
			return &ifs[i];
	}
	return NULL;
}

/* Room in the batch for a frame of @pieces records (header, tag, pieces). */
static bool batch_fits(const struct batch *b, u32 pieces)
{
	return b->niov + 3 + pieces <= IOV_BATCH && b->nhdr < IOV_BATCH / 2 &&
	       b->ncommit + pieces <= IOV_BATCH;
}

/*
 * Writes the batch out, then hands its chunks back: their bytes are written
 * by then (or never will be: the output failed).
 */
static void batch_flush(struct batch *b, struct reader *r, int out)
{
	if (out >= 0 && b->niov && !r->write_errno)
		write_all(out, b->iov, b->niov, r);
	/* Hands the record slots back; the records were read before this store. */
	__atomic_store_n(r->consumer, r->cons, __ATOMIC_RELEASE);
	commit_chunks(r, b->commits, b->ncommit);
	b->niov = 0;
	b->nhdr = 0;
	b->ncommit = 0;
}

/* The commits of the @pieces records from @at, after whatever the batch holds. */
static void add_commits(struct reader *r, struct batch *b, int out, u64 at, u32 pieces)
{
	u32 mask = r->meta->ring_entries - 1;

	for (; pieces; pieces--, at++) {
		const struct nta_record *rec = &r->records[at & mask];

		if (b->ncommit == IOV_BATCH)
			batch_flush(b, r, out);
		/* A pool past 0xffff (a bad record) makes a commit refused as reserved. */
		b->commits[b->ncommit++] = (struct nta_commit) {
			.node = rec->node,
			.offset = rec->offset,
			.generation = rec->generation,
			.pool = (u16)rec->pool,
			.reserved = (u16)(rec->pool >> 16),
		};
	}
}

/* @len bytes at @data into the batch, as far as the snapshot length leaves @room. */
static void emit(struct batch *b, const void *data, u32 len, u32 *room)
{
	if (len > *room)
		len = *room;
	if (len)
		b->iov[b->niov++] = (struct iovec) { (void *)data, len };
	*room -= len;
}

/*
 * One frame of @pieces records from @at into the batch: its pcap header and
 * bytes. A tag the stack took out goes back after the two MAC addresses,
 * the frame's first 12 bytes, whichever pieces hold them. The header's
 * lengths are what goes out, so no record can disagree with its bytes.
 */
static void add_frame(struct reader *r, struct batch *b, u64 at, u32 pieces)
{
	const struct nta_meta *m = r->meta;
	u32 mask = m->ring_entries - 1;
	const struct nta_record *first = &r->records[at & mask];
	bool tagged = first->flags & NTA_RECORD_VLAN, tag_out = false;
	struct pcap_rec *h = &b->hdr[b->nhdr];
	u32 room = SNAPLEN, k;
	u64 whole = 0, wire;

	b->iov[b->niov++] = (struct iovec) { h, sizeof(*h) };
	for (k = 0; k < pieces; k++) {
		const struct nta_record *rec = &r->records[(at + k) & mask];
		const u8 *data = r->pools[rec->pool] +
				 (u64)rec->node * r->pool_node_size[rec->pool] + rec->offset;
		u32 head = 0;

		if (tagged && !tag_out && whole + rec->len >= 12) {
			head = 12 - whole;
			b->tag[b->nhdr][0] = first->vlan_proto;
			b->tag[b->nhdr][1] = htons(first->vlan_tci);
			emit(b, data, head, &room);
			emit(b, b->tag[b->nhdr], 4, &room);
			tag_out = true;
		}
		emit(b, data + head, rec->len - head, &room);
		whole += rec->len;
	}
	/* On the wire: as long as the frame said, or as what came, if more. */
	wire = first->frame_len > whole ? first->frame_len : whole;
	wire += tag_out ? 4 : 0;
	*h = (struct pcap_rec) {
		.sec = first->tstamp_ns / 1000000000ULL,
		.nsec = first->tstamp_ns % 1000000000ULL,
		.caplen = SNAPLEN - room,
		.len = wire > UINT32_MAX ? UINT32_MAX : wire,
	};
	b->nhdr++;
}

/*
 * The records of the frame at the consumer index: up to the first without
 * NTA_RECORD_CONTD, never at or past @end; 0 if the frame is still open there.
 */
static u32 frame_records(const struct reader *r, u64 end)
{
	u32 mask = r->meta->ring_entries - 1;
	u64 at;

	for (at = r->cons; at < end; at++) {
		if (!(r->records[at & mask].flags & NTA_RECORD_CONTD))
			return at + 1 - r->cons;
	}
	return 0;
}

enum frame_fault { FRAME_OK, FRAME_TOO_LONG, FRAME_OUTSIDE, FRAME_OPEN };

/* Whether the frame of @pieces records at the consumer index can be written. */
static enum frame_fault frame_check(struct reader *r, u32 pieces)
{
	u32 mask = r->meta->ring_entries - 1, k;

	if (pieces > MAX_PIECES)
		return FRAME_TOO_LONG;
	for (k = 0; k < pieces; k++) {
		const struct nta_record *rec = &r->records[(r->cons + k) & mask];
		u32 p = rec->pool;

		/* A pool first named here is mapped now. In 64 bits: offset + len may wrap. */
		if (!pool_map(r, p) || rec->node >= r->pool_nodes[p] ||
		    (u64)rec->offset + rec->len > r->pool_node_size[p])
			return FRAME_OUTSIDE;
	}
	return FRAME_OK;
}

/* A frame ntadump cannot write: said why, counted, and its chunks handed back all the same. */
static void reject_frame(struct reader *r, struct batch *b, int out, u32 pieces,
			 enum frame_fault why)
{
	const struct nta_record *first = &r->records[r->cons & (r->meta->ring_entries - 1)];

	fprintf(stderr, "ntadump: the frame at record %llu ", (unsigned long long)first->seq);
	if (why == FRAME_TOO_LONG)
		fprintf(stderr, "has %u pieces, more than %d fit one writev()", pieces, MAX_PIECES);
	else if (why == FRAME_OUTSIDE)
		fprintf(stderr, "names an unbound pool or bytes outside its pool");
	else
		fprintf(stderr, "never got its last record");
	fprintf(stderr, ": not written\n");
	r->rejected++;
	add_commits(r, b, out, r->cons, pieces);
	r->cons += pieces;
}

/*
 * Every frame ready now, at most @left. The module publishes a frame's
 * records at once, so a frame still open at the producer index is broken
 * if nothing can follow it: the ring is full of it, or the capture ends
 * (@last: the interfaces are gone).
 */
static unsigned long take_frames(struct reader *r, struct batch *b, int out, bool print,
				 struct iface *ifs, int nifs, unsigned long left, bool last)
{
	u64 end = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
	u32 entries = r->meta->ring_entries;
	unsigned long frames = 0;

	if (end - r->cons > entries) {
		fprintf(stderr,
			"ntadump: ring indices make no sense: producer %llu, consumer %llu\n",
			(unsigned long long)end, (unsigned long long)r->cons);
		exit(1);
	}
	while (r->cons < end && frames < left) {
		const struct nta_record *first = &r->records[r->cons & (entries - 1)];
		u32 pieces = frame_records(r, end);
		enum frame_fault why = FRAME_OPEN;
		struct iface *ifc;

		if (!pieces && !last && end - r->cons < entries)
			break;	/* the rest is yet to come */
		if (pieces)
			why = frame_check(r, pieces);
		else
			pieces = end - r->cons;
		if (why != FRAME_OK) {
			reject_frame(r, b, out, pieces, why);
			continue;
		}
		if (!batch_fits(b, pieces))
			batch_flush(b, r, out);
		add_frame(r, b, r->cons, pieces);
		add_commits(r, b, out, r->cons, pieces);
		r->bytes += b->hdr[b->nhdr - 1].len;
		ifc = iface_of(ifs, nifs, first->ifindex);
		if (ifc)
			ifc->captured++;
		/* stdout's reader gone (ntadump | head): EPIPE ends it, as for -w. */
		if (print && printf("%llu.%09llu %s length %u\n",
				    (unsigned long long)(first->tstamp_ns / 1000000000ULL),
				    (unsigned long long)(first->tstamp_ns % 1000000000ULL),
				    ifc ? ifc->name : "?", b->hdr[b->nhdr - 1].len) < 0)
			r->write_errno = errno;
		r->cons += pieces;
		frames++;
	}
	return frames;
}

/*
 * Every device this reader attached is gone (unregistered, or moved to
 * another namespace). The module says so with POLLHUP (or POLLERR); one
 * that does not is asked for each device's NTA_DEV_GONE every few idle
 * polls, so a busy capture makes no extra system call. @polled is poll()'s
 * return.
 */
static bool interfaces_gone(struct reader *r, int polled, short revents,
			    const struct iface *ifs, int nifs)
{
	int i;

	if (polled > 0 && (revents & (POLLHUP | POLLERR)))
		return true;
	if (polled)
		r->idle_polls = 0;
	if (polled || ++r->idle_polls % GONE_CHECK_POLLS)
		return false;
	for (i = 0; i < nifs; i++) {
		struct nta_dev_stats d = { .ifindex = ifs[i].ifindex };

		r->syscalls++;
		if (ioctl(r->fd, NTA_IOC_DEV_STATS, &d) || !(d.flags & NTA_DEV_GONE))
			return false;
	}
	return true;
}

/* The bad-commit reasons, as enum nta_bad_commit numbers them (JSON keys). */
static const char *const refusal_names[] = {
	"length", "node", "offset", "state", "generation", "reserved", "ring", "pool",
};

/* What the module says of this reader and its devices, read once at the end. */
struct counts {
	struct nta_reader_stats reader;
	bool reader_ok;
	struct nta_stats module;
	bool module_ok;
	struct nta_dev_stats dev[MAX_IFACES];
	bool dev_ok[MAX_IFACES];
};

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void json_count(const char *key, bool known, unsigned long long value)
{
	if (known)
		printf("\"%s\": %llu", key, value);
	else
		printf("\"%s\": null", key);
}

static void summary_json(const struct reader *r, const struct iface *ifs, int nifs,
			 unsigned long frames, const struct counts *c)
{
	unsigned int k;
	int i;

	printf("{\"frames\": %lu, \"bytes\": %llu, \"rejected\": %lu, \"syscalls\": %lu, ", frames,
	       r->bytes, r->rejected, r->syscalls);
	json_count("wakeups", c->reader_ok, c->reader.wakeups);
	printf(", ");
	json_count("records", c->reader_ok, c->reader.records);
	printf(", ");
	json_count("committed", c->reader_ok, c->reader.committed);
	printf(", \"refused\": ");
	if (c->module_ok) {
		printf("{");
		for (k = 0; k < ARRAY_SIZE(refusal_names); k++)
			printf("%s\"%s\": %llu", k ? ", " : "", refusal_names[k],
			       (unsigned long long)c->module.bad_commits[k]);
		printf("}");
	} else {
		printf("null");
	}
	printf(", \"interfaces\": {");
	for (i = 0; i < nifs; i++) {
		const struct nta_dev_stats *d = &c->dev[i];
		bool ok = c->dev_ok[i];

		printf("%s", i ? ", " : "");
		json_string(ifs[i].name);
		printf(": {\"captured\": %lu, ", ifs[i].captured);
		json_count("received", ok, d->received);
		printf(", ");
		json_count("sent", ok, d->sent);
		printf(", ");
		json_count("published", ok, d->published);
		printf(", ");
		json_count("filtered", ok, d->filtered);
		printf(", ");
		json_count("unserved", ok, d->unserved);
		printf(", ");
		json_count("not_shared", ok, d->not_shared);
		printf(", ");
		json_count("ring_full", ok, d->ring_full);
		printf(", ");
		json_count("skipped", ok, d->skipped);
		printf(", ");
		json_count("fault_dropped", ok, d->fault_dropped);
		printf(", \"gone\": %s}", ok && (d->flags & NTA_DEV_GONE) ? "true" : "false");
	}
	printf("}}\n");
	fflush(stdout);
}

static void summary(struct reader *r, struct iface *ifs, int nifs, unsigned long frames,
		    bool json)
{
	static struct counts c;
	unsigned long long refused = 0;
	unsigned int k;
	int i;

	c.reader_ok = !ioctl(r->fd, NTA_IOC_READER_STATS, &c.reader);
	c.module_ok = !ioctl(r->fd, NTA_IOC_STATS, &c.module);
	fprintf(stderr, "%lu frames captured, %lu system calls", frames, r->syscalls);
	if (c.reader_ok)
		fprintf(stderr, ", %llu wakeups", (unsigned long long)c.reader.wakeups);
	fputc('\n', stderr);
	for (i = 0; i < nifs; i++) {
		struct nta_dev_stats *d = &c.dev[i];
		unsigned long long missed;

		d->ifindex = ifs[i].ifindex;
		c.dev_ok[i] = !ioctl(r->fd, NTA_IOC_DEV_STATS, d);
		if (!c.dev_ok[i])
			continue;
		missed = d->unserved + d->not_shared + d->ring_full + d->skipped + d->fault_dropped;
		fprintf(stderr, "%s: %llu received", ifs[i].name, (unsigned long long)d->received);
		if (d->sent)
			fprintf(stderr, ", %llu sent", (unsigned long long)d->sent);
		if (d->filtered)
			fprintf(stderr, ", %llu filtered", (unsigned long long)d->filtered);
		fprintf(stderr, ", %lu captured, %llu not delivered to ntadump", ifs[i].captured,
			missed);
		if (missed)
			fprintf(stderr, " (unserved %llu, not_shared %llu, ring_full %llu,",
				(unsigned long long)d->unserved, (unsigned long long)d->not_shared,
				(unsigned long long)d->ring_full);
		if (missed)
			fprintf(stderr, " skipped %llu, fault_dropped %llu)",
				(unsigned long long)d->skipped,
				(unsigned long long)d->fault_dropped);
		if (d->flags & NTA_DEV_GONE)
			fprintf(stderr, "; the device is gone");
		fputc('\n', stderr);
	}
	for (k = 0; c.module_ok && k < ARRAY_SIZE(refusal_names); k++)
		refused += c.module.bad_commits[k];
	/* NTA_IOC_STATS counts the module's refusals, every reader's since it loaded. */
	if (refused) {
		fprintf(stderr, "the module has refused %llu bad commits since it was loaded, ",
			refused);
		fprintf(stderr, "from every reader (a module-wide count, not this reader's):");
		for (k = 0; k < ARRAY_SIZE(refusal_names); k++)
			if (c.module.bad_commits[k])
				fprintf(stderr, " %s %llu", refusal_names[k],
					(unsigned long long)c.module.bad_commits[k]);
		fputc('\n', stderr);
	}
	if (json)
		summary_json(r, ifs, nifs, frames, &c);
}

static int open_output(const char *path)
{
	struct pcap_head h = {
		.magic = PCAP_NSEC_MAGIC,
		.major = 2,
		.minor = 4,
		.snaplen = SNAPLEN,
		.linktype = LINKTYPE_ETHERNET,
	};
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		die(path);
	if (write(fd, &h, sizeof(h)) != sizeof(h))
		die("write");
	return fd;
}

int main(int argc, char **argv)
{
	static struct batch batch;
	struct iface ifs[MAX_IFACES];
	const char *device = "/dev/" NTA_DEVICE_NAME, *path = NULL, *direction = "inout";
	struct bpf_program prog;
	char *filter = NULL;
	unsigned long count = 0, frames = 0;
	struct sigaction sa = { .sa_handler = on_signal };
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	struct reader r = { 0 };
	bool quiet = false, gone = false, json = false;
	int nifs = 0, opt, out = -1, i;

	while ((opt = getopt_long(argc, argv, "i:c:w:qD:Q:f:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			if (nifs == MAX_IFACES || strlen(optarg) >= IF_NAMESIZE)
				bad_usage();
			strcpy(ifs[nifs].name, optarg);
			ifs[nifs++].captured = 0;
			break;
		case 'c':
			count = strtoul(optarg, NULL, 10);
			if (!count)
				bad_usage();
			break;
		case 'w':
			path = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'D':
			device = optarg;
			break;
		case 'J':
			json = true;
			break;
		case 'Q':
			if (strcmp(optarg, "in") && strcmp(optarg, "out") &&
			    strcmp(optarg, "inout"))
				bad_usage();
			direction = optarg;
			break;
		case 'f':
			filter = optarg;
			break;
		default:
			bad_usage();
		}
	}
	if (!nifs || (filter && optind != argc))
		bad_usage();
	if (!filter)
		filter = join_words(argv + optind, argc - optind);
	if (filter)
		compile_filter(ifs[0].name, filter, &prog);
	reader_open(&r, device);
	/* Both before the first attach: the first frame is already one asked for. */
	set_direction(&r, direction);
	if (filter)
		set_filter(&r, &prog);
	for (i = 0; i < nifs; i++)
		reader_attach(&r, &ifs[i]);
	/* A reader of the output that goes away: write() fails (EPIPE), and ntadump says so. */
	signal(SIGPIPE, SIG_IGN);
	if (path)
		out = open_output(path);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	fprintf(stderr, "ntadump: listening on");
	for (i = 0; i < nifs; i++)
		fprintf(stderr, " %s", ifs[i].name);
	fputc('\n', stderr);
	r.syscalls = 0;	/* the capture's own, from here */
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED) && !r.write_errno && !gone &&
	       (!count || frames < count)) {
		struct pollfd pfd = { .fd = r.fd, .events = POLLIN };
		int polled = poll(&pfd, 1, 1000);

		if (polled < 0 && errno != EINTR)
			die("poll");
		r.syscalls++;
		/* Gone: nothing more comes, so what is in the ring is taken, to the last. */
		gone = interfaces_gone(&r, polled, pfd.revents, ifs, nifs);
		frames += take_frames(&r, &batch, out, !quiet && !path && !json, ifs, nifs,
				      count ? count - frames : (unsigned long)-1, gone);
		batch_flush(&batch, &r, out);
	}
	summary(&r, ifs, nifs, frames, json);
	if (r.rejected)
		fprintf(stderr, "%lu frames not written (see above)\n", r.rejected);
	if (r.write_errno)
		fprintf(stderr, "ntadump: cannot write %s: %s\n", path ? path : "standard output",
			strerror(r.write_errno));
	if (gone)
		fprintf(stderr, "ntadump: the interfaces are gone\n");
	if (out >= 0)
		close(out);
	close(r.fd);
	return r.write_errno || gone ? 1 : 0;
}
