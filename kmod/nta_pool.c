// SPDX-License-Identifier: GPL-2.0
/*
 * nta_pool.c - nodes of pages stolen from the page allocator, cut into
 * page-sized chunks for receive buffers.
 *
 * Each node is one high-order allocation split into independently counted
 * order-0 pages, so a chunk's page reference count says whether the kernel
 * still uses it: the pool keeps one reference, an skb built over the chunk
 * holds the other until it is freed (skb_free_frag). Nothing tells the pool
 * when that happens, so chunks come back by reclaim: an allocation that
 * finds the free list empty looks at no more than NTA_RECLAIM_BUDGET busy
 * chunks, oldest first (and rotates those it could not free to the back);
 * a full pass runs in a work item when the pool runs low, and before
 * counters are read. Passes are at least NTA_PASS_INTERVAL_MS apart, what
 * ever the last one freed: a pool kept low (a reader holding most of it)
 * costs each allocation its bounded look and at most 100 passes a second,
 * never a pass per allocation. Chunks a reader holds are on a list of their
 * own, never scanned. No timer runs while the pool is idle.
 *
 * This file knows nothing of readers: a device's pool is given a refill
 * function (nta_reader.c) that takes chunks back from its readers' commit
 * rings when none is free, and a chunk's readers are bits it is given.
 */
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "nta.h"

#ifdef MAX_PAGE_ORDER
#define NTA_MAX_ORDER	MAX_PAGE_ORDER
#else
#define NTA_MAX_ORDER	(MAX_ORDER - 1)
#endif

/* Every pool, its chunks, and every reader's rings: see nta.h for why one lock. */
DEFINE_SPINLOCK(nta_lock);

static void nta_pool_reclaim_work(struct work_struct *work)
{
	nta_pool_reclaim_all(container_of(work, struct nta_pool, reclaim));
}

static int nta_node_init(struct nta_pool *pool, struct nta_node *node, u32 index,
			 unsigned int order, gfp_t gfp)
{
	struct page *page;
	u32 i;

	node->chunks = kvcalloc(pool->node_pages, sizeof(*node->chunks), gfp);
	if (!node->chunks)
		return -ENOMEM;
	/* Zeroed: userspace maps these pages, and must not see what they held. */
	page = alloc_pages(gfp | __GFP_NOWARN | __GFP_ZERO, order);
	if (!page) {
		kvfree(node->chunks);
		node->chunks = NULL;
		return -ENOMEM;
	}
	split_page(page, order);
	node->pfn = page_to_pfn(page);
	for (i = 0; i < pool->node_pages; i++) {
		struct nta_chunk *c = &node->chunks[i];

		c->page = pfn_to_page(node->pfn + i);
		c->node = index;
		c->index = i;
		list_add_tail(&c->link, &pool->free);
	}
	pool->nr_free += pool->node_pages;
	return 0;
}

/* Sort nodes by pfn so that nta_pool_chunk_of() can bisect. */
static void nta_nodes_sort(struct nta_pool *pool)
{
	u32 i, j;

	for (i = 1; i < pool->node_count; i++) {
		for (j = i; j > 0 && pool->nodes[j - 1].pfn > pool->nodes[j].pfn; j--)
			swap(pool->nodes[j - 1], pool->nodes[j]);
	}
	for (i = 0; i < pool->node_count; i++) {
		for (j = 0; j < pool->node_pages; j++)
			pool->nodes[i].chunks[j].node = i;
	}
}

/* Chunks in a pool of @bytes, as nta_pool_init() would make it now (0: none it would make). */
u32 nta_pool_chunks(u64 bytes)
{
	unsigned int order = READ_ONCE(nta_node_order);
	u64 node_size = PAGE_SIZE << order;

	if (order > NTA_MAX_ORDER || !bytes || bytes > 4096 * node_size)
		return 0;
	return DIV_ROUND_UP_ULL(bytes, node_size) << order;
}

