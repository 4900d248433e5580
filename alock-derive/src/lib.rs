//! `#[derive(AdvisoryKey)]` for the `alock` crate. Use it through `alock`,
//! which re-exports it under the same name as the trait.

use proc_macro::TokenStream;

/// Derives `alock::AdvisoryKey`; see the `alock` crate documentation.
#[proc_macro_derive(AdvisoryKey, attributes(advisory_key))]
pub fn derive_advisory_key(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
