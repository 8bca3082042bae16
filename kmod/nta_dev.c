// SPDX-License-Identifier: GPL-2.0
/*
 * nta_dev.c - /dev/nta: readers, their pools and rings, commits, and the
 * taps that publish received frames living in a reader's chunks.
 *
 * Every open file is a reader with a pool of its own. The devices it
 * attaches are served from that pool and get a tap of their own (a
 * per-device packet_type, outgoing frames ignored): a frame received in one
 * of the reader's chunks is published to it, any other frame of the device
 * is counted as one it did not get. The reader maps its own pool and
 * nothing else, so it sees the frames of the devices it attached and no
 * other reader's, no other namespace's.
 *
 * Who may write a published frame. A received skb belongs to the stack,
 * which may still write into its data after NTA published it: the core
 * strips an inner VLAN tag in place, IP option processing rewrites the
 * header, reassembly rewrites the first fragment's. The kernel's rule for
 * anyone who holds packet data and expects it to stay as it is: hold a
 * clone. Its data reference makes skb_cloned() true for the stack's skb,
 * and every writer that follows the rule (skb_cow, skb_ensure_writable,
 * pskb_expand_head, skb_unclone; skb_vlan_untag and ip_rcv_options do)
 * copies the data before writing. So each published chunk holds a clone of
 * its skb until the reader commits it (nta_chunk.hold): nothing is copied
 * unless someone writes. Frames the stack holds in several buffers (GRO
 * merged them) are copied into chunks instead, and need no hold.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/if_vlan.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/poll.h>
#include <linux/rtnetlink.h>
#include <linux/sizes.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <net/net_namespace.h>

#include "nta.h"
#include "nta_compat.h"

/* The list of readers (nta.readers), for module-wide counters. */
DEFINE_MUTEX(nta_readers_lock);

enum nta_admit {
	NTA_ADMIT,
	NTA_NOT_SHARED,
	NTA_RING_FULL,
	NTA_FAULT_DROP,
};

static u64 *nta_index(struct nta_reader *r, unsigned int offset)
{
	return r->ring + offset;
}

/* Records the reader has not consumed; none if its consumer index makes no sense. */
static u32 nta_pending(struct nta_reader *r)
{
	u64 consumer = READ_ONCE(*nta_index(r, NTA_RING_CONSUMER));
	u64 pending = r->seq - consumer;

	return pending > r->ring_entries ? 0 : pending;
}

/* Free record slots; a consumer index that makes no sense means none. */
static u32 nta_ring_room(struct nta_reader *r)
{
	u64 consumer = READ_ONCE(*nta_index(r, NTA_RING_CONSUMER));
	u64 used = r->seq - consumer;

	return used > r->ring_entries ? 0 : r->ring_entries - used;
}

static void nta_count_refusal(struct nta_reader *r, enum nta_bad_commit why)
{
	r->gone.bad_commits[why]++;
}

/* One commit, checked before anything changes; refused ones are counted. */
static bool nta_commit_one_locked(struct nta_reader *r, const struct nta_commit *cm,
				  struct sk_buff_head *holds)
{
	struct nta_pool *pool = &r->pool;
	struct nta_chunk *c = NULL;
	enum nta_bad_commit why;

	why = nta_commit_check(pool->nodes, pool->node_count, pool->node_pages, PAGE_SIZE,
			       r, cm, &c);
	if (why != NTA_BAD_COMMIT_MAX) {
		nta_count_refusal(r, why);
		return false;
	}
	r->outstanding--;
	r->stats.committed++;
	nta_chunk_release_locked(pool, c, holds);
	return true;
}

static void nta_set_need_wakeup(struct nta_reader *r, bool on)
{
	u32 *flags = r->ring + NTA_COMMIT_FLAGS;

	if (r->need_wakeup == on)
		return;
	r->need_wakeup = on;
	r->stats.need_wakeup += on;
	WRITE_ONCE(*flags, on ? NTA_COMMIT_NEED_WAKEUP : 0);
}

/*
 * Takes every commit the reader put in its commit ring. Each entry is
 * copied once into a local and checked there: the reader may rewrite the
 * ring at any time, and the kernel never reads a slot twice.
 */
