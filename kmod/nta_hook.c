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
 *    at receive (e1000 above copybreak). This one names no device, so
 *    e1000's refill function, e1000_alloc_rx_buffers(adapter, ...), is
 *    redirected too, for the devices NTA serves only: NTA's wrapper marks
 *    the CPU with the device and its context, with preemption off, calls
 *    the driver's function, and unmarks it; the frag hook serves a call
 *    made under a mark in the same context (not an interrupt nested on top
 *    of the refill), and the mark is saved and restored around nested
 *    refills. No probe traps on the receive path.
 *
 * The redirects are in place only while NTA serves some device
 * (nta_hooks_get/put): with nothing attached the kernel's functions run as
 * if NTA were not loaded. The ftrace callback decides before anything else:
 * a call for a device NTA does not serve runs the kernel's function with no
 * module text on its stack. A redirected call that NTA cannot serve (pool
 * empty, buffer larger than a chunk) falls back to the kernel's function,
 * called from here (never as a sibling call: see Kbuild); if the caller's
 * gfp lets it sleep, the module is pinned across that call. A task sleeping
 * in module text on the way back is then never left there by rmmod:
 * synchronize_rcu_tasks() (nta_hooks_exit) counts a voluntary sleep as a
 * quiescent state, so it would not wait for it.
 *
 * This file knows nothing of readers or pools: which devices NTA serves and
 * where their buffers come from are the ops it is given (nta_dev.c).
 */
#include <linux/ftrace.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/skbuff.h>
#include <asm/ibt.h>

#include "nta.h"
#include "nta_compat.h"

#define NTA_FTRACE_FLAGS (FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | \
			  FTRACE_OPS_FL_IPMODIFY)

static const struct nta_serving_ops *nta_ops;

/*
 * Which context the CPU runs in: a refill marked in softirq must not serve
 * a hard interrupt that nests on top of it on the same CPU.
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
	struct net_device *dev;		/* NULL: no refill of a served device running */
	unsigned int context;
};

static DEFINE_PER_CPU(struct nta_refill_mark, nta_refill);

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
	struct sk_buff *skb;
	void *data;

	if (nta_head_size(len, pad) > PAGE_SIZE)
		return NULL;
	data = nta_ops->alloc(dev, PAGE_SIZE);
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

static struct sk_buff *nta_netdev_alloc_skb(struct net_device *dev, unsigned int len, gfp_t gfp)
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

/*
 * The device of this CPU's refill in the current context, or NULL. Only
 * called with preemption off: from the ftrace callback, or under the
 * refill wrapper (nta_e1000_refill), which is the only way a mark is set.
 */
static struct net_device *nta_refill_dev(void)
{
	struct nta_refill_mark *mark = this_cpu_ptr(&nta_refill);
	struct net_device *dev = READ_ONCE(mark->dev);

	return dev && READ_ONCE(mark->context) == nta_context() ? dev : NULL;
}

/* The frag allocator takes no gfp: it is atomic, so its fallback never sleeps. */
static void *nta_netdev_alloc_frag(unsigned int fragsz, unsigned int align_mask)
{
	struct net_device *dev = nta_refill_dev();
	void *data = NULL;

	if (dev && fragsz <= PAGE_SIZE)
		data = nta_ops->alloc(dev, fragsz);
	return data ?: __netdev_alloc_frag_align(fragsz, align_mask);
}

/*
 * e1000_alloc_rx_buffers(adapter, ring, count): the adapter is the
 * net_device's private area, which follows the net_device itself (a
 * pointer compared, never followed: the same name may be e1000e's
 * function, whose first argument is a ring).
 */
static struct net_device *nta_adapter_dev(unsigned long adapter)
{
	return (struct net_device *)(adapter - ALIGN(sizeof(struct net_device), NETDEV_ALIGN));
}

typedef void (*nta_refill_fn)(void *adapter, void *ring, int count);

/* e1000's refill function (set by the ftrace callback, which sees where it starts). */
static nta_refill_fn nta_e1000_refill_orig;

/*
 * e1000's refill, for a device NTA serves: marked, so that its frag
 * allocations are NTA's. Preemption stays off across it, as it is in the
 * driver's NAPI poll, its usual caller (e1000_alloc_rx_buffers() never
 * sleeps), so that the mark is this CPU's for the whole refill even when
 * the driver refills from process context (e1000_open, the reset task,
 * ringparam changes under rtnl). An interrupt that refills another device
 * on top of it saves and restores the mark.
 */
static void nta_e1000_refill(void *adapter, void *ring, int count)
{
	nta_refill_fn orig = READ_ONCE(nta_e1000_refill_orig);
	struct nta_refill_mark *mark, saved;

	preempt_disable();
	mark = this_cpu_ptr(&nta_refill);
	saved = *mark;
	WRITE_ONCE(mark->dev, NULL);
	barrier();
	WRITE_ONCE(mark->context, nta_context());
	barrier();
	WRITE_ONCE(mark->dev, nta_adapter_dev((unsigned long)adapter));
	orig(adapter, ring, count);
	WRITE_ONCE(mark->dev, NULL);
	barrier();
	WRITE_ONCE(mark->context, saved.context);
	barrier();
	WRITE_ONCE(mark->dev, saved.dev);
	preempt_enable();
}

