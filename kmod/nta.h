/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nta.h - internal interfaces of NTA, the network allocator with a
 * zero-copy, commit-back sniffer.
 *
 * The files, each using only those listed after it:
 *   nta_main.c     load and unload, debugfs
 *   nta_dev.c      /dev/nta (a reader's file), the table of served devices,
 *                  attaching, and allocating for a served device
 *   nta_capture.c  the taps: a received frame published where it lies, or copied
 *   nta_reader.c   a reader's rings: records, commits, wakeups, its limits
 *   nta_hook.c     the ftrace redirects of the kernel's receive allocators; it
 *                  asks the ops it is given (nta_dev.c's) which devices NTA
 *                  serves and for their buffers
 *   nta_pool.c     pools of pages cut into chunks (nta_chunk.h: a chunk's life)
 *   nta_params.c   the module's parameters
 * A file reaches one above it only through a function pointer it is given
 * (a pool's refill, the hooks' struct nta_serving_ops);
 * tests/test_kmod_layers.py holds the files to this order.
 *
 * Pools: one per device readers attach (struct nta_devpool), shared by all
 * of them: the device is served from it, each of its frames is published
 * to every reader of the device once, in place, and a chunk goes back when
 * the last of them commits it or closes. A reader maps the pools of the
 * devices it attached, nothing else. The common pool serves devices named
 * by the attach= parameter while no reader has them.
 *
 * Locking:
 *  - rtnl_lock: the table of served devices (nta.devs), attaching,
 *    detaching, and the per-device taps. Readers of the table (allocation
 *    hooks, taps) use RCU.
 *  - nta_lock: every pool and its chunks, every reader's rings, counters
 *    and wakeup state. One lock, not one per pool: a frame is published to
 *    several readers at once, and a reader's commits name chunks of several
 *    pools, so a lock per pool and one per reader would nest both ways (the
 *    receive path holds the pool's and takes the readers' to publish; a
 *    dry pool takes its readers' commit rings; a commit takes the pool's
 *    under its reader's). On a host with many CPUs and busy devices the
 *    scalable form is a lock per pool with commits staged per reader; at
 *    NTA_MAX_DEVS devices it is not worth its lock order. Taken with
 *    interrupts off: the
 *    allocation hooks run wherever the kernel allocates receive buffers, in
 *    hard interrupt context too, or with interrupts off inside a driver's
 *    own irqsave section (8139cp's tx timeout refills its ring under
 *    cp->lock). A lock that an interrupt handler may take must be taken with
 *    interrupts off everywhere, or an interrupt arriving on a CPU that holds
 *    it spins for ever. Never held across anything that sleeps; no skb is
 *    freed under it (see nta_release_holds()).
 *  - nta_readers_lock (mutex): the lists of readers and of device pools,
 *    for module-wide counters.
 *  - nta_hooks_lock (mutex, nta_hook.c): whether the redirects are in place.
 * Order: rtnl_lock, then nta_readers_lock or nta_hooks_lock, then nta_lock.
 */
#ifndef _NTA_H
#define _NTA_H

#include <linux/bits.h>
#include <linux/hrtimer.h>
#include <linux/list.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "nta_chunk.h"
#include "nta_uapi.h"

#define NTA_VERSION		"0.3.0"
#define NTA_MAX_DEVS		8
#define NTA_MAX_COMMIT_BATCH	1024
/* mmap offsets, in bytes; the meta page tells userspace, never hard-coded */
#define NTA_MMAP_RING_OFFSET	BIT_ULL(28)
#define NTA_MMAP_NODES_OFFSET	BIT_ULL(32)
#define NTA_MMAP_POOL_STRIDE	BIT_ULL(36)	/* more than any pool's mapping */
/* The ring mapping's first page: each index on a cache line of its own. */
#define NTA_RING_PRODUCER	0
#define NTA_RING_CONSUMER	64
#define NTA_COMMIT_PRODUCER	128
#define NTA_COMMIT_CONSUMER	192
#define NTA_COMMIT_FLAGS	256
/*
 * Bounded work in the receive path, with interrupts off: busy chunks an
 * allocation looks at to find a free one, and commits it takes from the
 * commit ring when the reader's pool or share runs out. poll() and write()
 * take the whole commit ring.
 */
#define NTA_RECLAIM_BUDGET	32
#define NTA_DRAIN_BUDGET	64
#define NTA_PASS_INTERVAL_MS	10	/* between two full reclaim passes */

struct nta_reader;
struct nta_attached;

/* Counters of one pool; module-wide figures are their sum. */
struct nta_pool_stats {
	u64 allocated;
	u64 freed;
	u64 in_use;
	u64 handed_over;
	u64 fallback;
	u64 pool_empty;
	u64 reclaim_scanned;
	u64 reclaim_passes;
	u64 fault_leaked;
};

struct nta_pool {
	struct nta_node *nodes;		/* sorted by pfn */
	u32 node_count;
	u32 node_pages;
	struct list_head free;
	struct list_head busy;		/* held by the kernel or being filled, oldest first */
	struct list_head shared;	/* published to readers */
	u32 nr_free;
	u32 nr_shared;
	struct nta_pool_stats stats;
	struct work_struct reclaim;	/* a full pass, kicked when the pool runs low */
	unsigned long next_pass;	/* jiffies: no pass is kicked before this */
	/*
	 * A device's pool: takes chunks back from its readers when none is
	 * free (their commit rings, nta_reader.c). NULL for the common pool.
	 */
	void (*refill)(struct nta_pool *pool, struct sk_buff_head *holds);
	u64 fault_free_count;
};

/*
 * A device's pool and the readers it is shared with. Reader slot u (bit u
 * of a chunk's readers) is users[u] from its first attach of the device
 * until it closes: it may hold chunks and map the pool after detaching.
 * users[] and tapping are written under rtnl_lock and nta_lock; the tap
 * reads them under RCU, tapping with an acquire load that pairs with the
 * release store made after users[u] was set.
 */
struct nta_devpool {
	struct nta_pool pool;
	struct list_head node;		/* nta.pools */
	/*
	 * The device it serves, by identity only (never dereferenced):
	 * attached again while the pool lives, the device is served from it
	 * again. NULL once the device is unregistered (rtnl_lock and
	 * nta_readers_lock), so that a new device at the same address is not
	 * taken for it.
	 */
	const struct net_device *dev;
	refcount_t refs;		/* the serving entry's, each bound reader's */
	struct nta_reader *users[NTA_POOL_READERS];
	u8 watch[NTA_POOL_READERS];	/* each user's watch: the pool's index for it */
	u16 tapping;			/* users attached now: the tap publishes to them */
};

/*
 * A pool a reader bound (its index is the pool number in its records and
 * commits: never rebound while the reader is open, its mapping may live),
 * and the counters of the device it serves, live or after it went.
 */
struct nta_watch {
	struct nta_dev_stats stats;
	const struct net *net;		/* the namespace stats.ifindex is in */
	struct nta_devpool *dp;		/* bound (a reference) until the reader closes */
	u32 user;			/* its slot in dp->users */
	u64 detached;			/* when it last stopped being live (a reuse order) */
	bool live;			/* attached now */
};

struct nta_reader {
	struct list_head node;		/* nta.readers */
	struct nta_meta *meta;		/* its page, mapped read-only */
	void *ring;			/* vmalloc_user: control page, records, commits */
	size_t ring_size;
	struct nta_record *records;
	struct nta_commit *commits;
	u64 *stamps;			/* publish time of each record slot (monotonic) */
	u32 ring_entries;
	u32 commit_entries;
	u32 max_shared;
	u64 seq;			/* record producer index: the kernel's own copy */
	u64 commit_cons;		/* commit consumer index: the kernel's own copy */
	u64 bad_producer;		/* the last out-of-range commit producer counted */
	u32 outstanding;
	u64 fault_publish_count;
	/*
	 * What the taps publish to it: NTA_DIR_* (written under rtnl_lock, read
	 * by the taps without a lock), and its filter (replaced under nta_lock,
	 * run by the taps under RCU, freed after a grace period).
	 */
	u32 direction;
	struct bpf_prog __rcu *filter;
	/* Wakeups (see struct nta_wakeup). */
	wait_queue_head_t wait;
	struct hrtimer timer;		/* wakes a sleeper once its oldest record is due */
	u32 wakeup_frames;
	u32 wakeup_usecs;
	bool woken;			/* woken since it last entered poll() */
	bool need_wakeup;
	bool hup;			/* every device it had attached is gone */
	u64 detaches;			/* orders its watches' reuse */
	struct nta_reader_stats stats;
	struct nta_stats gone;		/* its share of module-wide counters */
	struct nta_watch devs[NTA_MAX_POOLS];
};

/* A device NTA serves. */
struct nta_attached {
	struct net_device *dev;
	netdevice_tracker tracker;
	struct nta_devpool __rcu *dp;	/* while readers have it: serves from it, publishes */
	bool served;			/* by the attach= parameter: stays after its readers */
	bool tapped;			/* tap registered */
	struct packet_type tap;		/* this device's received frames */
	struct packet_type sentinel;	/* after the tap: see nta_attach_reader() */
	u64 allocated;			/* served from the common pool */
	u64 fallback;
};

struct nta {
	struct nta_pool common;
	struct nta_attached __rcu *devs[NTA_MAX_DEVS];
	struct list_head readers;
	struct list_head pools;		/* struct nta_devpool */
	struct nta_stats gone;		/* counters of readers that closed, pools that went */
};

/* nta_params.c */
extern unsigned int nta_pool_kb;
extern unsigned int nta_common_pool_kb;
extern char *nta_attach_list;
extern unsigned int nta_node_order;
extern unsigned int nta_max_shared;
extern unsigned int nta_ring_entries;
extern unsigned int nta_wakeup_frames;
extern unsigned int nta_wakeup_usecs;
extern unsigned int nta_fault_leak_every;
extern unsigned int nta_fault_drop_record_every;
extern unsigned int nta_fault_timer_stall_us;
extern bool nta_fault_no_protect;
extern bool nta_fault_trust_writers;
extern bool nta_fault_block_fallback;
extern bool nta_fault_uaf_on_close;
extern wait_queue_head_t nta_fault_wq;

/* nta_pool.c */
extern spinlock_t nta_lock;
u32 nta_pool_chunks(u64 bytes);
int nta_pool_init(struct nta_pool *pool, u64 bytes, gfp_t gfp);
void nta_pool_exit(struct nta_pool *pool);
struct nta_chunk *nta_pool_take_locked(struct nta_pool *pool, struct sk_buff_head *holds);
struct nta_chunk *nta_pool_take_for_copy_locked(struct nta_pool *pool,
						struct sk_buff_head *holds);
void nta_pool_untake_locked(struct nta_pool *pool, struct nta_chunk *c);
struct nta_chunk *nta_pool_chunk_of(const struct nta_pool *pool, const void *addr);
struct nta_chunk *nta_pool_chunk_of_page(const struct nta_pool *pool, const struct page *page);
void nta_chunk_share_locked(struct nta_pool *pool, struct nta_chunk *c, u16 readers,
			    u32 frame_offset);
void nta_chunk_release_locked(struct nta_pool *pool, struct nta_chunk *c, u32 user,
			      struct sk_buff_head *holds);
void nta_release_holds(struct sk_buff_head *holds);
void nta_pool_reclaim_all(struct nta_pool *pool);
void nta_pool_add_stats(struct nta_pool *pool, struct nta_stats *s);

/* nta_hook.c: what the redirects ask of the rest of NTA (nta_dev.c implements it). */
struct nta_serving_ops {
	/* Whether NTA serves @dev; RCU read side, any context. */
	bool (*serves)(const struct net_device *dev);
	/* A chunk's page for a receive buffer of @size bytes for @dev, or NULL. */
	void *(*alloc)(struct net_device *dev, unsigned int size);
};

int nta_hooks_init(const struct nta_serving_ops *ops);
void nta_hooks_exit(void);
int nta_hooks_get(void);
void nta_hooks_put(void);

/* nta_reader.c */
int nta_reader_init(struct nta_reader *r);
void nta_reader_exit(struct nta_reader *r);
void nta_reader_drain_locked(struct nta_reader *r, struct sk_buff_head *holds, u32 budget);
bool nta_commit_batch_locked(struct nta_reader *r, const struct nta_commit *cm,
			     struct sk_buff_head *holds);
void nta_count_refusal(struct nta_reader *r, enum nta_bad_commit why);
void nta_reader_unshare_all_locked(struct nta_reader *r, struct sk_buff_head *holds);
void nta_devpool_refill(struct nta_pool *pool, struct sk_buff_head *holds);
void nta_reader_bind_locked(struct nta_reader *r, u32 p, struct nta_devpool *dp, u32 user,
			    const struct net_device *dev);
__poll_t nta_reader_poll_locked(struct nta_reader *r, struct sk_buff_head *holds);
void nta_reader_hangup_locked(struct nta_reader *r);

enum nta_admit {
	NTA_ADMIT,
	NTA_NOT_SHARED,
	NTA_RING_FULL,
	NTA_FAULT_DROP,
};

enum nta_admit nta_room_locked(struct nta_reader *r, u32 n, struct sk_buff_head *holds);
enum nta_admit nta_admit_locked(struct nta_reader *r, u32 n, struct sk_buff_head *holds);
void nta_not_admitted(struct nta_reader *r, struct nta_dev_stats *w, enum nta_admit why);

/*
 * When a frame was taken, read once for all its records and readers: the
 * monotonic time the wakeup policy ages records by, and the same instant
 * in wall-clock time for the record (converted, not read again: where the
 * clocksource is a device, as a TCG guest's HPET, each read is an
 * emulated device access, the costliest step of publishing a frame).
 */
struct nta_stamp {
	u64 mono;
	u64 real;
};

void nta_record_locked(struct nta_reader *r, u32 pool, const struct nta_chunk *c,
		       const struct sk_buff *skb, const struct nta_stamp *when, u32 offset,
		       u32 len, u32 frame_len, u16 flags);
void nta_ring_publish_locked(struct nta_reader *r, u64 now);

/* nta_capture.c */
void nta_filter_replace(struct nta_reader *r, struct bpf_prog *prog);
int nta_tap_rcv(struct sk_buff *skb, struct net_device *dev, struct packet_type *pt,
		struct net_device *orig_dev);

/* nta_dev.c */
extern struct nta nta;
extern struct mutex nta_readers_lock;
int nta_dev_init(void);
void nta_dev_exit(void);
int nta_node_register(void);
void nta_node_deregister(void);
int nta_attach_served(struct net_device *dev);
void nta_detach_all(void);
void nta_stats_add(struct nta_stats *to, const struct nta_stats *s);
void nta_stats_sum(struct nta_stats *s);

#endif /* _NTA_H */
