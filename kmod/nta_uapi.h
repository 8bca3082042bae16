/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nta_uapi.h - userspace ABI of NTA, the network allocator with a
 * zero-copy, commit-back sniffer.
 *
 * This header is the single source of the ABI: the module includes it, and
 * pysniff mirrors it (a test compares the two, field by field).
 *
 * Every open file is a reader. Every device readers attach has a pool of
 * its own, shared by all of them: the device gets its receive buffers from
 * that pool, and each frame it receives (or sends) is published to every
 * reader of the device, in place, once. A chunk goes back to its pool only
 * when every reader it was published to committed it or closed. A reader
 * maps the pools of the devices it attached and nothing else: it sees
 * frames of those devices, of no other device and no other namespace.
 * How a reader uses it:
 *  1. open("/dev/nta", O_RDWR).
 *  2. mmap NTA_MMAP_META_OFFSET, one page, PROT_READ: struct nta_meta.
 *     Check magic, abi_version and meta_size; read the geometry from it.
 *  3. mmap the ring at meta.ring_mmap_offset, exactly meta.ring_mmap_size
 *     bytes, PROT_READ | PROT_WRITE: the record ring, the commit ring and
 *     their indices (the reader writes the record consumer index, the
 *     commit entries and the commit producer index, nothing else).
 *  4. ioctl(NTA_IOC_ATTACH) for each network device to sniff (it needs
 *     CAP_NET_RAW in the device's network namespace, as AF_PACKET does).
 *     The device's pool gets a slot in meta.pools[] (its index is the
 *     pool number records and commits carry) and keeps it until the reader
 *     closes, through detaching and attaching again: a reader binds at most
 *     NTA_MAX_POOLS pools in its life (then -ENOSPC), and a pool has at
 *     most NTA_POOL_READERS readers at once (then -EUSERS). The first
 *     reader's attach makes the pool: buffers the device was given before
 *     then are not in it, and frames received into them are counted
 *     (nta_dev_stats.unserved), not published; the ring refills from the
 *     pool as frames arrive. Before it, NTA_IOC_SET_DIRECTION and
 *     NTA_IOC_SET_FILTER choose the frames the reader gets (both may change
 *     later, any time).
 *  5. mmap each pool, PROT_READ only, at meta.pools[p].mmap_offset, exactly
 *     meta.pools[p].mmap_size bytes: once after the attach, or when a record
 *     first names pool p (the slot is written before any record naming it
 *     is published, and never changes after). Node n of the pool starts at
 *     n * meta.pools[p].node_size within that mapping.
 *  6. poll() for POLLIN (see NTA_IOC_SET_WAKEUP for when it is signalled);
 *     records between the consumer and the producer index are ready. Each
 *     names bytes of a frame in a pool: read them in place, then advance
 *     the consumer index.
 *  7. Hand each chunk back: a struct nta_commit in the commit ring (no
 *     system call), or write() of an array of them.
 *
 * Any other mmap offset or size, and writable mappings of the meta page or
 * of a pool, are refused with -EINVAL. All fields are fixed width and
 * little endian (the byte order of the host); reserved fields must be zero.
 */
#ifndef _UAPI_LINUX_NTA_H
#define _UAPI_LINUX_NTA_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define NTA_DEVICE_NAME		"nta"
#define NTA_MAGIC		0x3141544eU	/* "NTA1" in memory order */
#define NTA_ABI_VERSION		3U

#define NTA_MMAP_META_OFFSET	0x0ULL
#define NTA_MAX_POOLS		8	/* pools one reader binds in its life */
#define NTA_POOL_READERS	16	/* readers of one pool at once */

/*
 * struct nta_pool_info - one pool the reader bound (struct nta_meta.pools):
 * written once, before any record names it; mmap_size 0 while unbound.
 */