struct nta_hook {
	const char *name;
	unsigned long target;		/* 0: found by name when its module is loaded */
	unsigned long replacement;
	/* Whether the call is one NTA serves, from the target's arguments. */
	bool (*wants)(struct pt_regs *regs, unsigned long ip);
	struct ftrace_ops ops;
	bool registered;
};

static bool nta_wants_netdev(struct pt_regs *regs, unsigned long ip)
{
	return nta_ops->serves((struct net_device *)regs_get_kernel_argument(regs, 0));
}

static bool nta_wants_napi(struct pt_regs *regs, unsigned long ip)
{
	struct napi_struct *napi = (struct napi_struct *)regs_get_kernel_argument(regs, 0);

	return napi && nta_ops->serves(napi->dev);
}

/* Only under the refill wrapper, i.e. for a device NTA serves (and still serves). */
static bool nta_wants_frag(struct pt_regs *regs, unsigned long ip)
{
	struct net_device *dev = nta_refill_dev();

	return dev && nta_ops->serves(dev);
}

/*
 * Where the function whose ftrace site is @ip starts: the site itself, or
 * the ENDBR64 before it on an IBT kernel (an indirect call must land on
 * it). e1000's refill function is called through a pointer by the driver,
 * so its ENDBR64 is never sealed.
 */
static unsigned long nta_function_of_site(unsigned long ip)
{
	if (ENDBR_INSN_SIZE && is_endbr(*(u32 *)(ip - ENDBR_INSN_SIZE)))
		return ip - ENDBR_INSN_SIZE;
	return ip;
}

static bool nta_wants_refill(struct pt_regs *regs, unsigned long ip)
{
	if (!nta_ops->serves(nta_adapter_dev(regs_get_kernel_argument(regs, 0))))
		return false;
	WRITE_ONCE(nta_e1000_refill_orig, (nta_refill_fn)nta_function_of_site(ip));
	return true;
}

static void notrace nta_ftrace_thunk(unsigned long ip, unsigned long parent_ip,
				     struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
	struct nta_hook *hook = container_of(ops, struct nta_hook, ops);
	struct pt_regs *regs = ftrace_get_regs(fregs);

	/* Our own fallback calls, and calls NTA does not serve, run untouched. */
	if (within_module(parent_ip, THIS_MODULE) || !regs || !hook->wants(regs, ip))
		return;
	nta_ftrace_set_ip(fregs, hook->replacement);
}

enum { NTA_HOOK_NETDEV, NTA_HOOK_NAPI, NTA_HOOK_FRAG, NTA_HOOK_E1000 };

#define NTA_HOOK_OPS	.ops = { .func = nta_ftrace_thunk, .flags = NTA_FTRACE_FLAGS }

static struct nta_hook nta_hooks[] = {
	[NTA_HOOK_NETDEV] = {
		.name = "__netdev_alloc_skb",
		.target = (unsigned long)__netdev_alloc_skb,
		.replacement = (unsigned long)nta_netdev_alloc_skb,
		.wants = nta_wants_netdev,
		NTA_HOOK_OPS,
	},
	[NTA_HOOK_NAPI] = {
		.name = NTA_NAPI_ALLOC,
#if !NTA_NAPI_ALLOC_HAS_GFP
		.target = (unsigned long)napi_alloc_skb,
#else
		.target = (unsigned long)__napi_alloc_skb,
#endif
		.replacement = (unsigned long)nta_napi_alloc_skb,
		.wants = nta_wants_napi,
		NTA_HOOK_OPS,
	},
	[NTA_HOOK_FRAG] = {
		.name = "__netdev_alloc_frag_align",
		.target = (unsigned long)__netdev_alloc_frag_align,
		.replacement = (unsigned long)nta_netdev_alloc_frag,
		.wants = nta_wants_frag,
		NTA_HOOK_OPS,
	},
	/*
	 * By name, as the driver's function is static; whichever module has
	 * one of that name is filtered in (e1000e may be built in beside
	 * e1000): the callback tells them apart by their first argument.
	 */
	[NTA_HOOK_E1000] = {
		.name = "e1000_alloc_rx_buffers",
		.replacement = (unsigned long)nta_e1000_refill,
		.wants = nta_wants_refill,
		NTA_HOOK_OPS,
	},
};

/* Adds @hook's function(s) to its filter; -EINVAL when none exists (its module not loaded). */
static int nta_hook_filter(struct nta_hook *hook, int reset)
{
	char name[KSYM_NAME_LEN];

	if (hook->target)
		return ftrace_set_filter_ip(&hook->ops, hook->target, 0, reset);
	strscpy(name, hook->name, sizeof(name));
	return ftrace_set_filter(&hook->ops, name, strlen(name), reset);
}

