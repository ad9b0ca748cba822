// Reference outputs of llama.cpp for the sampler chain and the built-in chat formats.
// Our own code, calling llama.cpp's public API (include/llama.h); no model is needed.
// Build against a static libllama (see build.sh), run, and it prints JSON to stdout:
// tests/fixtures/sampling/llama_cpp_chain.json and tests/fixtures/chat/llama_cpp_builtin.json.
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static std::string esc(const std::string & s) {
    std::string o;
    for (unsigned char c : s) {
        switch (c) {
            case '"': o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\t': o += "\\t"; break;
            default:
                if (c < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; } else { o += (char) c; }
        }
    }
    return o;
}

// Distinct logits from integer arithmetic (exact in IEEE single precision, same in Rust):
// logit[i] = ((i * 7919) % m) / d - 5, with m prime or coprime to 7919 so no two are equal.
static std::vector<float> make_logits(int n, int m, float d) {
    std::vector<float> l(n);
    for (int i = 0; i < n; ++i) l[i] = (float) ((i * 7919) % m) / d - 5.0f;
    return l;
}

struct Cfg {
    const char * name; int n_vocab; int m; float d;
    uint32_t seed; float temp; int top_k; float top_p; float min_p; float typ_p;
    int last_n; float rep; float freq; float pres;
    std::vector<llama_logit_bias> bias;
};

static void run_sampler(const Cfg & c, bool first) {
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    // The order of common_sampler_init (common/sampling.cpp) with its default sampler list.
    if (!c.bias.empty()) llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(c.n_vocab, c.bias.size(), c.bias.data()));
    llama_sampler_chain_add(chain, llama_sampler_init_penalties(c.n_vocab, c.last_n, c.rep, c.freq, c.pres));
    llama_sampler_chain_add(chain, llama_sampler_init_top_k(c.top_k));
    llama_sampler_chain_add(chain, llama_sampler_init_typical(c.typ_p, 0));
    llama_sampler_chain_add(chain, llama_sampler_init_top_p(c.top_p, 0));
    llama_sampler_chain_add(chain, llama_sampler_init_min_p(c.min_p, 0));
    llama_sampler_chain_add(chain, llama_sampler_init_temp_ext(c.temp, 0.0f, 1.0f));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(c.seed));

    const std::vector<float> logits = make_logits(c.n_vocab, c.m, c.d);
    std::vector<llama_token_data> cur(c.n_vocab);
    printf("%s  {\"name\": \"%s\", \"n_vocab\": %d, \"m\": %d, \"d\": %g, \"seed\": %u, \"temperature\": %g, \"top_k\": %d, "
           "\"top_p\": %g, \"min_p\": %g, \"typical_p\": %g, \"repeat_last_n\": %d, \"repeat_penalty\": %g, "
           "\"frequency_penalty\": %g, \"presence_penalty\": %g, \"logit_bias\": [",
           first ? "" : ",\n", c.name, c.n_vocab, c.m, c.d, c.seed, c.temp, c.top_k, c.top_p, c.min_p, c.typ_p,
           c.last_n, c.rep, c.freq, c.pres);
    for (size_t i = 0; i < c.bias.size(); ++i) {
        if (std::isinf(c.bias[i].bias)) printf("%s[%d, \"-inf\"]", i ? ", " : "", c.bias[i].token);
        else printf("%s[%d, %g]", i ? ", " : "", c.bias[i].token, c.bias[i].bias);
    }
    printf("], \"tokens\": [");
    for (int step = 0; step < 48; ++step) {
        for (int i = 0; i < c.n_vocab; ++i) cur[i] = { i, logits[i], 0.0f };
        llama_token_data_array arr = { cur.data(), cur.size(), -1, false };
        llama_sampler_apply(chain, &arr);
        const llama_token id = arr.data[arr.selected].id;
        llama_sampler_accept(chain, id);
        printf("%s%d", step ? ", " : "", id);
    }
    printf("]}");
    llama_sampler_free(chain);
}