struct nta_pool_info {
	__u64 mmap_offset;		/* mmap offset of its node 0 */
	__u64 mmap_size;		/* node_count * node_size */
	__u32 node_count;		/* nodes in the pool */
	__u32 node_size;		/* bytes per node, page multiple */
	__s32 ifindex;			/* the device it serves, when it was bound */
	__u32 reserved;
};

/*
 * struct nta_meta - this reader's geometry, at mmap offset 0, read-only.
 */
struct nta_meta {
	__u32 magic;			/* NTA_MAGIC */
	__u32 abi_version;		/* NTA_ABI_VERSION */
	__u32 meta_size;		/* sizeof(struct nta_meta) */
	__u32 record_size;		/* sizeof(struct nta_record) */
	__u32 commit_size;		/* sizeof(struct nta_commit) */
	__u32 page_size;		/* kernel PAGE_SIZE */
	__u32 max_pools;		/* entries in pools[]: NTA_MAX_POOLS */
	__u32 pool_info_size;		/* sizeof(struct nta_pool_info) */
	__u32 chunk_size;		/* bytes per chunk, page multiple */
	__u32 ring_entries;		/* records in the record ring, power of two */
	__u32 commit_entries;		/* entries in the commit ring, power of two */
	__u32 max_shared;		/* chunks this reader may hold uncommitted */
	__u32 max_commit_batch;		/* commits one write() may carry */
	__u32 reserved0;
	__u64 ring_mmap_offset;		/* mmap offset of the ring mapping */
	__u64 ring_mmap_size;		/* its exact mapping size */
	__u32 ring_producer_offset;	/* __u64 record producer index (kernel) */
	__u32 ring_consumer_offset;	/* __u64 record consumer index (reader) */
	__u32 ring_records_offset;	/* first struct nta_record */
	__u32 commit_producer_offset;	/* __u64 commit producer index (reader) */
	__u32 commit_consumer_offset;	/* __u64 commit consumer index (kernel) */
	__u32 commit_flags_offset;	/* __u32 NTA_COMMIT_* flags (kernel) */
	__u32 commit_entries_offset;	/* first struct nta_commit of the commit ring */
	__u32 reserved1;
	__u64 reserved[4];
	struct nta_pool_info pools[NTA_MAX_POOLS];
};

/*
 * The rings. Both are single-producer, single-consumer arrays with
 * free-running __u64 indices; entry i sits at slot i & (entries - 1).
 *
 * Record ring (kernel -> reader): the kernel writes a record, then
 * publishes it with a release store of the producer index; the reader loads
 * the producer index with acquire, reads records up to it, then stores the
 * consumer index with release. A consumer index the kernel cannot make
 * sense of (ahead of the producer, or more than ring_entries behind it)
 * makes the ring count as full.
 *
 * Commit ring (reader -> kernel): the reader writes struct nta_commit
 * entries, then stores the commit producer index with release; the kernel
 * loads it with acquire, copies each entry once and checks it as a write()
 * commit would be checked, then stores the commit consumer index with
 * release, handing the slots back. The kernel reads the ring when it needs
 * chunks (the reader is at max_shared, one of its pools runs low), on poll() and on
 * write(); a producer index more than commit_entries ahead of the consumer
 * is refused (NTA_BAD_RING) and the entries left unread.
 */

/* Commit ring flags, written by the kernel. */
/*
 * The reader is at max_shared and its commit ring was empty when the kernel
 * last looked: frames are not shared with it until chunks come back. Commits
 * put in the ring are taken at the next frame; a reader that wants them
 * taken now (to have its pools refilled before traffic resumes) calls poll()
 * or write(). Without this flag no system call is ever due.
 */
#define NTA_COMMIT_NEED_WAKEUP	0x0001U

