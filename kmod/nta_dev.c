// SPDX-License-Identifier: GPL-2.0
/*
 * nta_dev.c - /dev/nta: readers, their record rings, commits, and the tap
 * that publishes received frames living in NTA chunks.
 *
 * Every open file is a reader with its own ring. A device attached by a
 * reader publishes to that reader only. A published chunk holds the
 * reader's reference until the reader commits it or closes.
 */
#include <linux/fs.h>
#include <linux/if_vlan.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/poll.h>
#include <linux/rtnetlink.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "nta.h"
#include "nta_compat.h"

static DEFINE_MUTEX(nta_attach_mutex);

static u64 *nta_ring_index(struct nta_reader *r, unsigned int offset)
{
	return r->ring + offset;
}

/* Slots free in @r's ring; a consumer index that makes no sense means none. */
static u32 nta_ring_room(struct nta_reader *r)
{
	u64 consumer = READ_ONCE(*nta_ring_index(r, NTA_RING_CONSUMER));
	u64 used = r->seq - consumer;

	return used > nta_ring_entries ? 0 : nta_ring_entries - used;
}

static void nta_publish_locked(struct nta_attached *a, struct nta_chunk *c,
			       struct sk_buff *skb, u32 offset, u32 len)
{
	struct nta_reader *r = a->reader;
	struct nta_record *rec;

	if (r->outstanding >= nta_max_shared) {
		nta.stats.not_shared++;
		a->stats.not_shared++;
		return;
	}
	if (!nta_ring_room(r)) {
		nta.stats.ring_full++;
		a->stats.not_shared++;
		return;
	}
	if (nta_fault_drop_record_every &&
	    ++nta.fault_publish_count % nta_fault_drop_record_every == 0) {
		nta.stats.fault_dropped++;
		return;
	}
	rec = &r->records[r->seq & (nta_ring_entries - 1)];
	*rec = (struct nta_record) {
		.node = c->node,
		.offset = offset,
		.len = len,
		.generation = c->generation,
		.seq = r->seq,
		.tstamp_ns = ktime_get_real_ns(),
		.ifindex = skb->dev->ifindex,
		.protocol = (__force u16)skb->protocol,
		.chunk = c->index,
	};
	if (skb_vlan_tag_present(skb)) {
		rec->flags |= NTA_RECORD_VLAN_STRIPPED;
		rec->vlan_tci = skb_vlan_tag_get(skb);
	}
	nta_chunk_share(c, r, offset);
	r->outstanding++;
	r->seq++;
	/* The record is complete before userspace can see the new producer. */
	smp_store_release(nta_ring_index(r, NTA_RING_PRODUCER), r->seq);
	nta.stats.published++;
	nta.stats.outstanding++;
	a->stats.published++;
	wake_up_interruptible(&r->wait);
}

/* Every received frame passes here; those in NTA chunks are published. */
static int nta_tap_rcv(struct sk_buff *skb, struct net_device *dev,
		       struct packet_type *pt, struct net_device *orig_dev)
{
	struct nta_attached *a;
	struct nta_chunk *c;
	u8 *mac = skb_mac_header(skb);
	u32 offset, len;

	rcu_read_lock();
	a = nta_attached_rcu(skb->dev);
	if (!a || !skb->head_frag || skb_is_nonlinear(skb) || !skb_mac_header_was_set(skb))
		goto out;
	c = nta_chunk_of(skb->head);
	if (!c)
		goto out;
	len = skb->len + (skb->data - mac);
	offset = c->index * PAGE_SIZE + offset_in_page(mac);
	spin_lock_bh(&nta.lock);
	a->stats.received++;
	if (!nta_chunk_publishable(c, offset_in_page(mac), len, PAGE_SIZE)) {
		spin_unlock_bh(&nta.lock);
		goto out;
	}
	c->published = true;
	if (a->reader)
		nta_publish_locked(a, c, skb, offset, len);
	else
		nta.stats.no_reader++;
	spin_unlock_bh(&nta.lock);
out:
	rcu_read_unlock();
	consume_skb(skb);
	return NET_RX_SUCCESS;
}

static struct packet_type nta_tap = {
	.type = htons(ETH_P_ALL),
	.func = nta_tap_rcv,
};

