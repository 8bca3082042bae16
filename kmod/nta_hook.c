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
 *    on e1000_alloc_rx_buffers records (device, task, context) on entry and
 *    clears it on return, and the frag hook serves only that task, on that
 *    CPU, in that context (not an interrupt nested on top of the refill).
 *    The probe is armed whenever e1000 is loaded, also after NTA.
 *
 * The ftrace callback decides whether to redirect before anything else: a
 * call for a device NTA does not serve runs the kernel's function as if NTA
 * were not there, with no module text on its stack. A redirected call that
 * NTA cannot serve (pool empty, buffer larger than a chunk) falls back to
 * the kernel's function, called from here (never as a sibling call: see
 * Kbuild); if the caller's gfp lets it sleep, the module is pinned across
 * that call. A task sleeping in module text on the way back is then never
 * left there by rmmod: synchronize_rcu_tasks() (nta_hooks_exit) counts a
 * voluntary sleep as a quiescent state, so it would not wait for it.
 */
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/skbuff.h>
#include "nta.h"
#include "nta_compat.h"

#define NTA_FTRACE_FLAGS (FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | \
			  FTRACE_OPS_FL_IPMODIFY)

/*
 * Which context the CPU runs in: a refill marked in softirq must not serve
 * a hard interrupt that nests on top of it on the same CPU, as that one
 * runs as the same current task.
 */
static unsigned int nta_context(void)
{
	if (in_nmi())
		return 3;
	if (in_hardirq())
		return 2;
	return in_serving_softirq() ? 1 : 0;
}

struct nta_refill_mark {
	struct net_device *dev;
	struct task_struct *task;
	unsigned int context;
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

static bool nta_serves(const struct net_device *dev)
{
	bool served;

	rcu_read_lock();
	served = dev && nta_attached_rcu(dev);
	rcu_read_unlock();
	return served;
}

/* The bytes an skb head needs for @len bytes of data after @pad headroom. */
static unsigned int nta_head_size(unsigned int len, unsigned int pad)
{
	return SKB_DATA_ALIGN(len + pad) + SKB_DATA_ALIGN(sizeof(struct skb_shared_info));
}

/*
 * An skb over an NTA chunk for @dev. It is built over the whole page, so
 * its truesize is what it pins: sockets that queue it are charged a page,
 * not the few hundred bytes a small frame asked for.
 */
static struct sk_buff *nta_build_skb(struct net_device *dev, unsigned int len,
				     unsigned int pad)
{
	struct nta_attached *a;
	struct sk_buff *skb;
	void *data = NULL;

	if (nta_head_size(len, pad) > PAGE_SIZE)
		return NULL;
	rcu_read_lock();
	a = nta_attached_rcu(dev);
	if (a)
		data = nta_chunk_alloc(a, PAGE_SIZE);
	rcu_read_unlock();
	if (!data)
		return NULL;
	skb = build_skb(data, PAGE_SIZE);
	if (unlikely(!skb)) {
		skb_free_frag(data);
		return NULL;
	}
	skb_reserve(skb, pad);
	skb->dev = dev;
	return skb;
}

/*
 * The gfp for a fallback to the kernel's allocator. If it may sleep, the
 * module is pinned until the call returns (*@pinned: the caller then drops
 * it); if the module is already being removed, the call must not sleep.
 */
static gfp_t nta_fallback_gfp(gfp_t gfp, bool *pinned)
{
	*pinned = false;
	if (!gfpflags_allow_blocking(gfp))
		return gfp;
	if (!try_module_get(THIS_MODULE))
		return gfp & ~__GFP_DIRECT_RECLAIM;
	*pinned = true;
	/* Test-only (fault_block_fallback): sleeps here, as reclaim may. */
	wait_event(nta_fault_wq, !READ_ONCE(nta_fault_block_fallback));
	return gfp;
}

struct sk_buff *nta_netdev_alloc_skb(struct net_device *dev, unsigned int len, gfp_t gfp)
{
	struct sk_buff *skb = nta_build_skb(dev, len, NET_SKB_PAD);
	bool pinned;

	if (skb)
		return skb;
	skb = __netdev_alloc_skb(dev, len, nta_fallback_gfp(gfp, &pinned));
	if (pinned)
		module_put(THIS_MODULE);
	return skb;
}

#if !NTA_NAPI_ALLOC_HAS_GFP
#define NTA_NAPI_ALLOC "napi_alloc_skb"
static struct sk_buff *nta_napi_alloc_skb(struct napi_struct *napi, unsigned int len)
{
	struct sk_buff *skb = nta_build_skb(napi->dev, len, NET_SKB_PAD + NET_IP_ALIGN);

	/* Always atomic: NAPI polls in softirq context. */
	return skb ?: napi_alloc_skb(napi, len);
}
#else
#define NTA_NAPI_ALLOC "__napi_alloc_skb"
static struct sk_buff *nta_napi_alloc_skb(struct napi_struct *napi, unsigned int len,
					  gfp_t gfp)
{
	struct sk_buff *skb = nta_build_skb(napi->dev, len, NET_SKB_PAD + NET_IP_ALIGN);
	bool pinned;

	if (skb)
		return skb;
	skb = __napi_alloc_skb(napi, len, nta_fallback_gfp(gfp, &pinned));
	if (pinned)
		module_put(THIS_MODULE);
	return skb;
}
#endif

static struct nta_refill_mark *nta_refill_mine(void)
{
	struct nta_refill_mark *mark = this_cpu_ptr(&nta_refill);

