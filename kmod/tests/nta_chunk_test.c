// SPDX-License-Identifier: GPL-2.0
/*
 * nta_chunk_test.c - nta_chunk.h on the host: the chunk state machine and
 * commit validation, under sanitizers, before any guest boots.
 *
 *	cc -fsanitize=address,undefined -I kmod nta_chunk_test.c && ./a.out SEED STEPS
 *
 * A model pool with three readers goes through a seeded random run of what
 * the module sees: a chunk taken for a receive buffer, a frame received in
 * it and published to a random subset of the readers (or to none: each one
 * may be at its limit), a GRO-merged frame published in place over several
 * chunks, a chunk taken for a copy and filled without the lock while sweeps
 * run, the kernel freeing its skb, commits good and bad of every kind (each
 * reader commits its own share once; a second commit, another reader's
 * commit, a commit naming a pool the reader has not bound are refused),
 * replays of old records, sweeps, a reader closing and a new one taking a
 * free slot of the pool (any of its NTA_POOL_READERS) under any of its
 * NTA_MAX_POOLS pool indexes, fault injection keeping a chunk.
 *
 * A published frame's data is held (a data reference, or one clone shared
 * by the chunks of a merged frame) until the last reader lets go of the
 * last chunk of the frame: its pages stay referenced until both the stack
 * and that hold let go, whichever is last. The model keeps its own account
 * of which readers hold each chunk and trusts the header only where the
 * module does (nta_chunk_unshare() saying the last reader let go drops the
 * hold). After every event it checks what NTA promises: a chunk is shared
 * with exactly the readers that hold its record; the frame's hold lives
 * while any of them does; a chunk is free only once the kernel and every
 * reader are done with it and nobody is filling it; a refused commit changes
 * nothing and is refused for its own reason; no old record commits a chunk
 * again; the counters balance for each reader (published == committed +
 * returned at close + outstanding) and for the pool.
 * Exit status 1 and the step at the first broken promise.
 */
#include <linux/types.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

typedef __u32 u32;

struct list_head {
	struct list_head *next, *prev;
};

#include "nta_chunk.h"

#define NODES		3
#define PAGES		8
#define PAGE		4096u
#define CHUNKS		(NODES * PAGES)
#define READERS		3		/* readers of the model's pool at once */
#define REPLAYS		64
#define MAX_CHAIN	4		/* chunks of one merged frame, in the model */
#define FILLING		4		/* copies being filled at once */

/* One reader of the pool: an open /dev/nta that attached its device. */
struct reader {
	u32 slot;			/* its slot in the pool: its bit in a chunk's readers */
	__u16 pool;			/* the pool's index among the reader's pools */
	struct nta_commit held[CHUNKS];	/* records published, not committed */
	int nheld;
	struct nta_commit old[REPLAYS];	/* committed or given up at close */
	int nold;
	/* records: published == committed + returned (at close) + nheld */
	unsigned long published, committed, returned;
};

/*
 * A published frame's data: the stack's skb holds it, and NTA's hold (a
 * data reference or a shared clone) until the last reader releases the
 * frame's last chunk. While either lives, each chunk's page keeps its extra
 * reference.
 */
struct frame {
	struct nta_chunk *piece[MAX_CHAIN];
	int pieces;
	int unreleased;			/* chunks some reader holds: NTA's hold lives while > 0 */
	bool stack;			/* the stack's skb still holds the data */
};

static struct nta_chunk chunks[NODES][PAGES];
static struct nta_node nodes[NODES];
static int refs[NODES][PAGES];		/* the pool's reference, +1 while the kernel holds it */
static struct frame *frame_of[NODES][PAGES];	/* a published received chunk's frame */
static __u16 holders[NODES][PAGES];	/* the model's own account: slots holding a record */
static bool copied[NODES][PAGES];	/* the share is a copy: no frame, no hold */
static struct nta_chunk *filling[FILLING];	/* taken for a copy, not yet published */
static struct reader readers[READERS];
static unsigned long copies, chains, multi, twice, others;
static unsigned long allocated, freed, in_use, replays;
/* the pool: chunks shared == let go by their last reader + shared now */
static unsigned long pool_shared, pool_released;
static unsigned long refused[NTA_BAD_COMMIT_MAX];
static unsigned long step;
static __u64 rng_state;

