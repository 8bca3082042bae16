// SPDX-License-Identifier: GPL-2.0
/*
 * nta_params.c - NTA's module parameters (/sys/module/nta/parameters/).
 *
 * Data the other files read, and the callback that wakes whoever waits on
 * one. This file uses no other, so that any file reads a parameter without
 * depending on a file above it (nta_main.c, which calls into them all).
 */
#include <linux/moduleparam.h>
#include <linux/wait.h>

#include "nta.h"

unsigned int nta_node_order = 6;
module_param_named(node_order, nta_node_order, uint, 0444);
MODULE_PARM_DESC(node_order, "pages per node, as a power of two (default 6: 256 KiB)");

unsigned int nta_pool_kb = 16384;
module_param_named(pool_kb, nta_pool_kb, uint, 0644);
MODULE_PARM_DESC(pool_kb, "each reader's pool, in KiB, read at open (default 16384)");

unsigned int nta_common_pool_kb = 4096;
module_param_named(common_pool_kb, nta_common_pool_kb, uint, 0444);
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

char *nta_attach_list;
module_param_named(attach, nta_attach_list, charp, 0444);
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
