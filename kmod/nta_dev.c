// SPDX-License-Identifier: GPL-2.0
/*
 * nta_dev.c - /dev/nta and the devices NTA serves.
 *
 * Every open file is a reader (nta_reader.c). The first reader to attach a
 * device makes its pool (struct nta_devpool); the device is served from it
 * (the allocation hooks ask this file, through struct nta_serving_ops) and
 * gets a tap (nta_capture.c) that publishes each frame to every reader
 * attached to it. Readers that attach the device later join the pool. The
 * isolation model: a reader maps the pools of the devices it attached and
 * nothing else, and a pool holds frames of its one device only, so a
 * reader sees frames of the devices it attached, of no other device, no
 * other namespace; readers of the same device see the same frames (as
 * AF_PACKET sockets bound to it do), and cannot write them. A reader keeps
 * its place in a pool, and the pool its pages, until it closes: it may
 * still hold chunks and map the pool after detaching. The last reader to
 * detach ends the pool's service: buffers the device was given before (up
 * to a ring's worth) may still receive frames into the pool's pages until
 * the driver refills them, but no record is published for them, and no
 * reader is told where they are.
 */
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/math64.h>
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

/* The common pool, the table of served devices, the readers, the device pools. */
struct nta nta = {
	.readers = LIST_HEAD_INIT(nta.readers),
	.pools = LIST_HEAD_INIT(nta.pools),
};

/* The lists of readers and device pools (nta.readers, nta.pools), for module-wide counters. */
DEFINE_MUTEX(nta_readers_lock);

/* -- serving: what the allocation hooks ask -------------------------------------------- */

static struct nta_attached *nta_attached_rcu(const struct net_device *dev)
{
	struct nta_attached *a;
	int i;

	for (i = 0; i < NTA_MAX_DEVS; i++) {
		a = rcu_dereference(nta.devs[i]);
		if (a && a->dev == dev)
			return a;
	}
	return NULL;
}

static bool nta_serves(const struct net_device *dev)
{
	bool served;

	rcu_read_lock();
	served = dev && nta_attached_rcu(dev);
	rcu_read_unlock();
	return served;
}

/*
 * A page for a receive buffer of @size bytes for attached device @a (the
 * caller holds rcu_read_lock), or NULL: the caller then falls back to the
 * kernel's own allocator. A device pool that ran dry takes chunks back
 * from its readers' commit rings (a bounded number: this is the receive
 * path). Each reader attached counts it for the device.
 */
static void *nta_chunk_alloc(struct nta_attached *a, unsigned int size)
{
	struct nta_devpool *dp = rcu_dereference(a->dp);
	struct nta_pool *pool = dp ? &dp->pool : &nta.common;
	struct nta_chunk *c = NULL;
	struct sk_buff_head holds;
	unsigned long flags, tapping;
	u32 u;

	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&nta_lock, flags);
	if (size <= PAGE_SIZE)
		c = nta_pool_take_locked(pool, &holds);
	if (c)
		get_page(c->page);
	else
		pool->stats.fallback++;
	if (!dp) {
		a->allocated += !!c;
		a->fallback += !c;
	}
	tapping = dp ? dp->tapping : 0;
	for_each_set_bit(u, &tapping, NTA_POOL_READERS) {
		struct nta_dev_stats *w = &dp->users[u]->devs[dp->watch[u]].stats;

		w->allocated += !!c;
		w->fallback += !c;
		w->pool_empty += !c && size <= PAGE_SIZE;
	}
	spin_unlock_irqrestore(&nta_lock, flags);
	nta_release_holds(&holds);
	return c ? page_address(c->page) : NULL;
}

static void *nta_alloc_for(struct net_device *dev, unsigned int size)
{
	struct nta_attached *a;
	void *data = NULL;

	rcu_read_lock();
	a = nta_attached_rcu(dev);
	if (a)
		data = nta_chunk_alloc(a, size);
	rcu_read_unlock();
	return data;
}

static const struct nta_serving_ops nta_serving = {
	.serves = nta_serves,
	.alloc = nta_alloc_for,
};