void nta_reader_drain_locked(struct nta_reader *r, struct sk_buff_head *holds)
{
	/* Pairs with the reader's release store of the producer after its entries. */
	u64 producer = smp_load_acquire(nta_index(r, NTA_COMMIT_PRODUCER));
	u64 avail = producer - r->commit_cons;
	u32 mask = r->commit_entries - 1;

	lockdep_assert_held(&r->pool.lock);
	if (!avail)
		return;
	if (avail > r->commit_entries) {
		nta_count_refusal(r, NTA_BAD_RING);
		return;
	}
	for (; r->commit_cons != producer; r->commit_cons++) {
		struct nta_commit cm;

		memcpy(&cm, &r->commits[r->commit_cons & mask], sizeof(cm));
		r->stats.ring_commits += nta_commit_one_locked(r, &cm, holds);
	}
	/* The slots are the reader's again once every entry was copied. */
	smp_store_release(nta_index(r, NTA_COMMIT_CONSUMER), r->commit_cons);
	if (r->outstanding < r->max_shared)
		nta_set_need_wakeup(r, false);
}

/* Whether @n records may be published now; at max_shared, commits are taken first. */
static enum nta_admit nta_admit_locked(struct nta_reader *r, u32 n, struct sk_buff_head *holds)
{
	unsigned int every = READ_ONCE(nta_fault_drop_record_every);

	if (r->outstanding + n > r->max_shared) {
		nta_reader_drain_locked(r, holds);
		if (r->outstanding + n > r->max_shared) {
			nta_set_need_wakeup(r, true);
			return NTA_NOT_SHARED;
		}
	}
	if (nta_ring_room(r) < n)
		return NTA_RING_FULL;
	if (every && ++r->fault_publish_count % every == 0)
		return NTA_FAULT_DROP;
	return NTA_ADMIT;
}

/* Counts a frame the reader does not get, for @why. */
static void nta_not_admitted(struct nta_reader *r, struct nta_dev_stats *w, enum nta_admit why)
{
	switch (why) {
	case NTA_NOT_SHARED:
		w->not_shared++;
		r->gone.not_shared++;
		break;
	case NTA_RING_FULL:
		w->ring_full++;
		r->gone.ring_full++;
		break;
	default:
		w->fault_dropped++;
		r->gone.fault_dropped++;
		break;
	}
}

/* How far the oldest pending record is from being due, in ns (0: due now). */
static u64 nta_due_in(struct nta_reader *r, u32 pending, u64 now)
{
	u64 consumer = r->seq - pending;
	u64 oldest = r->stamps[consumer & (r->ring_entries - 1)];
	u64 wait = (u64)r->wakeup_usecs * NSEC_PER_USEC;

	if (!wait || pending >= r->wakeup_frames || now - oldest >= wait)
		return 0;
	return oldest + wait - now;
}

/*
 * Wakes a reader sleeping in poll() once its records are due (struct
 * nta_wakeup): at most once until it polls again, never for an empty ring,
 * never when nobody sleeps. Returns how long until pending records are
 * due, for the timer (0: none pending, or woken now, or nobody to wake).
 */
static u64 nta_wake_locked(struct nta_reader *r)
{
	u32 pending = nta_pending(r);
	u64 due;

	if (r->woken || !pending || !wq_has_sleeper(&r->wait))
		return 0;
	due = nta_due_in(r, pending, ktime_get_ns());
	if (due)
		return due;
	r->woken = true;
	r->stats.wakeups++;
	r->gone.wakeups++;
	wake_up_interruptible(&r->wait);
	return 0;
}

/* Wakes the reader if its records are due; arms the timer for when they will be. */
static void nta_maybe_wake_locked(struct nta_reader *r)
{
	u64 due = nta_wake_locked(r);

	if (due && !hrtimer_active(&r->timer))
		hrtimer_start(&r->timer, ns_to_ktime(due), HRTIMER_MODE_REL_SOFT);
}

static enum hrtimer_restart nta_wakeup_timer(struct hrtimer *timer)
{
	struct nta_reader *r = container_of(timer, struct nta_reader, timer);
	unsigned long flags;
	u64 due;

	spin_lock_irqsave(&r->pool.lock, flags);
	due = nta_wake_locked(r);
	spin_unlock_irqrestore(&r->pool.lock, flags);
	if (!due)
		return HRTIMER_NORESTART;
	hrtimer_forward_now(timer, ns_to_ktime(due));
	return HRTIMER_RESTART;
}

/*
 * One record, for a piece of a frame in @c; @hold is the chunk's to keep.
 * Not visible to the reader until nta_ring_publish().
 */
static void nta_publish_locked(struct nta_reader *r, struct nta_chunk *c, struct sk_buff *skb,
			       u32 offset, u32 len, u32 frame_len, u16 flags,
			       struct sk_buff *hold)
{
	u32 slot = r->seq & (r->ring_entries - 1);
	struct nta_record *rec = &r->records[slot];

