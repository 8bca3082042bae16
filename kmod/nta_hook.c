// SPDX-License-Identifier: GPL-2.0
/*
 * nta_hook.c - serve the receive allocations of attached devices from NTA.
 *
 * Drivers allocate receive buffers in three ways, and each is redirected
 * with an ftrace ops that rewrites the instruction pointer (IPMODIFY):
 *
 *  - __netdev_alloc_skb(dev, ...): skbs allocated ahead (8139cp);
 *  - __napi_alloc_skb(napi, ...) / napi_alloc_skb(napi, ...) since 6.9:
 *    copies of small frames (e1000 under copybreak);
 *  - __netdev_alloc_frag_align(size, align): bare buffers built into skbs
 *    at receive (e1000 above copybreak). This one names no device, so the
 *    driver's refill function is marked per CPU while it runs: a kretprobe
 *    on e1000_alloc_rx_buffers records (device, task) on entry and clears
 *    it on return, and the frag hook serves only that task on that CPU.
 *
 * Calls from this module are never redirected, so the hooks fall back to
 * the original functions simply by calling them (never as a sibling call:
 * see Kbuild).
 */
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/percpu.h>
#include <linux/skbuff.h>
#include "nta.h"
#include "nta_compat.h"

#define NTA_FTRACE_FLAGS (FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | \
			  FTRACE_OPS_FL_IPMODIFY)

/*
 * The context is recorded with the task: a softirq that interrupts a refill
 * running in process context runs as the same current task.
 */
struct nta_refill_mark {
	struct net_device *dev;
	struct task_struct *task;
	bool in_softirq;
};

static DEFINE_PER_CPU(struct nta_refill_mark, nta_refill);

struct nta_attached *nta_attached_rcu(const struct net_device *dev)
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

/* The bytes an skb head needs for @len bytes of data after @pad headroom. */
static unsigned int nta_head_size(unsigned int len, unsigned int pad)
{
	return SKB_DATA_ALIGN(len + pad) + SKB_DATA_ALIGN(sizeof(struct skb_shared_info));
}

/* An skb over an NTA chunk for @dev, as the kernel's own allocators build it. */
static struct sk_buff *nta_build_skb(struct net_device *dev, unsigned int len,
				     unsigned int pad)
{
	unsigned int size = nta_head_size(len, pad);
	struct nta_attached *a;
	struct sk_buff *skb;
	void *data;

	rcu_read_lock();
	a = nta_attached_rcu(dev);
	data = a ? nta_chunk_alloc(a, size) : NULL;
	rcu_read_unlock();
	if (!data)
		return NULL;
	skb = build_skb(data, size);
	if (unlikely(!skb)) {
		skb_free_frag(data);
		return NULL;
	}
	skb_reserve(skb, pad);
	skb->dev = dev;
	return skb;
}

static struct sk_buff *nta_netdev_alloc_skb(struct net_device *dev, unsigned int len,
					    gfp_t gfp)
{
	struct sk_buff *skb = dev ? nta_build_skb(dev, len, NET_SKB_PAD) : NULL;

	return skb ?: __netdev_alloc_skb(dev, len, gfp);
}

#if !NTA_NAPI_ALLOC_HAS_GFP
#define NTA_NAPI_ALLOC "napi_alloc_skb"
static struct sk_buff *nta_napi_alloc_skb(struct napi_struct *napi, unsigned int len)
{
	struct sk_buff *skb = nta_build_skb(napi->dev, len, NET_SKB_PAD + NET_IP_ALIGN);

	return skb ?: napi_alloc_skb(napi, len);
}
#else
#define NTA_NAPI_ALLOC "__napi_alloc_skb"
static struct sk_buff *nta_napi_alloc_skb(struct napi_struct *napi, unsigned int len,
					  gfp_t gfp)
{
	struct sk_buff *skb = nta_build_skb(napi->dev, len, NET_SKB_PAD + NET_IP_ALIGN);

	return skb ?: __napi_alloc_skb(napi, len, gfp);
}
#endif

static void *nta_netdev_alloc_frag(unsigned int fragsz, unsigned int align_mask)
{
	struct nta_refill_mark *mark = this_cpu_ptr(&nta_refill);
	struct nta_attached *a;
	void *data = NULL;

	if (mark->dev && mark->task == current && mark->in_softirq == !!in_serving_softirq()) {
		rcu_read_lock();
		a = nta_attached_rcu(mark->dev);
		if (a)
			data = nta_chunk_alloc(a, fragsz);
		rcu_read_unlock();
	}
	return data ?: __netdev_alloc_frag_align(fragsz, align_mask);
}