/* A pool of @bytes (rounded up to whole nodes of 2^nta_node_order pages). */
int nta_pool_init(struct nta_pool *pool, u64 bytes, gfp_t gfp)
{
	unsigned int order = nta_node_order;
	u64 node_size = PAGE_SIZE << order;
	u32 i, count;
	int err;

	if (order > NTA_MAX_ORDER || !bytes)
		return -EINVAL;
	if (bytes > 4096 * node_size)
		return -EINVAL;
	count = DIV_ROUND_UP_ULL(bytes, node_size);
	INIT_LIST_HEAD(&pool->free);
	INIT_LIST_HEAD(&pool->busy);
	INIT_LIST_HEAD(&pool->shared);
	INIT_WORK(&pool->reclaim, nta_pool_reclaim_work);
	pool->next_pass = jiffies;
	pool->node_pages = 1U << order;
	pool->nodes = kcalloc(count, sizeof(*pool->nodes), gfp);
	if (!pool->nodes)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		err = nta_node_init(pool, &pool->nodes[i], i, order, gfp);
		if (err)
			goto fail;
		pool->node_count = i + 1;
	}
	nta_nodes_sort(pool);
	return 0;
fail:
	nta_pool_exit(pool);
	return err;
}

/* Whether fault injection keeps this free from happening (fault_leak_every). */
static bool nta_fault_leak_locked(struct nta_pool *pool)
{
	unsigned int every = READ_ONCE(nta_fault_leak_every);

	if (!every || ++pool->fault_free_count % every)
		return false;
	pool->stats.fault_leaked++;
	return true;
}

/* Free one busy chunk whose page the kernel and the reader are done with. */
static void nta_chunk_free_locked(struct nta_pool *pool, struct nta_chunk *c)
{
	if (nta_fault_leak_locked(pool)) {
		c->leaked = true;
		list_move_tail(&c->link, &pool->busy);
		return;
	}
	nta_chunk_put_back(c);
	list_move(&c->link, &pool->free);
	pool->nr_free++;
	pool->stats.freed++;
	pool->stats.in_use--;
}

/*
 * Called once nothing can reach the pool any more (no hook serves from it,
 * no tap publishes to it, no reader maps it or holds a chunk of it: a
 * closing reader releases what it holds first). Pages the kernel still holds
 * (skbs queued on sockets, a NIC's ring) are handed to it: dropping the
 * pool's reference lets the last user free them to the page allocator. A
 * busy chunk the kernel does not hold and that cannot be freed was leaked:
 * it stays counted in use, so that a leak outlives its pool.
 *
 * The stack may let go of a page at any moment, so each chunk is judged on
 * one look at its page count: free if only the pool holds it, else handed
 * over (if the stack lets go after that look, the put_page() below is the
 * last and frees it). A reclaim pass followed by a second look could see
 * the two differ and count as leaked a chunk the stack let go in between.
 * Chunks are only counted here, never moved between lists: the lists link
 * chunks of every node, and no node's array is freed before all are judged.
 */
void nta_pool_exit(struct nta_pool *pool)
{
	unsigned long flags;
	u32 i, j;

	cancel_work_sync(&pool->reclaim);
	WARN_ON_ONCE(!list_empty(&pool->shared));
	spin_lock_irqsave(&nta_lock, flags);
	for (i = 0; i < pool->node_count; i++) {
		for (j = 0; j < pool->node_pages; j++) {
			struct nta_chunk *c = &pool->nodes[i].chunks[j];
			int refs = page_ref_count(c->page);

			if (nta_chunk_reclaimable(c, refs) && !nta_fault_leak_locked(pool)) {
				pool->stats.freed++;
				pool->stats.in_use--;
			} else if (c->busy && refs > 1) {
				pool->stats.handed_over++;
				pool->stats.in_use--;
			}
			put_page(c->page);
		}
	}
	spin_unlock_irqrestore(&nta_lock, flags);
	for (i = 0; i < pool->node_count; i++)
		kvfree(pool->nodes[i].chunks);
	kfree(pool->nodes);
	pool->nodes = NULL;
	pool->node_count = 0;
}

/*
 * Looks at up to @budget busy chunks, oldest first, each at most once; those
 * still used go to the back. How many it freed; *@scanned (if given) grows
 * by how many it looked at.
 */
static u32 nta_pool_reclaim_locked(struct nta_pool *pool, u32 budget, u64 *scanned)
{
	u32 busy = pool->node_count * pool->node_pages - pool->nr_free - pool->nr_shared;
	struct nta_chunk *c;
	u32 freed = 0;

	lockdep_assert_held(&nta_lock);
	/* A short list rotates back to its head: look at each chunk once. */
	for (budget = min(budget, busy); budget; budget--) {
		c = list_first_entry_or_null(&pool->busy, struct nta_chunk, link);
		if (!c)
			break;
		if (scanned)
			(*scanned)++;
		if (nta_chunk_reclaimable(c, page_ref_count(c->page))) {
			nta_chunk_free_locked(pool, c);
			freed++;
		} else {
			list_move_tail(&c->link, &pool->busy);
		}
	}
	return freed;
}

