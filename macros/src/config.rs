//! `producer_config! { ... }`: parse → validate → expand.
//!
//! ```text
//! producer_config! {
//!     "org.openedx.content_authoring.xblock.published.v1" => [
//!         { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
//!     ],
//!     XBlockDeleted => [ ... ],          // a type path works too
//! }
//! ```
//! `:` may stand for `=>`, and keys may be written as strings (`"topic": ...`), so a
//! Python `EVENT_BUS_PRODUCER_CONFIG` literal pastes in with few changes.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, LitBool, LitStr, Token};

use crate::valid;

enum EventRef {
    TypeString(LitStr),
    Path(syn::Path),
}

struct Entry {
    brace: Span,
    topic: Option<LitStr>,
    key: Option<LitStr>,
    enabled: Option<LitBool>,
}

struct EventBlock {
    event: EventRef,
    entries: Vec<Entry>,
}

const KEYS: [&str; 3] = ["topic", "event_key_field", "enabled"];

fn parse_key(input: ParseStream) -> syn::Result<(String, Span)> {
    if input.peek(LitStr) {
        let s: LitStr = input.parse()?;
        Ok((s.value(), s.span()))
    } else {
        let i = Ident::parse_any(input)?;
        Ok((i.to_string(), i.span()))
    }
}

fn suggestion(found: &str) -> String {
    KEYS.iter()
        .map(|k| (strsim_distance(found, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Plain Levenshtein distance, for the three key names only.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let content;
        let brace = braced!(content in input);
        let mut entry = Entry {
            brace: brace.span.join(),
            topic: None,
            key: None,
            enabled: None,
        };
        while !content.is_empty() {
            let (name, span) = parse_key(&content)?;
            content.parse::<Token![:]>()?;
            let dup = || syn::Error::new(span, format!("`{name}` is given twice in this entry"));
            match name.as_str() {
                "topic" | "event_key_field" => {
                    let lit: LitStr = content.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            format!("`{name}` must be a string literal, e.g. {name}: \"...\""),
                        )
                    })?;
                    let slot = if name == "topic" {
                        &mut entry.topic
                    } else {
                        &mut entry.key
                    };
                    if slot.replace(lit).is_some() {
                        return Err(dup());
                    }
                }
                "enabled" => {
                    let lit: LitBool = if content.peek(Ident) && !content.peek(LitBool) {
                        // Python's True/False pasted in.
                        let i: Ident = content.parse()?;
                        return Err(syn::Error::new(
                            i.span(),
                            format!("`enabled` must be `true` or `false`, found `{i}`"),
                        ));
                    } else {
                        content
                            .parse()
                            .map_err(|e| syn::Error::new(e.span(), "`enabled` must be `true` or `false`"))?
                    };
                    if entry.enabled.replace(lit).is_some() {
                        return Err(dup());
                    }
                }
                other => {
                    return Err(syn::Error::new(
                        span,
                        format!(
                            "unknown key `{other}`{}; an entry has `topic`, `event_key_field` and `enabled`",
                            suggestion(other)
                        ),
                    ))
                }
            }
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        Ok(entry)
    }
}

impl Parse for EventBlock {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let event = if input.peek(LitStr) {
            EventRef::TypeString(input.parse()?)
        } else {
            EventRef::Path(input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected an event type string (\"org.openedx....v1\") or an event struct path",
                )
            })?)
        };
        if input.peek(Token![=>]) {
            input.parse::<Token![=>]>()?;
        } else {
            input
                .parse::<Token![:]>()
                .map_err(|e| syn::Error::new(e.span(), "expected `=>` and a list of topic entries"))?;
        }
        let content;
        bracketed!(content in input);
        let entries = Punctuated::<Entry, Token![,]>::parse_terminated(&content)?;
        Ok(Self {
            event,
            entries: entries.into_iter().collect(),
        })
    }
}

fn parse(input: TokenStream) -> syn::Result<Vec<EventBlock>> {
    let blocks = Punctuated::<EventBlock, Token![,]>::parse_terminated.parse2(input)?;
    Ok(blocks.into_iter().collect())
}

