// SPDX-License-Identifier: GPL-2.0
/*
 * nta_capture.c - the taps: a frame an attached device received is
 * published to every reader of the device where its bytes lie, in the
 * chunks of the device's pool, or copied into chunks where they cannot be
 * published in place.
 *
 * Each attached device has a tap of its own (a per-device packet_type),
 * which serves all its readers. Each reader gets the frames its direction
 * asks for (struct nta_direction): those the device received, and with
 * NTA_DIR_OUT those it sends, which dev_queue_xmit_nit() hands the tap (as
 * AF_PACKET) in the order they are sent, before the driver has them. A sent
 * frame is always published as a copy: its pages are the sender's (a
 * socket's, a page cache's), which NTA may not hold or let a reader map.
 * Each reader's filter runs first (nta_filtered()). The readers that keep
 * the whole frame share one publication: the same chunks, records in each
 * one's ring, the chunk back in the pool once the last of them commits;
 * each is admitted on its own limits, so a stalled one misses the frame
 * (counted as its own) and the others still get it. A reader whose filter
 * keeps the first bytes only gets a copy of its own. A received frame in
 * one linear buffer whose head is one of the pool's chunks is published in
 * place, one record. A frame the
 * stack holds in several buffers (GRO merged several frames of one flow, as
 * tcpdump sees them too) is published as a chain of records (all but the
 * last flagged CONTD), one per piece: in place for each piece lying in one
 * of the reader's chunks (e1000's merged segments do: GRO steals their
 * heads as frags), copied into fresh chunks (NTA_RECORD_COPY) for the rest.
 * Any other linear frame (a buffer the device got before the attach, or
 * while the pool was empty) is counted unserved, not published.
 *
 * Who may write a published frame. A received skb belongs to the stack,
 * which may still write into its data after NTA published it: the core
 * strips an inner VLAN tag in place, IP option processing rewrites the
 * header, reassembly rewrites the first fragment's. The kernel's rule for
 * anyone who holds packet data and expects it to stay as it is: hold a
 * reference to the data, so that skb_cloned() is true for the stack's skb,
 * and every writer that follows the rule (skb_cow, skb_ensure_writable,
 * pskb_expand_head, skb_unclone; skb_vlan_untag and ip_rcv_options do)
 * copies the data before writing. Each published chunk holds one until the
 * reader commits it:
 *  - a data reference on the buffer's shared info (dataref), taken without
 *    allocating anything, where NTA fully owns the layout: one linear
 *    head_frag buffer in one of its chunks, no frags, no frag list, no
 *    zerocopy, no page pool (see nta_owns_layout() and, for its release,
 *    nta_chunk_put_data());
 *  - a clone of the skb anywhere else (a GRO chain: one clone, one user of
 *    it per chunk of the frame).
 * Nothing is copied unless someone writes.
 *
 * Writers that do not follow the rule: they write into the data with no
 * look at skb_cloned(), so a hold does not stop them, and what NTA
 * publishes of such a frame must be a copy made in the tap, before they
 * run (nta_rewritten_in_place()):
 *  - ECN decapsulation of tunnels the host terminates: VXLAN and Geneve
 *    (vxlan_rcv, geneve_rx), GRE, IPIP and ERSPAN (ip_tunnel_rcv), sit
 *    (ipip6_rcv), ip6_tnl (ip6_tnl_rcv, with DSCP copy too) call
 *    INET_ECN_decapsulate(), whose IP_ECN_set_ce()/IP6_ECN_set_ce() and
 *    INET_ECN_set_ect1() rewrite the inner header in place; VXLAN's remote
 *    checksum offload (remcsum_adjust) likewise. xfrm's tunnel mode is not
 *    among them: it unclones first.
 *  - A qdisc marking CE (fq_codel, red, pie, cake: INET_ECN_set_ce()) on a
 *    frame forwarded at layer 2 without skb_cow(): a bridge port, an OVS
 *    port, a tc ingress redirect. Routed frames are safe: ip_forward() and
 *    ip6_forward() cow first.
 * Not covered: tunnels on UDP ports other than the standard ones (FOU, GUE
 * on ports of the user's choosing), and IPVS direct routing's rewrite of
 * the MAC header of a frame it sends on (neigh_hh_output()).
 */
