//! Fuzzes the GGUF reader and what is built from a header (summary; tokenizer and hyperparameters
//! once they exist): any input must give Ok or a clean error, never a panic, hang or huge allocation.
#![no_main]

use chord_engine::gguf::Gguf;
use chord_engine::info::ModelSummary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::read(data) {
        let _ = ModelSummary::from_gguf(&g);
        for t in &g.tensors {
            let _ = g.tensor_data_offset(t);
        }
    }
});
