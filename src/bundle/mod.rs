//! Bundle uploads: safe extraction of untrusted tar streams (`extract`), and the
//! checks of an uploaded bundle's `config.json` before it reaches the runtime.

pub mod extract;
