//! `#[derive(AdvisoryKey)]` for the `alock` crate. Use it through `alock`,
//! which re-exports it under the same name as the trait and documents it.
//!
//! The pipeline runs one way: `attr` parses `#[advisory_key(...)]`,
//! `ast` gives a typed view of the struct, `valid` checks it and decides
//! the key's shape, `expand` writes the impls. Every stage reports into one
//! `ctxt::Errors`, so a user sees all independent mistakes in one build.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `alock::AdvisoryKey`; see the `alock` crate documentation.
#[proc_macro_derive(AdvisoryKey, attributes(advisory_key))]
pub fn derive_advisory_key(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
