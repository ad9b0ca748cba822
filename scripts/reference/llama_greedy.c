// llama.cpp's greedy continuation of a token sequence: our own program over the public llama.h API.
//
// Loads a GGUF (CPU, mmap), evaluates the prompt tokens as one batch, then decodes N tokens one at
// a time, each the argmax of the last logits (ties to the lower id, as llama.cpp's greedy
// sampler). Prints the generated ids, space separated, on one line.
//
// Usage: llama_greedy MODEL.gguf N_PREDICT N_THREADS TOKEN...
// Build (against a llama.cpp build dir B and its source tree S):
//   gcc -O2 -o llama_greedy llama_greedy.c -I S/include -I S/ggml/include -L B/bin -lllama \
//       -Wl,-rpath,B/bin
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

static void quiet_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT N_THREADS TOKEN...\n", argv[0]);
        return 2;
    }
    const int n_predict = atoi(argv[2]);
    const int n_threads = atoi(argv[3]);
    const int n_prompt = argc - 4;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "failed to load %s\n", argv[1]);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (n_prompt + n_predict + 1);
    cp.n_batch = (uint32_t) n_prompt;
    cp.n_ubatch = (uint32_t) n_prompt;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "failed to create a context\n");
        return 1;
    }
    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    for (int i = 0; i < n_prompt; ++i) {
        batch.token[i] = atoi(argv[4 + i]);
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n_prompt - 1;
    }
    batch.n_tokens = n_prompt;
    int pos = n_prompt;
    for (int k = 0; k < n_predict; ++k) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
        const float * row = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; ++v) {
            if (row[v] > row[best]) {
                best = v;
            }
        }
        printf("%s%d", k ? " " : "", best);
        fflush(stdout);
        batch.token[0] = best;
        batch.pos[0] = pos++;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
    }
    printf("\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
