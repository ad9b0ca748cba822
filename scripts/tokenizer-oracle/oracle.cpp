// Tokenizer oracle: runs llama.cpp's own llama_tokenize / llama_token_to_piece / llama_detokenize on a
// vocabulary, for comparing chord's tokenizer against it (tests/tokenizer_oracle.rs). Written against
// the public llama.h API only. Build: see README.md next to this file.
//
// Usage: oracle <model.gguf> <cases-file>
// The cases file is a sequence of records: one byte add_special (0/1), one byte parse_special (0/1),
// a little-endian u32 length, then that many bytes of text. Output (stdout), line-based:
//   vocab <n_tokens> bos <id> eos <id> eot <id> add_bos <0/1> add_eos <0/1>
//   eog <ids...>
//   attr <attr of token 0> <attr of token 1> ...
//   piece <hex of token_to_piece(i, special=false)>|<hex of special=true>   (one line per token)
//   case <tokens...>
//   detok <hex of llama_detokenize(tokens, remove_special=false, unparse_special=false)>
//   detok_special <hex of ... unparse_special=true>
#include "llama.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

static void hex(const std::string & s) {
    for (unsigned char c : s) {
        printf("%02x", c);
    }
}

static std::string piece(const llama_vocab * v, llama_token t, bool special) {
    std::string out(64, '\0');
    int n = llama_token_to_piece(v, t, &out[0], (int) out.size(), 0, special);
    if (n < 0) {
        out.resize(-n);
        n = llama_token_to_piece(v, t, &out[0], (int) out.size(), 0, special);
    }
    out.resize(n);
    return out;
}

static std::string detok(const llama_vocab * v, const std::vector<llama_token> & toks, bool special) {
    std::string out(toks.size() * 8 + 16, '\0');
    int n = llama_detokenize(v, toks.data(), (int) toks.size(), &out[0], (int) out.size(), false, special);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(v, toks.data(), (int) toks.size(), &out[0], (int) out.size(), false, special);
    }
    out.resize(n);
    return out;
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s model.gguf cases\n", argv[0]);
        return 2;
    }
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "failed to load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * v = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(v);
    printf("vocab %d bos %d eos %d eot %d add_bos %d add_eos %d\n", n_vocab, llama_vocab_bos(v), llama_vocab_eos(v),
           llama_vocab_eot(v), (int) llama_vocab_get_add_bos(v), (int) llama_vocab_get_add_eos(v));
    printf("eog");
    for (int i = 0; i < n_vocab; i++) {
        if (llama_vocab_is_eog(v, i)) {
            printf(" %d", i);
        }
    }
    printf("\nattr");
    for (int i = 0; i < n_vocab; i++) {
        printf(" %d", (int) llama_vocab_get_attr(v, i));
    }
    printf("\n");
    for (int i = 0; i < n_vocab; i++) {
        printf("piece ");
        hex(piece(v, i, false));
        printf("|");
        hex(piece(v, i, true));
        printf("\n");
    }

    std::ifstream f(argv[2], std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    size_t pos = 0;
    while (pos + 6 <= data.size()) {
        const bool add_special = data[pos] != 0;
        const bool parse_special = data[pos + 1] != 0;
        uint32_t len = 0;
        for (int k = 0; k < 4; k++) {
            len |= (uint32_t) (unsigned char) data[pos + 2 + k] << (8 * k);
        }
        pos += 6;
        const std::string text = data.substr(pos, len);
        pos += len;
        std::vector<llama_token> toks(text.size() * 2 + 8);
        int n = llama_tokenize(v, text.data(), (int) text.size(), toks.data(), (int) toks.size(), add_special, parse_special);
        if (n < 0) {
            toks.resize(-n);
            n = llama_tokenize(v, text.data(), (int) text.size(), toks.data(), (int) toks.size(), add_special, parse_special);
        }
        toks.resize(n);
        printf("case");
        for (auto t : toks) {
            printf(" %d", t);
        }
        printf("\ndetok ");
        hex(detok(v, toks, false));
        printf("\ndetok_special ");
        hex(detok(v, toks, true));
        printf("\n");
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
