/*
 * tests/fuzz/fuzz_checkpoint.c — libFuzzer target for the checkpoint loader.
 *
 *   make fuzz            (clang, -fsanitize=fuzzer,address,undefined; FUZZ_TIME=60 s)
 *
 * Every input is parsed as a safetensors file; when it parses, its metadata
 * goes through the config and tokenizer readers and its tensors are loaded
 * into a tiny GPTModel (the path --resume / --init / sample take). The loader
 * must return an error or succeed: never crash, leak, read out of bounds or
 * call tg_error (which aborts, so the fuzzer reports it). Random bytes are
 * often NaN or Inf as floats, and loading refuses those (TG_ST_ENONFINITE).
 */
#include "nn/nn.h"

#include <stdlib.h>
#include <string.h>

static tg_gpt *g_model;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_model) {
        /* the seeds in tests/fuzz/seeds are checkpoints of this config */
        tg_gpt_config c = {.vocab_size = 3, .context_length = 2, .emb_dim = 2, .n_heads = 1, .n_layers = 1,
                           .drop_rate = 0.0f, .qkv_bias = false};
        tg_generator g;
        tg_manual_seed(&g, 1);
        g_model = tg_gpt_new(&c, &g);
    }
    tg_st_file *f;
    tg_st_error err;
    if (tg_st_open_mem(data, size, "fuzz", &f, &err) != 0) {
        if (err.code == TG_ST_OK || !err.msg[0] || strchr(err.msg, '\n'))
            abort(); /* an error must have a code and a one-line message */
        return 0;
    }
    const tg_st_meta *meta = tg_st_metadata(f);
    tg_gpt_config c;
    (void)tg_gpt_config_from_meta(&c, meta, "fuzz", &err);
    tg_tokenizer t;
    if (tg_tokenizer_from_meta(&t, meta, "fuzz", &err) == 0)
        tg_tokenizer_free(&t);
    for (int i = 0; i < tg_st_count(f); i++) {
        const tg_st_entry *e = tg_st_entry_at(f, i);
        if (e->ndim <= TG_MAX_DIMS && e->numel <= 64) {
            int shape[TG_MAX_DIMS];
            for (int d = 0; d < e->ndim; d++)
                shape[d] = e->shape[d];
            tg_tensor *x = tg_zeros(e->ndim, shape);
            /* a listed entry of the right shape must read, unless it holds a
             * NaN or Inf, which loading refuses with a one-line message */
            if (tg_st_read(f, e->name, x, &err) != 0 &&
                (err.code != TG_ST_ENONFINITE || !err.msg[0] || strchr(err.msg, '\n')))
                abort();
            tg_free(x);
        }
    }
    (void)tg_gpt_load(g_model, f, true, &err);
    tg_st_close(f);
    return 0;
}