/* struct nta_record - one piece of one received frame, living in a chunk. */
struct nta_record {
	__u32 node;		/* node index, < the pool's node_count */
	__u32 offset;		/* byte offset of the piece's first byte in the node */
	__u32 len;		/* bytes in this piece */
	__u32 generation;	/* chunk generation, echoed back in the commit */
	__u64 seq;		/* per-reader record number, from 0, no gaps */
	__u64 tstamp_ns;	/* receive time, CLOCK_REALTIME nanoseconds */
	__s32 ifindex;		/* receiving device */
	__u16 protocol;		/* skb->protocol, network byte order */
	__u16 flags;		/* NTA_RECORD_* */
	__u32 frame_len;	/* the whole frame, every piece (no stripped tag) */
	__u16 vlan_tci;		/* with NTA_RECORD_VLAN */
	__u16 vlan_proto;	/* with NTA_RECORD_VLAN: the tag's TPID, network order */
	__u32 pool;		/* the pool the chunk is in: index in nta_meta.pools */
	__u32 reserved;		/* zero */
};

/*
 * The stack took a VLAN tag out of the frame (a NIC stripping it, or the
 * core untagging it before the frame reaches NTA): vlan_tci and vlan_proto
 * give it; on the wire it stood after the two MAC addresses.
 */
#define NTA_RECORD_VLAN		0x0001U
/*
 * The frame continues in the next record (the next seq), as AF_XDP's CONTD:
 * a frame GRO merged is published as a chain, a record per piece (its head,
 * then each merged segment, in place in its own chunk at an offset into it,
 * or copied), each piece committed on its own.
 */
#define NTA_RECORD_CONTD	0x0002U
/*
 * This piece was copied into a chunk of the pool rather than published
 * where the frame lies: its bytes lay outside the pool (part of a frame
 * GRO merged), or the stack may rewrite them without copying first (a
 * tunnel the host terminates, an ECN-capable frame a bridge forwards; see
 * kmod/nta_capture.c). Committed like any other.
 */
#define NTA_RECORD_COPY		0x0004U
/*
 * The device sent this frame (the reader asked for NTA_DIR_OUT): always a
 * copy (NTA_RECORD_COPY too), never the sender's pages. Without it the
 * device received the frame.
 */
#define NTA_RECORD_OUTGOING	0x0008U

/*
 * struct nta_commit - hands one chunk back, in the commit ring or in an
 * array given to write() (length a multiple of commit_size, at most
 * max_commit_batch entries). A commit is accepted only if the chunk it
 * names (pool, node, offset) is currently shared with this reader under
 * this generation, and
 * offset is the offset its record gave; anything else is refused, counted
 * by reason, and changes nothing. write() checks its commits in order and
 * stops at the first refused one: it returns commit_size * (the commits
 * accepted before it), or -EINVAL when the first is refused or the length
 * is bad. A write-all loop therefore resumes at the refused commit, which
 * it must drop rather than send again.
 */
struct nta_commit {
	__u32 node;		/* nta_record.node */
	__u32 offset;		/* nta_record.offset */
	__u32 generation;	/* nta_record.generation */
	__u16 pool;		/* nta_record.pool */
	__u16 reserved;		/* must be zero */
};

/* Reasons a commit is refused; index into nta_stats.bad_commits. */
enum nta_bad_commit {
	NTA_BAD_LENGTH,		/* write() length zero, not a multiple, too long */
	NTA_BAD_NODE,		/* node index out of range */
	NTA_BAD_OFFSET,		/* offset not the published offset */
	NTA_BAD_STATE,		/* chunk not shared with this reader: never published,
				 * committed already by it, or only other readers'
				 */
	NTA_BAD_GENERATION,	/* generation is stale */
	NTA_BAD_RESERVED,	/* a reserved field is not zero */
	NTA_BAD_RING,		/* commit ring producer index out of range */
	NTA_BAD_POOL,		/* pool index out of range, or no pool bound there */
	NTA_BAD_COMMIT_MAX = 8	/* size of the array, room to grow */
};

/* struct nta_attach - NTA_IOC_ATTACH / NTA_IOC_DETACH argument. */
struct nta_attach {
	__s32 ifindex;		/* in the caller's network namespace */
	__u32 abi_version;	/* NTA_ABI_VERSION: an older reader gets -EPROTO */
};

