//! Procedural macros of [`openedx-events`](https://docs.rs/openedx-events).
//! Use them through that crate, which re-exports them.
//!
//! Each macro is parse (`ast`, `attr`, `config::parse`) → validate (`valid`) →
//! expand (`expand`, `config::expand`); errors are `syn::Error`s spanned at the
//! offending token.

mod ast;
mod attr;
mod config;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Declares an Open edX event: `#[openedx_event("org.openedx.<subdomain>.<subject>.<action>.v<N>")]`,
/// optionally with `minor_version = N`, on a struct with named fields.
#[proc_macro_attribute]
pub fn openedx_event(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match expand::event(args, &input) {
        Ok(tokens) => tokens.into(),
        // The struct is still emitted, so only the real error shows (not every use of it).
        Err(e) => expand::with_error(input, e).into(),
    }
}

/// Derives the record traits of a data type used inside events (the equivalent of
/// an openedx-events attrs data class). `#[event_data(name = "...")]` renames the
/// Avro record.
#[proc_macro_derive(EventData, attributes(event_data))]
pub fn derive_event_data(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match expand::data(&input) {
        Ok(tokens) => tokens.into(),
        // With a stand-in impl, a use of the type (a field of an event) adds no error.
        Err(e) => expand::data_fallback(&input, e).into(),
    }
}

/// Declares the producer configuration (ADR 12 shape), checked at build time.
#[proc_macro]
pub fn producer_config(input: TokenStream) -> TokenStream {
    let input = proc_macro2::TokenStream::from(input);
    config::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