static void run_chat(const char * tmpl, const char * conv, const std::vector<llama_chat_message> & msgs, bool add_ass, bool first) {
    std::vector<char> buf(1 << 16);
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_ass, buf.data(), buf.size());
    printf("%s  {\"template\": \"%s\", \"conversation\": \"%s\", \"add_generation_prompt\": %s, ",
           first ? "" : ",\n", tmpl, conv, add_ass ? "true" : "false");
    if (n < 0) printf("\"error\": %d}", n);
    else printf("\"expected\": \"%s\"}", esc(std::string(buf.data(), n)).c_str());
}

int main(int argc, char ** argv) {
    const bool chat = argc > 1 && strcmp(argv[1], "chat") == 0;
    if (!chat) {
        const float NINF = -INFINITY;
        std::vector<Cfg> cfgs = {
            { "defaults",          1000, 1000,  100.f, 42,   0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "greedy",            1000, 1000,  100.f, 42,   0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "greedy_penalties",  1000, 1000,  100.f, 42,   0.0f, 40, 0.95f, 0.05f, 1.0f, 16, 1.3f, 0.1f, 0.2f, {} },
            { "hot_wide",          1000, 1000,  100.f, 7,    1.5f,  0, 1.0f,  0.0f,  1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "top_k_only",        1000, 1000,  100.f, 123,  1.0f, 10, 1.0f,  0.0f,  1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "top_p_only",        1000, 1000,  100.f, 9,    1.0f,  0, 0.7f,  0.0f,  1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "min_p_unsorted",    1000, 1000,  100.f, 5,    1.0f,  0, 1.0f,  0.2f,  1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "typical",           1000, 1000,  100.f, 11,   1.0f,  0, 1.0f,  0.0f,  0.5f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "penalties",         1000, 1000,  100.f, 3,    0.9f, 40, 0.95f, 0.05f, 1.0f, 8,  1.5f, 0.3f, 0.4f, {} },
            { "logit_bias",        1000, 1000,  100.f, 99,   0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 1.0f, 0.0f, 0.0f,
              { { 321, NINF }, { 642, NINF }, { 3, 2.0f }, { 500, 4.9f }, { 963, -0.5f } } },
            { "large_vocab_top_p", 4000, 4001, 400.f, 2024, 1.0f,  0, 0.9f,  0.0f,  1.0f, 64, 1.0f, 0.0f, 0.0f, {} },
            { "large_vocab_all",   4000, 4001, 400.f, 77,   0.7f, 300, 0.8f, 0.02f, 0.9f, 32, 1.1f, 0.05f, 0.05f, {} },
        };
        printf("[\n");
        for (size_t i = 0; i < cfgs.size(); ++i) run_sampler(cfgs[i], i == 0);
        printf("\n]\n");
        return 0;
    }
    const std::vector<llama_chat_message> single = { { "user", "What is the boiling point of water?" } };
    const std::vector<llama_chat_message> multi = {
        { "system", "  You are terse.  " },
        { "user", "Hi there." },
        { "assistant", " Hello! How can I help? " },
        { "user", "Write a haiku about the sea." },
    };
    const std::vector<llama_chat_message> unicode = {
        { "user", "Ça va? \"quotes\" and \\backslash\\\nnew line — 日本語 🦀" },
        { "assistant", "Très bien.\ttab" },
    };
    const char * tmpls[] = { "chatml", "llama2-sys", "llama3", "gemma", "phi3", "mistral-v3" };
    printf("[\n");
    bool first = true;
    for (const char * t : tmpls) {
        for (bool add : { false, true }) {
            run_chat(t, "single", single, add, first); first = false;
            run_chat(t, "multi", multi, add, false);
            run_chat(t, "unicode", unicode, add, false);
        }
    }
    printf("\n]\n");
    return 0;
}