#include <linux/filter.h>
#include <linux/if_vlan.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <net/inet_ecn.h>
#include <net/ip.h>
#include <net/ipv6.h>

#include "nta.h"
#include "nta_compat.h"

/*
 * Records one frame may take. A GRO frame (64 KiB at most) in place takes a
 * record per merged segment; past this many, the rest of it is copied, a
 * chunk per page.
 */
#define NTA_MAX_PIECES	48

/* A piece of a frame: in place in a chunk (c, at = offset in the node), or a copy. */
struct nta_piece {
	struct nta_chunk *c;
	u32 at;			/* in place: offset in the node; a copy: offset in the frame */
	u16 len;
	bool copy;
};

/* A frame being published: where each of its pieces lies. */
struct nta_frame {
	struct sk_buff *skb;
	u8 *mac;		/* its first byte */
	u32 len;		/* from its first byte: what is published */
	u32 wire;		/* the whole frame (more than len: the filter cut it) */
	bool out;		/* the device sent it */
	const struct nta_stamp *when;
	u32 n;
	u32 copies;
	u32 in_place;
	struct nta_piece p[NTA_MAX_PIECES];
};

/*
 * UDP ports of tunnels the kernel decapsulates in place: VXLAN (IANA, and
 * Linux's old default), VXLAN-GPE, Geneve.
 */
static bool nta_tunnel_port(__be16 port)
{
	switch (ntohs(port)) {
	case 4789:
	case 8472:
	case 4790:
	case 6081:
		return true;
	}
	return false;
}

/* @proto, whose header is @thoff bytes into @skb's data (-1: not in this fragment). */
static bool nta_tunnel(const struct sk_buff *skb, u8 proto, int thoff)
{
	const struct udphdr *uh;
	struct udphdr _uh;

	switch (proto) {
	case IPPROTO_IPIP:
	case IPPROTO_IPV6:
	case IPPROTO_GRE:
		return true;
	case IPPROTO_UDP:
		if (thoff < 0)
			return false;
		uh = skb_header_pointer(skb, thoff, sizeof(_uh), &_uh);
		return uh && nta_tunnel_port(uh->dest);
	}
	return false;
}

/* The device hands frames on at layer 2 without skb_cow(): an egress qdisc may mark them. */
static bool nta_forwards_at_l2(const struct net_device *dev)
{
	return netif_is_bridge_port(dev) || netif_is_ovs_port(dev) || nta_has_ingress_tc(dev);
}

/*
 * Whether a writer that does not look at skb_cloned() may rewrite this
 * frame after the tap (see the top of this file): a tunnel the host may
 * terminate, or an ECN-capable packet (ECT(0) or ECT(1): what
 * IP_ECN_set_ce() rewrites) on a device that forwards at layer 2. One look
 * at the network header; the tap runs with skb->data there.
 */
static bool nta_rewritten_in_place(const struct sk_buff *skb)
{
	u8 ecn, proto;
	int thoff;

	if (skb->protocol == htons(ETH_P_IP)) {
		const struct iphdr *iph;
		struct iphdr _iph;

		iph = skb_header_pointer(skb, 0, sizeof(_iph), &_iph);
		if (!iph || iph->ihl < 5)
			return false;
		ecn = iph->tos & INET_ECN_MASK;
		proto = iph->protocol;
		thoff = ntohs(iph->frag_off) & IP_OFFSET ? -1 : iph->ihl * 4;
	} else if (skb->protocol == htons(ETH_P_IPV6)) {
		const struct ipv6hdr *ip6h;
		struct ipv6hdr _ip6h;
		__be16 frag_off = 0;

		ip6h = skb_header_pointer(skb, 0, sizeof(_ip6h), &_ip6h);
		if (!ip6h)
			return false;
		ecn = ipv6_get_dsfield(ip6h) & INET_ECN_MASK;
		proto = ip6h->nexthdr;
		thoff = ipv6_skip_exthdr(skb, sizeof(*ip6h), &proto, &frag_off);
		if (frag_off & htons(IP6_OFFSET))
			thoff = -1;
	} else {
		return false;
	}
	if (nta_tunnel(skb, proto, thoff))
		return true;
	return (ecn == INET_ECN_ECT_0 || ecn == INET_ECN_ECT_1) && nta_forwards_at_l2(skb->dev);
}