/* Takes the frames nobody after the tap wants: see nta_attach_reader(). */
static int nta_sentinel_rcv(struct sk_buff *skb, struct net_device *dev,
			    struct packet_type *pt, struct net_device *orig_dev)
{
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

/*
 * A new entry for @dev in the free @slot of the table (rtnl held). While any
 * device is in the table the allocation redirects are in place: each entry
 * holds them (nta_hooks_get), and the last one to go takes them out.
 */
static struct nta_attached *nta_attached_new(struct net_device *dev, int slot)
{
	struct nta_attached *a;
	int err;

	if (slot < 0)
		return ERR_PTR(-ENOSPC);
	err = nta_hooks_get();
	if (err)
		return ERR_PTR(err);
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a) {
		nta_hooks_put();
		return ERR_PTR(-ENOMEM);
	}
	a->dev = dev;
	netdev_hold(dev, &a->tracker, GFP_KERNEL);
	rcu_assign_pointer(nta.devs[slot], a);
	return a;
}

/* Frees an entry no RCU reader can see any more (rtnl held). */
static void nta_attached_free(struct nta_attached *a)
{
	netdev_put(a->dev, &a->tracker);
	kfree(a);
	nta_hooks_put();
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

/*
 * A pool for @dev, which its first reader attaches (rtnl held), listed for
 * the module-wide counters; its pages are charged to that reader's memory
 * cgroup. Its one reference is the device entry's.
 */
static struct nta_devpool *nta_devpool_new(const struct net_device *dev)
{
	struct nta_devpool *dp = kzalloc(sizeof(*dp), GFP_KERNEL_ACCOUNT);
	int err;

	if (!dp)
		return ERR_PTR(-ENOMEM);
	err = nta_pool_init(&dp->pool, (u64)READ_ONCE(nta_pool_kb) * SZ_1K, GFP_KERNEL_ACCOUNT);
	if (err) {
		kfree(dp);
		return ERR_PTR(err);
	}
	dp->pool.refill = nta_devpool_refill;
	dp->dev = dev;
	refcount_set(&dp->refs, 1);
	mutex_lock(&nta_readers_lock);
	list_add(&dp->node, &nta.pools);
	mutex_unlock(&nta_readers_lock);
	return dp;
}

/*
 * The pool @dev had while readers that bound it are still open (all of
 * them detached from it), with a reference for the device entry that
 * serves from it again (rtnl held); NULL if none. A reader may so detach
 * and attach again for ever under one pool index, and its counts go on.
 */
static struct nta_devpool *nta_devpool_again(const struct net_device *dev)
{
	struct nta_devpool *dp, *found = NULL;

	mutex_lock(&nta_readers_lock);
	list_for_each_entry(dp, &nta.pools, node) {
		if (dp->dev == dev && refcount_inc_not_zero(&dp->refs)) {
			found = dp;
			break;
		}
	}
	mutex_unlock(&nta_readers_lock);
	return found;
}

/* @dev is being unregistered: no pool of it serves a device again (rtnl held). */
static void nta_devpool_forget(const struct net_device *dev)
{
	struct nta_devpool *dp;

	mutex_lock(&nta_readers_lock);
	list_for_each_entry(dp, &nta.pools, node)
		if (dp->dev == dev)
			dp->dev = NULL;
	mutex_unlock(&nta_readers_lock);
}

/*
 * Drops a reference to @dp; the last one frees it, in process context,
 * once nothing reaches it: no device entry serves from it, no tap
 * publishes from it (a grace period passed since), no reader maps it or
 * holds a chunk of it. Its counters go on in nta.gone.
 */
static void nta_devpool_put(struct nta_devpool *dp)
{
	if (!refcount_dec_and_test(&dp->refs))
		return;
	mutex_lock(&nta_readers_lock);
	list_del(&dp->node);
	nta_pool_exit(&dp->pool);
	nta_pool_add_stats(&dp->pool, &nta.gone);
	mutex_unlock(&nta_readers_lock);
	kfree(dp);
}

/*
 * Whether the tap must see the frames @a sends: some reader attached to it
 * asks for them (rtnl held). Changed on a registered tap as AF_PACKET's
 * PACKET_IGNORE_OUTGOING is, so that dev_queue_xmit_nit() clones none for
 * readers that do not want them.
 */
static void nta_tap_outgoing(struct nta_attached *a)
{
	struct nta_devpool *dp = rtnl_dereference(a->dp);
	unsigned long tapping = dp ? dp->tapping : 0;
	bool out = false;
	u32 u;

	for_each_set_bit(u, &tapping, NTA_POOL_READERS)
		out |= READ_ONCE(dp->users[u]->direction) & NTA_DIR_OUT;
	WRITE_ONCE(a->tap.ignore_outgoing, !out);
}

/*
 * The pool index @r bound to @dp, or -ENOENT; with @dp NULL, one it never
 * bound. A bound one is never bound again while the reader is open: its
 * mapping may live.
 */
static int nta_watch_of(const struct nta_reader *r, const struct nta_devpool *dp)
{
	int i;

	for (i = 0; i < NTA_MAX_POOLS; i++)
		if (r->devs[i].dp == dp)
			return i;
	return -ENOENT;
}

/* A free reader slot of @dp, or -EUSERS. */
static int nta_user_for(const struct nta_devpool *dp)
{
	int u;

	for (u = 0; u < NTA_POOL_READERS; u++)
		if (!dp->users[u])
			return u;
	return -EUSERS;
}

/* Registers @a's tap, the first reader of its pool @dp attaching (rtnl held). */
static void nta_tap_add(struct nta_attached *a, struct nta_devpool *dp)
{
	a->tap = (struct packet_type) {
		.type = htons(ETH_P_ALL),
		.dev = a->dev,
		.func = nta_tap_rcv,
		.ignore_outgoing = true,
	};
	a->sentinel = (struct packet_type) {
		.type = htons(ETH_P_ALL),
		.dev = a->dev,
		.func = nta_sentinel_rcv,
		.ignore_outgoing = true,
	};
	/* The pool is complete before a hook or the tap can see it. */
	rcu_assign_pointer(a->dp, dp);
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
}

/*
 * Where @r goes in @dp: its pool index *@p and its reader slot *@u; 1 if
 * it is attached there already, -ENOSPC or -EUSERS if there is no room.
 */
static int nta_place_for(struct nta_reader *r, const struct nta_devpool *dp, int *p, int *u)
{
	*p = nta_watch_of(r, dp);
	if (*p >= 0) {
		/* Bound before (its counts go on): its slot in the pool is still its own. */
		*u = r->devs[*p].user;
		return dp->tapping & BIT(*u) ? 1 : 0;
	}
	*p = nta_watch_of(r, NULL);
	if (*p < 0)
		return -ENOSPC;
	*u = nta_user_for(dp);
	return *u < 0 ? *u : 0;
}

static int nta_attach_reader(struct nta_reader *r, struct net_device *dev)
{
	struct nta_devpool *dp, *made = NULL;
	struct nta_attached *a;
	unsigned long flags;
	int slot, p, u, err;

	ASSERT_RTNL();
	a = nta_attached_rtnl(dev, &slot);
	dp = a ? rtnl_dereference(a->dp) : NULL;
	if (!dp) {
		/* Served from no pool: the one it had while its readers live, else a new one. */
		made = nta_devpool_again(dev) ?: nta_devpool_new(dev);
		if (IS_ERR(made))
			return PTR_ERR(made);
		dp = made;
	}
	err = nta_place_for(r, dp, &p, &u);
	if (err)
		goto drop;
	if (!a) {
		a = nta_attached_new(dev, slot);
		if (IS_ERR(a)) {
			err = PTR_ERR(a);
			goto drop;
		}
	}
	spin_lock_irqsave(&nta_lock, flags);
	if (r->devs[p].dp != dp) {
		/* The reader's reference, dropped when it closes. */
		refcount_inc(&dp->refs);
		nta_reader_bind_locked(r, p, dp, u, dev);
	}
	r->devs[p].live = true;
	r->hup = false;
	/* Pairs with the tap's acquire load: users[u] and the watch are set before. */
	smp_store_release(&dp->tapping, dp->tapping | BIT(u));
	spin_unlock_irqrestore(&nta_lock, flags);
	if (made)
		nta_tap_add(a, made);
	nta_tap_outgoing(a);
	return 0;
drop:
	if (made)
		nta_devpool_put(made);
	return err < 0 ? err : 0;	/* 1: attached already */
}

/* @r's watch @p stops being live; @gone: its device went. The last live one gone: hang up. */
static void nta_unwatch(struct nta_reader *r, int p, bool gone)
{
	unsigned long flags;
	int k;

	spin_lock_irqsave(&nta_lock, flags);
	r->devs[p].live = false;
	r->devs[p].detached = ++r->detaches;
	if (gone) {
		r->devs[p].stats.flags |= NTA_DEV_GONE;
		for (k = 0; k < NTA_MAX_POOLS && !r->devs[k].live; k++)
			;
		if (k == NTA_MAX_POOLS)
			nta_reader_hangup_locked(r);
	}
	spin_unlock_irqrestore(&nta_lock, flags);
}

/*
 * Stops publishing @a's frames to the readers in slots @users of its pool
 * (rtnl held). The last of them gone, the device stops being served from
 * the pool: a served device stays, on the common pool, any other leaves the
 * table. One grace period covers it all: after it no hook serves from the
 * pool for the device nor counts into their watches, no tap publishes to
 * them, and no RCU reader sees the entry. @gone: the device itself is going.
 */
static void nta_untap(struct nta_attached *a, int slot, u16 users, bool gone)
{
	struct nta_devpool *dp = rtnl_dereference(a->dp);
	unsigned long flags, bits = users;
	bool keep = a->served && !gone;
	u16 left = 0;
	u32 u;

	ASSERT_RTNL();
	if (dp) {
		spin_lock_irqsave(&nta_lock, flags);
		left = dp->tapping & ~users;
		WRITE_ONCE(dp->tapping, left);
		spin_unlock_irqrestore(&nta_lock, flags);
	}
	if (left) {
		nta_tap_outgoing(a);
	} else {
		if (a->tapped) {
			__dev_remove_pack(&a->tap);
			__dev_remove_pack(&a->sentinel);
		}
		a->tapped = false;
		RCU_INIT_POINTER(a->dp, NULL);
		if (!keep)
			RCU_INIT_POINTER(nta.devs[slot], NULL);
	}
	synchronize_net();
	/* The readers stay until they close, which waits for rtnl_lock. */
	for_each_set_bit(u, &bits, NTA_POOL_READERS)
		nta_unwatch(dp->users[u], dp->watch[u], gone);
	if (left)
		return;
	if (dp)
		nta_devpool_put(dp);
	if (!keep)
		nta_attached_free(a);
}

/* Detaches @r from the devices it attached, or from @only (rtnl held). */
static void nta_detach_reader(struct nta_reader *r, const struct net_device *only)
{
	int i;

	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);
		struct nta_devpool *dp = a ? rtnl_dereference(a->dp) : NULL;
		int p = dp ? nta_watch_of(r, dp) : -ENOENT;

		if (p < 0 || (only && a->dev != only))
			continue;
		if (dp->tapping & BIT(r->devs[p].user))
			nta_untap(a, i, BIT(r->devs[p].user), false);
	}
}

