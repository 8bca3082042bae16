/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nta_chunk.h - the life of a chunk, and what a commit must name to end it.
 *
 * Pure functions of a chunk's state and of facts the caller supplies (the
 * page's reference count, the pool's geometry): no locks, no pages, no
 * allocation. The module calls them under its pool's lock.
 * kmod/tests/nta_chunk_test.c builds this header with the host compiler and
 * sanitizers and drives a pool through random sequences of receives, copies,
 * frames in several chunks, kernel frees, commits good and bad, and readers
 * closing, before any guest boots; it defines u32, bool and struct
 * list_head itself.
 *
 * A chunk is free, then busy: handed to the kernel as a receive buffer, or
 * taken for a copy and filling (NTA writes a frame into it without its pool's
 * lock: nothing else may touch it meanwhile, reclaim included), under a new
 * generation; then possibly shared (published, once per generation, to the
 * readers of its pool that took the frame: a bit each in readers). It is
 * free again only when the kernel dropped its page references, no reader
 * holds it and it is not being filled.
 */
#ifndef _NTA_CHUNK_H
#define _NTA_CHUNK_H

#ifdef __KERNEL__
#include <linux/build_bug.h>
#include <linux/list.h>
#include <linux/types.h>
#else
#include <assert.h>
#endif

#include "nta_uapi.h"

struct page;
struct sk_buff;
struct skb_shared_info;

/*
 * A chunk is one page of a node. The pool holds one page reference for
 * each chunk; any more means the kernel still uses it.
 */
struct nta_chunk {
	struct list_head link;		/* its pool's free, busy or shared list */
	struct page *page;
	/*
	 * The readers it is shared with, a bit per reader slot of its pool
	 * (struct nta_pool.users): non-zero while shared, a bit cleared by
	 * that reader's commit or close.
	 */
	__u16 readers;
	/*
	 * While shared, what keeps the stack from writing the published bytes
	 * (nta_capture.c), at most one of:
	 *  - data: the shared info of the frame's buffer, which lies in this
	 *    chunk, of which NTA holds one data reference (dataref);
	 *  - hold: a clone of the frame's skb, one user of it per chunk of
	 *    the frame.
	 */
	struct skb_shared_info *data;
	struct sk_buff *hold;
	u32 generation;			/* bumped at every allocation */
	u32 frame_offset;		/* published piece, offset in the node */
	u32 node;
	u32 index;			/* within the node */
	bool busy;			/* taken from the free list */
	bool filling;			/* taken for a copy, being written without the lock */
	bool published;			/* published once in this generation */
	bool leaked;			/* fault injection kept it */
};

/* A bit per reader slot of a pool: the set must hold them all. */
static_assert(NTA_POOL_READERS <= 8 * sizeof(((struct nta_chunk *)0)->readers),
	      "struct nta_chunk.readers has a bit per reader slot");

struct nta_node {
	unsigned long pfn;		/* first page */
	struct nta_chunk *chunks;
};

/* Taken from the free list for a receive buffer: a new generation begins. */
static inline void nta_chunk_take(struct nta_chunk *c)
{
	c->busy = true;
	c->published = false;
	c->generation++;
}

/*
 * Taken for a copy: the caller fills it with the pool's lock dropped, then
 * publishes it (nta_chunk_filled) or puts it back. Until then no reclaim
 * may free it: its page count says nothing, as the kernel never held it.
 */
static inline void nta_chunk_take_for_copy(struct nta_chunk *c)
{
	nta_chunk_take(c);
	c->filling = true;
}

/*
 * Whether a frame received in @c, starting @in_page bytes into the page and
 * @len bytes long, may be published: once per generation, whole.
 */
static inline bool nta_chunk_publishable(const struct nta_chunk *c, u32 in_page, u32 len,
					 u32 page_size)
{
	return c->busy && !c->filling && !c->published && in_page <= page_size &&
	       len <= page_size - in_page;
}

/* The frame in @c was seen: whatever becomes of it, it is not published again. */
static inline void nta_chunk_seen(struct nta_chunk *c)
{
	c->published = true;
}

/* A copy was written into @c: it is published now, once, as a received one is. */
static inline void nta_chunk_filled(struct nta_chunk *c)
{
	c->filling = false;
	c->published = true;
}

/* @c is published to the readers in @readers (slots of its pool), all at @frame_offset. */
static inline void nta_chunk_share(struct nta_chunk *c, __u16 readers, u32 frame_offset)
{
	c->readers = readers;
	c->frame_offset = frame_offset;
}

/* Reader slot @user lets go of @c; whether no reader holds it any more. */
static inline bool nta_chunk_unshare(struct nta_chunk *c, u32 user)
{
	c->readers &= ~(1U << user);
	return !c->readers;
}

/*
 * Whether @c may go back to the free list: the kernel is done with it
 * (@page_refs is down to the pool's own reference), no reader holds it and
 * nobody is filling it.
 */
static inline bool nta_chunk_reclaimable(const struct nta_chunk *c, int page_refs)
{
	return c->busy && !c->filling && !c->readers && !c->leaked && page_refs == 1;
}

static inline void nta_chunk_put_back(struct nta_chunk *c)
{
	c->busy = false;
	c->filling = false;
	c->published = false;
}

/*
 * Whether @cm names a chunk shared with reader slot @user of the pool whose
 * @nodes the caller found for cm->pool (NULL: the reader has no pool
 * there), under its current generation, at the offset its record gave; the
 * chunk in @chunk if so. The verdict is NTA_BAD_COMMIT_MAX for a good
 * commit, else the reason to refuse it, and nothing is changed either way:
 * the caller releases a good one. @cm is the caller's own copy (the reader
 * may rewrite its ring at any time): each field is read once from shared
 * memory into it (nta_reader.c).
 */
static inline enum nta_bad_commit nta_commit_check(const struct nta_node *nodes, u32 node_count,
						   u32 node_pages, u32 page_size, u32 user,
						   const struct nta_commit *cm,
						   struct nta_chunk **chunk)
{
	struct nta_chunk *c;

	if (cm->reserved)
		return NTA_BAD_RESERVED;
	if (!nodes)
		return NTA_BAD_POOL;
	if (cm->node >= node_count)
		return NTA_BAD_NODE;
	if (cm->offset / page_size >= node_pages)
		return NTA_BAD_OFFSET;
	c = &nodes[cm->node].chunks[cm->offset / page_size];
	if (!(c->readers & (1U << user)))
		return NTA_BAD_STATE;
	if (c->generation != cm->generation)
		return NTA_BAD_GENERATION;
	if (c->frame_offset != cm->offset)
		return NTA_BAD_OFFSET;
	*chunk = c;
	return NTA_BAD_COMMIT_MAX;
}

#endif /* _NTA_CHUNK_H */