/*
 * Whether NTA fully owns this skb's data layout, so that a bare data
 * reference may hold it (nta_chunk_put_data() frees exactly this layout).
 */
static bool nta_owns_layout(struct sk_buff *skb, const struct nta_chunk *c)
{
	return skb->head_frag && !skb->pp_recycle && !skb->nohdr && !skb_zcopy(skb) &&
	       !skb_is_nonlinear(skb) && skb->head == page_address(c->page) &&
	       skb_end_offset(skb) + sizeof(struct skb_shared_info) <= PAGE_SIZE;
}

/*
 * Frame bytes @from .. @from + @len, to be copied: packed into chunks, a
 * page each, continuing the previous piece if it is a copy with room left
 * (copied pieces are always consecutive bytes of the frame).
 */
static bool nta_plan_copy(struct nta_frame *f, u32 from, u32 len)
{
	while (len) {
		struct nta_piece *last = f->n ? &f->p[f->n - 1] : NULL;
		u32 step;

		if (last && last->copy && last->len < PAGE_SIZE) {
			step = min_t(u32, len, PAGE_SIZE - last->len);
			last->len += step;
		} else {
			if (f->n == NTA_MAX_PIECES)
				return false;
			step = min_t(u32, len, PAGE_SIZE);
			f->p[f->n++] = (struct nta_piece) { .at = from, .len = step, .copy = true };
			f->copies++;
		}
		from += step;
		len -= step;
	}
	return true;
}

/*
 * Frame bytes @from .. @from + @len, which lie @in_page bytes into chunk @c
 * (NULL: not one of the pool's): published in place if they may be and
 * records remain to copy the rest of the frame after them (the chunk is
 * then seen: a chunk holds one record), else copied.
 */
static bool nta_plan_piece(struct nta_frame *f, struct nta_chunk *c, u32 in_page, u32 from,
			   u32 len)
{
	u32 rest = DIV_ROUND_UP(f->len - from - len, PAGE_SIZE);

	if (!len)
		return true;
	if (!c || !nta_chunk_publishable(c, in_page, len, PAGE_SIZE) ||
	    f->n + 1 + rest + 1 > NTA_MAX_PIECES)
		return nta_plan_copy(f, from, len);
	nta_chunk_seen(c);
	f->p[f->n++] = (struct nta_piece) { .c = c, .at = c->index * PAGE_SIZE + in_page,
					    .len = len };
	f->in_place++;
	return true;
}

/* @skb's bytes from @data on, its linear part then its frags, at frame offset *@pos. */
static bool nta_plan_skb(struct nta_pool *pool, struct nta_frame *f, struct sk_buff *skb,
			 u8 *data, u32 *pos)
{
	struct nta_chunk *c = nta_pool_chunk_of(pool, skb->head);
	struct skb_shared_info *sh = skb_shinfo(skb);
	u32 len = skb_tail_pointer(skb) - data, i;

	if (!nta_plan_piece(f, c, c ? data - (u8 *)page_address(c->page) : 0, *pos, len))
		return false;
	*pos += len;
	for (i = 0; i < sh->nr_frags; i++) {
		const skb_frag_t *frag = &sh->frags[i];
		struct page *page = skb_frag_page(frag);

		len = skb_frag_size(frag);
		c = page ? nta_pool_chunk_of_page(pool, page) : NULL;
		if (!nta_plan_piece(f, c, skb_frag_off(frag), *pos, len))
			return false;
		*pos += len;
	}
	return true;
}

