//! wasm-chord host library: everything `chord` needs that is not the CLI itself.
