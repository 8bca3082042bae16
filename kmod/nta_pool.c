// SPDX-License-Identifier: GPL-2.0
/*
 * nta_pool.c - nodes of pages stolen from the page allocator, cut into
 * page-sized chunks for receive buffers.
 *
 * Each node is one high-order allocation split into independently counted
 * order-0 pages, so a chunk's page reference count says whether the kernel
 * still uses it: the pool keeps one reference, an skb built over the chunk
 * drops the other when it is freed (skb_free_frag). Nothing tells the pool
 * when that happens, so busy chunks are swept: on allocation when the free
 * list is empty, on commit, and from a delayed work while any are busy.
 */
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "nta.h"

#define NTA_SWEEP_DELAY	msecs_to_jiffies(20)
#ifdef MAX_PAGE_ORDER
#define NTA_MAX_ORDER	MAX_PAGE_ORDER
#else
#define NTA_MAX_ORDER	(MAX_ORDER - 1)
#endif

static void nta_sweep_work(struct work_struct *work)
{
	bool again;

	spin_lock_bh(&nta.lock);
	nta_pool_sweep_locked();
	again = !list_empty(&nta.busy);
	spin_unlock_bh(&nta.lock);
	if (again)
		schedule_delayed_work(&nta.sweep, NTA_SWEEP_DELAY);
}

void nta_sweep_kick(void)
{
	schedule_delayed_work(&nta.sweep, NTA_SWEEP_DELAY);
}

static int nta_node_init(struct nta_node *node, u32 index, unsigned int order)
{
	struct page *page;
	u32 i;

	node->chunks = kvcalloc(nta.node_pages, sizeof(*node->chunks), GFP_KERNEL);
	if (!node->chunks)
		return -ENOMEM;
	page = alloc_pages(GFP_KERNEL | __GFP_NOWARN | __GFP_ZERO, order);
	if (!page) {
		kvfree(node->chunks);
		node->chunks = NULL;
		return -ENOMEM;
	}
	split_page(page, order);
	node->pfn = page_to_pfn(page);
	for (i = 0; i < nta.node_pages; i++) {
		struct nta_chunk *c = &node->chunks[i];

		c->page = pfn_to_page(node->pfn + i);
		c->node = index;
		c->index = i;
		list_add_tail(&c->link, &nta.free);
	}
	return 0;
}

/* Sort nodes by pfn so that nta_chunk_of() can bisect. */
static void nta_nodes_sort(void)
{
	u32 i, j;

	for (i = 1; i < nta.node_count; i++) {
		for (j = i; j > 0 && nta.nodes[j - 1].pfn > nta.nodes[j].pfn; j--)
			swap(nta.nodes[j - 1], nta.nodes[j]);
	}
	for (i = 0; i < nta.node_count; i++) {
		for (j = 0; j < nta.node_pages; j++)
			nta.nodes[i].chunks[j].node = i;
	}
}

int nta_pool_init(unsigned int node_order, unsigned int node_count)
{
	u32 i;
	int err;

	if (node_order > NTA_MAX_ORDER || node_count == 0 || node_count > 1024)
		return -EINVAL;
	INIT_LIST_HEAD(&nta.free);
	INIT_LIST_HEAD(&nta.busy);
	INIT_DELAYED_WORK(&nta.sweep, nta_sweep_work);
	nta.node_pages = 1U << node_order;
	nta.nodes = kcalloc(node_count, sizeof(*nta.nodes), GFP_KERNEL);
	if (!nta.nodes)
		return -ENOMEM;
	for (i = 0; i < node_count; i++) {
		err = nta_node_init(&nta.nodes[i], i, node_order);
		if (err)
			goto fail;
		nta.node_count = i + 1;
	}
	nta_nodes_sort();
	return 0;
fail:
	nta_pool_exit();
	return err;
}

/*
 * Called with no hook, tap or reader left. Pages the kernel still holds
 * (skbs queued on sockets, a NIC's ring) are handed to it: dropping the
 * pool's reference lets the last user free them to the page allocator.
 */
void nta_pool_exit(void)
{
	u32 i, j;

	cancel_delayed_work_sync(&nta.sweep);
	for (i = 0; i < nta.node_count; i++) {
		for (j = 0; j < nta.node_pages; j++)
			put_page(nta.nodes[i].chunks[j].page);
		kvfree(nta.nodes[i].chunks);
	}
	kfree(nta.nodes);
	nta.nodes = NULL;
	nta.node_count = 0;
}

/* Free one busy chunk whose page the kernel and the readers are done with. */
static void nta_chunk_free_locked(struct nta_chunk *c)
{
	if (nta_fault_leak_every &&
	    ++nta.fault_free_count % nta_fault_leak_every == 0) {
		c->leaked = true;
		nta.stats.fault_leaked++;
		return;
	}
	nta_chunk_put_back(c);
	list_move(&c->link, &nta.free);
	nta.stats.freed++;
	nta.stats.in_use--;
}

void nta_pool_sweep_locked(void)
{
	struct nta_chunk *c, *tmp;

	lockdep_assert_held(&nta.lock);
	list_for_each_entry_safe(c, tmp, &nta.busy, link) {
		if (nta_chunk_reclaimable(c, page_ref_count(c->page)))
			nta_chunk_free_locked(c);
	}
}

/* A chunk a reader committed (or left by closing): free it if the kernel is done. */
void nta_chunk_release(struct nta_chunk *c)
{
	lockdep_assert_held(&nta.lock);
	c->owner = NULL;
	if (nta_chunk_reclaimable(c, page_ref_count(c->page)))
		nta_chunk_free_locked(c);
}

/*
 * A page for a receive buffer of @size bytes for attached device @a, or
 * NULL: the caller then falls back to the kernel's own allocator.
 */
void *nta_chunk_alloc(struct nta_attached *a, unsigned int size)
{
	struct nta_chunk *c = NULL;
	bool kick;

	spin_lock_bh(&nta.lock);
	if (size <= PAGE_SIZE) {
		if (list_empty(&nta.free))
			nta_pool_sweep_locked();
		c = list_first_entry_or_null(&nta.free, struct nta_chunk, link);
		if (!c)
			nta.stats.pool_empty++;
	}
	if (!c) {
		nta.stats.fallback++;
		a->stats.fallback++;
		spin_unlock_bh(&nta.lock);
		return NULL;
	}
	kick = list_empty(&nta.busy);
	list_move_tail(&c->link, &nta.busy);
	nta_chunk_take(c);
	get_page(c->page);
	nta.stats.allocated++;
	nta.stats.in_use++;
	a->stats.allocated++;
	spin_unlock_bh(&nta.lock);
	if (kick)
		nta_sweep_kick();
	return page_address(c->page);
}

/* The chunk holding @addr, or NULL if @addr is not in the pool. */
struct nta_chunk *nta_chunk_of(const void *addr)
{
	unsigned long pfn;
	u32 lo = 0, hi = nta.node_count;

	if (!virt_addr_valid(addr))
		return NULL;
	pfn = page_to_pfn(virt_to_page(addr));
	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;
		struct nta_node *node = &nta.nodes[mid];

		if (pfn < node->pfn)
			hi = mid;
		else if (pfn >= node->pfn + nta.node_pages)
			lo = mid + 1;
		else
			return &node->chunks[pfn - node->pfn];
	}
	return NULL;
}