#define CHECK(cond, ...) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "step %lu: %s: ", step, #cond);		\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		exit(1);						\
	}								\
} while (0)

static u32 rnd(u32 n)
{
	/* xorshift64*: the same run for the same seed, on any libc */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (u32)((rng_state * 0x2545f4914f6cdd1dULL) >> 32) % n;
}

static __u16 bit(const struct reader *r)
{
	return (__u16)(1U << r->slot);
}

static struct nta_chunk *any_chunk(void)
{
	return &chunks[rnd(NODES)][rnd(PAGES)];
}

static int *refs_of(const struct nta_chunk *c)
{
	return &refs[c->node][c->index];
}

static __u16 *holders_of(const struct nta_chunk *c)
{
	return &holders[c->node][c->index];
}

static struct nta_chunk *chunk_of(const struct nta_commit *cm)
{
	return &chunks[cm->node][cm->offset / PAGE];
}

/* A new reader in @r's place: a free slot of the pool, any pool index of its own. */
static void reader_open(struct reader *r)
{
	bool taken;
	int k;

	do {
		r->slot = rnd(NTA_POOL_READERS);
		taken = false;
		for (k = 0; k < READERS; k++)
			taken |= &readers[k] != r && readers[k].slot == r->slot;
	} while (taken);
	r->pool = rnd(NTA_MAX_POOLS);
}

/* A pool index @r has not bound: the caller finds no nodes there. */
static __u16 unbound_pool(const struct reader *r)
{
	__u16 pool = rnd(2) ? rnd(NTA_MAX_POOLS) : rnd(UINT16_MAX + 1);

	return pool == r->pool ? pool + 1 : pool;
}

/* Some of the readers, perhaps none: each may be at max_shared or have a full ring. */
static __u16 some_readers(void)
{
	__u16 mask = 0;
	int k;

	for (k = 0; k < READERS; k++)
		if (rnd(2))
			mask |= bit(&readers[k]);
	return mask;
}

static void reader_forget(struct reader *r, int i)
{
	r->old[r->nold++ % REPLAYS] = r->held[i];
	r->held[i] = r->held[--r->nheld];
}

/* nta_chunk_release() and the sweep: the chunk goes back if it may. */
static void reclaim(struct nta_chunk *c)
{
	bool may = c->busy && !c->filling && !*holders_of(c) && !c->leaked && *refs_of(c) == 1;

	CHECK(nta_chunk_reclaimable(c, *refs_of(c)) == may,
	      "chunk %u/%u busy %d filling %d readers %#x held by %#x leaked %d refs %d",
	      c->node, c->index, c->busy, c->filling, c->readers, *holders_of(c), c->leaked,
	      *refs_of(c));
	if (!may)
		return;
	nta_chunk_put_back(c);
	freed++;
	in_use--;
}

static void ev_take(void)
{
	struct nta_chunk *c = any_chunk();
	u32 generation = c->generation;

	if (c->busy)
		return;
	nta_chunk_take(c);
	CHECK(c->busy && !c->published && c->generation == generation + 1, "take");
	++*refs_of(c);
	allocated++;
	in_use++;
}

/* The kernel holds @c's page for a frame not yet seen: it may be published in place. */
static bool receivable(const struct nta_chunk *c)
{
	return c->busy && !c->published && *refs_of(c) == 2 && !frame_of[c->node][c->index];
}

static struct frame *new_frame(void)
{
	struct frame *f = calloc(1, sizeof(*f));

	CHECK(f, "out of memory");
	f->stack = true;
	return f;
}

