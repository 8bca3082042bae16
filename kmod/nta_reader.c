// SPDX-License-Identifier: GPL-2.0
/*
 * nta_reader.c - a reader's rings: the records it is given, the commits it
 * gives back, when it is woken, and the limits on what it may hold.
 *
 * Everything here runs under nta_lock (interrupts off), from the taps
 * (nta_capture.c), the allocation path (nta_dev.c) and the reader's own
 * system calls. The rings are memory the reader writes at any
 * time: every index and entry read from them is read once (READ_ONCE, or
 * an acquire load that pairs with the reader's release store) into a local
 * and checked there, never read again.
 */
#include <linux/delay.h>
#include <linux/filter.h>
#include <linux/if_vlan.h>
#include <linux/poll.h>
#include <linux/sizes.h>
#include <linux/vmalloc.h>

#include "nta.h"

static u64 *nta_index(struct nta_reader *r, unsigned int offset)
{
	return r->ring + offset;
}

/* Records the reader has not consumed; none if its consumer index makes no sense. */
static u32 nta_pending(struct nta_reader *r)
{
	u64 consumer = READ_ONCE(*nta_index(r, NTA_RING_CONSUMER));
	u64 pending = r->seq - consumer;

	return pending > r->ring_entries ? 0 : pending;
}

/* Free record slots; a consumer index that makes no sense means none. */
static u32 nta_ring_room(struct nta_reader *r)
{
	u64 consumer = READ_ONCE(*nta_index(r, NTA_RING_CONSUMER));
	u64 used = r->seq - consumer;

	return used > r->ring_entries ? 0 : r->ring_entries - used;
}

void nta_count_refusal(struct nta_reader *r, enum nta_bad_commit why)
{
	r->gone.bad_commits[why]++;
}

/*
 * One commit (the caller's own copy), checked before anything changes;
 * refused ones counted. Its pool is one the reader bound, or none.
 */
static bool nta_commit_one_locked(struct nta_reader *r, const struct nta_commit *cm,
				  struct sk_buff_head *holds)
{
	const struct nta_watch *w = cm->pool < NTA_MAX_POOLS ? &r->devs[cm->pool] : NULL;
	struct nta_pool *pool = w && w->dp ? &w->dp->pool : NULL;
	struct nta_chunk *c = NULL;
	enum nta_bad_commit why;

	why = nta_commit_check(pool ? pool->nodes : NULL, pool ? pool->node_count : 0,
			       pool ? pool->node_pages : 0, PAGE_SIZE, w ? w->user : 0, cm, &c);
	if (why != NTA_BAD_COMMIT_MAX) {
		nta_count_refusal(r, why);
		return false;
	}
	r->outstanding--;
	r->stats.committed++;
	nta_chunk_release_locked(pool, c, w->user, holds);
	return true;
}

static void nta_set_need_wakeup(struct nta_reader *r, bool on)
{
	u32 *flags = r->ring + NTA_COMMIT_FLAGS;

	if (r->need_wakeup == on)
		return;
	r->need_wakeup = on;
	r->stats.need_wakeup += on;
	WRITE_ONCE(*flags, on ? NTA_COMMIT_NEED_WAKEUP : 0);
}

/*
 * Takes up to @budget commits the reader put in its commit ring. Each entry
 * is read field by field, once, into a local and checked there: the reader
 * may rewrite the ring at any time, and a plain copy would let the compiler
 * read a field twice (the bounds check and the index from two reads). An
 * out-of-range producer index is refused once per value it takes, not once
 * per look: the receive path looks on every frame while the reader is at
 * its limit.
 */
