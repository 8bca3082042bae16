/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nta_uapi.h - userspace ABI of NTA, the network allocator with a
 * zero-copy, commit-back sniffer.
 *
 * This header is the single source of the ABI: the module includes it, and
 * pysniff mirrors it (a test compares the two, field by field).
 *
 * How a reader uses it:
 *  1. open("/dev/nta", O_RDWR).
 *  2. mmap NTA_MMAP_META_OFFSET, one page, PROT_READ: struct nta_meta.
 *     Check magic, abi_version and meta_size; read the geometry from it.
 *  3. mmap the record ring at meta.ring_mmap_offset, exactly
 *     meta.ring_mmap_size bytes, PROT_READ | PROT_WRITE (the reader writes
 *     the consumer index, nothing else).
 *  4. mmap all nodes at meta.nodes_mmap_offset, exactly
 *     meta.nodes_mmap_size bytes, PROT_READ only. Node n starts at
 *     n * meta.node_size within that mapping.
 *  5. ioctl(NTA_IOC_ATTACH) for each network device to sniff.
 *  6. poll() for POLLIN; records between the consumer index and the
 *     producer index are ready. Each names a frame in a node; read the
 *     bytes in place, then advance the consumer index.
 *  7. write() an array of struct nta_commit to hand chunks back.
 *
 * Any other mmap offset or size, and writable mappings of the meta page or
 * of the nodes, are refused with -EINVAL. All fields are fixed width and
 * little endian (the byte order of the host); reserved fields must be zero.
 */
#ifndef _UAPI_LINUX_NTA_H
#define _UAPI_LINUX_NTA_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define NTA_DEVICE_NAME		"nta"
#define NTA_MAGIC		0x3141544eU	/* "NTA1" in memory order */
#define NTA_ABI_VERSION		1U

#define NTA_MMAP_META_OFFSET	0x0ULL

/*
 * struct nta_meta - geometry of the shared memory, at mmap offset 0.
 * Read-only for userspace, the same for every reader.
 */
struct nta_meta {
	__u32 magic;			/* NTA_MAGIC */
	__u32 abi_version;		/* NTA_ABI_VERSION */
	__u32 meta_size;		/* sizeof(struct nta_meta) */
	__u32 record_size;		/* sizeof(struct nta_record) */
	__u32 commit_size;		/* sizeof(struct nta_commit) */
	__u32 page_size;		/* kernel PAGE_SIZE */
	__u32 node_count;		/* nodes in the pool */
	__u32 node_size;		/* bytes per node, page multiple */
	__u32 chunk_size;		/* bytes per chunk, page multiple */
	__u32 ring_entries;		/* records in a ring, power of two */
	__u32 max_shared;		/* chunks a reader may hold, at open */
	__u32 max_commit_batch;		/* commits one write() may carry */
	__u64 ring_mmap_offset;		/* mmap offset of the record ring */
	__u64 ring_mmap_size;		/* its exact mapping size */
	__u64 nodes_mmap_offset;	/* mmap offset of node 0 */
	__u64 nodes_mmap_size;		/* node_count * node_size */
	__u32 ring_producer_offset;	/* __u64 producer index in the ring map */
	__u32 ring_consumer_offset;	/* __u64 consumer index in the ring map */
	__u32 ring_records_offset;	/* first struct nta_record in the ring map */
	__u32 reserved0;
	__u64 reserved[4];
};

/*
 * The ring: a single-producer (kernel), single-consumer (reader) array of
 * ring_entries records. Indices are free-running __u64 counters; record i
 * sits at slot i & (ring_entries - 1). The kernel writes a record, then
 * publishes it with a release store of the producer index; the reader
 * loads the producer index with acquire, reads records up to it, then
 * stores the consumer index with release. A consumer index the kernel
 * cannot make sense of (ahead of the producer, or more than ring_entries
 * behind it) makes the ring count as full.
 */

/* struct nta_record - one received frame, living in an NTA chunk. */
struct nta_record {
	__u32 node;		/* node index, < node_count */
	__u32 offset;		/* byte offset of the frame's first byte in the node */
	__u32 len;		/* frame length in bytes, Ethernet header included */
	__u32 generation;	/* chunk generation, echoed back in the commit */
	__u64 seq;		/* per-reader sequence number, from 0, no gaps */
	__u64 tstamp_ns;	/* receive time, CLOCK_REALTIME nanoseconds */
	__s32 ifindex;		/* receiving device */
	__u16 protocol;		/* skb->protocol, network byte order */
	__u16 flags;		/* NTA_RECORD_* */
	__u32 chunk;		/* chunk index within the node */
	__u16 vlan_tci;		/* valid with NTA_RECORD_VLAN_STRIPPED */
	__u16 reserved;
};