/*
 * Where each piece of the frame lies (pool lock held): the head skb's bytes
 * from the MAC header, then those of each skb of its frag list (GRO chains
 * segments there once the frags are full; their data starts past the
 * headers GRO pulled). False: more pieces than a frame may take.
 */
static bool nta_plan(struct nta_pool *pool, struct nta_frame *f, bool copy_all)
{
	struct sk_buff *skb = f->skb, *list;
	u32 pos = 0;

	if (copy_all)
		return nta_plan_copy(f, 0, f->len);
	if (!nta_plan_skb(pool, f, skb, f->mac, &pos))
		return false;
	skb_walk_frags(skb, list) {
		if (skb_has_frag_list(list) || !nta_plan_skb(pool, f, list, list->data, &pos))
			break;
	}
	/* Whatever was not planned above (a nested frag list): copied. */
	return pos <= f->len && nta_plan_copy(f, pos, f->len - pos);
}

/* The pieces to copy get chunks; false (none taken) if the pool has too few. */
static bool nta_take_copies_locked(struct nta_pool *pool, struct nta_frame *f,
				   struct sk_buff_head *holds)
{
	u32 i;

	for (i = 0; i < f->n; i++) {
		struct nta_piece *p = &f->p[i];

		if (!p->copy)
			continue;
		p->c = nta_pool_take_for_copy_locked(pool, holds);
		if (!p->c) {
			while (i--)
				if (f->p[i].copy)
					nta_pool_untake_locked(pool, f->p[i].c);
			return false;
		}
	}
	return true;
}

static void nta_untake_copies_locked(struct nta_pool *pool, struct nta_frame *f)
{
	u32 i;

	for (i = 0; i < f->n; i++)
		if (f->p[i].copy)
			nta_pool_untake_locked(pool, f->p[i].c);
}

/*
 * Copies the pieces into their chunks, without the pool lock: nothing else
 * reaches a chunk being filled (no reclaim frees it, no tap publishes it).
 */
static bool nta_fill_copies(struct nta_frame *f)
{
	int mac_off = f->mac - f->skb->data;
	u32 i;

	for (i = 0; i < f->n; i++) {
		const struct nta_piece *p = &f->p[i];

		if (p->copy && skb_copy_bits(f->skb, mac_off + p->at, page_address(p->c->page),
					     p->len))
			return false;
	}
	return true;
}

/* Reader slot @u's counters for the device whose pool is @dp. */
static struct nta_dev_stats *nta_dev_of(struct nta_devpool *dp, u32 u)
{
	return &dp->users[u]->devs[dp->watch[u]].stats;
}

/*
 * The frame's records for each reader in @readers, and what holds its data
 * while any of them has it: a data reference for a lone linear buffer NTA
 * owns, else @clone, one user per chunk published in place (taken here: the
 * caller's clone is used up if any piece is in place). One hold however
 * many readers: it is dropped when the last of them lets go of the chunk.
 */
