// SPDX-License-Identifier: GPL-2.0
/*
 * nta_main.c - NTA module parameters, the meta page, load and unload.
 */
#include <linux/debugfs.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/seq_file.h>

#include "nta.h"

struct nta nta = {
	.lock = __SPIN_LOCK_UNLOCKED(nta.lock),
};

static unsigned int node_order = 6;
module_param(node_order, uint, 0444);
MODULE_PARM_DESC(node_order, "pages per node, as a power of two (default 6: 256 KiB)");

static unsigned int node_count = 16;
module_param(node_count, uint, 0444);
MODULE_PARM_DESC(node_count, "nodes in the pool (default 16)");

unsigned int nta_max_shared = 256;
module_param_named(max_shared, nta_max_shared, uint, 0644);
MODULE_PARM_DESC(max_shared, "chunks one reader may hold uncommitted (default 256)");

unsigned int nta_ring_entries = 1024;
module_param_named(ring_entries, nta_ring_entries, uint, 0444);
MODULE_PARM_DESC(ring_entries, "records per reader ring, a power of two (default 1024)");

static char *attach;
module_param(attach, charp, 0444);
MODULE_PARM_DESC(attach, "comma list of devices served from load on, without a reader");

unsigned int nta_fault_leak_every;
module_param_named(fault_leak_every, nta_fault_leak_every, uint, 0644);
MODULE_PARM_DESC(fault_leak_every, "fault injection: never free every Nth chunk (0: off)");

unsigned int nta_fault_drop_record_every;
module_param_named(fault_drop_record_every, nta_fault_drop_record_every, uint, 0644);
MODULE_PARM_DESC(fault_drop_record_every,
		 "fault injection: do not publish every Nth frame (0: off)");

static struct dentry *nta_debugfs;

static int nta_stats_show(struct seq_file *m, void *v)
{
	static const char * const why[] = {
		"length", "node", "offset", "state", "generation", "owner", "reserved",
	};
	struct nta_stats s;
	int i;

	spin_lock_bh(&nta.lock);
	s = nta.stats;
	spin_unlock_bh(&nta.lock);
	seq_printf(m, "allocated %llu\nfreed %llu\nin_use %llu\n", s.allocated, s.freed, s.in_use);
	seq_printf(m, "published %llu\ncommitted %llu\noutstanding %llu\n",
		   s.published, s.committed, s.outstanding);
	seq_printf(m, "returned_on_close %llu\nnot_shared %llu\nring_full %llu\n",
		   s.returned_on_close, s.not_shared, s.ring_full);
	seq_printf(m, "no_reader %llu\nfallback %llu\npool_empty %llu\n",
		   s.no_reader, s.fallback, s.pool_empty);
	seq_printf(m, "fault_leaked %llu\nfault_dropped %llu\n", s.fault_leaked, s.fault_dropped);
	for (i = 0; i < ARRAY_SIZE(why); i++)
		seq_printf(m, "bad_commits_%s %llu\n", why[i], s.bad_commits[i]);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nta_stats);

static int nta_devices_show(struct seq_file *m, void *v)
{
	int i;

	rcu_read_lock();
	for (i = 0; i < NTA_MAX_DEVS; i++) {
		struct nta_attached *a = rcu_dereference(nta.devs[i]);
		struct nta_dev_stats s;

		if (!a)
			continue;
		spin_lock_bh(&nta.lock);
		s = a->stats;
		spin_unlock_bh(&nta.lock);
		seq_printf(m, "%s ifindex %d reader %s allocated %llu fallback %llu received %llu published %llu not_shared %llu\n",
			   netdev_name(a->dev), s.ifindex, a->reader ? "yes" : "no", s.allocated,
			   s.fallback, s.received, s.published, s.not_shared);
	}
	rcu_read_unlock();
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nta_devices);

