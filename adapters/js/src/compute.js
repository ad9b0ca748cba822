// `chord:compute/compute` with no devices: the engine computes with its own kernels (WebAssembly
// SIMD). The engine calls only `devices` while no device is offered; `Matrix` exists because the
// component imports the resource type, and can never be made (jco turns a thrown value into the
// `err` of a `result`).

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