/* Every reader of @a, and @a itself: the device is going, or the module (rtnl held). */
static void nta_detach_device(struct nta_attached *a, int slot)
{
	struct nta_devpool *dp = rtnl_dereference(a->dp);

	nta_untap(a, slot, dp ? dp->tapping : 0, true);
}

/* Every device, at unload: no reader is left (each pins the module). */
void nta_detach_all(void)
{
	int i;

	rtnl_lock();
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);

		if (a)
			nta_detach_device(a, i);
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
		nta_detach_device(a, slot);
	nta_devpool_forget(dev);
	return NOTIFY_DONE;
}

static struct notifier_block nta_netdev_notifier = {
	.notifier_call = nta_netdev_event,
};

/* -- the file -------------------------------------------------------------------------- */

static int nta_open(struct inode *inode, struct file *file)
{
	struct nta_reader *r;
	int err;

	r = kzalloc(sizeof(*r), GFP_KERNEL_ACCOUNT);
	if (!r)
		return -ENOMEM;
	err = nta_reader_init(r);
	if (err) {
		kfree(r);
		return err;
	}
	mutex_lock(&nta_readers_lock);
	list_add(&r->node, &nta.readers);
	mutex_unlock(&nta_readers_lock);
	file->private_data = r;
	return 0;
}