/* Every busy chunk looked at once, the lock dropped every NTA_RECLAIM_BUDGET. */
void nta_pool_reclaim_all(struct nta_pool *pool)
{
	unsigned long flags;
	u32 left;

	spin_lock_irqsave(&nta_lock, flags);
	pool->stats.reclaim_passes++;
	left = pool->node_count * pool->node_pages - pool->nr_free - pool->nr_shared;
	while (left) {
		u32 step = min_t(u32, left, NTA_RECLAIM_BUDGET);

		nta_pool_reclaim_locked(pool, step, NULL);
		left -= step;
		spin_unlock_irqrestore(&nta_lock, flags);
		cond_resched();
		spin_lock_irqsave(&nta_lock, flags);
	}
	/*
	 * Whatever this pass freed, the next waits: a pool kept low by
	 * sockets or a reader would otherwise queue a pass per allocation.
	 * Allocations still reclaim their bounded share meanwhile.
	 */
	pool->next_pass = jiffies + msecs_to_jiffies(NTA_PASS_INTERVAL_MS);
	spin_unlock_irqrestore(&nta_lock, flags);
}

/* A full pass, unless the last one was a moment ago. */
static void nta_pool_kick_locked(struct nta_pool *pool)
{
	if (time_after_eq(jiffies, pool->next_pass))
		queue_work(system_unbound_wq, &pool->reclaim);
}

/* The first free chunk, taken off the free list; NULL if none even after reclaim and refill. */
static struct nta_chunk *nta_pool_first_free_locked(struct nta_pool *pool,
						    struct sk_buff_head *holds)
{
	u32 size = pool->node_count * pool->node_pages;
	struct nta_chunk *c;

	lockdep_assert_held(&nta_lock);
	if (list_empty(&pool->free))
		nta_pool_reclaim_locked(pool, NTA_RECLAIM_BUDGET, &pool->stats.reclaim_scanned);
	if (list_empty(&pool->free) && pool->refill)
		pool->refill(pool, holds);
	c = list_first_entry_or_null(&pool->free, struct nta_chunk, link);
	if (!c) {
		pool->stats.pool_empty++;
		nta_pool_kick_locked(pool);
		return NULL;
	}
	list_move_tail(&c->link, &pool->busy);
	pool->nr_free--;
	if (pool->nr_free < size / 8)
		nta_pool_kick_locked(pool);
	pool->stats.allocated++;
	pool->stats.in_use++;
	return c;
}

/*
 * A free chunk for a receive buffer, taken under a new generation; NULL if
 * none, even after a bounded reclaim and, for a reader's pool, after taking
 * commits from its commit ring (@holds gets the clones those commits
 * release, to be freed once the lock is dropped).
 */
struct nta_chunk *nta_pool_take_locked(struct nta_pool *pool, struct sk_buff_head *holds)
{
	struct nta_chunk *c = nta_pool_first_free_locked(pool, holds);

	if (c)
		nta_chunk_take(c);
	return c;
}

/*
 * A free chunk for a copy (nta_capture.c), as nta_pool_take_locked(): the
 * caller fills it without the lock, so it is marked filling, which no
 * reclaim frees, until it is published (nta_chunk_share_locked) or put back
 * (nta_pool_untake_locked). Its page count cannot say it is in use: the
 * kernel never held it.
 */
struct nta_chunk *nta_pool_take_for_copy_locked(struct nta_pool *pool,
						struct sk_buff_head *holds)
{
	struct nta_chunk *c = nta_pool_first_free_locked(pool, holds);

	if (c)
		nta_chunk_take_for_copy(c);
	return c;
}

/* A chunk taken for a copy that was not published: straight back to the free list. */
void nta_pool_untake_locked(struct nta_pool *pool, struct nta_chunk *c)
{
	lockdep_assert_held(&nta_lock);
	WARN_ON_ONCE(!c->filling || c->readers);
	c->filling = false;
	nta_chunk_free_locked(pool, c);
}

/*
 * @c is published to reader slots @readers: off the busy list, which
 * reclaim scans, until the last of them commits it.
 */
void nta_chunk_share_locked(struct nta_pool *pool, struct nta_chunk *c, u16 readers,
			    u32 frame_offset)
{
	lockdep_assert_held(&nta_lock);
	c->filling = false;
	nta_chunk_share(c, readers, frame_offset);
	list_move_tail(&c->link, &pool->shared);
	pool->nr_shared++;
}