/* Attach @dev for @reader (NULL: its buffers are served, never published). */
int nta_attach(struct net_device *dev, struct nta_reader *reader)
{
	struct nta_attached *a, *slot_owner;
	int i, free = -1, err = 0;

	mutex_lock(&nta_attach_mutex);
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		slot_owner = rcu_dereference_protected(nta.devs[i],
						       lockdep_is_held(&nta_attach_mutex));
		if (!slot_owner && free < 0)
			free = i;
		if (slot_owner && slot_owner->dev == dev) {
			err = slot_owner->reader && slot_owner->reader != reader ? -EBUSY : 0;
			if (!err && reader) {
				spin_lock_bh(&nta.lock);
				slot_owner->reader = reader;
				spin_unlock_bh(&nta.lock);
			}
			goto out;
		}
	}
	err = -ENOSPC;
	if (free < 0)
		goto out;
	err = -ENOMEM;
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		goto out;
	a->dev = dev;
	a->reader = reader;
	a->served = !reader;
	a->stats.ifindex = dev->ifindex;
	netdev_hold(dev, &a->tracker, GFP_KERNEL);
	rcu_assign_pointer(nta.devs[free], a);
	err = 0;
out:
	mutex_unlock(&nta_attach_mutex);
	return err;
}

/*
 * Detach the devices matching @dev (any if NULL) attached by @reader (or by
 * anyone). A device the attach parameter serves only loses its reader.
 */
static void nta_detach(struct net_device *dev, struct nta_reader *reader, bool any_reader)
{
	struct nta_attached *gone[NTA_MAX_DEVS];
	int i, n = 0;

	mutex_lock(&nta_attach_mutex);
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rcu_dereference_protected(nta.devs[i],
						lockdep_is_held(&nta_attach_mutex));

		if (!a || (dev && a->dev != dev) || (!any_reader && a->reader != reader))
			continue;
		if (a->served && !any_reader) {
			spin_lock_bh(&nta.lock);
			a->reader = NULL;
			spin_unlock_bh(&nta.lock);
			continue;
		}
		RCU_INIT_POINTER(nta.devs[i], NULL);
		gone[n++] = a;
	}
	mutex_unlock(&nta_attach_mutex);
	if (!n)
		return;
	synchronize_net();
	for (i = 0; i < n; i++) {
		netdev_put(gone[i]->dev, &gone[i]->tracker);
		kfree(gone[i]);
	}
}

static int nta_netdev_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	if (event == NETDEV_UNREGISTER)
		nta_detach(netdev_notifier_info_to_dev(ptr), NULL, true);
	return NOTIFY_DONE;
}

static struct notifier_block nta_netdev_notifier = {
	.notifier_call = nta_netdev_event,
};

static int nta_open(struct inode *inode, struct file *file)
{
	struct nta_reader *r;
	size_t records = array_size(nta_ring_entries, sizeof(struct nta_record));

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->ring_size = PAGE_SIZE + PAGE_ALIGN(records);
	r->ring = vmalloc_user(r->ring_size);
	if (!r->ring) {
		kfree(r);
		return -ENOMEM;
	}
	r->records = r->ring + PAGE_SIZE;
	init_waitqueue_head(&r->wait);
	file->private_data = r;
	return 0;
}

static int nta_release(struct inode *inode, struct file *file)
{
	struct nta_reader *r = file->private_data;
	struct nta_chunk *c, *tmp;

	nta_detach(NULL, r, false);
	spin_lock_bh(&nta.lock);
	list_for_each_entry_safe(c, tmp, &nta.busy, link) {
		if (c->owner != r)
			continue;
		nta.stats.returned_on_close++;
		nta.stats.outstanding--;
		nta_chunk_release(c);
	}
	spin_unlock_bh(&nta.lock);
	vfree(r->ring);
	kfree(r);
	return 0;
}