/* @c is published at @offset to the readers in @mask: a record in each one's ring. */
static void share(struct nta_chunk *c, __u16 mask, u32 offset)
{
	int k;

	nta_chunk_share(c, mask, offset);
	*holders_of(c) = mask;
	pool_shared++;
	multi += !!(mask & (mask - 1));
	for (k = 0; k < READERS; k++) {
		struct reader *r = &readers[k];

		if (!(mask & bit(r)))
			continue;
		r->held[r->nheld++] = (struct nta_commit) {
			.node = c->node,
			.offset = offset,
			.generation = c->generation,
			.pool = r->pool,
		};
		r->published++;
	}
}

/* Shares the pieces of @f with the readers in @mask, all under NTA's one hold. */
static void publish_frame(struct frame *f, __u16 mask)
{
	int i;

	for (i = 0; i < f->pieces; i++) {
		struct nta_chunk *c = f->piece[i];

		share(c, mask, c->index * PAGE + rnd(PAGE / 2));
		frame_of[c->node][c->index] = f;
		copied[c->node][c->index] = false;
	}
	f->unreleased = f->pieces;
}

static void ev_receive(void)
{
	struct nta_chunk *c = any_chunk();
	u32 in_page = rnd(PAGE + 64), len = 1 + rnd(PAGE + 64);
	bool fits = in_page + len <= PAGE;
	bool kernel_has_it = c->busy && *refs_of(c) == 2 && !frame_of[c->node][c->index];
	struct frame *f;
	__u16 mask;

	if (!kernel_has_it)
		return;
	CHECK(nta_chunk_publishable(c, in_page, len, PAGE) == (fits && !c->published),
	      "publishable: published %d, %u + %u", c->published, in_page, len);
	if (!fits || c->published)
		return;
	nta_chunk_seen(c);
	mask = some_readers();
	if (!mask)
		return;		/* no reader took it: the kernel's alone */
	f = new_frame();
	f->piece[f->pieces++] = c;
	publish_frame(f, mask);
}

/* GRO merged frames received in several chunks: one frame, published in place over them all. */
static void ev_receive_chain(void)
{
	struct frame *f;
	int want = 2 + rnd(MAX_CHAIN - 1), tries, i;
	__u16 mask;

	f = new_frame();
	for (tries = 0; tries < 4 * MAX_CHAIN && f->pieces < want; tries++) {
		struct nta_chunk *c = any_chunk();
		bool dup = false;

		for (i = 0; i < f->pieces; i++)
			dup |= f->piece[i] == c;
		if (dup || !receivable(c))
			continue;
		CHECK(nta_chunk_publishable(c, 0, PAGE / 2, PAGE), "merged piece not publishable");
		nta_chunk_seen(c);
		f->piece[f->pieces++] = c;
	}
	mask = some_readers();
	if (f->pieces < 2 || !mask) {
		/* Not enough pieces, or no reader took it: what was seen stays the kernel's. */
		free(f);
		return;
	}
	publish_frame(f, mask);
	chains++;
}

/* The frame's data is gone (the stack and NTA's hold let go): its pages back to one ref. */
static void frame_maybe_done(struct frame *f)
{
	int i;

	if (f->stack || f->unreleased)
		return;
	for (i = 0; i < f->pieces; i++) {
		struct nta_chunk *c = f->piece[i];

		CHECK(*refs_of(c) == 2, "a frame's page lost its reference early");
		--*refs_of(c);
		frame_of[c->node][c->index] = NULL;
	}
	free(f);
}

static void ev_kernel_frees(void)
{
	struct nta_chunk *c = any_chunk();
	struct frame *f = frame_of[c->node][c->index];

	if (f) {
		f->stack = false;
		frame_maybe_done(f);
	} else if (*refs_of(c) == 2) {
		--*refs_of(c);
	}
}