void nta_reader_drain_locked(struct nta_reader *r, struct sk_buff_head *holds, u32 budget)
{
	/* Pairs with the reader's release store of the producer after its entries. */
	u64 producer = smp_load_acquire(nta_index(r, NTA_COMMIT_PRODUCER));
	u64 avail = producer - r->commit_cons;
	u32 mask = r->commit_entries - 1;

	lockdep_assert_held(&nta_lock);
	if (!avail)
		return;
	if (avail > r->commit_entries) {
		if (producer != r->bad_producer)
			nta_count_refusal(r, NTA_BAD_RING);
		r->bad_producer = producer;
		return;
	}
	for (; r->commit_cons != producer && budget; r->commit_cons++, budget--) {
		const struct nta_commit *slot = &r->commits[r->commit_cons & mask];
		struct nta_commit cm = {
			.node = READ_ONCE(slot->node),
			.offset = READ_ONCE(slot->offset),
			.generation = READ_ONCE(slot->generation),
			.pool = READ_ONCE(slot->pool),
			.reserved = READ_ONCE(slot->reserved),
		};

		r->stats.ring_commits += nta_commit_one_locked(r, &cm, holds);
	}
	/* The slots are the reader's again once every entry was read. */
	smp_store_release(nta_index(r, NTA_COMMIT_CONSUMER), r->commit_cons);
	if (r->outstanding < r->max_shared)
		nta_set_need_wakeup(r, false);
}

/*
 * write()'s batch (already copied from userspace): in order, the first
 * refused one ends it (see struct nta_commit). Whether @cm was accepted.
 */
bool nta_commit_batch_locked(struct nta_reader *r, const struct nta_commit *cm,
			     struct sk_buff_head *holds)
{
	bool ok = nta_commit_one_locked(r, cm, holds);

	if (r->outstanding < r->max_shared)
		nta_set_need_wakeup(r, false);
	return ok;
}

/*
 * A device's pool ran dry: its readers' commit rings may have chunks for
 * it (a bounded number each: this is the receive path). Readers that
 * detached are drained too: they may still hold its chunks.
 */
void nta_devpool_refill(struct nta_pool *pool, struct sk_buff_head *holds)
{
	struct nta_devpool *dp = container_of(pool, struct nta_devpool, pool);
	u32 u;

	for (u = 0; u < NTA_POOL_READERS; u++)
		if (dp->users[u])
			nta_reader_drain_locked(dp->users[u], holds, NTA_DRAIN_BUDGET);
}

/*
 * Whether the reader has room for @n more records: under max_shared (at it,
 * commits are taken first, a bounded number: this runs in the receive
 * path) and in its record ring.
 */
enum nta_admit nta_room_locked(struct nta_reader *r, u32 n, struct sk_buff_head *holds)
{
	if (r->outstanding + n > r->max_shared) {
		nta_reader_drain_locked(r, holds, NTA_DRAIN_BUDGET);
		if (r->outstanding + n > r->max_shared) {
			nta_set_need_wakeup(r, true);
			return NTA_NOT_SHARED;
		}
	}
	return nta_ring_room(r) < n ? NTA_RING_FULL : NTA_ADMIT;
}

/* Whether a frame of @n records may be published: room, and no fault injected. */
enum nta_admit nta_admit_locked(struct nta_reader *r, u32 n, struct sk_buff_head *holds)
{
	unsigned int every = READ_ONCE(nta_fault_drop_record_every);
	enum nta_admit why = nta_room_locked(r, n, holds);

	if (why == NTA_ADMIT && every && ++r->fault_publish_count % every == 0)
		return NTA_FAULT_DROP;
	return why;
}

/* Counts a frame the reader does not get, for @why. */
void nta_not_admitted(struct nta_reader *r, struct nta_dev_stats *w, enum nta_admit why)
{
	switch (why) {
	case NTA_NOT_SHARED:
		w->not_shared++;
		r->gone.not_shared++;
		break;
	case NTA_RING_FULL:
		w->ring_full++;
		r->gone.ring_full++;
		break;
	default:
		w->fault_dropped++;
		r->gone.fault_dropped++;
		break;
	}
}