	*rec = (struct nta_record) {
		.node = c->node,
		.offset = offset,
		.len = len,
		.generation = c->generation,
		.seq = r->seq,
		.tstamp_ns = ktime_get_real_ns(),
		.ifindex = skb->dev->ifindex,
		.protocol = (__force u16)skb->protocol,
		.flags = flags,
		.frame_len = frame_len,
	};
	if (skb_vlan_tag_present(skb)) {
		rec->flags |= NTA_RECORD_VLAN;
		rec->vlan_tci = skb_vlan_tag_get(skb);
		rec->vlan_proto = (__force u16)skb->vlan_proto;
	}
	r->stamps[slot] = ktime_get_ns();
	nta_chunk_share_locked(&r->pool, c, r, offset, hold);
	r->outstanding++;
	r->seq++;
	r->stats.records++;
	r->gone.published++;
}

/* Makes the records written so far visible: a frame's pieces all at once. */
static void nta_ring_publish(struct nta_reader *r)
{
	/* The records are complete before userspace can see the new producer. */
	smp_store_release(nta_index(r, NTA_RING_PRODUCER), r->seq);
}

/* A frame in one linear buffer: published in place, if it is in one of @r's chunks. */
static void nta_capture_linear(struct nta_reader *r, struct nta_dev_stats *w,
			       struct sk_buff *skb)
{
	struct nta_chunk *c = nta_pool_chunk_of(&r->pool, skb->head);
	u8 *mac = skb_mac_header(skb);
	u32 len = skb->len + (skb->data - mac);
	struct sk_buff *hold = NULL;
	struct sk_buff_head holds;
	enum nta_admit why;
	unsigned long flags;
	u32 in_page = 0;

	if (c) {
		in_page = mac - (u8 *)page_address(c->page);
		/* Before the lock: an allocation need not be made under it. */
		if (!READ_ONCE(nta_fault_no_protect))
			hold = skb_clone(skb, GFP_ATOMIC);
	}
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&r->pool.lock, flags);
	w->received++;
	if (!c) {
		w->unserved++;
		r->gone.unserved++;
		goto out;
	}
	if (!nta_chunk_publishable(c, in_page, len, PAGE_SIZE) ||
	    (!hold && !READ_ONCE(nta_fault_no_protect))) {
		w->skipped++;
		r->gone.skipped++;
		goto out;
	}
	nta_chunk_seen(c);
	why = nta_admit_locked(r, 1, &holds);
	if (why != NTA_ADMIT) {
		nta_not_admitted(r, w, why);
		goto out;
	}
	nta_publish_locked(r, c, skb, c->index * PAGE_SIZE + in_page, len, len, 0, hold);
	nta_ring_publish(r);
	hold = NULL;
	w->published++;
	nta_maybe_wake_locked(r);
out:
	spin_unlock_irqrestore(&r->pool.lock, flags);
	if (hold)
		__skb_queue_tail(&holds, hold);
	nta_pool_release_holds(&holds);
}

/*
 * A frame the stack holds in several buffers (GRO merged several frames of
 * one flow, as tcpdump sees them too): copied into chunks of @r's pool, a
 * record per chunk, all but the last flagged CONTD. The chunks are taken
 * under the lock, filled without it (nobody else can reach them yet), and
 * published under it if the reader can still take them.
 */