/* The pools a closing reader bound: a pool whose last reader it was goes (nothing maps it). */
static void nta_reader_put_pools(struct nta_reader *r)
{
	int p;

	for (p = 0; p < NTA_MAX_POOLS; p++)
		if (r->devs[p].dp)
			nta_devpool_put(r->devs[p].dp);
}

static int nta_release(struct inode *inode, struct file *file)
{
	struct nta_reader *r = file->private_data;
	struct sk_buff_head holds;
	unsigned long flags;

	rtnl_lock();
	nta_detach_reader(r, NULL);
	rtnl_unlock();
	/* No hook serves from the pool and no tap publishes to it any more. */
	hrtimer_cancel(&r->timer);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&nta_lock, flags);
	nta_reader_unshare_all_locked(r, &holds);
	spin_unlock_irqrestore(&nta_lock, flags);
	nta_release_holds(&holds);
	mutex_lock(&nta_readers_lock);
	list_del(&r->node);
	r->gone.committed += r->stats.committed;
	nta_stats_add(&nta.gone, &r->gone);
	mutex_unlock(&nta_readers_lock);
	nta_reader_put_pools(r);
	nta_reader_exit(r);
	kfree(r);
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
		spin_lock_irqsave(&nta_lock, flags);
		nta_count_refusal(r, NTA_BAD_LENGTH);
		spin_unlock_irqrestore(&nta_lock, flags);
		return -EINVAL;
	}
	batch = memdup_user(buf, len);
	if (IS_ERR(batch))
		return PTR_ERR(batch);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&nta_lock, flags);
	nta_reader_drain_locked(r, &holds, r->commit_entries);
	/* In order; the first refused one ends the write (see struct nta_commit). */
	for (i = 0; i < n && nta_commit_batch_locked(r, &batch[i], &holds); i++)
		accepted++;
	spin_unlock_irqrestore(&nta_lock, flags);
	nta_release_holds(&holds);
	kfree(batch);
	return accepted ? accepted * sizeof(*batch) : -EINVAL;
}

