// `chord:memory64-store/store` for Node: a blob's name is a file path, read by range with
// fs.readSync at 64-bit (bigint) offsets. Component imports are called synchronously, so reads
// are synchronous too; each is one call for up to MAX_READ_LEN bytes (a tensor or a layer's
// worth), never one per row, since every guest-to-JS call costs microseconds.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** The most bytes one `blob.read` returns; the engine splits larger reads. */
export const MAX_READ_LEN = 64 * 1024 * 1024;

/** A store error as the component expects it: jco turns a thrown `payload` into `err(payload)`. */
class StoreError extends Error {
  constructor(tag, val) {
    super(typeof val === 'string' ? `${tag}: ${val}` : `${tag} (${val})`);
    this.payload = { tag, val };
  }
}

// Closes files whose blobs were dropped by the engine without being disposed.
const closer = new FinalizationRegistry((fd) => {
  try {
    closeSync(fd);
  } catch {
    // Already closed.
  }
});

export function maxReadLen() {
  return MAX_READ_LEN;
}

export class Blob {
  #fd;
  #size;
  #name;

  constructor(fd, size, name) {
    this.#fd = fd;
    this.#size = size;
    this.#name = name;
    closer.register(this, fd, this);
  }

  /** Opens the regular file at `name` (a path, relative to the working directory or absolute). */
  static open(name) {
    let fd;
    try {
      fd = openSync(name, 'r');
    } catch (e) {
      throw new StoreError('not-found', `${name}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
    }
    let stat;
    try {
      stat = fstatSync(fd, { bigint: true });
    } catch (e) {
      closeSync(fd);
      throw new StoreError('io', `${name}: ${e.message}`);
    }
    if (!stat.isFile()) {
      closeSync(fd);
      throw new StoreError('not-found', `${name}: not a regular file`);
    }
    return new Blob(fd, stat.size, name);
  }

  size() {
    return this.#size;
  }

  read(offset, len) {
    if (len > MAX_READ_LEN) {
      throw new StoreError('too-large', MAX_READ_LEN);
    }
    if (offset + BigInt(len) > this.#size) {
      throw new StoreError(
        'out-of-range',
        `${len} bytes at offset ${offset} of ${this.#name} (${this.#size} bytes)`,
      );
    }
    const buf = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      let n;
      try {
        n = readSync(this.#fd, buf, done, len - done, offset + BigInt(done));
      } catch (e) {
        throw new StoreError('io', `${this.#name}: ${e.message}`);
      }
      if (n === 0) {
        throw new StoreError(
          'io',
          `${this.#name} ended before offset ${offset + BigInt(done)}: it shrank since it was opened`,
        );
      }
      done += n;
    }
    return buf;
  }

  // Reads are synchronous and served by the OS page cache: nothing to start early.
  prefetch(_offset, _len) {}

  [Symbol.dispose]() {
    if (this.#fd !== undefined) {
      closer.unregister(this);
      closeSync(this.#fd);
      this.#fd = undefined;
    }
  }
}