/* A chunk taken for a copy: filled without the lock, while sweeps may run. */
static void ev_copy_take(void)
{
	struct nta_chunk *c = any_chunk();
	u32 generation = c->generation;
	int i;

	for (i = 0; i < FILLING && filling[i]; i++)
		;
	if (i == FILLING || c->busy)
		return;
	nta_chunk_take_for_copy(c);
	CHECK(c->busy && c->filling && !c->published && c->generation == generation + 1,
	      "take for copy");
	CHECK(!nta_chunk_publishable(c, 0, 1, PAGE), "a chunk being filled is publishable");
	filling[i] = c;
	allocated++;
	in_use++;
}

/* Copy @i is written: published to some readers (it needs no hold), or put back. */
static void copy_done(int i)
{
	struct nta_chunk *c = filling[i];
	__u16 mask;

	if (!c)
		return;
	filling[i] = NULL;
	CHECK(c->busy && c->filling, "chunk %u/%u freed while being filled", c->node, c->index);
	mask = some_readers();
	if (!mask) {
		nta_chunk_put_back(c);	/* no reader admitted it after the copy */
		freed++;
		in_use--;
		return;
	}
	nta_chunk_filled(c);
	share(c, mask, c->index * PAGE);
	copied[c->node][c->index] = true;
	copies++;
}

static void ev_copy_done(void)
{
	copy_done(rnd(FILLING));
}

/*
 * @r is done with @c (its commit, or its close): its bit goes; when the
 * header says no reader holds @c any more, NTA's hold on the frame loses a
 * chunk and goes with the last one, as in the module.
 */
static void release(struct nta_chunk *c, struct reader *r)
{
	struct frame *f = frame_of[c->node][c->index];

	CHECK(*holders_of(c) & bit(r), "slot %u releases chunk %u/%u it does not hold",
	      r->slot, c->node, c->index);
	*holders_of(c) &= ~bit(r);
	if (!nta_chunk_unshare(c, r->slot))
		return;
	pool_released++;
	if (f) {
		CHECK(f->unreleased > 0, "NTA's hold on chunk %u/%u's frame released twice",
		      c->node, c->index);
		f->unreleased--;
		frame_maybe_done(f);
	}
	reclaim(c);
}

static void ev_sweep(void)
{
	int n, i;

	for (n = 0; n < NODES; n++)
		for (i = 0; i < PAGES; i++)
			if (chunks[n][i].busy)
				reclaim(&chunks[n][i]);
}

static void ev_leak(void)
{
	struct nta_chunk *c = any_chunk();

	/* rare: a leaked chunk is out of the pool for good */
	if (c->busy && rnd(5000) == 0)
		c->leaked = true;
}

/*
 * Submits @cm from @r: the pool's nodes if @cm names the pool index @r bound
 * it at, else none (nta_reader.c's lookup). The verdict; a refused commit
 * must change nothing.
 */
static enum nta_bad_commit submit(const struct reader *r, const struct nta_commit *cm,
				  struct nta_chunk **chunk)
{
	static struct nta_chunk before[NODES][PAGES];
	const struct nta_node *pool = cm->pool == r->pool ? nodes : NULL;
	enum nta_bad_commit why;

	memcpy(before, chunks, sizeof(chunks));
	*chunk = NULL;
	why = nta_commit_check(pool, NODES, PAGES, PAGE, r->slot, cm, chunk);
	CHECK(!memcmp(before, chunks, sizeof(chunks)), "the check changed a chunk");
	if (why != NTA_BAD_COMMIT_MAX) {
		CHECK(!*chunk, "refused, yet a chunk was named");
		refused[why]++;
	}
	return why;
}

/* A good commit of @r's record @i: released, and a second one refused. */
static void commit_held(struct reader *r, int i)
{
	struct nta_commit cm = r->held[i];
	struct nta_chunk *c;

	CHECK(submit(r, &cm, &c) == NTA_BAD_COMMIT_MAX, "a good commit refused");
	CHECK(c == chunk_of(&cm), "another chunk named");
	release(c, r);
	reader_forget(r, i);
	r->committed++;
	CHECK(submit(r, &cm, &c) == NTA_BAD_STATE, "slot %u committed chunk %u/%u twice",
	      r->slot, cm.node, cm.offset / PAGE);
	twice++;
}