static void nta_capture_copy(struct nta_reader *r, struct nta_dev_stats *w, struct sk_buff *skb)
{
	int mac_off = skb_mac_header(skb) - skb->data;
	u32 frame_len = skb->len - mac_off;
	u32 pieces = DIV_ROUND_UP(frame_len, PAGE_SIZE), i, taken = 0;
	struct nta_chunk *chunks[DIV_ROUND_UP(GSO_LEGACY_MAX_SIZE + ETH_HLEN, PAGE_SIZE)];
	struct sk_buff_head holds;
	enum nta_admit why;
	unsigned long flags;

	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&r->pool.lock, flags);
	w->received++;
	for (; taken < pieces && pieces <= ARRAY_SIZE(chunks); taken++) {
		chunks[taken] = nta_pool_take_locked(&r->pool, &holds);
		if (!chunks[taken])
			break;
	}
	if (taken < pieces) {
		w->skipped++;
		r->gone.skipped++;
		goto put_back;
	}
	spin_unlock_irqrestore(&r->pool.lock, flags);

	for (i = 0; i < pieces; i++) {
		u32 len = min_t(u32, PAGE_SIZE, frame_len - i * PAGE_SIZE);

		if (skb_copy_bits(skb, mac_off + i * PAGE_SIZE, page_address(chunks[i]->page), len))
			break;
	}

	spin_lock_irqsave(&r->pool.lock, flags);
	if (i < pieces) {
		w->skipped++;
		r->gone.skipped++;
		goto put_back;
	}
	why = nta_admit_locked(r, pieces, &holds);
	if (why != NTA_ADMIT) {
		nta_not_admitted(r, w, why);
		goto put_back;
	}
	for (i = 0; i < pieces; i++) {
		u32 len = min_t(u32, PAGE_SIZE, frame_len - i * PAGE_SIZE);
		u16 flags = NTA_RECORD_COPY | (i + 1 < pieces ? NTA_RECORD_CONTD : 0);

		nta_chunk_seen(chunks[i]);
		nta_publish_locked(r, chunks[i], skb, chunks[i]->index * PAGE_SIZE, len, frame_len,
				   flags, NULL);
	}
	nta_ring_publish(r);
	w->published++;
	r->gone.copied++;
	nta_maybe_wake_locked(r);
	taken = 0;
put_back:
	for (i = 0; i < taken; i++)
		nta_pool_untake_locked(&r->pool, chunks[i]);
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_pool_release_holds(&holds);
}

/* Takes the frames nobody after the tap wants: see nta_attach_reader(). */
static int nta_sentinel_rcv(struct sk_buff *skb, struct net_device *dev,
			    struct packet_type *pt, struct net_device *orig_dev)
{
	consume_skb(skb);
	return NET_RX_SUCCESS;
}

/* A frame one of the reader's devices received; this tap is that device's own. */
static int nta_tap_rcv(struct sk_buff *skb, struct net_device *dev,
		       struct packet_type *pt, struct net_device *orig_dev)
{
	struct nta_attached *a = container_of(pt, struct nta_attached, tap);
	struct nta_reader *r = rcu_dereference(a->reader);

	if (!r || skb->pkt_type == PACKET_OUTGOING || skb->pkt_type == PACKET_LOOPBACK ||
	    !skb_mac_header_was_set(skb))
		goto out;
	if (skb_is_nonlinear(skb))
		nta_capture_copy(r, &r->devs[a->watch].stats, skb);
	else
		nta_capture_linear(r, &r->devs[a->watch].stats, skb);
out:
	consume_skb(skb);
	return NET_RX_SUCCESS;
}

/* -- attaching ----------------------------------------------------------------------- */

static struct nta_attached *nta_attached_rtnl(const struct net_device *dev, int *slot)
{
	int i;

	*slot = -1;
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);

		if (a && a->dev == dev) {
			*slot = i;
			return a;
		}
		if (!a && *slot < 0)
			*slot = i;
	}
	return NULL;
}

/* A new entry for @dev in the free @slot of the table (rtnl held). */
static struct nta_attached *nta_attached_new(struct net_device *dev, int slot)
{
	struct nta_attached *a;

	if (slot < 0)
		return ERR_PTR(-ENOSPC);
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return ERR_PTR(-ENOMEM);
	a->dev = dev;
	a->watch = -1;
	netdev_hold(dev, &a->tracker, GFP_KERNEL);
	rcu_assign_pointer(nta.devs[slot], a);
	return a;
}

/* A device served from load on, by the attach= parameter, without a reader. */
int nta_attach_served(struct net_device *dev)
{
	struct nta_attached *a;
	int slot;

	ASSERT_RTNL();
	a = nta_attached_rtnl(dev, &slot) ?: nta_attached_new(dev, slot);
	if (IS_ERR(a))
		return PTR_ERR(a);
	a->served = true;
	return 0;
}