/*
 * struct nta_wakeup - NTA_IOC_SET_WAKEUP argument: when a reader sleeping in
 * poll() is woken. It is woken once frames records are pending, or once the
 * oldest pending record is usecs old, whichever comes first; never for an
 * empty ring, and at most once until it polls again. usecs 0 wakes it for
 * every record (as libpcap's immediate mode). poll() reports POLLIN by the
 * same rule.
 */
struct nta_wakeup {
	__u32 frames;		/* 1 .. ring_entries */
	__u32 usecs;		/* 0 .. 10 000 000 */
};

/*
 * struct nta_direction - NTA_IOC_SET_DIRECTION argument: which frames of its
 * devices the reader gets, as tcpdump's -Q. A reader that never sets it
 * gets received frames only (NTA_DIR_IN), as before this ioctl existed.
 * Frames a device sends reach the taps in the order it sends them, beside
 * the frames it receives, as AF_PACKET's do (both are ptype_all handlers).
 * The multicast a device loops back to itself (PACKET_LOOPBACK) is never
 * published: the frame was published as sent (AF_PACKET drops them too).
 */
struct nta_direction {
	__u32 direction;	/* NTA_DIR_IN, NTA_DIR_OUT or NTA_DIR_INOUT */
	__u32 reserved;		/* must be zero */
};

#define NTA_DIR_IN		0x0001U	/* frames the device received */
#define NTA_DIR_OUT		0x0002U	/* frames the device sent (copies) */
#define NTA_DIR_INOUT		(NTA_DIR_IN | NTA_DIR_OUT)

/*
 * struct nta_filter - NTA_IOC_SET_FILTER argument: a classic BPF program
 * (struct sock_filter, <linux/filter.h>, as SO_ATTACH_FILTER takes it) the
 * reader's taps run on each frame from its MAC header before admitting it.
 * It answers 0: the frame is not published, costs no chunk, no record and
 * no wakeup, and counts as filtered; else the bytes to publish (a shorter
 * frame is published as a copy of its first bytes, its record's frame_len
 * the whole). len 1 .. BPF_MAXINSNS; a program the kernel's checker
 * refuses is -EINVAL, an unreadable one -EFAULT, and the filter in place
 * stays. It replaces any filter before it; NTA_IOC_DETACH_FILTER removes it.
 */
struct nta_filter {
	__u32 len;		/* instructions */
	__u32 reserved;		/* must be zero */
	__u64 insns;		/* user pointer to len struct sock_filter */
};

/*
 * struct nta_stats - module-wide counters (NTA_IOC_STATS). At any quiet
 * moment: allocated == freed + in_use + handed_over, and
 * published == committed + returned_on_close + outstanding.
 */
struct nta_stats {
	__u64 allocated;	/* chunks taken from a pool: receive buffers and copies */
	__u64 freed;		/* chunks returned to their pool */
	__u64 in_use;		/* chunks not in their pool's free list */
	__u64 handed_over;	/* chunks the kernel still held when their pool went */
	__u64 published;	/* records written to readers' rings */
	__u64 committed;	/* commits accepted */
	__u64 outstanding;	/* chunks shared with readers right now */
	__u64 returned_on_close;/* shared chunks released by a reader's close */
	__u64 not_shared;	/* frames not shared: reader at max_shared */
	__u64 ring_full;	/* frames not shared: reader's record ring full */
	__u64 unserved;		/* frames in buffers not from their device's pool */
	__u64 skipped;		/* frames that could not be published (see dev stats) */
	__u64 copied;		/* frames copied into chunks, whole or in part (NTA_RECORD_COPY) */
	__u64 fallback;		/* allocations given to the kernel's allocator */
	__u64 pool_empty;	/* ... of which because no chunk was free */
	__u64 reclaim_scanned;	/* busy chunks allocations looked at to find a free one */
	__u64 reclaim_passes;	/* full passes over a pool's busy chunks, in a work item */
	__u64 wakeups;		/* readers woken */
	__u64 fault_leaked;	/* chunks leaked on purpose (fault injection) */
	__u64 fault_dropped;	/* records dropped on purpose (fault injection) */
	__u64 bad_commits[NTA_BAD_COMMIT_MAX];
	__u64 chained;		/* frames published in place over several chunks (GRO) */
	__u64 filtered;		/* frames a reader's filter refused (NTA_IOC_SET_FILTER) */
	__u64 reserved[6];
};