/* How far the oldest pending record is from being due, in ns (0: due now). */
static u64 nta_due_in(struct nta_reader *r, u32 pending, u64 now)
{
	u64 consumer = r->seq - pending;
	u64 oldest = r->stamps[consumer & (r->ring_entries - 1)];
	u64 wait = (u64)r->wakeup_usecs * NSEC_PER_USEC;

	/*
	 * A tap reads the clock before it takes the lock, so a frame stamped
	 * on one CPU may be published after a later-stamped one from another:
	 * its "now" may be a little older than the oldest record.
	 */
	now = max(now, oldest);
	if (!wait || pending >= r->wakeup_frames || now - oldest >= wait)
		return 0;
	return oldest + wait - now;
}

/*
 * Wakes a reader sleeping in poll() once its records are due (struct
 * nta_wakeup): at most once until it polls again, never for an empty ring,
 * never when nobody sleeps. Returns how long until pending records are
 * due, for the timer (0: none pending, or woken now, or nobody to wake).
 */
static u64 nta_wake_locked(struct nta_reader *r, u64 now)
{
	u32 pending = nta_pending(r);
	u64 due;

	if (r->woken || !pending || !wq_has_sleeper(&r->wait))
		return 0;
	due = nta_due_in(r, pending, now);
	if (due)
		return due;
	r->woken = true;
	r->stats.wakeups++;
	r->gone.wakeups++;
	wake_up_interruptible(&r->wait);
	return 0;
}

/*
 * Arms the wakeup timer to fire in @due ns, unless it is already queued.
 * The decision is taken under the pool lock, by every path alike (the
 * taps, poll(), the timer's own callback), so that a callback about to
 * return and a poll() that found records not yet due cannot both leave it
 * to the other: hrtimer_active() would be true for a callback still
 * returning, and a record would wait for the next frame. Starting a timer
 * from its own callback is allowed: __run_hrtimer() leaves a timer the
 * callback enqueued alone.
 */
static void nta_arm_locked(struct nta_reader *r, u64 due)
{
	if (due && !hrtimer_is_queued(&r->timer))
		hrtimer_start(&r->timer, ns_to_ktime(due), HRTIMER_MODE_REL_SOFT);
}

static enum hrtimer_restart nta_wakeup_timer(struct hrtimer *timer)
{
	struct nta_reader *r = container_of(timer, struct nta_reader, timer);
	unsigned int stall = min(READ_ONCE(nta_fault_timer_stall_us), 100000U);
	unsigned long flags;

	spin_lock_irqsave(&nta_lock, flags);
	nta_arm_locked(r, nta_wake_locked(r, ktime_get_ns()));
	spin_unlock_irqrestore(&nta_lock, flags);
	/*
	 * Test only (fault_timer_stall_us): widens the window in which the
	 * callback has decided and not yet returned, so that a scenario can
	 * show no decision taken elsewhere meanwhile is lost.
	 */
	while (stall) {
		u32 step = min(stall, 1000U);

		udelay(step);
		stall -= step;
	}
	return HRTIMER_NORESTART;
}

/*
 * One record, for @len bytes at @offset in the node of @c, in the reader's
 * pool @pool, a piece of a frame of @frame_len bytes taken at @when; the
 * chunk was shared with the reader (nta_chunk_share_locked()). Not visible
 * to the reader until nta_ring_publish_locked().
 */
void nta_record_locked(struct nta_reader *r, u32 pool, const struct nta_chunk *c,
		       const struct sk_buff *skb, const struct nta_stamp *when, u32 offset,
		       u32 len, u32 frame_len, u16 flags)
{
	u32 slot = r->seq & (r->ring_entries - 1);
	struct nta_record *rec = &r->records[slot];

	*rec = (struct nta_record) {
		.node = c->node,
		.offset = offset,
		.len = len,
		.generation = c->generation,
		.seq = r->seq,
		.tstamp_ns = when->real,
		.ifindex = skb->dev->ifindex,
		.protocol = (__force u16)skb->protocol,
		.flags = flags,
		.frame_len = frame_len,
		.pool = pool,
	};
	if (skb_vlan_tag_present(skb)) {
		rec->flags |= NTA_RECORD_VLAN;
		rec->vlan_tci = skb_vlan_tag_get(skb);
		rec->vlan_proto = (__force u16)skb->vlan_proto;
	}
	r->stamps[slot] = when->mono;
	r->outstanding++;
	r->seq++;
	r->stats.records++;
	r->gone.published++;
}

