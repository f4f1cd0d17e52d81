//! Build-time checks of event type strings, topics and key-path syntax: the rules (and
//! their words) are `openedx_events_rules`'s, the start-up checks use the same ones.

use openedx_events_rules::{event_type as type_rules, key_path as key_rules, topic as topic_rules};
use proc_macro2::Span;
use syn::{Ident, LitStr};

/// Checks `org.openedx.<subdomain>.<subject>.<action>.v<N>`.
pub fn event_type(lit: &LitStr) -> syn::Result<String> {
    let value = lit.value();
    match type_rules::check(&value) {
        Ok(()) => Ok(value),
        Err(e) => Err(syn::Error::new(lit.span(), e.to_string())),
    }
}

/// The hidden alias name the event attribute emits for a type string.
///
/// One name per type string, and two type strings never share one: letters and digits
/// are kept, and `_` starts a two-character escape (`.` is `__`, `_` is `_U`, `-` is
/// `_H`), which a valid type string (lowercase only) cannot spell otherwise.
pub fn alias_name(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len() * 2 + 17);
    out.push_str("__openedx_event__");
    for c in event_type.chars() {
        match c {
            '.' => out.push_str("__"),
            '_' => out.push_str("_U"),
            '-' => out.push_str("_H"),
            c => out.push(c),
        }
    }
    out
}

/// Kafka's topic-name rules.
pub fn topic(lit: &LitStr) -> syn::Result<String> {
    let t = lit.value();
    match topic_rules::check(&t) {
        Ok(()) => Ok(t),
        Err(e) => Err(syn::Error::new(lit.span(), topic_rules::message(&t, &e))),
    }
}

/// Keywords that are written `r#...` when they name a field (`r#type`).
const RAW_KEYWORDS: [&str; 48] = [
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "trait",
    "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// The identifier of a field named `name` (raw for a keyword such as `type`), or `None`
/// when no identifier is spelled so.
fn field_ident(name: &str, span: Span) -> Option<Ident> {
    if let Ok(mut ident) = syn::parse_str::<Ident>(name) {
        ident.set_span(span);
        return Some(ident);
    }
    RAW_KEYWORDS.contains(&name).then(|| Ident::new_raw(name, span))
}

/// Splits a key path into segments that are Rust field names, as identifiers spanned at
/// the literal.
pub fn key_path(lit: &LitStr) -> syn::Result<Vec<Ident>> {
    let p = lit.value();
    let syntax = |segment: &str| key_rules::SyntaxError::NotAFieldName { path: &p, segment }.to_string();
    if let Err(e) = key_rules::check_syntax(&p) {
        return Err(syn::Error::new(lit.span(), e.to_string()));
    }
    p.split('.')
        .map(|s| field_ident(s, lit.span()).ok_or_else(|| syn::Error::new(lit.span(), syntax(s))))
        .collect()
}