/*
 * struct nta_dev_stats - one of this reader's devices (NTA_IOC_DEV_STATS),
 * counted while it is attached. Each frame the device received (and, with
 * NTA_DIR_OUT, each it sent) lands in exactly one of published, filtered,
 * unserved, not_shared, ring_full, skipped and fault_dropped: those after
 * filtered are frames this reader wanted and did not get. Counters added
 * later took reserved fields at the end: the size, and so the ioctl
 * number, never changes, and a reader built against an older header reads
 * what it knows.
 */
struct nta_dev_stats {
	__s32 ifindex;		/* in: the device, in the caller's namespace */
	__u32 flags;		/* out: NTA_DEV_* */
	__u64 received;		/* frames the device received */
	__u64 published;	/* frames published (a frame may take several records) */
	__u64 unserved;		/* in a buffer not from the device's pool: given
				 * before its first reader attached, or when the
				 * pool was empty, or too large
				 */
	__u64 not_shared;	/* the reader was at max_shared */
	__u64 ring_full;	/* the record ring was full */
	__u64 skipped;		/* could not be published: no chunk free for a copy,
				 * or the copy failed
				 */
	__u64 fault_dropped;	/* fault injection */
	__u64 allocated;	/* receive buffers served from the device's pool */
	__u64 fallback;		/* receive buffers it got elsewhere while attached */
	__u64 pool_empty;	/* ... of which because the pool was empty */
	__u64 sent;		/* frames the device sent, while the reader asked for them */
	__u64 filtered;		/* frames the reader's filter refused */
	__u64 reserved[2];
};

/* The device is gone (unregistered, or moved to another namespace). */
#define NTA_DEV_GONE		0x0001U

/* struct nta_reader_stats - this reader's own counters (NTA_IOC_READER_STATS). */
struct nta_reader_stats {
	__u64 records;		/* records published to it */
	__u64 committed;	/* commits accepted, from both paths */
	__u64 ring_commits;	/* ... taken from the commit ring */
	__u64 outstanding;	/* chunks it holds now */
	__u64 wakeups;		/* times it was woken in poll() */
	__u64 need_wakeup;	/* times NTA_COMMIT_NEED_WAKEUP was set */
	__u64 reserved[6];
};

#define NTA_IOC_MAGIC		'N'
#define NTA_IOC_ATTACH		_IOW(NTA_IOC_MAGIC, 1, struct nta_attach)
#define NTA_IOC_DETACH		_IOW(NTA_IOC_MAGIC, 2, struct nta_attach)
#define NTA_IOC_STATS		_IOR(NTA_IOC_MAGIC, 3, struct nta_stats)
#define NTA_IOC_DEV_STATS	_IOWR(NTA_IOC_MAGIC, 4, struct nta_dev_stats)
#define NTA_IOC_SET_WAKEUP	_IOW(NTA_IOC_MAGIC, 5, struct nta_wakeup)
#define NTA_IOC_READER_STATS	_IOR(NTA_IOC_MAGIC, 6, struct nta_reader_stats)
#define NTA_IOC_SET_DIRECTION	_IOW(NTA_IOC_MAGIC, 7, struct nta_direction)
#define NTA_IOC_SET_FILTER	_IOW(NTA_IOC_MAGIC, 8, struct nta_filter)
#define NTA_IOC_DETACH_FILTER	_IO(NTA_IOC_MAGIC, 9)

#endif /* _UAPI_LINUX_NTA_H */