/* Empties @hook's filter (an empty filter would mean every function: never while registered). */
static void nta_hook_clear(struct nta_hook *hook)
{
	ftrace_set_filter(&hook->ops, NULL, 0, 1);
}

static int nta_hook_register(struct nta_hook *hook)
{
	int err = nta_hook_filter(hook, 1);

	if (err)
		return err;
	err = register_ftrace_function(&hook->ops);
	if (err) {
		pr_err("nta: cannot hook %s: %d\n", hook->name, err);
		nta_hook_clear(hook);
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
	nta_hook_clear(hook);
	hook->registered = false;
}

static DEFINE_MUTEX(nta_hooks_lock);
static unsigned int nta_hooks_users;	/* devices served */
static bool nta_hooks_on;

/* e1000's refill, hooked when the driver is loaded (no match otherwise: not an error). */
static void nta_hook_e1000_locked(void)
{
	struct nta_hook *hook = &nta_hooks[NTA_HOOK_E1000];
	int err;

	lockdep_assert_held(&nta_hooks_lock);
	err = hook->registered ? nta_hook_filter(hook, 0) : nta_hook_register(hook);
	if (err && err != -EINVAL)
		pr_info("nta: e1000 refill not hooked (%d): its frag path not served\n", err);
}

static int nta_hooks_on_locked(void)
{
	int i, err;

	for (i = 0; i < NTA_HOOK_E1000; i++) {
		err = nta_hook_register(&nta_hooks[i]);
		if (err) {
			pr_err("nta: cannot filter %s: %d\n", nta_hooks[i].name, err);
			while (i--)
				nta_hook_unregister(&nta_hooks[i]);
			return err;
		}
	}
	nta_hook_e1000_locked();
	nta_hooks_on = true;
	return 0;
}

/* Stops new entries; tasks still inside a replacement finish in module text, kept until exit. */
static void nta_hooks_off_locked(void)
{
	int i;

	for (i = ARRAY_SIZE(nta_hooks) - 1; i >= 0; i--)
		nta_hook_unregister(&nta_hooks[i]);
	nta_hooks_on = false;
}

/* The last device went: off, out of the way of whoever dropped it (rtnl may be held). */
static void nta_hooks_idle(struct work_struct *work)
{
	mutex_lock(&nta_hooks_lock);
	if (!nta_hooks_users && nta_hooks_on)
		nta_hooks_off_locked();
	mutex_unlock(&nta_hooks_lock);
}

static DECLARE_WORK(nta_hooks_idle_work, nta_hooks_idle);

/* A device is about to be served: the redirects are in place when this returns 0. Sleeps. */
int nta_hooks_get(void)
{
	int err = 0;

	mutex_lock(&nta_hooks_lock);
	if (!nta_hooks_on)
		err = nta_hooks_on_locked();
	if (!err)
		nta_hooks_users++;
	mutex_unlock(&nta_hooks_lock);
	return err;
}

/* A device is no longer served: the last one takes the redirects out (in a work item). */
void nta_hooks_put(void)
{
	mutex_lock(&nta_hooks_lock);
	if (!WARN_ON_ONCE(!nta_hooks_users) && !--nta_hooks_users)
		schedule_work(&nta_hooks_idle_work);
	mutex_unlock(&nta_hooks_lock);
}

static int nta_module_event(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;

	if (strcmp(mod->name, "e1000"))
		return NOTIFY_DONE;
	mutex_lock(&nta_hooks_lock);
	/* Its functions are known to ftrace from COMING on, and until it is freed after GOING. */
	if (action == MODULE_STATE_COMING && nta_hooks_on)
		nta_hook_e1000_locked();
	else if (action == MODULE_STATE_GOING)
		nta_hook_unregister(&nta_hooks[NTA_HOOK_E1000]);
	mutex_unlock(&nta_hooks_lock);
	return NOTIFY_DONE;
}

static struct notifier_block nta_module_notifier = {
	.notifier_call = nta_module_event,
};

int nta_hooks_init(const struct nta_serving_ops *ops)
{
	nta_ops = ops;
	return register_module_notifier(&nta_module_notifier);
}

/*
 * At unload, every device detached: the redirects are out, and
 * synchronize_rcu_tasks() waits for tasks preempted inside a replacement (a
 * task sleeping in a fallback holds a module reference instead: see above).
 */
void nta_hooks_exit(void)
{
	flush_work(&nta_hooks_idle_work);
	mutex_lock(&nta_hooks_lock);
	WARN_ON_ONCE(nta_hooks_users);
	nta_hooks_off_locked();
	mutex_unlock(&nta_hooks_lock);
	unregister_module_notifier(&nta_module_notifier);
	synchronize_rcu_tasks();
}