static int nta_attach_reader(struct nta_reader *r, struct net_device *dev)
{
	struct nta_attached *a;
	struct nta_watch *w;
	int slot, i;

	ASSERT_RTNL();
	a = nta_attached_rtnl(dev, &slot);
	if (a && rtnl_dereference(a->reader))
		return rtnl_dereference(a->reader) == r ? 0 : -EBUSY;
	for (i = 0; i < NTA_MAX_DEVS && r->devs[i].used; i++)
		;
	if (i == NTA_MAX_DEVS)
		return -ENOSPC;
	if (!a)
		a = nta_attached_new(dev, slot);
	if (IS_ERR(a))
		return PTR_ERR(a);
	w = &r->devs[i];
	*w = (struct nta_watch) {
		.stats.ifindex = dev->ifindex,
		.net = dev_net(dev),
		.used = true,
	};
	a->watch = i;
	a->tap = (struct packet_type) {
		.type = htons(ETH_P_ALL),
		.dev = dev,
		.func = nta_tap_rcv,
		.ignore_outgoing = true,
	};
	a->sentinel = (struct packet_type) {
		.type = htons(ETH_P_ALL),
		.dev = dev,
		.func = nta_sentinel_rcv,
		.ignore_outgoing = true,
	};
	/* The watch is set before the reader is published (rcu_assign_pointer orders them). */
	rcu_assign_pointer(a->reader, r);
	/*
	 * Frames must reach the tap in the order the device received them.
	 * __netif_receive_skb_core() hands a frame at once to every handler
	 * that matches but the last, which it returns to its caller; on the
	 * list path (GRO's normal path, netif_receive_skb_list) the caller
	 * delivers to that last handler later, for a run of frames at a time.
	 * A tap that is the last handler of some frames (those no protocol
	 * takes: LLC, unknown EtherTypes) but not of others (IP) would see
	 * them reordered. dev_add_pack() adds at the head of the device's
	 * list, so the sentinel, added first, comes after the tap, and the
	 * tap is never last.
	 */
	dev_add_pack(&a->sentinel);
	dev_add_pack(&a->tap);
	a->tapped = true;
	return 0;
}

/*
 * Stops publishing @a to its reader and serving from its pool (rtnl held).
 * A served device stays, on the common pool; any other leaves the table,
 * freed once no RCU reader can see it. @gone: the device itself is going.
 */
static void nta_detach_locked(struct nta_attached *a, int slot, bool gone)
{
	struct nta_reader *r = rtnl_dereference(a->reader);

	ASSERT_RTNL();
	if (a->tapped) {
		__dev_remove_pack(&a->tap);
		dev_remove_pack(&a->sentinel);	/* synchronize_net(): neither runs */
	}
	a->tapped = false;
	if (r) {
		RCU_INIT_POINTER(a->reader, NULL);
		if (gone)
			r->devs[a->watch].stats.flags |= NTA_DEV_GONE;
	}
	if (a->served && !gone)
		return;
	RCU_INIT_POINTER(nta.devs[slot], NULL);
	synchronize_net();	/* no hook sees the entry or serves from the pool */
	netdev_put(a->dev, &a->tracker);
	kfree(a);
}

/* Detaches the devices @r attached (rtnl held). */
static void nta_detach_reader(struct nta_reader *r, const struct net_device *only)
{
	int i;

	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);

		if (a && rtnl_dereference(a->reader) == r && (!only || a->dev == only))
			nta_detach_locked(a, i, false);
	}
}

/* Every device, at unload: no reader is left (each pins the module). */
void nta_detach_all(void)
{
	int i;

	rtnl_lock();
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);

		if (a)
			nta_detach_locked(a, i, true);
	}
	rtnl_unlock();
}

/* A device unregistered or moving to another namespace: its reader is told (NTA_DEV_GONE). */
static int nta_netdev_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);
	struct nta_attached *a;
	int slot;

	if (event != NETDEV_UNREGISTER)
		return NOTIFY_DONE;
	a = nta_attached_rtnl(dev, &slot);
	if (a)
		nta_detach_locked(a, slot, true);
	return NOTIFY_DONE;
}

static struct notifier_block nta_netdev_notifier = {
	.notifier_call = nta_netdev_event,
};

/* -- the file -------------------------------------------------------------------------- */

