// SPDX-License-Identifier: GPL-2.0
/*
 * nta_caller: test only, never loaded outside the lab. A driver stand-in that
 * calls the allocators NTA redirects, from the contexts real drivers call
 * them in but the lab's NICs do not reach on their own:
 *
 *   echo IFACE COUNT > /sys/kernel/debug/nta_caller/atomic
 *	COUNT receive-buffer allocations for IFACE with interrupts off, COUNT
 *	from a hard interrupt (a pinned hrtimer) on the same CPU, and COUNT
 *	from the task with interrupts on, interleaved: the hard interrupt
 *	lands while the task holds whatever lock the allocation takes.
 *	8139cp's tx timeout refills its ring with interrupts off; a hard
 *	interrupt can nest on any of them. Reading the file gives the last
 *	run's figures.
 *   echo IFACE > /sys/kernel/debug/nta_caller/sleep
 *	One GFP_KERNEL allocation too big for a chunk, as e1000e makes at
 *	open: NTA falls back to the kernel's allocator, which may sleep in
 *	reclaim (NTA's fault_block_fallback makes it sleep until cleared).
 *
 * It lives outside NTA on purpose: NTA's hooks leave calls made from NTA's
 * own text alone, so only a caller outside it takes the path a driver does.
 */

#include <linux/debugfs.h>
#include <linux/hrtimer.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>

struct nta_caller_run {
	struct hrtimer timer;
	struct net_device *dev;
	struct sk_buff_head done;	/* freed by the task, not in hard interrupt */
	atomic_t left;
	atomic_t hardirq;
	atomic_t failed;
};

static struct dentry *nta_caller_dir;
static char nta_caller_result[96];

static void nta_caller_alloc(struct nta_caller_run *run)
{
	struct sk_buff *skb = netdev_alloc_skb(run->dev, 128);

	if (skb)
		skb_queue_tail(&run->done, skb);
	else
		atomic_inc(&run->failed);
}

static enum hrtimer_restart nta_caller_tick(struct hrtimer *timer)
{
	struct nta_caller_run *run = container_of(timer, struct nta_caller_run, timer);

	nta_caller_alloc(run);
	atomic_inc(&run->hardirq);
	if (atomic_dec_return(&run->left) <= 0)
		return HRTIMER_NORESTART;
	hrtimer_forward_now(timer, ns_to_ktime(50 * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

static void nta_caller_atomic(struct net_device *dev, unsigned int count)
{
	struct nta_caller_run run = { .dev = dev };
	ktime_t deadline = ktime_add_ms(ktime_get(), 20 * MSEC_PER_SEC);
	unsigned int i, irqs_off = 0, task = 0;
	unsigned long flags;

	skb_queue_head_init(&run.done);
	atomic_set(&run.left, count);
	hrtimer_init(&run.timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	run.timer.function = nta_caller_tick;
	migrate_disable();
	hrtimer_start(&run.timer, ns_to_ktime(50 * NSEC_PER_USEC), HRTIMER_MODE_REL_PINNED_HARD);
	/* Until the timer is done too (an emulated CPU may fire it late), within 20 s. */
	for (i = 0; i < count || (atomic_read(&run.left) > 0 &&
				  ktime_before(ktime_get(), deadline)); i++) {
		if (i < count) {
			local_irq_save(flags);
			nta_caller_alloc(&run);
			local_irq_restore(flags);
			irqs_off++;
		}
		nta_caller_alloc(&run);
		task++;
		skb_queue_purge(&run.done);
		cond_resched();
	}
	hrtimer_cancel(&run.timer);
	migrate_enable();
	skb_queue_purge(&run.done);
	snprintf(nta_caller_result, sizeof(nta_caller_result),
		 "irqs_off %u task %u hardirq %d failed %d\n", irqs_off, task,
		 atomic_read(&run.hardirq), atomic_read(&run.failed));
}

static ssize_t nta_caller_write(struct file *file, const char __user *ubuf, size_t len,
				loff_t *ppos)
{
	bool sleep = file->private_data;
	char buf[IFNAMSIZ + 16], name[IFNAMSIZ];
	struct net_device *dev;
	unsigned int count = 0;
	struct sk_buff *skb;

	if (len >= sizeof(buf) || copy_from_user(buf, ubuf, len))
		return -EINVAL;
	buf[len] = 0;
	if (sscanf(buf, "%15s %u", name, &count) != 2 - sleep || (!sleep && !count) ||
	    count > 100000)
		return -EINVAL;
	dev = dev_get_by_name(current->nsproxy->net_ns, name);
	if (!dev)
		return -ENODEV;
	if (sleep) {
		skb = __netdev_alloc_skb(dev, 2 * PAGE_SIZE, GFP_KERNEL);
		snprintf(nta_caller_result, sizeof(nta_caller_result), "slept %s\n",
			 skb ? "ok" : "failed");
		kfree_skb(skb);
	} else {
		nta_caller_atomic(dev, count);
	}
	dev_put(dev);
	return len;
}

static ssize_t nta_caller_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	return simple_read_from_buffer(ubuf, len, ppos, nta_caller_result,
				       strlen(nta_caller_result));
}

static int nta_caller_open(struct inode *inode, struct file *file)
{
	file->private_data = inode->i_private;
	return 0;
}

static const struct file_operations nta_caller_fops = {
	.owner = THIS_MODULE,
	.open = nta_caller_open,
	.write = nta_caller_write,
	.read = nta_caller_read,
	.llseek = default_llseek,
};

static int __init nta_caller_init(void)
{
	nta_caller_dir = debugfs_create_dir("nta_caller", NULL);
	debugfs_create_file("atomic", 0600, nta_caller_dir, (void *)false, &nta_caller_fops);
	debugfs_create_file("sleep", 0600, nta_caller_dir, (void *)true, &nta_caller_fops);
	return 0;
}

static void __exit nta_caller_exit(void)
{
	debugfs_remove_recursive(nta_caller_dir);
}

module_init(nta_caller_init);
module_exit(nta_caller_exit);
MODULE_DESCRIPTION("test only: calls the allocators NTA redirects, as a driver would");
MODULE_LICENSE("GPL");
