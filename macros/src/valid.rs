//! Validation of event type strings, topics and key paths at build time.

use proc_macro2::Span;
use syn::{Ident, LitStr};

/// Checks `org.openedx.<subdomain>.<subject>.<action>.v<N>`.
pub fn event_type(lit: &LitStr) -> syn::Result<String> {
    let value = lit.value();
    let fail = |why: &str| {
        Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid event type {value:?}: {why}; expected \"org.openedx.<subdomain>.<subject>.<action>.v<N>\" (lowercase), e.g. \"org.openedx.learning.course.enrollment.created.v1\""
            ),
        ))
    };
    let Some(rest) = value.strip_prefix("org.openedx.") else {
        return fail("it must start with `org.openedx.`");
    };
    let segments: Vec<&str> = rest.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return fail("it has an empty segment");
    }
    if let Some(bad) = segments.iter().find(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }) {
        return fail(&format!(
            "segment `{bad}` may only hold lowercase letters, digits, `_` and `-`"
        ));
    }
    if segments.len() < 3 {
        return fail("it needs a subdomain, a subject and an action");
    }
    // The `.v<N>` suffix is not enforced: openedx-events 11 has two event types
    // without it (org.openedx.authz.role_assignment.*).
    Ok(value)
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
    let why = if t.is_empty() {
        Some("it is empty".to_owned())
    } else if t.len() > 249 {
        Some(format!("it has {} characters; at most 249 are allowed", t.len()))
    } else if t == "." || t == ".." {
        Some("`.` and `..` are reserved".to_owned())
    } else {
        t.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("{c:?} is not allowed; use ASCII letters, digits, `.`, `_` and `-`"))
    };
    match why {
        Some(why) => Err(syn::Error::new(lit.span(), format!("invalid topic {t:?}: {why}"))),
        None => Ok(t),
    }
}

/// Keywords that are written `r#...` when they name a field (`r#type`); `_`, `self`,
/// `Self`, `super` and `crate` cannot name a field at all.
const RAW_KEYWORDS: [&str; 46] = [
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "trait",
    "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
    "priv", "typeof", "unsized", "virtual", "yield",
];

/// The identifier of a field named `name` (raw for a keyword such as `type`), or `None`
/// when no field can have that name.
fn field_ident(name: &str, span: Span) -> Option<Ident> {
    if let Ok(mut ident) = syn::parse_str::<Ident>(name) {
        ident.set_span(span);
        return Some(ident);
    }
    let raw_ok = RAW_KEYWORDS.contains(&name) || matches!(name, "try" | "gen");
    raw_ok.then(|| Ident::new_raw(name, span))
}

/// Splits a key path into segments that are Rust field names, as identifiers spanned at
/// the literal.
pub fn key_path(lit: &LitStr) -> syn::Result<Vec<Ident>> {
    let p = lit.value();
    let mut idents = Vec::new();
    for s in p.split('.') {
        let why = match s {
            "" => Some("is not a field name".to_owned()),
            "_" | "self" | "Self" | "super" | "crate" => {
                Some(format!("is not a field name: no field can be named `{s}`"))
            }
            _ => None,
        };
        match (why, field_ident(s, lit.span())) {
            (None, Some(ident)) => idents.push(ident),
            (why, _) => {
                let why = why.unwrap_or_else(|| "is not a field name".to_owned());
                return Err(syn::Error::new(
                    lit.span(),
                    format!("invalid event_key_field {p:?}: segment {s:?} {why}; write a period-delimited path of fields, e.g. \"xblock_info.usage_key\""),
                ));
            }
        }
    }
    Ok(idents)
}