static void ev_commit(void)
{
	struct reader *r = &readers[rnd(READERS)];

	if (r->nheld)
		commit_held(r, rnd(r->nheld));
}

/* Another reader's commit of @cm, a chunk not shared with it: refused, whatever it holds. */
static void commit_by_other(const struct nta_commit *cm)
{
	const struct nta_chunk *c = chunk_of(cm);
	struct nta_chunk *got;
	struct nta_commit theirs = *cm;
	struct reader *o = NULL;
	u32 k, first = rnd(READERS);

	for (k = 0; k < READERS && !o; k++)
		if (!(*holders_of(c) & bit(&readers[(first + k) % READERS])))
			o = &readers[(first + k) % READERS];
	if (!o)
		return;		/* every reader took it */
	theirs.pool = o->pool;
	CHECK(submit(o, &theirs, &got) == NTA_BAD_STATE, "slot %u committed chunk %u/%u of %#x",
	      o->slot, c->node, c->index, *holders_of(c));
	others++;
}

/* Each kind of bad commit, made from a good one, refused for its reason. */
static void ev_bad_commit(void)
{
	struct reader *r = &readers[rnd(READERS)];
	struct nta_commit cm;
	struct nta_chunk *c;
	enum nta_bad_commit want;

	if (!r->nheld)
		return;
	cm = r->held[rnd(r->nheld)];
	switch (rnd(7)) {
	case 0:
		/* Checked first: whatever else is wrong, the pool included. */
		cm.reserved = 1 + rnd(UINT16_MAX);
		if (rnd(2))
			cm.pool = unbound_pool(r);
		want = NTA_BAD_RESERVED;
		break;
	case 1:
		cm.node = NODES + rnd(UINT32_MAX - NODES);
		want = NTA_BAD_NODE;
		break;
	case 2:
		cm.offset = PAGES * PAGE + rnd(UINT32_MAX - PAGES * PAGE);
		want = NTA_BAD_OFFSET;
		break;
	case 3:
		if (cm.offset % PAGE == PAGE - 1)
			return;
		cm.offset++;	/* the right chunk, not the frame's offset */
		want = NTA_BAD_OFFSET;
		break;
	case 4:
		cm.generation -= 1 + rnd(3);
		want = NTA_BAD_GENERATION;
		break;
	case 5:
		/* A pool the reader has not bound, checked before what the commit names in it. */
		cm.pool = unbound_pool(r);
		if (rnd(2))
			cm.node = NODES + rnd(UINT32_MAX - NODES);
		if (rnd(2))
			cm.offset = PAGES * PAGE + rnd(UINT32_MAX - PAGES * PAGE);
		if (rnd(2))
			cm.generation--;
		want = NTA_BAD_POOL;
		break;
	default:
		commit_by_other(&cm);
		return;
	}
	CHECK(submit(r, &cm, &c) == want, "want reason %d", want);
}

/* A chunk not shared with the committer: nothing to commit, whatever the record says. */
static void ev_commit_unshared(void)
{
	struct nta_chunk *c = any_chunk(), *got;
	struct reader *r = &readers[rnd(READERS)];
	struct nta_commit cm = {
		.node = c->node,
		.offset = c->index * PAGE + rnd(PAGE),
		.generation = c->generation,
		.pool = r->pool,
	};

	if (*holders_of(c) & bit(r))
		return;
	CHECK(submit(r, &cm, &got) == NTA_BAD_STATE, "unshared chunk");
}

/* An old record (committed, or given up at close) never commits again. */
static void ev_replay(void)
{
	struct reader *r = &readers[rnd(READERS)];
	struct nta_chunk *c;
	int n = r->nold < REPLAYS ? r->nold : REPLAYS;

	if (!n)
		return;
	CHECK(submit(r, &r->old[rnd(n)], &c) != NTA_BAD_COMMIT_MAX, "an old record committed");
	replays++;
}

