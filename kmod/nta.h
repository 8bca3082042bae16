/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nta.h - internal interfaces of NTA, the network allocator with a
 * zero-copy, commit-back sniffer.
 *
 * One lock (nta.lock, taken with bottom halves off) guards the pool, the
 * readers' rings and all counters: every operation under it is short and
 * never sleeps, and one lock makes the chunk state machine easy to trust.
 */
#ifndef _NTA_H
#define _NTA_H

#include <linux/bits.h>
#include <linux/list.h>
#include <linux/netdevice.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "nta_chunk.h"
#include "nta_uapi.h"

#define NTA_VERSION		"0.1.0"
#define NTA_MAX_DEVS		8
#define NTA_MAX_COMMIT_BATCH	1024
/* mmap offsets, in bytes; the meta page tells userspace, never hard-coded */
#define NTA_MMAP_RING_OFFSET	BIT_ULL(28)
#define NTA_MMAP_NODES_OFFSET	BIT_ULL(32)
#define NTA_RING_PRODUCER	0
#define NTA_RING_CONSUMER	64

struct nta_reader;

struct nta_attached {
	struct net_device *dev;
	netdevice_tracker tracker;
	struct nta_reader *reader;	/* publishes to it; NULL: none */
	bool served;			/* attached by module param: stays when readers go */
	struct nta_dev_stats stats;
};

struct nta_reader {
	struct nta_record *records;
	void *ring;			/* vmalloc_user: control page + records */
	size_t ring_size;
	u64 seq;
	u32 outstanding;
	wait_queue_head_t wait;
};

struct nta {
	spinlock_t lock;		/* everything below, and every reader's ring */
	struct nta_node *nodes;
	u32 node_count;
	u32 node_pages;
	struct list_head free;
	struct list_head busy;
	struct nta_attached __rcu *devs[NTA_MAX_DEVS];
	struct nta_stats stats;
	struct delayed_work sweep;
	struct nta_meta *meta;
	u64 fault_free_count;
	u64 fault_publish_count;
};

extern struct nta nta;
extern unsigned int nta_max_shared;
extern unsigned int nta_ring_entries;
extern unsigned int nta_fault_leak_every;
extern unsigned int nta_fault_drop_record_every;

/* nta_pool.c */
int nta_pool_init(unsigned int node_order, unsigned int node_count);
void nta_pool_exit(void);
void *nta_chunk_alloc(struct nta_attached *a, unsigned int size);
struct nta_chunk *nta_chunk_of(const void *addr);
void nta_chunk_release(struct nta_chunk *c);
void nta_pool_sweep_locked(void);
void nta_sweep_kick(void);

/* nta_hook.c */
int nta_hooks_init(void);
void nta_hooks_exit(void);
struct nta_attached *nta_attached_rcu(const struct net_device *dev);

/* nta_dev.c */
int nta_dev_init(void);
void nta_dev_exit(void);
int nta_attach(struct net_device *dev, struct nta_reader *reader);

#endif /* _NTA_H */
