// Transpiles the engine component into gen/ with jco (@bytecodealliance/jco-transpile: jco's
// transpiler as a library) for instantiation by index.js, which supplies the store and compute
// imports. The component comes from `cargo build -p chord-engine --target wasm32-wasip2 --release`
// (scripts/build-standalone runs it), or from $CHORD_ENGINE_WASM.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transpile } from '@bytecodealliance/jco-transpile';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const wasm =
  process.env.CHORD_ENGINE_WASM ||
  join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'wasm32-wasip2', 'release', 'chord_engine.wasm');
if (!existsSync(wasm)) {
  console.error(
    `error: ${wasm} is missing: build it with scripts/build-standalone ` +
      '(or cargo build -p chord-engine --target wasm32-wasip2 --release)',
  );
  process.exit(1);
}

const out = join(here, 'gen');
const { files } = await transpile(wasm, { name: 'engine', instantiation: 'async', outDir: out });
rmSync(out, { recursive: true, force: true });
for (const [path, bytes] of Object.entries(files)) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, path.endsWith('.wasm') ? stripDebugInfo(bytes) : bytes);
}
console.error(`transpiled ${relative(process.cwd(), wasm)} into ${relative(process.cwd(), out)}`);

/**
 * Drops DWARF (`.debug_*` custom sections) from a core module: the release build keeps line
 * tables, about 80% of the file, which Node never reads. The `name` section stays for stack traces.
 */
function stripDebugInfo(bytes) {
  const leb = (at) => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[at++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return [value, at];
    }
  };
  const keep = [bytes.subarray(0, 8)];
  let at = 8;
  while (at < bytes.length) {
    const start = at;
    const id = bytes[at];
    const [size, body] = leb(at + 1);
    at = body + size;
    if (id === 0) {
      const [nameLen, nameAt] = leb(body);
      const name = new TextDecoder().decode(bytes.subarray(nameAt, nameAt + nameLen));
      if (name.startsWith('.debug_')) continue;
    }
    keep.push(bytes.subarray(start, at));
  }
  return Buffer.concat(keep);
}