static __poll_t nta_poll(struct file *file, poll_table *wait)
{
	struct nta_reader *r = file->private_data;
	struct sk_buff_head holds;
	unsigned long flags;
	__poll_t mask;

	poll_wait(file, &r->wait, wait);
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&nta_lock, flags);
	mask = nta_reader_poll_locked(r, &holds);
	spin_unlock_irqrestore(&nta_lock, flags);
	nta_release_holds(&holds);
	return mask;
}

/*
 * Pool @p of @r, mapped read-only. A reader learns of a pool from a record
 * or the meta page, both written after the attach bound it, and it is
 * never rebound while @r is open; its nodes never change.
 */
static int nta_mmap_pool(struct nta_reader *r, u32 p, struct vm_area_struct *vma)
{
	struct nta_devpool *dp = p < NTA_MAX_POOLS ? READ_ONCE(r->devs[p].dp) : NULL;
	unsigned long size = vma->vm_end - vma->vm_start, node_size;
	u32 i;
	int err;

	if (!dp)
		return -EINVAL;
	node_size = dp->pool.node_pages * PAGE_SIZE;
	if (size != dp->pool.node_count * node_size)
		return -EINVAL;
	for (i = 0; i < dp->pool.node_count; i++) {
		err = remap_pfn_range(vma, vma->vm_start + i * node_size, dp->pool.nodes[i].pfn,
				      node_size, vma->vm_page_prot);
		if (err)
			return err;
	}
	return 0;
}

/* Only the mappings the meta page describes, at their exact sizes. */
static int nta_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct nta_reader *r = file->private_data;
	unsigned long size = vma->vm_end - vma->vm_start;
	u64 offset = (u64)vma->vm_pgoff << PAGE_SHIFT;

	/* Data, never code: no mapping may be made executable, now or by mprotect(). */
	if (vma->vm_flags & VM_EXEC)
		return -EINVAL;
	vm_flags_clear(vma, VM_MAYEXEC);
	if (offset == NTA_MMAP_RING_OFFSET)
		return size == r->ring_size ? remap_vmalloc_range(vma, r->ring, 0) : -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EINVAL;
	vm_flags_clear(vma, VM_MAYWRITE);
	if (offset == NTA_MMAP_META_OFFSET && size == PAGE_SIZE)
		return remap_pfn_range(vma, vma->vm_start, virt_to_phys(r->meta) >> PAGE_SHIFT,
				       PAGE_SIZE, vma->vm_page_prot);
	offset -= NTA_MMAP_NODES_OFFSET;
	if (offset >= NTA_MAX_POOLS * NTA_MMAP_POOL_STRIDE || offset & (NTA_MMAP_POOL_STRIDE - 1))
		return -EINVAL;
	return nta_mmap_pool(r, div64_u64(offset, NTA_MMAP_POOL_STRIDE), vma);
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
	int i, found = -1;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	spin_lock_irqsave(&nta_lock, flags);
	/* A device attached now first, else the one detached last. */
	for (i = 0; i < NTA_MAX_POOLS; i++) {
		const struct nta_watch *w = &r->devs[i];

		if (!w->dp || w->net != net || w->stats.ifindex != req.ifindex)
			continue;
		if (found < 0 || w->live || (!r->devs[found].live &&
					     w->detached > r->devs[found].detached))
			found = i;
	}
	if (found >= 0)
		req = r->devs[found].stats;
	spin_unlock_irqrestore(&nta_lock, flags);
	if (found < 0)
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
	spin_lock_irqsave(&nta_lock, flags);
	r->wakeup_frames = req.frames;
	r->wakeup_usecs = req.usecs;
	spin_unlock_irqrestore(&nta_lock, flags);
	return 0;
}