struct CheckedRoute {
    topic: LitStr,
    key_lit: LitStr,
    segments: Vec<Ident>,
    enabled: LitBool,
}

fn validate(blocks: &[EventBlock]) -> syn::Result<Vec<(TokenStream, bool, Vec<CheckedRoute>)>> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut seen_types: HashMap<String, Span> = HashMap::new();
    let mut out = Vec::new();
    for block in blocks {
        let ty = match &block.event {
            EventRef::TypeString(lit) => match valid::event_type(lit) {
                Ok(t) => {
                    if seen_types.insert(t.clone(), lit.span()).is_some() {
                        push(syn::Error::new(
                            lit.span(),
                            format!("event type {t:?} is listed twice; put all its topics in one list"),
                        ));
                    }
                    let alias = format_ident!("{}", valid::alias_name(&t), span = lit.span());
                    quote!(#alias)
                }
                Err(e) => {
                    push(e);
                    continue;
                }
            },
            EventRef::Path(p) => quote!(#p),
        };
        let mut topics: HashMap<String, Span> = HashMap::new();
        let mut routes = Vec::new();
        for entry in &block.entries {
            let (Some(topic), Some(key_lit), Some(enabled)) = (&entry.topic, &entry.key, &entry.enabled) else {
                let missing: Vec<&str> = [
                    entry
                        .topic
                        .is_none()
                        .then_some("`topic` (e.g. topic: \"learning-course\")"),
                    entry
                        .key
                        .is_none()
                        .then_some("`event_key_field` (e.g. event_key_field: \"course.course_key\")"),
                    entry
                        .enabled
                        .is_none()
                        .then_some("`enabled` (enabled: true or enabled: false)"),
                ]
                .into_iter()
                .flatten()
                .collect();
                push(syn::Error::new(
                    entry.brace,
                    format!("this entry is missing {}", missing.join(", ")),
                ));
                continue;
            };
            match valid::topic(topic) {
                Ok(t) => {
                    if topics.insert(t.clone(), topic.span()).is_some() {
                        push(syn::Error::new(
                            topic.span(),
                            format!("topic {t:?} is configured twice for this event type (ADR 14): keep one entry"),
                        ));
                    }
                }
                Err(e) => push(e),
            }
            match valid::key_path(key_lit) {
                Ok(segments) => routes.push(CheckedRoute {
                    topic: topic.clone(),
                    key_lit: key_lit.clone(),
                    segments,
                    enabled: enabled.clone(),
                }),
                Err(e) => push(e),
            }
        }
        out.push((ty, matches!(block.event, EventRef::TypeString(_)), routes));
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

pub fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let blocks = parse(input)?;
    let checked = validate(&blocks)?;
    let mut routes = Vec::new();
    for (ty, by_string, list) in &checked {
        for r in list {
            let span = r.key_lit.span();
            let topic = &r.topic;
            let path = &r.key_lit;
            let enabled = &r.enabled;
            let first = &r.segments[0];
            let steps = r.segments[1..]
                .iter()
                .map(|f| quote_spanned!(span=> let __v = &::openedx_events::__private::nav(__v)?.#f;));
            let extract = quote_spanned! {span=>
                |__e: &#ty| {
                    let __v = &__e.#first;
                    #(#steps)*
                    ::openedx_events::__private::key_of(__v)
                }
            };
            let route = quote! {
                ::openedx_events::__private::compiled_route::<#ty>(#topic, #path, #enabled, #extract)
            };
            routes.push(if *by_string {
                // A type string names the hidden alias its event emits: catalog events are found
                // through the catalog's aliases, the user's own through those in scope here. The
                // glob stays inside this block, so it cannot shadow the user's own names.
                quote! {{
                    #[allow(unused_imports)]
                    use ::openedx_events::catalog::__aliases::*;
                    #route
                }}
            } else {
                route
            });
        }
    }
    Ok(quote! {
        ::openedx_events::__private::CompiledConfig::new(::std::vec::Vec::from([#(#routes),*]))
    })
}
