// llama.cpp's logits for a token sequence, as JSON: our own program over the public llama.h API.
//
// Loads a GGUF and evaluates the tokens (positions 0..n-1, sequence 0) with logits requested at
// every position, on the CPU with the given thread count: as one batch (CHUNKS = 0), or as
// consecutive llama_decode calls of the sizes in CHUNKS (e.g. 64,1,15: a prefill, one decoded
// token, then the rest through the KV cache). Prints
//   {"n_vocab": V, "flash_attn": bool, "n_ctx": C, "system_info": "...", "chunks": [...],
//    "tokens": [...], "logits": [[V values], ...one row per token]}
// Values are printed with %.9g, so they read back as the exact f32 llama.cpp produced.
//
// Usage: llama_logits MODEL.gguf N_CTX FLASH(0|1) N_THREADS CHUNKS TOKEN...
// Build: see scripts/reference/make_tiny_arch.py (gcc against libllama's shared libraries).
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

static void print_json_string(const char * s) {
    putchar('"');
    for (const unsigned char * p = (const unsigned char *) s; *p; ++p) {
        if (*p == '"' || *p == '\\') {
            putchar('\\');
            putchar(*p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL.gguf N_CTX FLASH(0|1) N_THREADS CHUNKS TOKEN...\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int n_ctx = atoi(argv[2]);
    const int flash = atoi(argv[3]);
    const int n_threads = atoi(argv[4]);
    const int n_tokens = argc - 6;
    if (n_ctx < n_tokens || n_threads < 1) {
        fprintf(stderr, "n_ctx %d must hold the %d tokens; n_threads must be >= 1\n", n_ctx, n_tokens);
        return 2;
    }
    // Chunk sizes: one batch, or the comma-separated list (which must add up to n_tokens).
    int chunks[256];
    int n_chunks = 0;
    if (strcmp(argv[5], "0") == 0) {
        chunks[n_chunks++] = n_tokens;
    } else {
        int total = 0;
        for (char * p = argv[5]; *p && n_chunks < 256;) {
            char * end;
            const long c = strtol(p, &end, 10);
            if (end == p || c < 1) {
                fprintf(stderr, "bad CHUNKS %s\n", argv[5]);
                return 2;
            }
            chunks[n_chunks++] = (int) c;
            total += (int) c;
            p = *end == ',' ? end + 1 : end;
        }
        if (total != n_tokens) {
            fprintf(stderr, "CHUNKS %s add up to %d, not the %d tokens\n", argv[5], total, n_tokens);
            return 2;
        }
    }

    llama_log_set(quiet_log, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "failed to load %s\n", path);
        return 1;
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n_ctx;
    cp.n_batch = (uint32_t) n_tokens;
    cp.n_ubatch = (uint32_t) n_tokens;
    cp.n_seq_max = 1;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "failed to create a context\n");
        return 1;
    }

    int * tokens = malloc(sizeof(int) * (size_t) n_tokens);
    float * logits = malloc(sizeof(float) * (size_t) n_tokens * (size_t) n_vocab);
    if (!tokens || !logits) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_tokens; ++i) {
        tokens[i] = atoi(argv[6 + i]);
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            fprintf(stderr, "token %d (%s) is outside the vocabulary of %d\n", i, argv[6 + i], n_vocab);
            return 2;
        }
    }

    struct llama_batch batch = llama_batch_init(n_tokens, 0, 1);
    int pos = 0;
    for (int c = 0; c < n_chunks; ++c) {
        for (int j = 0; j < chunks[c]; ++j) {
            batch.token[j] = tokens[pos + j];
            batch.pos[j] = pos + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;
        }
        batch.n_tokens = chunks[c];
        const int rc = llama_decode(ctx, batch);
        if (rc != 0) {
            fprintf(stderr, "llama_decode of chunk %d failed: %d\n", c, rc);
            return 1;
        }
        for (int j = 0; j < chunks[c]; ++j) {
            const float * row = llama_get_logits_ith(ctx, j);
            if (!row) {
                fprintf(stderr, "no logits for position %d\n", pos + j);
                return 1;
            }
            memcpy(logits + (size_t) (pos + j) * (size_t) n_vocab, row, sizeof(float) * (size_t) n_vocab);
        }
        pos += chunks[c];
    }

    printf("{\"n_vocab\": %d, \"flash_attn\": %s, \"n_ctx\": %u, \"system_info\": ", n_vocab,
           flash ? "true" : "false", llama_n_ctx(ctx));
    print_json_string(llama_print_system_info());
    printf(",\n \"chunks\": [");
    for (int c = 0; c < n_chunks; ++c) {
        printf("%s%d", c ? ", " : "", chunks[c]);
    }
    printf("],\n \"tokens\": [");
    for (int i = 0; i < n_tokens; ++i) {
        printf("%s%d", i ? ", " : "", tokens[i]);
    }
    printf("],\n \"logits\": [\n");
    for (int i = 0; i < n_tokens; ++i) {
        printf("  [");
        for (int v = 0; v < n_vocab; ++v) {
            printf("%s%.9g", v ? ", " : "", logits[(size_t) i * (size_t) n_vocab + (size_t) v]);
        }
        printf("]%s\n", i + 1 < n_tokens ? "," : "");
    }
    printf(" ]}\n");
    free(tokens);
    free(logits);

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
