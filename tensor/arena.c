/* tensor/arena.c — a bump allocator that grows by itself and, once warm,
 * serves every round from a single block without calling malloc. */
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

#define TG_ARENA_ALIGN 64

typedef struct tg_block {
    struct tg_block *next;
    size_t size, used;
    unsigned char *mem;
} tg_block;

struct tg_arena {
    tg_block *head;        /* the block being filled; older ones follow */
    size_t total_used;     /* bytes handed out since the last reset */
    size_t high_water;     /* largest total_used seen */
    size_t mallocs;
};

static tg_block *block_new(tg_arena *a, size_t size)
{
    tg_block *b = malloc(sizeof *b);
    if (!b)
        tg_error("tg_arena_alloc", "out of memory (%zu bytes)", size);
    b->mem = aligned_alloc(TG_ARENA_ALIGN, (size + TG_ARENA_ALIGN - 1) / TG_ARENA_ALIGN * TG_ARENA_ALIGN);
    if (!b->mem)
        tg_error("tg_arena_alloc", "out of memory (%zu bytes)", size);
    b->size = size;
    b->used = 0;
    b->next = NULL;
    a->mallocs++;
    return b;
}

tg_arena *tg_arena_new(size_t initial_bytes)
{
    tg_arena *a = calloc(1, sizeof *a);
    if (!a)
        tg_error("tg_arena_new", "out of memory");
    if (initial_bytes < 4096)
        initial_bytes = 4096;
    a->head = block_new(a, initial_bytes);
    return a;
}

void tg_arena_free(tg_arena *a)
{
    if (!a)
        return;
    for (tg_block *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b->mem);
        free(b);
    }
    free(a);
}

void *tg_arena_alloc(tg_arena *a, size_t bytes)
{
    tg_check_ptr("tg_arena_alloc", a, "arena");
    size_t need = (bytes + TG_ARENA_ALIGN - 1) / TG_ARENA_ALIGN * TG_ARENA_ALIGN;
    if (need == 0)
        need = TG_ARENA_ALIGN;
    tg_block *b = a->head;
    if (b->used + need > b->size) {
        size_t size = b->size * 2;
        if (size < need)
            size = need;
        tg_block *nb = block_new(a, size);
        nb->next = b;
        a->head = b = nb;
    }
    void *p = b->mem + b->used;
    b->used += need;
    a->total_used += need;
    if (a->total_used > a->high_water)
        a->high_water = a->total_used;
    return p;
}

void tg_arena_reset(tg_arena *a)
{
    tg_check_ptr("tg_arena_reset", a, "arena");
    if (a->head->next) {
        /* It grew this round: replace all blocks by one that holds the
         * high-water mark, so the next round needs no malloc at all. */
        for (tg_block *b = a->head, *n; b; b = n) {
            n = b->next;
            free(b->mem);
            free(b);
        }
        a->head = NULL;
        a->head = block_new(a, a->high_water + a->high_water / 8);
    }
    a->head->used = 0;
    a->total_used = 0;
}

size_t tg_arena_used(const tg_arena *a) { return a->total_used; }

size_t tg_arena_capacity(const tg_arena *a)
{
    size_t c = 0;
    for (const tg_block *b = a->head; b; b = b->next)
        c += b->size;
    return c;
}

size_t tg_arena_mallocs(const tg_arena *a) { return a->mallocs; }