static ssize_t nta_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	struct nta_reader *r = file->private_data;
	struct nta_commit *batch;
	size_t i, n = len / sizeof(*batch), accepted = 0;

	if (!len || len % sizeof(*batch) || n > NTA_MAX_COMMIT_BATCH) {
		spin_lock_bh(&nta.lock);
		nta.stats.bad_commits[NTA_BAD_LENGTH]++;
		spin_unlock_bh(&nta.lock);
		return -EINVAL;
	}
	batch = memdup_user(buf, len);
	if (IS_ERR(batch))
		return PTR_ERR(batch);
	spin_lock_bh(&nta.lock);
	for (i = 0; i < n; i++) {
		struct nta_chunk *c = NULL;
		enum nta_bad_commit why;

		why = nta_commit_check(nta.nodes, nta.node_count, nta.node_pages, PAGE_SIZE,
				       r, &batch[i], &c);
		if (why != NTA_BAD_COMMIT_MAX) {
			nta.stats.bad_commits[why]++;
			continue;
		}
		r->outstanding--;
		nta.stats.outstanding--;
		nta.stats.committed++;
		nta_chunk_release(c);
		accepted++;
	}
	spin_unlock_bh(&nta.lock);
	kfree(batch);
	return accepted ? accepted * sizeof(*batch) : -EINVAL;
}

static __poll_t nta_poll(struct file *file, poll_table *wait)
{
	struct nta_reader *r = file->private_data;
	u64 producer, consumer;

	poll_wait(file, &r->wait, wait);
	/* Pairs with the release in nta_publish_locked(). */
	producer = smp_load_acquire(nta_ring_index(r, NTA_RING_PRODUCER));
	consumer = READ_ONCE(*nta_ring_index(r, NTA_RING_CONSUMER));
	return producer != consumer ? EPOLLIN | EPOLLRDNORM : 0;
}

static int nta_mmap_nodes(struct vm_area_struct *vma)
{
	unsigned long node_size = nta.node_pages * PAGE_SIZE;
	u32 i;
	int err;

	for (i = 0; i < nta.node_count; i++) {
		err = remap_pfn_range(vma, vma->vm_start + i * node_size, nta.nodes[i].pfn,
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
		return remap_pfn_range(vma, vma->vm_start, virt_to_phys(nta.meta) >> PAGE_SHIFT,
				       PAGE_SIZE, vma->vm_page_prot);
	if (offset == NTA_MMAP_NODES_OFFSET && size == nta.meta->nodes_mmap_size)
		return nta_mmap_nodes(vma);
	return -EINVAL;
}

static long nta_ioctl_attach(struct nta_reader *r, unsigned int cmd, void __user *arg)
{
	struct nta_attach req;
	struct net_device *dev;
	int err = 0;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags)
		return -EINVAL;
	dev = dev_get_by_index(current->nsproxy->net_ns, req.ifindex);
	if (!dev)
		return -ENODEV;
	if (cmd == NTA_IOC_ATTACH)
		err = nta_attach(dev, r);
	else
		nta_detach(dev, r, false);
	dev_put(dev);
	return err;
}

static long nta_ioctl_dev_stats(void __user *arg)
{
	struct nta_dev_stats req;
	int i;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.reserved)
		return -EINVAL;
	rcu_read_lock();
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rcu_dereference(nta.devs[i]);

		if (a && a->stats.ifindex == req.ifindex) {
			spin_lock_bh(&nta.lock);
			req = a->stats;
			spin_unlock_bh(&nta.lock);
			rcu_read_unlock();
			return copy_to_user(arg, &req, sizeof(req)) ? -EFAULT : 0;
		}
	}
	rcu_read_unlock();
	return -ENODEV;
}

static long nta_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct nta_stats stats;

	switch (cmd) {
	case NTA_IOC_ATTACH:
	case NTA_IOC_DETACH:
		return nta_ioctl_attach(file->private_data, cmd, (void __user *)arg);
	case NTA_IOC_STATS:
		spin_lock_bh(&nta.lock);
		stats = nta.stats;
		spin_unlock_bh(&nta.lock);
		return copy_to_user((void __user *)arg, &stats, sizeof(stats)) ? -EFAULT : 0;
	case NTA_IOC_DEV_STATS:
		return nta_ioctl_dev_stats((void __user *)arg);
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

int nta_dev_init(void)
{
	int err;

	err = register_netdevice_notifier(&nta_netdev_notifier);
	if (err)
		return err;
	dev_add_pack(&nta_tap);
	err = misc_register(&nta_misc);
	if (err) {
		dev_remove_pack(&nta_tap);
		unregister_netdevice_notifier(&nta_netdev_notifier);
	}
	return err;
}

/* No reader is left: each open file pins the module. */
void nta_dev_exit(void)
{
	misc_deregister(&nta_misc);
	dev_remove_pack(&nta_tap);
	unregister_netdevice_notifier(&nta_netdev_notifier);
	nta_detach(NULL, NULL, true);
}