static void nta_publish_locked(struct nta_devpool *dp, struct nta_frame *f, u16 readers,
			       bool owned, struct sk_buff **clone)
{
	unsigned long set = readers;
	struct sk_buff *skb = f->skb;
	bool protect = !READ_ONCE(nta_fault_no_protect);
	u32 i, u;

	if (protect && f->in_place && owned && f->n == 1) {
		/* What __skb_clone() does to its source: the stack's writers now copy. */
		atomic_inc(&skb_shinfo(skb)->dataref);
		skb->cloned = 1;
		f->p[0].c->data = skb_shinfo(skb);
	} else if (protect && f->in_place) {
		if (f->in_place > 1)
			refcount_add(f->in_place - 1, &(*clone)->users);
		for (i = 0; i < f->n; i++)
			if (!f->p[i].copy)
				f->p[i].c->hold = *clone;
		*clone = NULL;
	}
	for (i = 0; i < f->n; i++) {
		struct nta_piece *p = &f->p[i];

		if (p->copy) {
			nta_chunk_filled(p->c);
			p->at = p->c->index * PAGE_SIZE;
		}
		nta_chunk_share_locked(&dp->pool, p->c, readers, p->at);
	}
	for_each_set_bit(u, &set, NTA_POOL_READERS) {
		struct nta_reader *r = dp->users[u];

		for (i = 0; i < f->n; i++) {
			const struct nta_piece *p = &f->p[i];
			u16 flags = i + 1 < f->n ? NTA_RECORD_CONTD : 0;

			flags |= f->out ? NTA_RECORD_OUTGOING : 0;
			flags |= p->copy ? NTA_RECORD_COPY : 0;
			nta_record_locked(r, dp->watch[u], p->c, skb, f->when, p->at, p->len,
					  f->wire, flags);
		}
		nta_ring_publish_locked(r, f->when->mono);
	}
}

/*
 * The reader's filter on the frame from its MAC header, as AF_PACKET runs a
 * SOCK_RAW socket's (packet_rcv(), run_filter()): the data pushed back to
 * the MAC header for the program, and put back after it. Every handler of
 * this skb runs one after the other in this context, so none sees the
 * moved data. The bytes to publish: @len without a filter, 0 for none.
 */
static u32 nta_filtered(struct nta_reader *r, struct sk_buff *skb, u32 len)
{
	struct bpf_prog *prog = rcu_dereference(r->filter);
	u32 mac_len = skb->data - skb_mac_header(skb), res;

	if (!prog)
		return len;
	__skb_push(skb, mac_len);
	res = bpf_prog_run(prog, skb);
	__skb_pull(skb, mac_len);
	return min(res, len);
}

/*
 * Which of @want may take a frame of @n records, each on its own limits
 * (those that may not are counted); @room_only: they were admitted once,
 * only room is checked again.
 */
static u16 nta_admit_set_locked(struct nta_devpool *dp, u16 want, u32 n, bool room_only,
				struct sk_buff_head *holds)
{
	unsigned long bits = want;
	u16 admitted = 0;
	u32 u;

	for_each_set_bit(u, &bits, NTA_POOL_READERS) {
		struct nta_reader *r = dp->users[u];
		enum nta_admit why = room_only ? nta_room_locked(r, n, holds) :
						 nta_admit_locked(r, n, holds);

		if (why == NTA_ADMIT)
			admitted |= BIT(u);
		else
			nta_not_admitted(r, nta_dev_of(dp, u), why);
	}
	return admitted;
}

/* A kind of frame the readers in @set did not get, and why, counted for each. */
enum nta_miss {
	NTA_MISS_UNSERVED,
	NTA_MISS_SKIPPED,
};

static void nta_missed_locked(struct nta_devpool *dp, u16 set, enum nta_miss why)
{
	unsigned long bits = set;
	u32 u;

	for_each_set_bit(u, &bits, NTA_POOL_READERS) {
		struct nta_reader *r = dp->users[u];
		struct nta_dev_stats *w = nta_dev_of(dp, u);

		if (why == NTA_MISS_UNSERVED) {
			w->unserved++;
			r->gone.unserved++;
		} else {
			w->skipped++;
			r->gone.skipped++;
		}
	}
}

/* What a tap decided for each reader before taking the lock. */
struct nta_wants {
	u16 seen;		/* readers whose direction takes the frame: counted */
	u16 filtered;		/* ... of which their filter refused it */
	u16 want;		/* readers to publish @len bytes of it to */
	u32 len;
};

