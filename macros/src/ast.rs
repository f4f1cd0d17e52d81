//! The parsed form of a struct given to `#[openedx_event]` or `#[derive(EventData)]`.

use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Ident, Type, Visibility};

use crate::attr;

/// A struct with named fields.
pub struct Record<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub doc: String,
    pub fields: Vec<Field<'a>>,
}

/// One named field.
pub struct Field<'a> {
    pub ident: &'a Ident,
    /// The name on the wire (the identifier without `r#`).
    pub name: String,
    pub ty: &'a Type,
    pub doc: String,
}

impl<'a> Record<'a> {
    pub fn from_input(input: &'a DeriveInput, what: &str) -> syn::Result<Self> {
        let data = match &input.data {
            Data::Struct(s) => s,
            Data::Enum(e) => {
                return Err(syn::Error::new(
                    e.enum_token.span,
                    format!("{what} must be a struct with named fields, not an enum"),
                ))
            }
            Data::Union(u) => {
                return Err(syn::Error::new(
                    u.union_token.span,
                    format!("{what} must be a struct with named fields, not a union"),
                ))
            }
        };
        if let Some(param) = input.generics.params.first() {
            return Err(syn::Error::new_spanned(
                param,
                format!("{what} cannot have generic parameters"),
            ));
        }
        let named = match &data.fields {
            Fields::Named(n) => n,
            Fields::Unnamed(u) => {
                return Err(syn::Error::new_spanned(
                    u,
                    format!(
                        "{what} must have named fields: write `struct {} {{ name: Type, ... }}`",
                        input.ident
                    ),
                ))
            }
            Fields::Unit => {
                return Err(syn::Error::new(
                    data.semi_token.map_or_else(|| input.ident.span(), |s| s.span),
                    format!("{what} must have named fields: a unit struct carries no data"),
                ))
            }
        };
        let fields = named
            .named
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("named field");
                Field {
                    ident,
                    name: ident.unraw().to_string(),
                    ty: &f.ty,
                    doc: attr::doc(&f.attrs),
                }
            })
            .collect();
        Ok(Self {
            ident: &input.ident,
            vis: &input.vis,
            doc: attr::doc(&input.attrs),
            fields,
        })
    }
}
