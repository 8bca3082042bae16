// SPDX-License-Identifier: GPL-2.0
/*
 * nta_dev.c - /dev/nta and the devices NTA serves.
 *
 * Every open file is a reader with a pool of its own (nta_reader.c). The
 * devices it attaches are served from that pool (the allocation hooks ask
 * this file, through struct nta_serving_ops) and get a tap of their own
 * (nta_capture.c). The reader maps its own pool and nothing else, so it
 * sees the frames of the devices it attached and no other reader's, no
 * other namespace's. Detaching stops both at once; buffers the device was
 * given before (up to a ring's worth) may still receive frames into the
 * pool's pages until the driver refills them, but no record is published
 * for them, and the reader is never told where they are.
 */
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/poll.h>
#include <linux/rtnetlink.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <net/net_namespace.h>

#include "nta.h"
#include "nta_compat.h"

/* The common pool, the table of served devices, the readers. */
struct nta nta = {
	.readers = LIST_HEAD_INIT(nta.readers),
};

/* The list of readers (nta.readers), for module-wide counters. */
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
 * kernel's own allocator. A reader's pool that ran dry takes chunks back
 * from its commit ring (a bounded number: this is the receive path).
 */
static void *nta_chunk_alloc(struct nta_attached *a, unsigned int size)
{
	struct nta_reader *r = rcu_dereference(a->reader);
	struct nta_pool *pool = r ? &r->pool : &nta.common;
	struct nta_chunk *c = NULL;
	struct sk_buff_head holds;
	unsigned long flags;
	u64 *allocated, *fallback;

	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&pool->lock, flags);
	if (r) {
		struct nta_dev_stats *w = &r->devs[a->watch].stats;

		allocated = &w->allocated;
		fallback = &w->fallback;
	} else {
		allocated = &a->allocated;
		fallback = &a->fallback;
	}
	if (size <= PAGE_SIZE) {
		c = nta_pool_take_locked(pool, &holds);
		if (!c && r)
			r->devs[a->watch].stats.pool_empty++;
	}
	if (c) {
		get_page(c->page);
		(*allocated)++;
	} else {
		pool->stats.fallback++;
		(*fallback)++;
	}
	spin_unlock_irqrestore(&pool->lock, flags);
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

/* Whether @w, not live, is a better one to reuse than @than: never used first, then the oldest. */
static bool nta_watch_older(const struct nta_watch *w, const struct nta_watch *than)
{
	if (!w->used || !than->used)
		return !w->used && than->used;
	return w->detached < than->detached;
}

/*
 * The watch slot for @dev in @r: its own from an earlier attach (its counts
 * go on), else a never used one, else the one detached longest ago (its
 * counts start again); -ENOSPC while all are live.
 */
static int nta_watch_for(struct nta_reader *r, const struct net_device *dev)
{
	int i, pick = -1;

	for (i = 0; i < NTA_MAX_DEVS; i++) {
		const struct nta_watch *w = &r->devs[i];

		if (w->live)
			continue;
		if (w->used && w->net == dev_net(dev) && w->stats.ifindex == dev->ifindex &&
		    !(w->stats.flags & NTA_DEV_GONE))
			return i;
		if (pick < 0 || nta_watch_older(w, &r->devs[pick]))
			pick = i;
	}
	return pick < 0 ? -ENOSPC : pick;
}