static int nta_meta_init(struct nta_reader *r)
{
	size_t records = array_size(r->ring_entries, sizeof(struct nta_record));
	size_t commits = array_size(r->commit_entries, sizeof(struct nta_commit));
	struct nta_meta *meta = (void *)get_zeroed_page(GFP_KERNEL_ACCOUNT);

	if (!meta)
		return -ENOMEM;
	r->ring_size = PAGE_SIZE + PAGE_ALIGN(records) + PAGE_ALIGN(commits);
	*meta = (struct nta_meta) {
		.magic = NTA_MAGIC,
		.abi_version = NTA_ABI_VERSION,
		.meta_size = sizeof(*meta),
		.record_size = sizeof(struct nta_record),
		.commit_size = sizeof(struct nta_commit),
		.page_size = PAGE_SIZE,
		.node_count = r->pool.node_count,
		.node_size = r->pool.node_pages * PAGE_SIZE,
		.chunk_size = PAGE_SIZE,
		.ring_entries = r->ring_entries,
		.commit_entries = r->commit_entries,
		.max_shared = r->max_shared,
		.max_commit_batch = NTA_MAX_COMMIT_BATCH,
		.ring_mmap_offset = NTA_MMAP_RING_OFFSET,
		.ring_mmap_size = r->ring_size,
		.nodes_mmap_offset = NTA_MMAP_NODES_OFFSET,
		.nodes_mmap_size = (u64)r->pool.node_count * r->pool.node_pages * PAGE_SIZE,
		.ring_producer_offset = NTA_RING_PRODUCER,
		.ring_consumer_offset = NTA_RING_CONSUMER,
		.ring_records_offset = PAGE_SIZE,
		.commit_producer_offset = NTA_COMMIT_PRODUCER,
		.commit_consumer_offset = NTA_COMMIT_CONSUMER,
		.commit_flags_offset = NTA_COMMIT_FLAGS,
		.commit_entries_offset = PAGE_SIZE + PAGE_ALIGN(records),
	};
	r->meta = meta;
	return 0;
}

static void nta_reader_free(struct nta_reader *r)
{
	vfree(r->ring);
	kvfree(r->stamps);
	free_page((unsigned long)r->meta);
	kfree(r);
}

static int nta_open(struct inode *inode, struct file *file)
{
	u32 entries = READ_ONCE(nta_ring_entries);
	struct nta_reader *r;
	int err;

	r = kzalloc(sizeof(*r), GFP_KERNEL_ACCOUNT);
	if (!r)
		return -ENOMEM;
	/* The pool's pages are charged to the reader's memory cgroup. */
	err = nta_pool_init(&r->pool, (u64)READ_ONCE(nta_pool_kb) * SZ_1K, GFP_KERNEL_ACCOUNT);
	if (err)
		goto free;
	r->pool.reader = r;
	r->ring_entries = entries;
	r->commit_entries = entries;
	r->max_shared = min_t(u32, READ_ONCE(nta_max_shared),
			      r->pool.node_count * r->pool.node_pages / 2);
	r->wakeup_frames = clamp_t(u32, READ_ONCE(nta_wakeup_frames), 1, entries);
	r->wakeup_usecs = READ_ONCE(nta_wakeup_usecs);
	err = nta_meta_init(r);
	if (err)
		goto pool;
	err = -ENOMEM;
	r->ring = vmalloc_user(r->ring_size);
	r->stamps = kvcalloc(entries, sizeof(*r->stamps), GFP_KERNEL_ACCOUNT);
	if (!r->ring || !r->stamps)
		goto pool;
	r->records = r->ring + PAGE_SIZE;
	r->commits = r->ring + r->meta->commit_entries_offset;
	init_waitqueue_head(&r->wait);
	hrtimer_init(&r->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	r->timer.function = nta_wakeup_timer;
	mutex_lock(&nta_readers_lock);
	list_add(&r->node, &nta.readers);
	mutex_unlock(&nta_readers_lock);
	file->private_data = r;
	return 0;
pool:
	nta_pool_exit(&r->pool);
free:
	nta_reader_free(r);
	return err;
}

static int nta_release(struct inode *inode, struct file *file)
{
	struct nta_reader *r = file->private_data;
	struct sk_buff_head holds;
	struct nta_chunk *c, *tmp;
	unsigned long flags;

	rtnl_lock();
	nta_detach_reader(r, NULL);
	rtnl_unlock();
	/* No hook serves from the pool and no tap publishes to it any more. */
	synchronize_net();
	hrtimer_cancel(&r->timer);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&r->pool.lock, flags);
	list_for_each_entry_safe(c, tmp, &r->pool.shared, link) {
		r->gone.returned_on_close++;
		r->outstanding--;
		nta_chunk_release_locked(&r->pool, c, &holds);
	}
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_pool_release_holds(&holds);
	mutex_lock(&nta_readers_lock);
	list_del(&r->node);
	nta_pool_exit(&r->pool);
	r->gone.committed += r->stats.committed;
	nta_pool_add_stats(&r->pool, &r->gone);
	nta_stats_add(&nta.gone, &r->gone);
	mutex_unlock(&nta_readers_lock);
	nta_reader_free(r);
	if (READ_ONCE(nta_fault_uaf_on_close))
		pr_info("nta: fault: reader read after its close: seq %llu\n", READ_ONCE(r->seq));
	return 0;
}