/*
 * The whole of capturing one frame for a set of readers: count, plan,
 * admit each, copy what must be copied (the lock dropped meanwhile, and
 * each one's room checked again after), publish. Each frame lands in
 * exactly one of each reader's device counters. @out: the device sends it
 * (a copy, never its pages); @when: the tap took it.
 */
static void nta_capture(struct nta_devpool *dp, struct sk_buff *skb, bool out,
			const struct nta_stamp *when, const struct nta_wants *ws)
{
	struct nta_pool *pool = &dp->pool;
	struct nta_chunk *head = NULL;
	bool linear = !skb_is_nonlinear(skb), copy_all, owned = false;
	struct sk_buff *clone = NULL;
	struct sk_buff_head holds;
	struct nta_frame f = {
		.skb = skb,
		.mac = skb_mac_header(skb),
		.len = ws->len,
		.wire = skb->len + (skb->data - skb_mac_header(skb)),
		.out = out,
		.when = when,
	};
	unsigned long bits = ws->seen;
	unsigned long flags;
	u16 admitted = 0;
	u32 u;

	/* Whose buffer it is matters only to a frame some reader keeps. */
	if (!out && ws->want)
		head = nta_pool_chunk_of(pool, skb->head);
	/* A sent frame, or the first bytes of one: copied (their pages are not NTA's). */
	copy_all = out || f.len < f.wire ||
		   (!READ_ONCE(nta_fault_trust_writers) && nta_rewritten_in_place(skb));
	if (head && linear)
		owned = nta_owns_layout(skb, head);
	/* Before the lock: an allocation need not be made under it. */
	if (ws->want && !copy_all && !READ_ONCE(nta_fault_no_protect) &&
	    (!linear || (head && !owned))) {
		clone = skb_clone(skb, GFP_ATOMIC);
		copy_all = !clone;	/* nothing to hold the data by: a copy needs none */
	}
	__skb_queue_head_init(&holds);
	spin_lock_irqsave(&nta_lock, flags);
	for_each_set_bit(u, &bits, NTA_POOL_READERS) {
		struct nta_dev_stats *w = nta_dev_of(dp, u);

		if (out)
			w->sent++;
		else
			w->received++;
		if (ws->filtered & BIT(u)) {
			w->filtered++;
			dp->users[u]->gone.filtered++;
		}
	}
	if (!ws->want)
		goto out;
	if (!out && linear && !head) {
		nta_missed_locked(dp, ws->want, NTA_MISS_UNSERVED);
		goto out;
	}
	if (!nta_plan(pool, &f, copy_all)) {
		nta_missed_locked(dp, ws->want, NTA_MISS_SKIPPED);
		goto out;
	}
	/* Admitted before anything is copied: a frame nobody can take costs no copy. */
	admitted = nta_admit_set_locked(dp, ws->want, f.n, false, &holds);
	if (!admitted)
		goto out;
	if (f.copies) {
		if (!nta_take_copies_locked(pool, &f, &holds)) {
			nta_missed_locked(dp, admitted, NTA_MISS_SKIPPED);
			goto out;
		}
		spin_unlock_irqrestore(&nta_lock, flags);
		if (!nta_fill_copies(&f)) {
			spin_lock_irqsave(&nta_lock, flags);
			nta_untake_copies_locked(pool, &f);
			nta_missed_locked(dp, admitted, NTA_MISS_SKIPPED);
			goto out;
		}
		spin_lock_irqsave(&nta_lock, flags);
		/* Others may have published meanwhile: room again, not a second admission. */
		admitted = nta_admit_set_locked(dp, admitted, f.n, true, &holds);
		if (!admitted) {
			nta_untake_copies_locked(pool, &f);
			goto out;
		}
	}
	nta_publish_locked(dp, &f, admitted, owned, &clone);
	bits = admitted;
	for_each_set_bit(u, &bits, NTA_POOL_READERS) {
		struct nta_reader *r = dp->users[u];

		nta_dev_of(dp, u)->published++;
		r->gone.copied += f.copies != 0;
		r->gone.chained += f.in_place && f.n > 1;
	}
out:
	spin_unlock_irqrestore(&nta_lock, flags);
	if (clone)
		__skb_queue_tail(&holds, clone);
	nta_release_holds(&holds);
}