/*
 * Makes the records written so far visible (a frame's pieces all at once),
 * wakes if due by the clock read at @now (the frame's stamp).
 */
void nta_ring_publish_locked(struct nta_reader *r, u64 now)
{
	/* The records are complete before userspace can see the new producer. */
	smp_store_release(nta_index(r, NTA_RING_PRODUCER), r->seq);
	nta_arm_locked(r, nta_wake_locked(r, now));
}

/*
 * poll(): commits taken, then readable once records are due (the timer
 * wakes the caller when they will be, if it sleeps); hung up once every
 * device it attached is gone.
 */
__poll_t nta_reader_poll_locked(struct nta_reader *r, struct sk_buff_head *holds)
{
	__poll_t mask = r->hup ? EPOLLHUP : 0;
	u32 pending;
	u64 due;

	r->woken = false;
	nta_reader_drain_locked(r, holds, r->commit_entries);
	pending = nta_pending(r);
	if (!pending)
		return mask;
	due = nta_due_in(r, pending, ktime_get_ns());
	nta_arm_locked(r, due);
	return due ? mask : mask | EPOLLIN | EPOLLRDNORM;
}

/* Every device the reader had attached is gone: poll() says so (EPOLLHUP). */
void nta_reader_hangup_locked(struct nta_reader *r)
{
	r->hup = true;
	wake_up_interruptible(&r->wait);
}

/*
 * Every chunk the reader still holds, released, and its slot in each pool
 * it bound given up: it is closing, and no tap publishes to it any more.
 */
void nta_reader_unshare_all_locked(struct nta_reader *r, struct sk_buff_head *holds)
{
	struct nta_chunk *c, *tmp;
	u32 p;

	for (p = 0; p < NTA_MAX_POOLS; p++) {
		struct nta_devpool *dp = r->devs[p].dp;
		u32 user = r->devs[p].user;

		if (!dp)
			continue;
		list_for_each_entry_safe(c, tmp, &dp->pool.shared, link) {
			if (!(c->readers & BIT(user)))
				continue;
			r->gone.returned_on_close++;
			r->outstanding--;
			nta_chunk_release_locked(&dp->pool, c, user, holds);
		}
		dp->users[user] = NULL;
	}
}

/*
 * Pool @p of @r is @dp, where it is reader slot @user, for @dev: its
 * counters start, and its place in the meta page is written before any
 * record can name it (the record ring's release store orders them), never
 * to change while the reader is open (a mapping of it may live).
 */
void nta_reader_bind_locked(struct nta_reader *r, u32 p, struct nta_devpool *dp, u32 user,
			    const struct net_device *dev)
{
	const struct nta_pool *pool = &dp->pool;

	r->devs[p] = (struct nta_watch) {
		.stats.ifindex = dev->ifindex,
		.net = dev_net(dev),
		.dp = dp,
		.user = user,
	};
	r->meta->pools[p] = (struct nta_pool_info) {
		.mmap_offset = NTA_MMAP_NODES_OFFSET + p * NTA_MMAP_POOL_STRIDE,
		.mmap_size = (u64)pool->node_count * pool->node_pages * PAGE_SIZE,
		.node_count = pool->node_count,
		.node_size = pool->node_pages * PAGE_SIZE,
		.ifindex = dev->ifindex,
	};
	dp->users[user] = r;
	dp->watch[user] = p;
}