static int nta_meta_init(void)
{
	struct nta_meta *meta = (void *)get_zeroed_page(GFP_KERNEL);
	size_t records = array_size(nta_ring_entries, sizeof(struct nta_record));

	if (!meta)
		return -ENOMEM;
	*meta = (struct nta_meta) {
		.magic = NTA_MAGIC,
		.abi_version = NTA_ABI_VERSION,
		.meta_size = sizeof(*meta),
		.record_size = sizeof(struct nta_record),
		.commit_size = sizeof(struct nta_commit),
		.page_size = PAGE_SIZE,
		.node_count = nta.node_count,
		.node_size = nta.node_pages * PAGE_SIZE,
		.chunk_size = PAGE_SIZE,
		.ring_entries = nta_ring_entries,
		.max_shared = nta_max_shared,
		.max_commit_batch = NTA_MAX_COMMIT_BATCH,
		.ring_mmap_offset = NTA_MMAP_RING_OFFSET,
		.ring_mmap_size = PAGE_SIZE + PAGE_ALIGN(records),
		.nodes_mmap_offset = NTA_MMAP_NODES_OFFSET,
		.nodes_mmap_size = (u64)nta.node_count * nta.node_pages * PAGE_SIZE,
		.ring_producer_offset = NTA_RING_PRODUCER,
		.ring_consumer_offset = NTA_RING_CONSUMER,
		.ring_records_offset = PAGE_SIZE,
	};
	nta.meta = meta;
	return 0;
}

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
	while (!err && (name = strsep(&cursor, ",")) != NULL) {
		struct net_device *dev = dev_get_by_name(&init_net, name);

		if (!dev) {
			pr_err("nta: attach: no device %s\n", name);
			err = -ENODEV;
			break;
		}
		err = nta_attach(dev, NULL);
		dev_put(dev);
	}
	kfree(names);
	return err;
}

static int __init nta_init(void)
{
	int err;

	if (!is_power_of_2(nta_ring_entries) || nta_ring_entries > (1U << 20))
		return -EINVAL;
	err = nta_pool_init(node_order, node_count);
	if (err)
		return err;
	err = nta_meta_init();
	if (err)
		goto pool;
	err = nta_dev_init();
	if (err)
		goto meta;
	err = nta_attach_param();
	if (err)
		goto dev;
	err = nta_hooks_init();
	if (err)
		goto dev;
	nta_debugfs = debugfs_create_dir("nta", NULL);
	debugfs_create_file("stats", 0444, nta_debugfs, NULL, &nta_stats_fops);
	debugfs_create_file("devices", 0444, nta_debugfs, NULL, &nta_devices_fops);
	pr_info("nta: version %s abi %u loaded: %u nodes x %lu KiB\n", NTA_VERSION,
		NTA_ABI_VERSION, nta.node_count, nta.node_pages * PAGE_SIZE / 1024);
	return 0;
dev:
	nta_dev_exit();
meta:
	free_page((unsigned long)nta.meta);
pool:
	nta_pool_exit();
	return err;
}

/*
 * Stop serving and publishing first, then hand every page back: the ones
 * the kernel still uses are freed by their last user.
 */
static void __exit nta_exit(void)
{
	struct nta_stats s;

	debugfs_remove_recursive(nta_debugfs);
	nta_hooks_exit();
	nta_dev_exit();
	spin_lock_bh(&nta.lock);
	nta_pool_sweep_locked();
	s = nta.stats;
	spin_unlock_bh(&nta.lock);
	nta_pool_exit();
	free_page((unsigned long)nta.meta);
	pr_info("nta: unloaded: allocated %llu freed %llu in_use %llu published %llu committed %llu\n",
		s.allocated, s.freed, s.in_use, s.published, s.committed);
}

module_init(nta_init);
module_exit(nta_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION(NTA_VERSION);
MODULE_AUTHOR("ntalab");
MODULE_DESCRIPTION("NTA: network allocator with a zero-copy, commit-back sniffer");
