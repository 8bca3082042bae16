// SPDX-License-Identifier: GPL-2.0
/*
 * nta_main.c - NTA module parameters, debugfs, load and unload.
 */
#include <linux/debugfs.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>

#include "nta.h"

struct nta nta = {
	.readers = LIST_HEAD_INIT(nta.readers),
};

unsigned int nta_node_order = 6;
module_param_named(node_order, nta_node_order, uint, 0444);
MODULE_PARM_DESC(node_order, "pages per node, as a power of two (default 6: 256 KiB)");

unsigned int nta_pool_kb = 16384;
module_param_named(pool_kb, nta_pool_kb, uint, 0644);
MODULE_PARM_DESC(pool_kb, "each reader's pool, in KiB, read at open (default 16384)");

static unsigned int common_pool_kb = 4096;
module_param(common_pool_kb, uint, 0444);
MODULE_PARM_DESC(common_pool_kb, "the pool of devices served by attach=, in KiB (default 4096)");

unsigned int nta_max_shared = 2048;
module_param_named(max_shared, nta_max_shared, uint, 0644);
MODULE_PARM_DESC(max_shared,
		 "chunks a reader may hold uncommitted, read at open, at most half its pool (default 2048)");

unsigned int nta_ring_entries = 4096;
module_param_named(ring_entries, nta_ring_entries, uint, 0444);
MODULE_PARM_DESC(ring_entries, "records (and commits) per reader ring, a power of two (default 4096)");

/*
 * Default wakeup policy, from `make bench` (debian-6.1, TCG): at 2000 frames/s
 * a 20 ms timeout woke a reader 25-33 times per 1000 frames and ntadump made
 * 57 system calls per 1000; 256 frames or 200 ms makes it about 4 wakeups and
 * 8 system calls per 1000 there. A frame then waits at most 200 ms before
 * its reader runs: libpcap's default (tcpdump's) waits up to a second.
 */
unsigned int nta_wakeup_frames = 256;
module_param_named(wakeup_frames, nta_wakeup_frames, uint, 0644);
MODULE_PARM_DESC(wakeup_frames, "a reader is woken once this many records are pending (default 256)");

unsigned int nta_wakeup_usecs = 200000;
module_param_named(wakeup_usecs, nta_wakeup_usecs, uint, 0644);
MODULE_PARM_DESC(wakeup_usecs,
		 "... or once its oldest pending record is this old, 0: at once (default 200000)");

static char *attach;
module_param(attach, charp, 0444);
MODULE_PARM_DESC(attach, "comma list of devices served from load on, without a reader");

/*
 * Fault injection. Writable at any time: each is read once (READ_ONCE) where
 * it is used, so a concurrent write cannot change it between test and use.
 */
unsigned int nta_fault_leak_every;
module_param_named(fault_leak_every, nta_fault_leak_every, uint, 0644);
MODULE_PARM_DESC(fault_leak_every, "fault injection: never free every Nth chunk (0: off)");

unsigned int nta_fault_drop_record_every;
module_param_named(fault_drop_record_every, nta_fault_drop_record_every, uint, 0644);
MODULE_PARM_DESC(fault_drop_record_every,
		 "fault injection: do not publish every Nth frame (0: off)");

bool nta_fault_no_protect;
module_param_named(fault_no_protect, nta_fault_no_protect, bool, 0644);
MODULE_PARM_DESC(fault_no_protect,
		 "fault injection: publish frames without holding their data: the stack may rewrite them");

bool nta_fault_trust_writers;
module_param_named(fault_trust_writers, nta_fault_trust_writers, bool, 0644);
MODULE_PARM_DESC(fault_trust_writers,
		 "fault injection: publish in place frames the stack rewrites without copying first");

unsigned int nta_fault_timer_stall_us;
module_param_named(fault_timer_stall_us, nta_fault_timer_stall_us, uint, 0644);
MODULE_PARM_DESC(fault_timer_stall_us,
		 "test: the wakeup timer's callback lingers this long after its decision (0: off)");

bool nta_fault_block_fallback;
static int nta_set_block_fallback(const char *val, const struct kernel_param *kp)
{
	int err = param_set_bool(val, kp);

	wake_up_all(&nta_fault_wq);
	return err;
}

static const struct kernel_param_ops nta_block_fallback_ops = {
	.set = nta_set_block_fallback,
	.get = param_get_bool,
};

module_param_cb(fault_block_fallback, &nta_block_fallback_ops, &nta_fault_block_fallback, 0644);
MODULE_PARM_DESC(fault_block_fallback,
		 "test: a fallback that may sleep blocks until this is cleared, as reclaim may");

bool nta_fault_uaf_on_close;
module_param_named(fault_uaf_on_close, nta_fault_uaf_on_close, bool, 0644);
MODULE_PARM_DESC(fault_uaf_on_close,
		 "fault injection: read a reader's state after freeing it (a planted use-after-free)");

DECLARE_WAIT_QUEUE_HEAD(nta_fault_wq);

static struct dentry *nta_debugfs;

