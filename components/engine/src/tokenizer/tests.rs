//! Unit tests of the tokenizer internals and of its handling of synthetic and hostile vocabularies.

use super::*;

#[test]
fn every_pre_tokenizer_compiles() {
    for name in pre::NAMES {
        let cfg = pre::lookup(name).unwrap_or_else(|| panic!("{name} not found"));
        for e in cfg.exprs {
            if let Err(err) = unicode::compile(e) {
                panic!("{name}: {err}");
            }
        }
    }
}
