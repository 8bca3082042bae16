// SPDX-License-Identifier: GPL-2.0
/*
 * nta_main.c - NTA's load and unload, and its debugfs files.
 */
#include <linux/debugfs.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>

#include "nta.h"

static struct dentry *nta_debugfs;

static int nta_stats_show(struct seq_file *m, void *v)
{
	static const char * const why[] = {
		"length", "node", "offset", "state", "generation", "reserved", "ring", "pool",
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

/* "reader none": the common pool's counts; "reader slotN": the reader in slot N of its pool. */
static void nta_device_line(struct seq_file *m, const struct nta_attached *a, int reader,
			    const struct nta_dev_stats *s)
{
	char who[16] = "none";

	if (reader >= 0)
		snprintf(who, sizeof(who), "slot%d", reader);
	seq_printf(m, "%s ifindex %d reader %s allocated %llu fallback %llu pool_empty %llu received %llu published %llu unserved %llu not_shared %llu ring_full %llu skipped %llu fault_dropped %llu\n",
		   netdev_name(a->dev), s->ifindex, who, s->allocated, s->fallback,
		   s->pool_empty, s->received, s->published, s->unserved, s->not_shared,
		   s->ring_full, s->skipped, s->fault_dropped);
}

/* One line per served device and reader attached to it, or the common pool's for it. */
static int nta_devices_show(struct seq_file *m, void *v)
{
	unsigned long flags;
	int i;

	rcu_read_lock();
	spin_lock_irqsave(&nta_lock, flags);
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rcu_dereference(nta.devs[i]);
		struct nta_devpool *dp = a ? rcu_dereference(a->dp) : NULL;
		unsigned long tapping = dp ? dp->tapping : 0;
		struct nta_dev_stats s;
		u32 u;

		if (!a)
			continue;
		if (!tapping) {
			s = (struct nta_dev_stats) {
				.ifindex = a->dev->ifindex,
				.allocated = a->allocated,
				.fallback = a->fallback,
			};
			nta_device_line(m, a, -1, &s);
		}
		for_each_set_bit(u, &tapping, NTA_POOL_READERS) {
			s = dp->users[u]->devs[dp->watch[u]].stats;
			nta_device_line(m, a, u, &s);
		}
	}
	spin_unlock_irqrestore(&nta_lock, flags);
	rcu_read_unlock();
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nta_devices);

/* The devices named by the attach parameter, served without a reader. */
static int nta_attach_param(void)
{
	char *names, *cursor, *name;
	int err = 0;

	if (!nta_attach_list || !*nta_attach_list)
		return 0;
	names = kstrdup(nta_attach_list, GFP_KERNEL);
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
	err = nta_pool_init(&nta.common, (u64)nta_common_pool_kb * SZ_1K, GFP_KERNEL);
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
	pr_info("nta: version %s abi %u loaded: %u KiB per device pool, %u KiB common\n",
		NTA_VERSION, NTA_ABI_VERSION, nta_pool_kb, nta_common_pool_kb);
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