static ssize_t nta_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	struct nta_reader *r = file->private_data;
	size_t i, n = len / sizeof(struct nta_commit), accepted = 0;
	struct nta_commit *batch;
	struct sk_buff_head holds;
	unsigned long flags;

	if (!len || len % sizeof(*batch) || n > NTA_MAX_COMMIT_BATCH) {
		spin_lock_irqsave(&r->pool.lock, flags);
		nta_count_refusal(r, NTA_BAD_LENGTH);
		spin_unlock_irqrestore(&r->pool.lock, flags);
		return -EINVAL;
	}
	batch = memdup_user(buf, len);
	if (IS_ERR(batch))
		return PTR_ERR(batch);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&r->pool.lock, flags);
	nta_reader_drain_locked(r, &holds);
	/* In order; the first refused one ends the write (see struct nta_commit). */
	for (i = 0; i < n && nta_commit_one_locked(r, &batch[i], &holds); i++)
		accepted++;
	if (r->outstanding < r->max_shared)
		nta_set_need_wakeup(r, false);
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_pool_release_holds(&holds);
	kfree(batch);
	return accepted ? accepted * sizeof(*batch) : -EINVAL;
}

static __poll_t nta_poll(struct file *file, poll_table *wait)
{
	struct nta_reader *r = file->private_data;
	struct sk_buff_head holds;
	unsigned long flags;
	u32 pending;
	u64 due = 0;

	poll_wait(file, &r->wait, wait);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&r->pool.lock, flags);
	r->woken = false;
	nta_reader_drain_locked(r, &holds);
	pending = nta_pending(r);
	if (pending) {
		due = nta_due_in(r, pending, ktime_get_ns());
		/* Not due yet: the timer wakes the caller when it is, if it sleeps. */
		if (due && !hrtimer_active(&r->timer))
			hrtimer_start(&r->timer, ns_to_ktime(due), HRTIMER_MODE_REL_SOFT);
	}
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_pool_release_holds(&holds);
	return pending && !due ? EPOLLIN | EPOLLRDNORM : 0;
}

static int nta_mmap_nodes(struct nta_reader *r, struct vm_area_struct *vma)
{
	unsigned long node_size = r->pool.node_pages * PAGE_SIZE;
	u32 i;
	int err;

	for (i = 0; i < r->pool.node_count; i++) {
		err = remap_pfn_range(vma, vma->vm_start + i * node_size, r->pool.nodes[i].pfn,
				      node_size, vma->vm_page_prot);
		if (err)
			return err;
	}
	return 0;
}

/* Only the three mappings the meta page describes, at their exact sizes. */
static int nta_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct nta_reader *r = file->private_data;
	unsigned long size = vma->vm_end - vma->vm_start;
	u64 offset = (u64)vma->vm_pgoff << PAGE_SHIFT;

	if (offset == NTA_MMAP_RING_OFFSET)
		return size == r->ring_size ? remap_vmalloc_range(vma, r->ring, 0) : -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EINVAL;
	vm_flags_clear(vma, VM_MAYWRITE);
	if (offset == NTA_MMAP_META_OFFSET && size == PAGE_SIZE)
		return remap_pfn_range(vma, vma->vm_start, virt_to_phys(r->meta) >> PAGE_SHIFT,
				       PAGE_SIZE, vma->vm_page_prot);
	if (offset == NTA_MMAP_NODES_OFFSET && size == r->meta->nodes_mmap_size)
		return nta_mmap_nodes(r, vma);
	return -EINVAL;
}

/*
 * Attach or detach a device of the caller's network namespace. Attaching
 * needs CAP_NET_RAW in the user namespace owning the device's network
 * namespace, as an AF_PACKET socket does; a device being unregistered is
 * refused (rtnl serialises this with the notifier).
 */
static long nta_ioctl_attach(struct nta_reader *r, unsigned int cmd, void __user *arg)
{
	struct nta_attach req;
	struct net_device *dev;
	int err = 0;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.abi_version != NTA_ABI_VERSION)
		return -EPROTO;
	rtnl_lock();
	dev = __dev_get_by_index(current->nsproxy->net_ns, req.ifindex);
	if (!dev || dev->reg_state != NETREG_REGISTERED)
		err = -ENODEV;
	else if (!ns_capable(dev_net(dev)->user_ns, CAP_NET_RAW))
		err = -EPERM;
	else if (cmd == NTA_IOC_ATTACH)
		err = nta_attach_reader(r, dev);
	else
		nta_detach_reader(r, dev);
	rtnl_unlock();
	return err;
}

