//! Attribute arguments: `#[openedx_event("type", minor_version = N)]`,
//! `#[event_data(name = "...")]` and doc comments.

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Lit, LitInt, LitStr, Meta, Token};

/// Arguments of `#[openedx_event(...)]`.
pub struct EventArgs {
    pub event_type: LitStr,
    pub minor_version: Option<LitInt>,
}

impl Parse for EventArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(
                "missing event type: write #[openedx_event(\"org.openedx.<subdomain>.<subject>.<action>.v1\")]",
            ));
        }
        let event_type: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the event type as a string: #[openedx_event(\"org.openedx.<subdomain>.<subject>.<action>.v1\")]",
            )
        })?;
        let mut minor_version = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let name: syn::Ident = input.parse()?;
            if name != "minor_version" {
                return Err(syn::Error::new(
                    name.span(),
                    format!("unknown argument `{name}`: the only option is `minor_version = N`"),
                ));
            }
            input.parse::<Token![=]>()?;
            let lit: LitInt = input.parse()?;
            lit.base10_parse::<u32>()?;
            if minor_version.replace(lit).is_some() {
                return Err(syn::Error::new(name.span(), "`minor_version` is given twice"));
            }
        }
        Ok(Self {
            event_type,
            minor_version,
        })
    }
}

pub fn event_args(tokens: TokenStream) -> syn::Result<EventArgs> {
    EventArgs::parse.parse2(tokens)
}

/// `#[event_data(name = "...")]`: the Avro record name, if renamed.
pub fn record_name(attrs: &[Attribute]) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("event_data")) {
        let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
        for meta in metas {
            match meta {
                Meta::NameValue(nv) if nv.path.is_ident("name") => match nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => name = Some(s),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "expected a string: name = \"RecordName\"",
                        ))
                    }
                },
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "unknown option: the only option is name = \"RecordName\"",
                    ))
                }
            }
        }
    }
    Ok(name)
}

/// The doc comment, lines trimmed and joined with `\n`.
pub fn doc(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The first paragraph of a doc comment, on one line.
pub fn first_paragraph(doc: &str) -> String {
    doc.split("\n\n")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