/*
 * A frame the tap's device received or sent, for each of the device's
 * readers that takes it. Multicast the device loops back to itself
 * (PACKET_LOOPBACK) is left out, as packet_rcv() leaves it out: the frame
 * was seen as sent. Each reader's filter runs here, without the lock: the
 * readers that keep the whole frame are served together, one that keeps
 * its first bytes only (a filter's snap length) on its own, as a copy. The
 * readers are those the tap saw attached (an acquire load pairing with
 * the attach's release store); a reader detaching waits for a grace period
 * before it goes, so each stays while this runs.
 */
int nta_tap_rcv(struct sk_buff *skb, struct net_device *dev, struct packet_type *pt,
		struct net_device *orig_dev)
{
	struct nta_attached *a = container_of(pt, struct nta_attached, tap);
	struct nta_devpool *dp = rcu_dereference(a->dp);
	bool out = skb->pkt_type == PACKET_OUTGOING;
	struct nta_wants whole = {};
	struct nta_stamp when = {};
	u32 cut[NTA_POOL_READERS];
	unsigned long tapping;
	u16 cuts = 0;
	u32 u, wire;

	if (!dp || skb->pkt_type == PACKET_LOOPBACK || !skb_mac_header_was_set(skb))
		goto done;
	/* Pairs with the attach's release store: each user's slot is set before its bit. */
	tapping = smp_load_acquire(&dp->tapping);
	wire = skb->len + (skb->data - skb_mac_header(skb));
	for_each_set_bit(u, &tapping, NTA_POOL_READERS) {
		struct nta_reader *r = READ_ONCE(dp->users[u]);
		u32 len;

		if (!(READ_ONCE(r->direction) & (out ? NTA_DIR_OUT : NTA_DIR_IN)))
			continue;
		whole.seen |= BIT(u);
		len = nta_filtered(r, skb, wire);
		if (!len) {
			whole.filtered |= BIT(u);
		} else if (len == wire) {
			whole.want |= BIT(u);
		} else {
			cut[u] = len;
			cuts |= BIT(u);
		}
	}
	if (!whole.seen)
		goto done;
	/*
	 * The clock, once for the frame, before the lock: what a record's
	 * timestamp says and what the wakeup policy ages it by (AF_PACKET
	 * likewise stamps a frame once, whoever reads it). Not read for a
	 * frame nobody keeps.
	 */
	if (whole.want || cuts) {
		when.mono = ktime_get_ns();
		when.real = ktime_to_ns(ktime_mono_to_real(ns_to_ktime(when.mono)));
	}
	whole.len = wire;
	nta_capture(dp, skb, out, &when, &whole);
	tapping = cuts;
	for_each_set_bit(u, &tapping, NTA_POOL_READERS) {
		struct nta_wants one = { .want = BIT(u), .len = cut[u] };

		nta_capture(dp, skb, out, &when, &one);
	}
done:
	consume_skb(skb);
	return NET_RX_SUCCESS;
}

/*
 * Puts @prog (NULL: none) in place of @r's filter. The taps run it under
 * RCU (the receive path's, dev_queue_xmit_nit()'s): the old one is freed
 * once every tap that may run it has returned. Process context.
 */
void nta_filter_replace(struct nta_reader *r, struct bpf_prog *prog)
{
	struct bpf_prog *old;
	unsigned long flags;

	spin_lock_irqsave(&nta_lock, flags);
	old = rcu_replace_pointer(r->filter, prog, lockdep_is_held(&nta_lock));
	spin_unlock_irqrestore(&nta_lock, flags);
	if (!old)
		return;
	synchronize_net();
	bpf_prog_destroy(old);
}