/* The frame's VLAN tag was stripped by the NIC; vlan_tci holds it. */
#define NTA_RECORD_VLAN_STRIPPED	0x0001U

/*
 * struct nta_commit - hands one chunk back. write() takes an array of them
 * (length a multiple of commit_size, at most max_commit_batch entries).
 * Each is checked on its own: a commit is accepted only if the chunk it
 * names is currently shared with this reader under this generation, and
 * offset is the frame offset the record gave. Anything else is refused,
 * counted by reason, and changes nothing. write() returns
 * commit_size * (accepted commits), or -EINVAL when none was accepted or
 * the length itself is bad.
 */
struct nta_commit {
	__u32 node;
	__u32 offset;		/* nta_record.offset */
	__u32 generation;	/* nta_record.generation */
	__u32 reserved;		/* must be zero */
};

/* Reasons a commit is refused; index into nta_stats.bad_commits. */
enum nta_bad_commit {
	NTA_BAD_LENGTH,		/* write() length zero, not a multiple, too long */
	NTA_BAD_NODE,		/* node index out of range */
	NTA_BAD_OFFSET,		/* offset not the published frame offset */
	NTA_BAD_STATE,		/* chunk not shared: never published, double commit */
	NTA_BAD_GENERATION,	/* generation is stale */
	NTA_BAD_OWNER,		/* chunk is shared with another reader */
	NTA_BAD_RESERVED,	/* a reserved field is not zero */
	NTA_BAD_COMMIT_MAX = 8	/* size of the array, room to grow */
};

/* struct nta_attach - NTA_IOC_ATTACH / NTA_IOC_DETACH argument. */
struct nta_attach {
	__s32 ifindex;
	__u32 flags;		/* must be zero */
};

/*
 * struct nta_stats - module-wide counters (NTA_IOC_STATS). At any quiet
 * moment: allocated == freed + in_use, and
 * published == committed + returned_on_close + outstanding.
 */
struct nta_stats {
	__u64 allocated;	/* chunks handed to the kernel for receive */
	__u64 freed;		/* chunks returned to the free pool */
	__u64 in_use;		/* chunks not in the free pool */
	__u64 published;	/* records written to readers' rings */
	__u64 committed;	/* commits accepted */
	__u64 outstanding;	/* chunks shared with readers right now */
	__u64 returned_on_close;/* shared chunks released by a reader's close */
	__u64 not_shared;	/* frames not shared: reader at max_shared */
	__u64 ring_full;	/* frames not shared: reader's ring full */
	__u64 no_reader;	/* NTA frames on devices no reader attached */
	__u64 fallback;		/* allocations given to the kernel's allocator */
	__u64 pool_empty;	/* ... of which because no chunk was free */
	__u64 fault_leaked;	/* chunks leaked on purpose (fault injection) */
	__u64 fault_dropped;	/* records dropped on purpose (fault injection) */
	__u64 bad_commits[NTA_BAD_COMMIT_MAX];
	__u64 reserved[8];
};

/* struct nta_dev_stats - per-device counters (NTA_IOC_DEV_STATS). */
struct nta_dev_stats {
	__s32 ifindex;		/* in: the device */
	__u32 reserved;		/* in: must be zero */
	__u64 allocated;	/* receive buffers served from NTA */
	__u64 fallback;		/* receive buffers NTA did not serve */
	__u64 received;		/* frames seen in NTA chunks */
	__u64 published;
	__u64 not_shared;
	__u64 reserved2[4];
};

#define NTA_IOC_MAGIC		'N'
#define NTA_IOC_ATTACH		_IOW(NTA_IOC_MAGIC, 1, struct nta_attach)
#define NTA_IOC_DETACH		_IOW(NTA_IOC_MAGIC, 2, struct nta_attach)
#define NTA_IOC_STATS		_IOR(NTA_IOC_MAGIC, 3, struct nta_stats)
#define NTA_IOC_DEV_STATS	_IOWR(NTA_IOC_MAGIC, 4, struct nta_dev_stats)

#endif /* _UAPI_LINUX_NTA_H */
