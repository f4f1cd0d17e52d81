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
    openedx_events_rules::suggest::nearest(found, &KEYS)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
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

fn validate(blocks: &[EventBlock]) -> syn::Result<Vec<Vec<CheckedRoute>>> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut seen_types: HashMap<String, Span> = HashMap::new();
    let mut out = Vec::new();
    for block in blocks {
        match &block.event {
            EventRef::TypeString(lit) => match valid::event_type(lit) {
                Ok(t) => {
                    if seen_types.insert(t.clone(), lit.span()).is_some() {
                        push(syn::Error::new(
                            lit.span(),
                            format!("event type {t:?} is listed twice; put all its topics in one list"),
                        ));
                    }
                }
                Err(e) => {
                    push(e);
                    continue;
                }
            },
            EventRef::Path(_) => {}
        }
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
        out.push(routes);
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One route: the key path checked during constant evaluation (against the field tree
/// the event's macro emitted), then read by generated field access.
///
/// If the check fails, its constant panics with the start-up check's sentence, spanned at
/// the path, and `__Keyed` is an error type: the compiler then reports nothing else about
/// the route (no `no field` error, and none of its `help:`s that would replace the string).
fn route(r: &CheckedRoute) -> TokenStream {
    let span = r.key_lit.span();
    let topic = &r.topic;
    let path = &r.key_lit;
    let enabled = &r.enabled;
    let first = &r.segments[0];
    let steps = r.segments[1..]
        .iter()
        .map(|f| quote_spanned!(span=> let __v = &::openedx_events::__private::nav(__v)?.#f;));
    let check = quote_spanned! {span=>
        const EVENT_KEY_FIELD: usize = ::openedx_events::__private::key_path_of::<__Event>(#path);
    };
    quote! {{
        #check
        type __Keyed = <[(); EVENT_KEY_FIELD] as ::openedx_events::__private::Pick<__Event>>::Out;
        ::openedx_events::__private::compiled_route::<__Keyed>(#topic, #path, #enabled, |__e: &__Keyed| {
            let __v = &__e.#first;
            #(#steps)*
            ::openedx_events::__private::key_of(__v)
        })
    }}
}

/// Pushes the routes of one event (named `__Event` inside) onto `__openedx_routes`.
fn event_block(event: &EventRef, routes: &[CheckedRoute]) -> TokenStream {
    let routes: Vec<TokenStream> = routes
        .iter()
        .map(|r| {
            let r = route(r);
            quote!(__openedx_routes.push(#r);)
        })
        .collect();
    let lit = match event {
        EventRef::Path(p) => {
            return quote! {{
                type __Event = #p;
                #(#routes)*
            }}
        }
        EventRef::TypeString(lit) => lit,
    };
    let t = lit.value();
    let alias = format_ident!("{}", valid::alias_name(&t), span = lit.span());
    if crate::expand::declared_here(&t) {
        // An event of this crate, declared before: its alias is in scope wherever the
        // user brought it (an import inside a function body too).
        return quote! {{
            type __Event = #alias;
            #(#routes)*
        }};
    }
    // A catalog event, an event of another crate, or a mistake. The alias is looked up
    // among the catalog's aliases and the names of this module; if neither has it, it is
    // the fallback below, whose check says what is wrong instead of the compiler's
    // "cannot find type `__openedx_event__...`".
    let seen = crate::expand::declared_types();
    let check = quote_spanned! {lit.span()=>
        const EVENT_TYPE: usize = ::openedx_events::__private::event_in_scope(
            <#alias as ::openedx_events::__private::MaybeEvent>::EVENT_TYPE,
            #lit,
            &[#(#seen),*],
        );
    };
    quote! {{
        #[allow(non_camel_case_types, dead_code)]
        type #alias = ::openedx_events::__private::UnknownEvent;
        {
            #[allow(unused_imports)]
            use self::*;
            #[allow(unused_imports)]
            use ::openedx_events::catalog::__aliases::*;
            #check
            type __Event = <[(); EVENT_TYPE] as ::openedx_events::__private::Pick<#alias>>::Out;
            #(#routes)*
        }
    }}
}

pub fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let blocks = parse(input)?;
    let checked = validate(&blocks)?;
    let events = blocks
        .iter()
        .zip(&checked)
        .map(|(b, routes)| event_block(&b.event, routes));
    Ok(quote! {{
        let mut __openedx_routes = ::std::vec::Vec::new();
        #(#events)*
        ::openedx_events::__private::CompiledConfig::new(__openedx_routes)
    }})
}