static int nta_attach_reader(struct nta_reader *r, struct net_device *dev)
{
	struct nta_attached *a;
	unsigned long flags;
	int slot, i;

	ASSERT_RTNL();
	a = nta_attached_rtnl(dev, &slot);
	if (a && rtnl_dereference(a->reader))
		return rtnl_dereference(a->reader) == r ? 0 : -EBUSY;
	i = nta_watch_for(r, dev);
	if (i < 0)
		return i;
	if (!a)
		a = nta_attached_new(dev, slot);
	if (IS_ERR(a))
		return PTR_ERR(a);
	spin_lock_irqsave(&r->pool.lock, flags);
	if (!r->devs[i].used || r->devs[i].stats.ifindex != dev->ifindex ||
	    r->devs[i].net != dev_net(dev))
		r->devs[i] = (struct nta_watch) {
			.stats.ifindex = dev->ifindex,
			.net = dev_net(dev),
			.used = true,
		};
	r->devs[i].live = true;
	r->hup = false;
	spin_unlock_irqrestore(&r->pool.lock, flags);
	a->watch = i;
	a->tap = (struct packet_type) {
		.type = htons(ETH_P_ALL),
		.dev = dev,
		.func = nta_tap_rcv,
		.ignore_outgoing = !(READ_ONCE(r->direction) & NTA_DIR_OUT),
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

/* @r's watch @i stops being live; @gone: its device went. The last live one gone: hang up. */
static void nta_unwatch(struct nta_reader *r, int i, bool gone)
{
	unsigned long flags;
	int k;

	spin_lock_irqsave(&r->pool.lock, flags);
	r->devs[i].live = false;
	r->devs[i].detached = ++r->detaches;
	if (gone) {
		r->devs[i].stats.flags |= NTA_DEV_GONE;
		for (k = 0; k < NTA_MAX_DEVS && !r->devs[k].live; k++)
			;
		if (k == NTA_MAX_DEVS)
			nta_reader_hangup_locked(r);
	}
	spin_unlock_irqrestore(&r->pool.lock, flags);
}

/*
 * Stops publishing @a to its reader and serving from its pool (rtnl held).
 * A served device stays, on the common pool; any other leaves the table.
 * One grace period covers both: after it no hook serves from the reader's
 * pool nor counts into its watch, and no RCU reader sees the entry.
 * @gone: the device itself is going.
 */
static void nta_detach_locked(struct nta_attached *a, int slot, bool gone)
{
	struct nta_reader *r = rtnl_dereference(a->reader);
	bool keep = a->served && !gone;

	ASSERT_RTNL();
	if (a->tapped) {
		__dev_remove_pack(&a->tap);
		__dev_remove_pack(&a->sentinel);
	}
	a->tapped = false;
	if (r)
		RCU_INIT_POINTER(a->reader, NULL);
	if (!keep)
		RCU_INIT_POINTER(nta.devs[slot], NULL);
	synchronize_net();
	if (r) {
		nta_unwatch(r, a->watch, gone);
		a->watch = -1;
	}
	if (keep)
		return;
	netdev_put(a->dev, &a->tracker);
	kfree(a);
	nta_hooks_put();
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
	spin_lock_irqsave(&r->pool.lock, flags);
	nta_reader_unshare_all_locked(r, &holds);
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_release_holds(&holds);
	mutex_lock(&nta_readers_lock);
	list_del(&r->node);
	nta_reader_exit(r);
	r->gone.committed += r->stats.committed;
	nta_pool_add_stats(&r->pool, &r->gone);
	nta_stats_add(&nta.gone, &r->gone);
	mutex_unlock(&nta_readers_lock);
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
	nta_reader_drain_locked(r, &holds, r->commit_entries);
	/* In order; the first refused one ends the write (see struct nta_commit). */
	for (i = 0; i < n && nta_commit_batch_locked(r, &batch[i], &holds); i++)
		accepted++;
	spin_unlock_irqrestore(&r->pool.lock, flags);
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
	spin_lock_irqsave(&r->pool.lock, flags);
	mask = nta_reader_poll_locked(r, &holds);
	spin_unlock_irqrestore(&r->pool.lock, flags);
	nta_release_holds(&holds);
	return mask;
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
	int i, found = -1;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	spin_lock_irqsave(&r->pool.lock, flags);
	/* A device attached now first, else the one detached last. */
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		const struct nta_watch *w = &r->devs[i];

		if (!w->used || w->net != net || w->stats.ifindex != req.ifindex)
			continue;
		if (found < 0 || w->live || (!r->devs[found].live &&
					     w->detached > r->devs[found].detached))
			found = i;
	}
	if (found >= 0)
		req = r->devs[found].stats;
	spin_unlock_irqrestore(&r->pool.lock, flags);
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
	spin_lock_irqsave(&r->pool.lock, flags);
	r->wakeup_frames = req.frames;
	r->wakeup_usecs = req.usecs;
	spin_unlock_irqrestore(&r->pool.lock, flags);
	return 0;
}

/*
 * Which frames @r gets. Its taps skip the frames a device sends unless it
 * asks for them, so that dev_queue_xmit_nit() clones none for it: the flag
 * is changed on a registered tap as AF_PACKET's PACKET_IGNORE_OUTGOING
 * does, and the tap checks the direction itself for a frame on its way.
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

		if (a && a->tapped && rtnl_dereference(a->reader) == r)
			WRITE_ONCE(a->tap.ignore_outgoing, !(req.direction & NTA_DIR_OUT));
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