static int nta_meta_init(struct nta_reader *r)
{
	size_t records = array_size(r->ring_entries, sizeof(struct nta_record));
	size_t commits = array_size(r->commit_entries, sizeof(struct nta_commit));
	struct nta_meta *meta = (void *)get_zeroed_page(GFP_KERNEL_ACCOUNT);

	if (!meta)
		return -ENOMEM;
	r->ring_size = PAGE_SIZE + PAGE_ALIGN(records) + PAGE_ALIGN(commits);
	*meta = (struct nta_meta) {
		.magic = NTA_MAGIC,
		.abi_version = NTA_ABI_VERSION,
		.meta_size = sizeof(*meta),
		.record_size = sizeof(struct nta_record),
		.commit_size = sizeof(struct nta_commit),
		.page_size = PAGE_SIZE,
		.max_pools = NTA_MAX_POOLS,
		.pool_info_size = sizeof(struct nta_pool_info),
		.chunk_size = PAGE_SIZE,
		.ring_entries = r->ring_entries,
		.commit_entries = r->commit_entries,
		.max_shared = r->max_shared,
		.max_commit_batch = NTA_MAX_COMMIT_BATCH,
		.ring_mmap_offset = NTA_MMAP_RING_OFFSET,
		.ring_mmap_size = r->ring_size,
		.ring_producer_offset = NTA_RING_PRODUCER,
		.ring_consumer_offset = NTA_RING_CONSUMER,
		.ring_records_offset = PAGE_SIZE,
		.commit_producer_offset = NTA_COMMIT_PRODUCER,
		.commit_consumer_offset = NTA_COMMIT_CONSUMER,
		.commit_flags_offset = NTA_COMMIT_FLAGS,
		.commit_entries_offset = PAGE_SIZE + PAGE_ALIGN(records),
	};
	r->meta = meta;
	return 0;
}

/*
 * A new reader's rings and wakeup state, from the module's parameters. Its
 * limit is half a pool of the size pool_kb gives now: a reader stalled at
 * it leaves a device's other readers the other half.
 */
int nta_reader_init(struct nta_reader *r)
{
	u32 entries = READ_ONCE(nta_ring_entries);
	u32 chunks = nta_pool_chunks((u64)READ_ONCE(nta_pool_kb) * SZ_1K);
	int err;

	if (!chunks)
		return -EINVAL;
	r->ring_entries = entries;
	r->commit_entries = entries;
	r->max_shared = min_t(u32, READ_ONCE(nta_max_shared), chunks / 2);
	r->wakeup_frames = clamp_t(u32, READ_ONCE(nta_wakeup_frames), 1, entries);
	r->wakeup_usecs = READ_ONCE(nta_wakeup_usecs);
	r->direction = NTA_DIR_IN;	/* what a reader got before it could choose */
	err = nta_meta_init(r);
	if (err)
		return err;
	err = -ENOMEM;
	r->ring = vmalloc_user(r->ring_size);
	r->stamps = kvcalloc(entries, sizeof(*r->stamps), GFP_KERNEL_ACCOUNT);
	if (!r->ring || !r->stamps)
		goto fail;
	r->records = r->ring + PAGE_SIZE;
	r->commits = r->ring + r->meta->commit_entries_offset;
	init_waitqueue_head(&r->wait);
	hrtimer_init(&r->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	r->timer.function = nta_wakeup_timer;
	return 0;
fail:
	nta_reader_exit(r);
	return err;
}

/* Frees what nta_reader_init() made (its pools are references it drops itself). */
void nta_reader_exit(struct nta_reader *r)
{
	/* No tap runs the filter any more: every detach waited for a grace period. */
	struct bpf_prog *filter = rcu_dereference_protected(r->filter, true);

	if (filter)
		bpf_prog_destroy(filter);
	vfree(r->ring);
	kvfree(r->stamps);
	free_page((unsigned long)r->meta);
}