static int nta_stats_show(struct seq_file *m, void *v)
{
	static const char * const why[] = {
		"length", "node", "offset", "state", "generation", "reserved", "ring",
	};
	struct nta_stats s;
	int i;

	nta_stats_sum(&s);
	seq_printf(m, "allocated %llu\nfreed %llu\nin_use %llu\nhanded_over %llu\n",
		   s.allocated, s.freed, s.in_use, s.handed_over);
	seq_printf(m, "published %llu\ncommitted %llu\noutstanding %llu\nreturned_on_close %llu\n",
		   s.published, s.committed, s.outstanding, s.returned_on_close);
	seq_printf(m, "not_shared %llu\nring_full %llu\nunserved %llu\nskipped %llu\ncopied %llu\n",
		   s.not_shared, s.ring_full, s.unserved, s.skipped, s.copied);
	seq_printf(m, "chained %llu\nfiltered %llu\n", s.chained, s.filtered);
	seq_printf(m, "fallback %llu\npool_empty %llu\nreclaim_scanned %llu\nreclaim_passes %llu\n",
		   s.fallback, s.pool_empty, s.reclaim_scanned, s.reclaim_passes);
	seq_printf(m, "wakeups %llu\n", s.wakeups);
	seq_printf(m, "fault_leaked %llu\nfault_dropped %llu\n", s.fault_leaked, s.fault_dropped);
	for (i = 0; i < ARRAY_SIZE(why); i++)
		seq_printf(m, "bad_commits_%s %llu\n", why[i], s.bad_commits[i]);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nta_stats);

/* One line per served device: its reader's counters for it, or the common pool's. */
static int nta_devices_show(struct seq_file *m, void *v)
{
	int i;

	rcu_read_lock();
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rcu_dereference(nta.devs[i]);
		struct nta_reader *r;
		struct nta_dev_stats s;
		unsigned long flags;

		if (!a)
			continue;
		r = rcu_dereference(a->reader);
		if (r) {
			spin_lock_irqsave(&r->pool.lock, flags);
			s = r->devs[a->watch].stats;
			spin_unlock_irqrestore(&r->pool.lock, flags);
		} else {
			spin_lock_irqsave(&nta.common.lock, flags);
			s = (struct nta_dev_stats) {
				.ifindex = a->dev->ifindex,
				.allocated = a->allocated,
				.fallback = a->fallback,
			};
			spin_unlock_irqrestore(&nta.common.lock, flags);
		}
		seq_printf(m, "%s ifindex %d reader %s allocated %llu fallback %llu pool_empty %llu received %llu published %llu unserved %llu not_shared %llu ring_full %llu skipped %llu fault_dropped %llu\n",
			   netdev_name(a->dev), s.ifindex, r ? "yes" : "no", s.allocated,
			   s.fallback, s.pool_empty, s.received, s.published, s.unserved,
			   s.not_shared, s.ring_full, s.skipped, s.fault_dropped);
	}
	rcu_read_unlock();
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nta_devices);

/* The devices named by the attach parameter, served without a reader. */
static int nta_attach_param(void)
{
	char *names, *cursor, *name;
	int err = 0;

	if (!attach || !*attach)
		return 0;
	names = kstrdup(attach, GFP_KERNEL);
	if (!names)
		return -ENOMEM;
	cursor = names;
	rtnl_lock();
	while (!err && (name = strsep(&cursor, ",")) != NULL) {
		struct net_device *dev = __dev_get_by_name(&init_net, name);

		if (!dev) {
			pr_err("nta: attach: no device %s\n", name);
			err = -ENODEV;
			break;
		}
		err = nta_attach_served(dev);
	}
	rtnl_unlock();
	kfree(names);
	return err;
}

static int __init nta_init(void)
{
	int err;

	if (!is_power_of_2(nta_ring_entries) || nta_ring_entries > (1U << 20))
		return -EINVAL;
	err = nta_pool_init(&nta.common, (u64)common_pool_kb * SZ_1K, GFP_KERNEL);
	if (err)
		return err;
	err = nta_dev_init();
	if (err)
		goto pool;
	err = nta_attach_param();
	if (err)
		goto detach;
	nta_debugfs = debugfs_create_dir("nta", NULL);
	debugfs_create_file("stats", 0444, nta_debugfs, NULL, &nta_stats_fops);
	debugfs_create_file("devices", 0444, nta_debugfs, NULL, &nta_devices_fops);
	err = nta_node_register();
	if (err)
		goto debugfs;
	pr_info("nta: version %s abi %u loaded: %u KiB per reader, %u KiB common\n",
		NTA_VERSION, NTA_ABI_VERSION, nta_pool_kb, common_pool_kb);
	return 0;
debugfs:
	debugfs_remove_recursive(nta_debugfs);
detach:
	nta_detach_all();
	nta_dev_exit();
pool:
	nta_pool_exit(&nta.common);
	return err;
}

/*
 * /dev/nta goes first (no reader is left: each open file pins the module),
 * then serving and publishing stop (the last device detached takes the
 * redirects out), then every page is handed back: the ones the kernel still
 * uses are freed by their last user.
 */
static void __exit nta_exit(void)
{
	struct nta_stats s;

	nta_node_deregister();
	debugfs_remove_recursive(nta_debugfs);
	nta_detach_all();
	nta_dev_exit();
	nta_stats_sum(&s);
	nta_pool_exit(&nta.common);
	pr_info("nta: unloaded: allocated %llu freed %llu in_use %llu published %llu committed %llu\n",
		s.allocated, s.freed, s.in_use, s.published, s.committed);
}

module_init(nta_init);
module_exit(nta_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION(NTA_VERSION);
MODULE_AUTHOR("ntalab");
MODULE_DESCRIPTION("NTA: network allocator with a zero-copy, commit-back sniffer");
