//! Forward passes, one file per architecture, each readable top to bottom like llama2.c's
//! `forward`: the tensors a layer has, then the steps of a batch through the layers with the shape
//! of every intermediate. The numeric kernels they call are in `model::ops`.

pub(crate) mod gemma;
pub(crate) mod gemma2;
pub(crate) mod gemma3;
pub(crate) mod llama;
pub(crate) mod phi3;
pub(crate) mod qwen3;