/*
 * Which frames @r gets. A device's tap skips the frames it sends unless
 * one of its readers asks for them (nta_tap_outgoing()), and checks each
 * reader's direction itself for a frame on its way.
 */
static long nta_ioctl_set_direction(struct nta_reader *r, void __user *arg)
{
	struct nta_direction req;
	int i;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.reserved || !req.direction || req.direction & ~NTA_DIR_INOUT)
		return -EINVAL;
	rtnl_lock();
	WRITE_ONCE(r->direction, req.direction);
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rtnl_dereference(nta.devs[i]);

		if (a && a->tapped)
			nta_tap_outgoing(a);
	}
	rtnl_unlock();
	return 0;
}

/*
 * A classic BPF program for @r's taps, checked by the kernel's own checker
 * before anything changes (bpf_prog_create_from_user(), as
 * SO_ATTACH_FILTER's): a refused one leaves the filter in place.
 */
static long nta_ioctl_set_filter(struct nta_reader *r, void __user *arg)
{
	struct nta_filter req;
	struct sock_fprog fprog;
	struct bpf_prog *prog;
	int err;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	/* Checked here: sock_fprog's len is 16 bits, and would wrap. */
	if (req.reserved || !req.len || req.len > BPF_MAXINSNS)
		return -EINVAL;
	fprog.len = req.len;
	fprog.filter = u64_to_user_ptr(req.insns);
	err = bpf_prog_create_from_user(&prog, &fprog, NULL, false);
	if (err)
		return err;
	nta_filter_replace(r, prog);
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
	case NTA_IOC_SET_DIRECTION:
		return nta_ioctl_set_direction(r, uarg);
	case NTA_IOC_SET_FILTER:
		return nta_ioctl_set_filter(r, uarg);
	case NTA_IOC_DETACH_FILTER:
		nta_filter_replace(r, NULL);
		return 0;
	case NTA_IOC_READER_STATS:
		spin_lock_irqsave(&nta_lock, flags);
		rs = r->stats;
		rs.outstanding = r->outstanding;
		spin_unlock_irqrestore(&nta_lock, flags);
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
	struct nta_devpool *dp;
	struct nta_reader *r;
	unsigned long flags;

	memset(s, 0, sizeof(*s));
	nta_pool_reclaim_all(&nta.common);
	nta_pool_add_stats(&nta.common, s);
	mutex_lock(&nta_readers_lock);
	nta_stats_add(s, &nta.gone);
	list_for_each_entry(dp, &nta.pools, node) {
		nta_pool_reclaim_all(&dp->pool);
		nta_pool_add_stats(&dp->pool, s);
	}
	list_for_each_entry(r, &nta.readers, node) {
		spin_lock_irqsave(&nta_lock, flags);
		nta_stats_add(s, &r->gone);
		s->committed += r->stats.committed;
		s->outstanding += r->outstanding;
		spin_unlock_irqrestore(&nta_lock, flags);
	}
	mutex_unlock(&nta_readers_lock);
}

/* The hooks' ops, and the device notifier (before attach= serves anything). */
int nta_dev_init(void)
{
	int err = nta_hooks_init(&nta_serving);

	if (err)
		return err;
	err = register_netdevice_notifier(&nta_netdev_notifier);
	if (err)
		nta_hooks_exit();
	return err;
}

/* Every device detached first (nta_detach_all): the redirects are out after this. */
void nta_dev_exit(void)
{
	unregister_netdevice_notifier(&nta_netdev_notifier);
	nta_hooks_exit();
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
