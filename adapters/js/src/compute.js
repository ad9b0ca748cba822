// `chord:compute/compute` with no devices: the engine computes with its own kernels (WebAssembly
// SIMD). The engine calls only `devices` while no device is offered, so that is all there is.

export function devices() {
  return [];
}