static void ev_random_bytes(void)
{
	struct reader *r = &readers[rnd(READERS)];
	struct nta_commit cm;
	struct nta_chunk *c;
	bool good = false;
	int i;

	cm.node = rnd(2) ? rnd(NODES) : rnd(UINT32_MAX);
	cm.offset = rnd(2) ? rnd(PAGES * PAGE) : rnd(UINT32_MAX);
	cm.generation = rnd(UINT32_MAX);
	cm.pool = rnd(2) ? r->pool : rnd(UINT16_MAX + 1);
	cm.reserved = rnd(4) ? 0 : rnd(UINT16_MAX + 1);
	for (i = 0; i < r->nheld; i++)
		good |= !memcmp(&cm, &r->held[i], sizeof(cm));
	CHECK((submit(r, &cm, &c) == NTA_BAD_COMMIT_MAX) == good, "random bytes");
	if (good) {
		for (i = 0; memcmp(&cm, &r->held[i], sizeof(cm)); i++)
			;
		release(c, r);
		reader_forget(r, i);
		r->committed++;
	}
}

/* nta_release(): every chunk the reader holds is released, and only its share of each. */
static void reader_close(struct reader *r)
{
	while (r->nheld) {
		release(chunk_of(&r->held[r->nheld - 1]), r);
		reader_forget(r, r->nheld - 1);
		r->returned++;
	}
}

static void ev_close(void)
{
	struct reader *r = &readers[rnd(READERS)];

	reader_close(r);
	reader_open(r);
}

/* NTA's hold on a received chunk's frame lives while any reader holds the chunk. */
static void check_hold(const struct nta_chunk *c)
{
	const struct frame *f = frame_of[c->node][c->index];
	int i, shared = 0;

	if (*holders_of(c) && !copied[c->node][c->index])
		CHECK(f && f->unreleased > 0 && *refs_of(c) == 2,
		      "NTA's hold on chunk %u/%u's frame gone while slots %#x hold it",
		      c->node, c->index, *holders_of(c));
	if (!f || f->piece[0] != c)
		return;
	for (i = 0; i < f->pieces; i++)
		shared += !!*holders_of(f->piece[i]);
	CHECK(f->unreleased == shared,
	      "NTA's hold on chunk %u/%u's frame counts %d chunks, %d shared", c->node, c->index,
	      f->unreleased, shared);
}

static void check_reader(int k)
{
	const struct reader *r = &readers[k];
	unsigned long outstanding = 0;
	int n, i;

	for (n = 0; n < NODES; n++)
		for (i = 0; i < PAGES; i++)
			outstanding += !!(chunks[n][i].readers & bit(r));
	CHECK(r->published == r->committed + r->returned + r->nheld &&
	      outstanding == (unsigned long)r->nheld,
	      "reader %d in slot %u: published %lu committed %lu returned %lu held %d shared %lu",
	      k, r->slot, r->published, r->committed, r->returned, r->nheld, outstanding);
	for (i = 0; i < r->nheld; i++) {
		const struct nta_commit *cm = &r->held[i];
		const struct nta_chunk *c = chunk_of(cm);

		CHECK((c->readers & bit(r)) && c->generation == cm->generation &&
		      c->frame_offset == cm->offset && cm->pool == r->pool,
		      "reader %d in slot %u lost chunk %u/%u", k, r->slot, cm->node,
		      cm->offset / PAGE);
	}
}