	if (mark->dev && mark->task == current && mark->context == nta_context())
		return mark;
	return NULL;
}

/* The frag allocator takes no gfp: it is atomic, so its fallback never sleeps. */
static void *nta_netdev_alloc_frag(unsigned int fragsz, unsigned int align_mask)
{
	struct nta_refill_mark *mark = nta_refill_mine();
	struct nta_attached *a;
	void *data = NULL;

	if (mark && fragsz <= PAGE_SIZE) {
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
	mark->context = nta_context();
	return 0;
}

/* The task may have moved CPUs while refilling: clear its mark everywhere. */
static int nta_refill_leave(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		struct nta_refill_mark *mark = per_cpu_ptr(&nta_refill, cpu);

		if (mark->task == current && mark->context == nta_context()) {
			mark->dev = NULL;
			mark->task = NULL;
		}
	}
	return 0;
}

static struct kretprobe nta_refill_probe = {
	.entry_handler = nta_refill_enter,
	.handler = nta_refill_leave,
	.maxactive = 64,
};

static DEFINE_MUTEX(nta_refill_lock);
static bool nta_refill_armed;

/* e1000 is loaded: mark its refills. A kretprobe is re-armed from a clean state. */
static void nta_refill_arm(void)
{
	int err;

	mutex_lock(&nta_refill_lock);
	if (!nta_refill_armed) {
		memset(&nta_refill_probe.kp, 0, sizeof(nta_refill_probe.kp));
		/*
		 * Named with its module: e1000e has a function of the same
		 * name, and a kernel with e1000e built in (virtme-ng's config)
		 * would otherwise get that one probed.
		 */
		nta_refill_probe.kp.symbol_name = "e1000:e1000_alloc_rx_buffers";
		err = register_kretprobe(&nta_refill_probe);
		nta_refill_armed = !err;
		if (err)
			pr_info("nta: e1000 refill not marked (%d): frag path not served\n", err);
	}
	mutex_unlock(&nta_refill_lock);
}

static void nta_refill_disarm(void)
{
	mutex_lock(&nta_refill_lock);
	if (nta_refill_armed)
		unregister_kretprobe(&nta_refill_probe);
	nta_refill_armed = false;
	mutex_unlock(&nta_refill_lock);
}

static int nta_module_event(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;

	if (strcmp(mod->name, "e1000"))
		return NOTIFY_DONE;
	if (action == MODULE_STATE_LIVE)
		nta_refill_arm();
	else if (action == MODULE_STATE_GOING)
		nta_refill_disarm();
	return NOTIFY_DONE;
}

static struct notifier_block nta_module_notifier = {
	.notifier_call = nta_module_event,
};

struct nta_hook {
	const char *name;
	unsigned long target;
	unsigned long replacement;
	/* Whether the call is one NTA serves, from the target's arguments. */
	bool (*wants)(struct pt_regs *regs);
	struct ftrace_ops ops;
	bool registered;
};

static bool nta_wants_netdev(struct pt_regs *regs)
{
	return nta_serves((struct net_device *)regs_get_kernel_argument(regs, 0));
}

static bool nta_wants_napi(struct pt_regs *regs)
{
	struct napi_struct *napi = (struct napi_struct *)regs_get_kernel_argument(regs, 0);

	return napi && nta_serves(napi->dev);
}

static bool nta_wants_frag(struct pt_regs *regs)
{
	return nta_refill_mine();
}

static void notrace nta_ftrace_thunk(unsigned long ip, unsigned long parent_ip,
				     struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
	struct nta_hook *hook = container_of(ops, struct nta_hook, ops);
	struct pt_regs *regs = ftrace_get_regs(fregs);

	/* Our own fallback calls, and calls NTA does not serve, run untouched. */
	if (within_module(parent_ip, THIS_MODULE) || !regs || !hook->wants(regs))
		return;
	nta_ftrace_set_ip(fregs, hook->replacement);
}

static struct nta_hook nta_hooks[] = {
	{
		.name = "__netdev_alloc_skb",
		.target = (unsigned long)__netdev_alloc_skb,
		.replacement = (unsigned long)nta_netdev_alloc_skb,
		.wants = nta_wants_netdev,
	},
	{
		.name = NTA_NAPI_ALLOC,
#if !NTA_NAPI_ALLOC_HAS_GFP
		.target = (unsigned long)napi_alloc_skb,
#else
		.target = (unsigned long)__napi_alloc_skb,
#endif
		.replacement = (unsigned long)nta_napi_alloc_skb,
		.wants = nta_wants_napi,
	},
	{
		.name = "__netdev_alloc_frag_align",
		.target = (unsigned long)__netdev_alloc_frag_align,
		.replacement = (unsigned long)nta_netdev_alloc_frag,
		.wants = nta_wants_frag,
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

	err = register_module_notifier(&nta_module_notifier);
	if (err)
		return err;
	/* Without e1000 loaded there is nothing to mark yet; its load arms the probe. */
	nta_refill_arm();
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
 * synchronize_rcu_tasks() waits for tasks preempted inside a hook (a task
 * sleeping in a fallback holds a module reference instead: see above).
 */
void nta_hooks_exit(void)
{
	int i;

	for (i = ARRAY_SIZE(nta_hooks) - 1; i >= 0; i--)
		nta_hook_unregister(&nta_hooks[i]);
	unregister_module_notifier(&nta_module_notifier);
	nta_refill_disarm();
	synchronize_rcu_tasks();
}
