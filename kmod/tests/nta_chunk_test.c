// SPDX-License-Identifier: GPL-2.0
/*
 * nta_chunk_test.c - nta_chunk.h on the host: the chunk state machine and
 * commit validation, under sanitizers, before any guest boots.
 *
 *	cc -fsanitize=address,undefined -I kmod nta_chunk_test.c && ./a.out SEED STEPS
 *
 * A model pool goes through a seeded random run of what the module sees:
 * a chunk taken for a receive buffer, a frame received in it and published
 * to one of two readers (or to none), a GRO-merged frame published in place
 * over several chunks, a chunk taken for a copy and filled without the lock
 * while sweeps run, the kernel freeing its skb, commits good and bad of every
 * kind, replays of old commits, sweeps, a reader closing, fault injection
 * keeping a chunk. A published frame's data is held for its reader (a data
 * reference, or one clone shared by the chunks of a merged frame): its pages
 * stay referenced until both the stack and every chunk's commit let go,
 * whichever is last. After every event it checks what NTA promises: a chunk
 * is free only once the kernel and every reader are done with it and nobody
 * is filling it, a refused commit changes nothing and is refused for its own
 * reason, no old record commits a chunk again, and the counters balance.
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
#define READERS		2
#define REPLAYS		64
#define MAX_CHAIN	4		/* chunks of one merged frame, in the model */
#define FILLING		4		/* copies being filled at once */

struct nta_reader {
	struct nta_commit held[CHUNKS];	/* records published, not committed */
	int nheld;
	struct nta_commit old[REPLAYS];	/* committed or given up at close */
	int nold;
};

/*
 * A published frame's data: the stack's skb holds it, and NTA's hold (a
 * data reference or a shared clone) until every chunk of the frame is
 * released. While either lives, each chunk's page keeps its extra reference.
 */
struct frame {
	struct nta_chunk *piece[MAX_CHAIN];
	int pieces;
	int unreleased;			/* chunks still shared: NTA's hold lives while > 0 */
	bool stack;			/* the stack's skb still holds the data */
};

static struct nta_chunk chunks[NODES][PAGES];
static struct nta_node nodes[NODES];
static int refs[NODES][PAGES];		/* the pool's reference, +1 while the kernel holds it */
static struct frame *frame_of[NODES][PAGES];	/* a published chunk's frame */
static struct nta_chunk *filling[FILLING];	/* taken for a copy, not yet published */
static unsigned long copies, chains;
static struct nta_reader readers[READERS];
static unsigned long allocated, freed, in_use, committed, published, replays;
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

static struct nta_chunk *any_chunk(void)
{
	return &chunks[rnd(NODES)][rnd(PAGES)];
}

static int *refs_of(const struct nta_chunk *c)
{
	return &refs[c->node][c->index];
}

static void reader_forget(struct nta_reader *r, int i)
{
	r->old[r->nold++ % REPLAYS] = r->held[i];
	r->held[i] = r->held[--r->nheld];
}