static void check_invariants(void)
{
	unsigned long busy = 0, shared = 0;
	int n, i, k;

	for (n = 0; n < NODES; n++) {
		for (i = 0; i < PAGES; i++) {
			const struct nta_chunk *c = &chunks[n][i];
			__u16 held = holders[n][i];

			busy += c->busy;
			shared += !!held;
			CHECK(c->readers == held, "chunk %d/%d shared with %#x, held by %#x", n, i,
			      c->readers, held);
			CHECK(c->busy || (!held && refs[n][i] == 1),
			      "chunk %d/%d free while used: held by %#x refs %d", n, i, held,
			      refs[n][i]);
			CHECK(!held || (c->busy && c->published), "chunk %d/%d shared", n, i);
			CHECK(!c->filling || (c->busy && !held && refs[n][i] == 1),
			      "chunk %d/%d filling while used", n, i);
			check_hold(c);
		}
	}
	CHECK(allocated == freed + in_use && in_use == busy,
	      "allocated %lu freed %lu in_use %lu busy %lu", allocated, freed, in_use, busy);
	CHECK(pool_shared == pool_released + shared,
	      "pool: shared %lu, let go %lu, %lu shared now", pool_shared, pool_released, shared);
	for (k = 0; k < READERS; k++)
		check_reader(k);
}

int main(int argc, char **argv)
{
	static void (*const events[])(void) = {
		ev_take, ev_take, ev_receive, ev_receive, ev_receive_chain, ev_kernel_frees,
		ev_kernel_frees, ev_sweep, ev_leak, ev_copy_take, ev_copy_done, ev_commit,
		ev_commit, ev_bad_commit, ev_commit_unshared, ev_replay, ev_random_bytes, ev_close,
	};
	unsigned long steps = argc > 2 ? strtoul(argv[2], NULL, 0) : 100000;
	unsigned long leaked = 0;
	int n, i;

	rng_state = argc > 1 ? strtoull(argv[1], NULL, 0) * 2 + 1 : 1;
	for (n = 0; n < NODES; n++) {
		nodes[n].chunks = chunks[n];
		for (i = 0; i < PAGES; i++) {
			chunks[n][i].node = n;
			chunks[n][i].index = i;
			refs[n][i] = 1;
		}
	}
	for (n = 0; n < READERS; n++)
		readers[n].slot = NTA_POOL_READERS;	/* no slot yet: every slot is free */
	for (n = 0; n < READERS; n++)
		reader_open(&readers[n]);
	for (step = 0; step < steps; step++) {
		events[rnd(ARRAY_SIZE(events))]();
		check_invariants();
	}

	/* Drain: copies finish, the kernel and the readers let go; only leaked chunks stay. */
	for (i = 0; i < FILLING; i++)
		if (filling[i])
			copy_done(i);
	for (n = 0; n < READERS; n++)
		reader_close(&readers[n]);
	for (n = 0; n < NODES; n++) {
		for (i = 0; i < PAGES; i++) {
			struct frame *f = frame_of[n][i];

			if (f) {
				f->stack = false;
				frame_maybe_done(f);
			}
			refs[n][i] = 1;
		}
	}
	ev_sweep();
	check_invariants();
	for (n = 0; n < NODES; n++)
		for (i = 0; i < PAGES; i++)
			leaked += chunks[n][i].leaked;
	CHECK(in_use == leaked, "in_use %lu after drain, %lu leaked on purpose", in_use, leaked);

	printf("steps %lu allocated %lu freed %lu shared %lu released %lu multi %lu",
	       steps, allocated, freed, pool_shared, pool_released, multi);
	printf(" copies %lu chains %lu replays %lu twice %lu others %lu leaked %lu\n",
	       copies, chains, replays, twice, others, leaked);
	for (n = 0; n < READERS; n++)
		printf("reader%d published %lu committed %lu returned %lu\n", n,
		       readers[n].published, readers[n].committed, readers[n].returned);
	printf("refused node %lu offset %lu state %lu generation %lu reserved %lu pool %lu\n",
	       refused[NTA_BAD_NODE], refused[NTA_BAD_OFFSET], refused[NTA_BAD_STATE],
	       refused[NTA_BAD_GENERATION], refused[NTA_BAD_RESERVED], refused[NTA_BAD_POOL]);
	return 0;
}