/* One of the caller's own devices, by ifindex in its namespace, gone or not. */
static long nta_ioctl_dev_stats(struct nta_reader *r, void __user *arg)
{
	const struct net *net = current->nsproxy->net_ns;
	struct nta_dev_stats req;
	unsigned long flags;
	int i;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	spin_lock_irqsave(&r->pool.lock, flags);
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		if (r->devs[i].used && r->devs[i].net == net &&
		    r->devs[i].stats.ifindex == req.ifindex) {
			req = r->devs[i].stats;
			break;
		}
	}
	spin_unlock_irqrestore(&r->pool.lock, flags);
	if (i == NTA_MAX_DEVS)
		return -ENODEV;
	return copy_to_user(arg, &req, sizeof(req)) ? -EFAULT : 0;
}

static long nta_ioctl_set_wakeup(struct nta_reader *r, void __user *arg)
{
	struct nta_wakeup req;
	unsigned long flags;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (!req.frames || req.frames > r->ring_entries || req.usecs > 10 * USEC_PER_SEC)
		return -EINVAL;
	spin_lock_irqsave(&r->pool.lock, flags);
	r->wakeup_frames = req.frames;
	r->wakeup_usecs = req.usecs;
	spin_unlock_irqrestore(&r->pool.lock, flags);
	return 0;
}

static long nta_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct nta_reader *r = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct nta_reader_stats rs;
	struct nta_stats stats;
	unsigned long flags;

	switch (cmd) {
	case NTA_IOC_ATTACH:
	case NTA_IOC_DETACH:
		return nta_ioctl_attach(r, cmd, uarg);
	case NTA_IOC_STATS:
		nta_stats_sum(&stats);
		return copy_to_user(uarg, &stats, sizeof(stats)) ? -EFAULT : 0;
	case NTA_IOC_DEV_STATS:
		return nta_ioctl_dev_stats(r, uarg);
	case NTA_IOC_SET_WAKEUP:
		return nta_ioctl_set_wakeup(r, uarg);
	case NTA_IOC_READER_STATS:
		spin_lock_irqsave(&r->pool.lock, flags);
		rs = r->stats;
		rs.outstanding = r->outstanding;
		spin_unlock_irqrestore(&r->pool.lock, flags);
		return copy_to_user(uarg, &rs, sizeof(rs)) ? -EFAULT : 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations nta_fops = {
	.owner = THIS_MODULE,
	.open = nta_open,
	.release = nta_release,
	.write = nta_write,
	.poll = nta_poll,
	.mmap = nta_mmap,
	.unlocked_ioctl = nta_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice nta_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = NTA_DEVICE_NAME,
	.fops = &nta_fops,
	.mode = 0600,
};

/* -- module-wide counters -------------------------------------------------------------- */

void nta_stats_add(struct nta_stats *to, const struct nta_stats *s)
{
	u64 *dst = (u64 *)to;
	const u64 *src = (const u64 *)s;
	size_t i;

	BUILD_BUG_ON(sizeof(*s) % sizeof(u64));
	for (i = 0; i < sizeof(*s) / sizeof(u64); i++)
		dst[i] += src[i];
}

/*
 * Every pool's counters, and the readers': reclaim runs first, so that a
 * quiet pool's in_use is exact. Process context.
 */
void nta_stats_sum(struct nta_stats *s)
{
	struct nta_reader *r;
	unsigned long flags;

	memset(s, 0, sizeof(*s));
	nta_pool_reclaim_all(&nta.common);
	nta_pool_add_stats(&nta.common, s);
	mutex_lock(&nta_readers_lock);
	nta_stats_add(s, &nta.gone);
	list_for_each_entry(r, &nta.readers, node) {
		nta_pool_reclaim_all(&r->pool);
		nta_pool_add_stats(&r->pool, s);
		spin_lock_irqsave(&r->pool.lock, flags);
		nta_stats_add(s, &r->gone);
		s->committed += r->stats.committed;
		s->outstanding += r->outstanding;
		spin_unlock_irqrestore(&r->pool.lock, flags);
	}
	mutex_unlock(&nta_readers_lock);
}

int nta_dev_init(void)
{
	return register_netdevice_notifier(&nta_netdev_notifier);
}

void nta_dev_exit(void)
{
	unregister_netdevice_notifier(&nta_netdev_notifier);
}

/*
 * /dev/nta is registered last at load and deregistered first at unload:
 * nobody can open a reader while the module is half set up, or half gone.
 */
int nta_node_register(void)
{
	return misc_register(&nta_misc);
}

void nta_node_deregister(void)
{
	misc_deregister(&nta_misc);
}