/*
 * e1000_alloc_rx_buffers(adapter, ring, count): the adapter is the
 * net_device's private area, which follows the net_device itself.
 */
static int nta_refill_enter(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	void *adapter = (void *)regs_get_kernel_argument(regs, 0);
	struct nta_refill_mark *mark = this_cpu_ptr(&nta_refill);

	mark->dev = adapter - ALIGN(sizeof(struct net_device), NETDEV_ALIGN);
	mark->task = current;
	mark->in_softirq = !!in_serving_softirq();
	return 0;
}

/* The task may have moved CPUs while refilling: clear its mark everywhere. */
static int nta_refill_leave(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		struct nta_refill_mark *mark = per_cpu_ptr(&nta_refill, cpu);

		if (mark->task == current) {
			mark->dev = NULL;
			mark->task = NULL;
		}
	}
	return 0;
}

static struct kretprobe nta_refill_probe = {
	.kp.symbol_name = "e1000_alloc_rx_buffers",
	.entry_handler = nta_refill_enter,
	.handler = nta_refill_leave,
	.maxactive = 64,
};

static bool nta_refill_registered;

struct nta_hook {
	const char *name;
	unsigned long target;
	unsigned long replacement;
	struct ftrace_ops ops;
	bool registered;
};

static void notrace nta_ftrace_thunk(unsigned long ip, unsigned long parent_ip,
				     struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
	struct nta_hook *hook = container_of(ops, struct nta_hook, ops);

	if (within_module(parent_ip, THIS_MODULE))
		return;
	nta_ftrace_set_ip(fregs, hook->replacement);
}

static struct nta_hook nta_hooks[] = {
	{
		.name = "__netdev_alloc_skb",
		.target = (unsigned long)__netdev_alloc_skb,
		.replacement = (unsigned long)nta_netdev_alloc_skb,
	},
	{
		.name = NTA_NAPI_ALLOC,
#if !NTA_NAPI_ALLOC_HAS_GFP
		.target = (unsigned long)napi_alloc_skb,
#else
		.target = (unsigned long)__napi_alloc_skb,
#endif
		.replacement = (unsigned long)nta_napi_alloc_skb,
	},
	{
		.name = "__netdev_alloc_frag_align",
		.target = (unsigned long)__netdev_alloc_frag_align,
		.replacement = (unsigned long)nta_netdev_alloc_frag,
	},
};

static int nta_hook_register(struct nta_hook *hook)
{
	int err;

	hook->ops.func = nta_ftrace_thunk;
	hook->ops.flags = NTA_FTRACE_FLAGS;
	err = ftrace_set_filter_ip(&hook->ops, hook->target, 0, 0);
	if (err) {
		pr_err("nta: cannot filter %s: %d\n", hook->name, err);
		return err;
	}
	err = register_ftrace_function(&hook->ops);
	if (err) {
		pr_err("nta: cannot hook %s: %d\n", hook->name, err);
		ftrace_set_filter_ip(&hook->ops, hook->target, 1, 0);
		return err;
	}
	hook->registered = true;
	return 0;
}

static void nta_hook_unregister(struct nta_hook *hook)
{
	if (!hook->registered)
		return;
	unregister_ftrace_function(&hook->ops);
	ftrace_set_filter_ip(&hook->ops, hook->target, 1, 0);
	hook->registered = false;
}

int nta_hooks_init(void)
{
	int i, err;

	/* Without e1000 loaded there is no frag path to mark: not an error. */
	err = register_kretprobe(&nta_refill_probe);
	nta_refill_registered = !err;
	if (err)
		pr_info("nta: e1000 refill not marked (%d): frag path not served\n", err);
	for (i = 0; i < ARRAY_SIZE(nta_hooks); i++) {
		err = nta_hook_register(&nta_hooks[i]);
		if (err) {
			nta_hooks_exit();
			return err;
		}
	}
	return 0;
}

/*
 * After this no CPU runs a hook: unregistering stops new entries, and
 * synchronize_rcu_tasks() waits for tasks preempted inside a hook.
 */
void nta_hooks_exit(void)
{
	int i;

	for (i = ARRAY_SIZE(nta_hooks) - 1; i >= 0; i--)
		nta_hook_unregister(&nta_hooks[i]);
	if (nta_refill_registered)
		unregister_kretprobe(&nta_refill_probe);
	nta_refill_registered = false;
	synchronize_rcu_tasks();
}