/* The chunk of @pool holding @addr, or NULL. The nodes never change: no lock needed. */
struct nta_chunk *nta_pool_chunk_of(const struct nta_pool *pool, const void *addr)
{
	if (!virt_addr_valid(addr))
		return NULL;
	return nta_pool_chunk_of_page(pool, virt_to_page(addr));
}

/* The chunk of @pool that is @page, or NULL. */
struct nta_chunk *nta_pool_chunk_of_page(const struct nta_pool *pool, const struct page *page)
{
	unsigned long pfn = page_to_pfn(page);
	u32 lo = 0, hi = pool->node_count;

	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;
		const struct nta_node *node = &pool->nodes[mid];

		if (pfn < node->pfn)
			hi = mid;
		else if (pfn >= node->pfn + pool->node_pages)
			lo = mid + 1;
		else
			return &node->chunks[pfn - node->pfn];
	}
	return NULL;
}

/*
 * Drops the data reference NTA took on a frame's buffer (nta_capture.c).
 * If it was the last one, every skb over the buffer is gone and the data is
 * NTA's to free, as skb_release_data() would free it: for the only layout
 * NTA takes such a reference on (one linear head_frag buffer in one chunk,
 * no frags, no frag list, no zerocopy, no page pool), that is
 * skb_free_head() -> skb_free_frag() of the head, i.e. the buffer's own page
 * reference. The stack never adds frags to a buffer whose dataref says it
 * is shared (skb_try_coalesce, skb_gro_receive and __pskb_pull_tail check
 * skb_cloned() or skb_head_is_locked() first); should one appear anyway it
 * is warned of and leaked, never guessed at.
 */
static void nta_chunk_put_data(struct nta_chunk *c)
{
	struct skb_shared_info *shinfo = c->data;

	c->data = NULL;
	if (!atomic_dec_and_test(&shinfo->dataref))
		return;
	if (WARN_ON_ONCE(shinfo->nr_frags || shinfo->frag_list))
		return;
	skb_free_frag(page_address(c->page));
}

/*
 * A chunk reader slot @user committed (or left by closing). Once the last
 * of its readers let go it is no longer shared, and its hold on the
 * frame's data is dropped: a data reference at once, a clone's last user
 * onto @holds, to be freed once the lock is dropped (another chunk of the
 * same frame may still hold the clone). A chunk the stack is done with is
 * freed at once, else it waits on the busy list, first in line for reclaim.
 */
void nta_chunk_release_locked(struct nta_pool *pool, struct nta_chunk *c, u32 user,
			      struct sk_buff_head *holds)
{
	lockdep_assert_held(&nta_lock);
	if (!nta_chunk_unshare(c, user))
		return;
	pool->nr_shared--;
	if (c->data)
		nta_chunk_put_data(c);
	if (c->hold) {
		/* The frame's other chunks hold it under this same lock. */
		if (!refcount_dec_not_one(&c->hold->users))
			__skb_queue_tail(holds, c->hold);
		c->hold = NULL;
	}
	if (nta_chunk_reclaimable(c, page_ref_count(c->page)))
		nta_chunk_free_locked(pool, c);
	else
		list_move(&c->link, &pool->busy);
}

/*
 * Frees the clones released under a pool lock. Any context: with interrupts
 * off the skbs are queued for the softirq to free (dev_consume_skb_any), as
 * the network stack must not free skbs from hard interrupt context.
 */
void nta_release_holds(struct sk_buff_head *holds)
{
	struct sk_buff *skb;

	while ((skb = __skb_dequeue(holds)))
		dev_consume_skb_any(skb);
}

/* Adds @pool's counters to @s (module-wide figures are sums). */
void nta_pool_add_stats(struct nta_pool *pool, struct nta_stats *s)
{
	unsigned long flags;

	spin_lock_irqsave(&nta_lock, flags);
	s->allocated += pool->stats.allocated;
	s->freed += pool->stats.freed;
	s->in_use += pool->stats.in_use;
	s->handed_over += pool->stats.handed_over;
	s->fallback += pool->stats.fallback;
	s->pool_empty += pool->stats.pool_empty;
	s->reclaim_scanned += pool->stats.reclaim_scanned;
	s->reclaim_passes += pool->stats.reclaim_passes;
	s->fault_leaked += pool->stats.fault_leaked;
	spin_unlock_irqrestore(&nta_lock, flags);
}
