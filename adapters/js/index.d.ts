// Types of wasm-chord's Node API (index.js). The engine's own records (model info, usage, finish
// reasons) are those jco generated from the WIT (gen/interfaces/chord-llm-inference.d.ts).
import type {
  ChatMessage,
  FinishReason,
  ModelInfo,
  Usage,
} from './gen/interfaces/chord-llm-inference.js';

export type { ChatMessage, FinishReason, ModelInfo, Usage };

/** The WIT error cases of `chord:llm/inference`. */
export type ErrorCode =
  | 'invalid-model'
  | 'unsupported'
  | 'invalid-argument'
  | 'context-full'
  | 'store'
  | 'compute'
  | 'out-of-memory'
  | 'cancelled';

/** An error from the engine. */
export class ChordError extends Error {
  /** Which kind of failure, e.g. `store` for a missing file. */
  readonly code: ErrorCode;
}

/** How to load a model. */
export interface LoadOptions {
  /** Context length of sessions in tokens (default 4096, as `chord run`). */
  contextLength?: number;
  /** When the context fills, drop the oldest tokens instead of stopping (default false). */
  contextShift?: boolean;
}

/** How to generate (llama.cpp's sampler chain; the defaults are llama.cpp's). */
export interface GenerateOptions {
  /** Stop after this many tokens (default: until an end token or the end of the context). */
  maxTokens?: number;
  /** Softmax temperature; 0 is greedy (default 0.8). */
  temperature?: number;
  /** Seed of the random draw (default: random). */
  seed?: number | bigint;
  /** Keep the k most likely tokens; 0 keeps all (default 40). */
  topK?: number;
  /** Nucleus sampling mass; 1 keeps all (default 0.95). */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely (default 0.05). */
  minP?: number;
  /** Penalise recent tokens; 1 is off (default 1). */
  repeatPenalty?: number;
  /** How many recent tokens the penalties look at (default 64). */
  repeatLastN?: number;
  /** Subtracted per occurrence of a recent token (default 0). */
  frequencyPenalty?: number;
  /** Subtracted once for any recent token (default 0). */
  presencePenalty?: number;
  /** Added to given tokens' logits. */
  logitBias?: { token: number; bias: number }[];
  /** Stop when the text contains one of these (not returned). */
  stop?: string[];
  /** Keep going past end-of-generation tokens. */
  ignoreEos?: boolean;
}

/** One generated token. */
export interface Token {
  /** Token id. */
  id: number;
  /** The text it completes (may be empty inside a multi-byte character). */
  text: string;
}

/** How a generation ended. */
export interface GenerationResult {
  finishReason: FinishReason | undefined;
  usage: Usage;
}

/** A loaded GGUF model, running in its own instance of the engine component. */
export class Model implements Disposable {
  private constructor();
  /** Loads the GGUF file at `path` (read by range, never whole). */
  static load(path: string, options?: LoadOptions): Promise<Model>;
  /** Facts about the model (64-bit fields are bigints). */
  info(): ModelInfo;
  /** Text to token ids; special tokens are added per metadata and special-token text is parsed by default. */
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): number[];
  /** Token ids to text. */
  detokenize(tokens: ArrayLike<number>, options?: { removeSpecial?: boolean; unparseSpecial?: boolean }): string;
  /** Renders a conversation with the model's chat template (or `template`). */
  applyChatTemplate(
    messages: ChatMessage[],
    options?: { addGenerationPrompt?: boolean; template?: string },
  ): string;
  /** Streams the text of each generated token; a fresh session per call. */
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string, GenerationResult, void>;
  /** Streams each generated token's id and text; a fresh session per call. */
  generateTokens(prompt: string, options?: GenerateOptions): AsyncGenerator<Token, GenerationResult, void>;
  /** Frees the model now rather than at garbage collection. */
  dispose(): void;
  [Symbol.dispose](): void;
}
