// wasm-chord for Node: the engine component (transpiled by jco into gen/, see build.mjs) with
// JS implementations of its imports: the model store over Node's fs (src/store.js) and a compute
// provider with no devices (src/compute.js).
import { readFile } from 'node:fs/promises';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

import { instantiate } from './gen/engine.js';
import * as store from './src/store.js';
import * as compute from './src/compute.js';

/** An error from the engine; `code` is the WIT error case ("invalid-model", "store", …). */
export class ChordError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'ChordError';
    this.code = code;
  }
}

/** Engine errors arrive as the WIT error value `{tag, val}` (or jco's ComponentError with it as `payload`). */
function call(f) {
  try {
    return f();
  } catch (e) {
    const p = e?.payload ?? e;
    if (p && typeof p.tag === 'string') {
      throw new ChordError(p.tag, String(p.val));
    }
    throw e;
  }
}

// Compiled once per process; each model gets an instance (its own linear memory, up to 4 GiB).
const modules = new Map();
function coreModule(name) {
  if (!modules.has(name)) {
    modules.set(name, readFile(new URL(`./gen/${name}`, import.meta.url)).then((b) => WebAssembly.compile(b)));
  }
  return modules.get(name);
}

async function newEngine() {
  const imports = {
    ...new WASIShim().getImportObject(),
    'chord:memory64-store/store': store,
    'chord:compute/compute': compute,
  };
  // jco's async instantiation awaits what `getCoreModule` returns.
  const instance = await instantiate(coreModule, imports);
  return instance.inference;
}

const SAMPLER_DEFAULTS = {
  // llama.cpp's defaults, as `chord run`'s.
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
};

function samplerOptions(o = {}) {
  const s = { ...SAMPLER_DEFAULTS };
  for (const k of Object.keys(SAMPLER_DEFAULTS)) {
    if (o[k] !== undefined) s[k] = o[k];
  }
  return {
    ...s,
    logitBias: (o.logitBias ?? []).map(({ token, bias }) => ({ token, bias })),
    seed: o.seed === undefined || o.seed === null ? undefined : BigInt(o.seed),
    maxTokens: o.maxTokens ?? undefined,
    stop: o.stop ?? [],
    ignoreEos: o.ignoreEos ?? false,
  };
}

/** Lets other tasks run between tokens: engine calls are synchronous. */
const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A loaded GGUF model. */
export class Model {
  #model;
  #contextLength;

  constructor(model) {
    this.#model = model;
  }

  /**
   * Loads the GGUF file at `path`.
   * @param {string} path
   * @param {{contextLength?: number, contextShift?: boolean}} [options]
   */
  static async load(path, options = {}) {
    const inference = await newEngine();
    const model = call(() =>
      inference.Model.load(path, {
        contextLength: options.contextLength ?? 4096,
        cacheBudgetBytes: undefined,
        contextShift: options.contextShift ?? false,
        prefetchLayers: 1,
      }),
    );
    return new Model(model);
  }

  /** Facts about the model (u64 fields are bigints). */
  info() {
    return call(() => this.#model.info());
  }

  /** Text to token ids; by default special tokens are added per metadata and special-token text is parsed. */
  tokenize(text, { addSpecial = true, parseSpecial = true } = {}) {
    return Array.from(call(() => this.#model.tokenize(text, addSpecial, parseSpecial)));
  }

  /** Token ids to text. */
  detokenize(tokens, { removeSpecial = false, unparseSpecial = false } = {}) {
    return call(() => this.#model.detokenize(Uint32Array.from(tokens), removeSpecial, unparseSpecial));
  }

  /** Renders `messages` ({role, content}) with the model's chat template (or `template`). */
  applyChatTemplate(messages, { addGenerationPrompt = true, template } = {}) {
    const m = messages.map(({ role, content }) => ({ role, content }));
    return call(() => this.#model.applyChatTemplate(m, addGenerationPrompt, template ?? undefined));
  }

  /**
   * Generates a continuation of `prompt` in a fresh session: yields {id, text} per token and
   * returns {finishReason, usage}.
   */
  async *generateTokens(prompt, options = {}) {
    const session = call(() =>
      this.#model.newSession({
        contextLength: undefined,
        keepTokens: 0,
        batchSize: undefined,
        flashAttention: false,
      }),
    );
    let generation;
    try {
      const ids = call(() => this.#model.tokenize(prompt, true, true));
      generation = call(() => session.generate(ids, samplerOptions(options)));
      for (;;) {
        const token = call(() => generation.next());
        if (token === undefined) break;
        yield { id: token.id, text: token.text };
        await tick();
      }
      return { finishReason: generation.finishReason(), usage: generation.usage() };
    } finally {
      // Also on an early `break`: the generation and session are dropped at once.
      generation?.[Symbol.dispose]();
      session[Symbol.dispose]();
    }
  }

  /** Like generateTokens, yielding each token's text. */
  async *generate(prompt, options = {}) {
    const it = this.generateTokens(prompt, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      yield r.value.text;
    }
  }

  /** Frees the model (also done by the garbage collector). */
  dispose() {
    this.#model[Symbol.dispose]();
  }

  [Symbol.dispose]() {
    this.dispose();
  }
}
