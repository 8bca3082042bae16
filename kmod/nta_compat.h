/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nta_compat.h - the differences between the kernels NTA builds for
 * (Debian's 6.1 and 6.12), in one place.
 */
#ifndef _NTA_COMPAT_H
#define _NTA_COMPAT_H

#include <linux/ftrace.h>
#include <linux/mm.h>
#include <linux/netdevice.h>
#include <linux/version.h>

/* 6.9 dropped the gfp argument: napi_alloc_skb(napi, len) is the function. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
#define NTA_NAPI_ALLOC_HAS_GFP	0
#else
#define NTA_NAPI_ALLOC_HAS_GFP	1
#endif

/* 6.7 renamed the ftrace helper that moves the instruction pointer. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
#define nta_ftrace_set_ip(fregs, ip)	ftrace_regs_set_instruction_pointer(fregs, ip)
#else
#define nta_ftrace_set_ip(fregs, ip)	ftrace_instruction_pointer_set(fregs, ip)
#endif

/* 6.3 made vm_flags read-only outside the vm_flags_*() helpers. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
static inline void vm_flags_clear(struct vm_area_struct *vma, unsigned long flags)
{
	vma->vm_flags &= ~flags;
}
#endif

/* Whether a tc (clsact/ingress) or tcx program sees @dev's received frames: 6.6 moved it. */
static inline bool nta_has_ingress_tc(const struct net_device *dev)
{
#if defined(CONFIG_NET_XGRESS)
	return rcu_access_pointer(dev->tcx_ingress);
#elif defined(CONFIG_NET_CLS_ACT)
	return rcu_access_pointer(dev->miniq_ingress);
#else
	return false;
#endif
}

#endif /* _NTA_COMPAT_H */
