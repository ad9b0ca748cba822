// `chord:compute/compute` with no devices: the engine computes with its own kernels (WebAssembly
// SIMD). The engine calls only `devices` while no device is offered; `Matrix`, `KvCache` and `Program` exist
// because the component imports the resource types, and can never be made (jco turns a thrown
// value into the `err` of a `result`).

export function devices() {
  return [];
}

export class Matrix {
  static fromBlob(device) {
    throw { tag: 'no-device', val: `device ${device}: this compute provider has no devices` };
  }

  matmul() {
    throw { tag: 'no-device', val: 'this compute provider has no devices' };
  }
}

export class KvCache {
  static create(device) {
    throw { tag: 'no-device', val: `device ${device}: this compute provider has no devices` };
  }

  attend() {
    throw { tag: 'no-device', val: 'this compute provider has no devices' };
  }

  shift() {
    throw { tag: 'no-device', val: 'this compute provider has no devices' };
  }
}

export class Program {
  static create(device) {
    throw { tag: 'no-device', val: `device ${device}: this compute provider has no devices` };
  }

  run() {
    throw { tag: 'no-device', val: 'this compute provider has no devices' };
  }
}
