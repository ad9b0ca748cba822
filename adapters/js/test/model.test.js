// The Node package against llama.cpp's fixtures (tests/fixtures/reference) on SmolLM2-135M:
// greedy generation, tokenizer, chat template, and clear errors for bad paths.
// Needs `npm run build` (gen/) and the model, fetched by `chord pull smollm2-135m-instruct`;
// scripts/test.sh does both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ChordError, Model } from '../index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const PROMPT = 'The capital of France is';
const N = 16;

function modelPath() {
  const path =
    process.env.CHORD_MODEL ||
    (process.env.CHORD_MODELS_DIR
      ? join(process.env.CHORD_MODELS_DIR, FILE)
      : join(process.env.CHORD_CACHE_DIR || join(homedir(), '.cache', 'wasm-chord'), 'models', FILE));
  assert.ok(existsSync(path), `${path} is missing: fetch it with \`chord pull smollm2-135m-instruct\``);
  return path;
}

const fixture = (name) =>
  JSON.parse(readFileSync(join(root, 'tests', 'fixtures', 'reference', name), 'utf8'));

/** The capital case: prompt ids, greedy ids, and how many lead with a top-1 margin of at least 0.5. */
function capital() {
  const c = fixture('smollm2_dev.json').cases.find((c) => c.prompt === PROMPT);
  const n = c.prompt_tokens.length;
  let clear = 0;
  while (clear < c.greedy_tokens.length) {
    const top = c.positions[n - 1 + clear].top;
    if (top[0][1] - top[1][1] < 0.5) break;
    clear++;
  }
  return { prompt: c.prompt_tokens, greedy: c.greedy_tokens, clear };
}

/** The `chord` host's greedy ids (the same engine behind native imports), if it is built. */
function chordGreedy(path) {
  const chord =
    process.env.CHORD_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'release', 'chord');
  if (!existsSync(chord)) return undefined;
  const out = execFileSync(
    chord,
    ['run', '--model', path, '--prompt', PROMPT, '-n', String(N), '--temperature', '0', '--json'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return out
    .split('\n')
    .filter((l) => l.includes('"id"'))
    .map((l) => JSON.parse(l).id);
}

let model;
async function smollm2() {
  model ??= await Model.load(modelPath());
  return model;
}

test('greedy generation reproduces the reference tokens', async () => {
  const m = await smollm2();
  const want = capital();
  assert.deepEqual(m.tokenize(PROMPT), want.prompt, 'prompt tokens');

  const tokens = [];
  const it = m.generateTokens(PROMPT, { maxTokens: N, temperature: 0 });
  let r;
  while (!(r = await it.next()).done) tokens.push(r.value);
  const ids = tokens.map((t) => t.id);
  assert.equal(r.value.finishReason, 'max-tokens');
  assert.equal(r.value.usage.promptTokens, want.prompt.length);
  assert.equal(r.value.usage.completionTokens, N);

  // llama.cpp's tokens wherever its margin is clear; all of them exactly as the chord host
  // (the same engine code) gives them when it is built, else as llama.cpp's (today all 16 agree).
  assert.deepEqual(ids.slice(0, want.clear), want.greedy.slice(0, want.clear), 'clear-margin tokens');
  const host = chordGreedy(modelPath());
  assert.deepEqual(ids, host ?? want.greedy.slice(0, N), host ? 'vs chord run' : 'vs llama.cpp');

  // The text API streams the same pieces.
  let text = '';
  for await (const piece of m.generate(PROMPT, { maxTokens: N, temperature: 0 })) text += piece;
  assert.equal(text, tokens.map((t) => t.text).join(''));
  assert.ok(text.startsWith(' Paris.'), text);
});

test('seeded sampling repeats; breaking out of a generation frees its session', async () => {
  const m = await smollm2();
  const run = async (seed) => {
    let text = '';
    for await (const piece of m.generate('Once upon a time', { maxTokens: 8, temperature: 0.8, seed })) text += piece;
    return text;
  };
  const a = await run(42);
  assert.equal(await run(42), a);
  let n = 0;
  for await (const _ of m.generate(PROMPT, { temperature: 0 })) {
    if (++n === 2) break;
  }
  assert.equal(n, 2);
  // A new generation works after the early break.
  assert.equal(await run(42), a);
});

test('tokenizer matches llama.cpp', async () => {
  const m = await smollm2();
  for (const c of fixture('smollm2_tokenizer_dev.json').cases) {
    const ids = m.tokenize(c.text, { addSpecial: c.add_special, parseSpecial: c.parse_special });
    assert.deepEqual(ids, c.tokens, JSON.stringify(c.text));
  }
  assert.equal(m.detokenize(m.tokenize(' Paris. Berlin.')), ' Paris. Berlin.');
});

test('info and chat template', async () => {
  const m = await smollm2();
  const info = m.info();
  assert.equal(info.architecture, 'llama');
  assert.equal(info.hyperparameters.vocabSize, 49152);
  assert.equal(info.contextLength, 4096);
  assert.equal(typeof info.fileSize, 'bigint');
  assert.ok(info.hasChatTemplate);
  const text = m.applyChatTemplate([{ role: 'user', content: 'Hi' }]);
  assert.ok(text.includes('<|im_start|>user\nHi<|im_end|>\n'), text);
  assert.ok(text.endsWith('<|im_start|>assistant\n'), text);
});

test('bad paths and files are clear errors', async () => {
  const expect = async (path, code, part) => {
    await assert.rejects(Model.load(path), (e) => {
      assert.ok(e instanceof ChordError, String(e));
      assert.equal(e.code, code);
      assert.ok(e.message.includes(part), e.message);
      return true;
    });
  };
  await expect(join(here, 'no-such-model.gguf'), 'store', 'no such file');
  await expect(here, 'store', 'not a regular file');
  await expect(join(here, '..', 'package.json'), 'invalid-model', '');
});