/* nta_chunk_release() and the sweep: the chunk goes back if it may. */
static void reclaim(struct nta_chunk *c)
{
	bool may = c->busy && !c->filling && !c->owner && !c->leaked && *refs_of(c) == 1;

	CHECK(nta_chunk_reclaimable(c, *refs_of(c)) == may,
	      "chunk %u/%u busy %d filling %d owner %p leaked %d refs %d", c->node, c->index,
	      c->busy, c->filling, (void *)c->owner, c->leaked, *refs_of(c));
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

/* Shares the pieces of @f with a reader: one record each, all under NTA's one hold. */
static void publish_frame(struct frame *f, struct nta_reader *r)
{
	int i;

	for (i = 0; i < f->pieces; i++) {
		struct nta_chunk *c = f->piece[i];

		nta_chunk_share(c, r, c->index * PAGE + rnd(PAGE / 2));
		frame_of[c->node][c->index] = f;
		r->held[r->nheld++] = (struct nta_commit) {
			.node = c->node,
			.offset = c->frame_offset,
			.generation = c->generation,
		};
		published++;
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

	if (!kernel_has_it)
		return;
	CHECK(nta_chunk_publishable(c, in_page, len, PAGE) == (fits && !c->published),
	      "publishable: published %d, %u + %u", c->published, in_page, len);
	if (!fits || c->published)
		return;
	nta_chunk_seen(c);
	if (rnd(4) == 0)
		return;		/* no reader attached, or at max_shared */
	f = new_frame();
	f->piece[f->pieces++] = c;
	publish_frame(f, &readers[rnd(READERS)]);
}

/* GRO merged frames received in several chunks: one frame, published in place over them all. */
static void ev_receive_chain(void)
{
	struct frame *f;
	int want = 2 + rnd(MAX_CHAIN - 1), tries, i;

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
	if (f->pieces < 2) {
		/* Not enough pieces: what was seen stays the kernel's, unpublished. */
		free(f);
		return;
	}
	publish_frame(f, &readers[rnd(READERS)]);
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

/* Copy @i is written: published to a reader (it needs no hold), or put back. */
static void copy_done(int i)
{
	struct nta_chunk *c = filling[i];
	struct nta_reader *r;

	if (!c)
		return;
	filling[i] = NULL;
	CHECK(c->busy && c->filling, "chunk %u/%u freed while being filled", c->node, c->index);
	if (rnd(4) == 0) {
		nta_chunk_put_back(c);	/* not admitted after the copy */
		freed++;
		in_use--;
		return;
	}
	nta_chunk_filled(c);
	r = &readers[rnd(READERS)];
	nta_chunk_share(c, r, c->index * PAGE);
	r->held[r->nheld++] = (struct nta_commit) {
		.node = c->node,
		.offset = c->frame_offset,
		.generation = c->generation,
	};
	published++;
	copies++;
}

static void ev_copy_done(void)
{
	copy_done(rnd(FILLING));
}

/* The reader is done with @c: NTA's hold on its frame goes with the frame's last chunk. */
static void release(struct nta_chunk *c)
{
	struct frame *f = frame_of[c->node][c->index];

	c->owner = NULL;
	if (f) {
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

/* Submits @cm from @r; the verdict. A refused commit must change nothing. */
static enum nta_bad_commit submit(struct nta_reader *r, const struct nta_commit *cm,
				  struct nta_chunk **chunk)
{
	static struct nta_chunk before[NODES][PAGES];
	enum nta_bad_commit why;

	memcpy(before, chunks, sizeof(chunks));
	*chunk = NULL;
	why = nta_commit_check(nodes, NODES, PAGES, PAGE, r, cm, chunk);
	CHECK(!memcmp(before, chunks, sizeof(chunks)), "the check changed a chunk");
	if (why != NTA_BAD_COMMIT_MAX) {
		CHECK(!*chunk, "refused, yet a chunk was named");
		refused[why]++;
	}
	return why;
}

static void ev_commit(void)
{
	struct nta_reader *r = &readers[rnd(READERS)];
	struct nta_chunk *c;
	int i;

	if (!r->nheld)
		return;
	i = rnd(r->nheld);
	CHECK(submit(r, &r->held[i], &c) == NTA_BAD_COMMIT_MAX, "a good commit refused");
	CHECK(c == &chunks[r->held[i].node][r->held[i].offset / PAGE], "another chunk named");
	release(c);
	reader_forget(r, i);
	committed++;
}

/* Each kind of bad commit, made from a good one, refused for its reason. */
static void ev_bad_commit(void)
{
	struct nta_reader *r = &readers[rnd(READERS)];
	struct nta_reader *other = &readers[r == readers];
	struct nta_commit cm;
	struct nta_chunk *c;
	enum nta_bad_commit want;

	if (!r->nheld)
		return;
	cm = r->held[rnd(r->nheld)];
	switch (rnd(6)) {
	case 0:
		cm.reserved = 1 + rnd(UINT32_MAX - 1);
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
	default:
		/* Each reader has a pool of its own: another's chunk is not shared with it. */
		CHECK(submit(other, &cm, &c) == NTA_BAD_STATE, "another reader's chunk");
		return;
	}
	CHECK(submit(r, &cm, &c) == want, "want reason %d", want);
}

/* A chunk no reader holds: nothing to commit, whatever the record says. */
static void ev_commit_unshared(void)
{
	struct nta_chunk *c = any_chunk(), *got;
	struct nta_commit cm = {
		.node = c->node,
		.offset = c->index * PAGE + rnd(PAGE),
		.generation = c->generation,
	};

	if (c->owner)
		return;
	CHECK(submit(&readers[rnd(READERS)], &cm, &got) == NTA_BAD_STATE, "unshared chunk");
}

/* An old record (committed, or given up at close) never commits again. */
static void ev_replay(void)
{
	struct nta_reader *r = &readers[rnd(READERS)];
	struct nta_chunk *c;
	int n = r->nold < REPLAYS ? r->nold : REPLAYS;

	if (!n)
		return;
	CHECK(submit(r, &r->old[rnd(n)], &c) != NTA_BAD_COMMIT_MAX, "an old record committed");
	replays++;
}

static void ev_random_bytes(void)
{
	struct nta_reader *r = &readers[rnd(READERS)];
	struct nta_commit cm;
	struct nta_chunk *c;
	bool good = false;
	int i;

	cm.node = rnd(2) ? rnd(NODES) : rnd(UINT32_MAX);
	cm.offset = rnd(2) ? rnd(PAGES * PAGE) : rnd(UINT32_MAX);
	cm.generation = rnd(UINT32_MAX);
	cm.reserved = rnd(4) ? 0 : rnd(UINT32_MAX);
	for (i = 0; i < r->nheld; i++)
		good |= !memcmp(&cm, &r->held[i], sizeof(cm));
	CHECK((submit(r, &cm, &c) == NTA_BAD_COMMIT_MAX) == good, "random bytes");
	if (good) {
		release(c);
		for (i = 0; memcmp(&cm, &r->held[i], sizeof(cm)); i++)
			;
		reader_forget(r, i);
		committed++;
	}
}

/* nta_release(): every chunk the reader holds is released. */
static void reader_close(struct nta_reader *r)
{
	while (r->nheld) {
		struct nta_commit *cm = &r->held[r->nheld - 1];
		struct nta_chunk *c = &chunks[cm->node][cm->offset / PAGE];

		release(c);
		reader_forget(r, r->nheld - 1);
	}
}

static void ev_close(void)
{
	reader_close(&readers[rnd(READERS)]);
}

static void check_invariants(void)
{
	unsigned long busy = 0, shared = 0;
	int n, i, k;

	for (n = 0; n < NODES; n++) {
		for (i = 0; i < PAGES; i++) {
			const struct nta_chunk *c = &chunks[n][i];

			busy += c->busy;
			shared += !!c->owner;
			CHECK(c->busy || (!c->owner && refs[n][i] == 1),
			      "chunk %d/%d free while used: owner %p refs %d", n, i,
			      (void *)c->owner, refs[n][i]);
			CHECK(!c->owner || (c->busy && c->published), "chunk %d/%d shared", n, i);
			CHECK(!c->filling || (c->busy && !c->owner && refs[n][i] == 1),
			      "chunk %d/%d filling while used", n, i);
		}
	}
	CHECK(allocated == freed + in_use && in_use == busy,
	      "allocated %lu freed %lu in_use %lu busy %lu", allocated, freed, in_use, busy);
	for (k = 0; k < READERS; k++) {
		const struct nta_reader *r = &readers[k];

		shared -= r->nheld;
		for (i = 0; i < r->nheld; i++) {
			const struct nta_commit *cm = &r->held[i];
			const struct nta_chunk *c = &chunks[cm->node][cm->offset / PAGE];

			CHECK(c->owner == r && c->generation == cm->generation &&
			      c->frame_offset == cm->offset, "reader %d lost chunk %u/%u", k,
			      cm->node, cm->offset / PAGE);
		}
	}
	CHECK(shared == 0, "chunks shared with no reader's record");
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

	printf("steps %lu allocated %lu freed %lu published %lu committed %lu",
	       steps, allocated, freed, published, committed);
	printf(" copies %lu chains %lu", copies, chains);
	printf(" replays %lu leaked %lu\n", replays, leaked);
	printf("refused node %lu offset %lu state %lu generation %lu reserved %lu\n",
	       refused[NTA_BAD_NODE], refused[NTA_BAD_OFFSET], refused[NTA_BAD_STATE],
	       refused[NTA_BAD_GENERATION], refused[NTA_BAD_RESERVED]);
	return 0;
}
