//! Code generation for `#[openedx_event]` and `#[derive(EventData)]`: small impls
//! that call into `openedx_events::__private`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::Record;
use crate::{attr, valid};

/// `#[derive(EventData)]`.
pub fn data(input: &DeriveInput) -> syn::Result<TokenStream> {
    let record = Record::from_input(input, "#[derive(EventData)]")?;
    let name = attr::record_name(&input.attrs)?.map_or_else(|| record.ident.to_string(), |l| l.value());
    let ident = record.ident;
    let common = record_impls(&record, &name);
    Ok(quote! {
        #common
        impl ::openedx_events::__private::EventField for #ident {
            const SHAPE: ::openedx_events::__private::Shape = ::openedx_events::__private::Shape::Record(<Self as ::openedx_events::__private::EventDataInfo>::RECORD);
            fn avro_schema(cx: &mut ::openedx_events::__private::SchemaContext) -> ::openedx_events::__private::serde_json::Value {
                ::openedx_events::__private::avro_record_schema::<Self>(cx)
            }
            fn serialize_field<__S: ::openedx_events::__private::serde::Serializer>(&self, serializer: __S) -> ::std::result::Result<__S::Ok, __S::Error> {
                ::openedx_events::__private::serde::Serialize::serialize(self, serializer)
            }
            fn deserialize_field<'de, __D: ::openedx_events::__private::serde::Deserializer<'de>>(deserializer: __D) -> ::std::result::Result<Self, __D::Error> {
                ::openedx_events::__private::deserialize_record::<Self, __D>(deserializer, ::openedx_events::__private::ReadMode::Exact)
            }
            fn deserialize_field_in<'de, __D: ::openedx_events::__private::serde::Deserializer<'de>>(deserializer: __D, mode: ::openedx_events::__private::ReadMode) -> ::std::result::Result<Self, __D::Error> {
                ::openedx_events::__private::deserialize_record::<Self, __D>(deserializer, mode)
            }
            fn resolve_key(field: &'static str, path: &[&str]) -> ::std::result::Result<::openedx_events::__private::ResolvedKey<Self>, ::openedx_events::__private::KeyPathError> {
                ::openedx_events::__private::record_key::<Self>(field, path)
            }
        }
    })
}

/// The error of a failed `#[derive(EventData)]`, and a stand-in `EventField` impl that is
/// never called (it cannot be: the build fails), so that every use of the type as a field
/// compiles and the derive's error is the only one (as thiserror does on error).
pub fn data_fallback(input: &DeriveInput, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    if !input.generics.params.is_empty() {
        return error;
    }
    let ident = &input.ident;
    quote! {
        #error
        impl ::openedx_events::__private::EventField for #ident {
            const SHAPE: ::openedx_events::__private::Shape = ::openedx_events::__private::Shape::Bytes;
            fn avro_schema(_: &mut ::openedx_events::__private::SchemaContext) -> ::openedx_events::__private::serde_json::Value {
                ::std::unreachable!()
            }
            fn serialize_field<__S: ::openedx_events::__private::serde::Serializer>(&self, _: __S) -> ::std::result::Result<__S::Ok, __S::Error> {
                ::std::unreachable!()
            }
            fn deserialize_field<'de, __D: ::openedx_events::__private::serde::Deserializer<'de>>(_: __D) -> ::std::result::Result<Self, __D::Error> {
                ::std::unreachable!()
            }
        }
    }
}

/// The input item as given (without the `#[event_data]` attributes that only the derive
/// knows), followed by the error.
pub fn with_error(mut input: DeriveInput, error: syn::Error) -> TokenStream {
    input.attrs.retain(|a| !a.path().is_ident("event_data"));
    let error = error.into_compile_error();
    quote! {
        #input
        #error
    }
}

/// The type strings of the events declared so far in this crate (this compiler process
/// expands one crate): `producer_config!` names them directly, and suggests the closest of
/// them for a type string that names no event.
static DECLARED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn declared() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    DECLARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an event of this type string was declared before in this crate.
pub fn declared_here(event_type: &str) -> bool {
    declared().contains(event_type)
}

/// The type strings of the events declared before in this crate.
pub fn declared_types() -> Vec<String> {
    declared().iter().cloned().collect()
}

/// `#[openedx_event("...")]`.
pub fn event(args: TokenStream, input: &DeriveInput) -> syn::Result<TokenStream> {
    let args = attr::event_args(args)?;
    let event_type = valid::event_type(&args.event_type)?;
    let record = Record::from_input(input, "an #[openedx_event] type")?;
    if let Some(a) = input.attrs.iter().find(|a| a.path().is_ident("event_data")) {
        return Err(syn::Error::new_spanned(
            a,
            "#[event_data] does not apply to an event: its Avro record is always `CloudEvent`",
        ));
    }
    if !derives(&input.attrs, "Debug") {
        return Err(syn::Error::new(
            input.ident.span(),
            format!(
                "an #[openedx_event] struct must implement `Debug` (events are logged and printed with `{{:?}}`): \
                 add `#[derive(Clone, Debug)]` below `#[openedx_event(...)]`, as in `#[derive(Clone, Debug)] pub struct {} {{ ... }}`",
                input.ident
            ),
        ));
    }
    let ident = record.ident;
    let vis = record.vis;
    let minor = match &args.minor_version {
        Some(l) => l.base10_parse::<u32>()?,
        None => 0,
    };
    let description = attr::first_paragraph(&record.doc);
    let alias = format_ident!("{}", valid::alias_name(&event_type), span = args.event_type.span());
    let common = record_impls(&record, "CloudEvent");
    let rust_type = ident.to_string();
    declared().insert(event_type.clone());
    Ok(quote! {
        #input
        #common
        impl ::openedx_events::__private::OpenEdxEvent for #ident {
            const EVENT_TYPE: &'static str = #event_type;
            const MINOR_VERSION: u32 = #minor;
            const DESCRIPTION: &'static str = #description;
            fn signal() -> &'static ::openedx_events::__private::Signal<Self> {
                static SIGNAL: ::openedx_events::__private::Signal<#ident> = ::openedx_events::__private::Signal::new();
                &SIGNAL
            }
            fn avro_schema() -> &'static ::openedx_events::avro::EventSchema {
                static SCHEMA: ::openedx_events::__private::SchemaCell = ::openedx_events::__private::SchemaCell::new();
                SCHEMA.get::<Self>()
            }
        }
        ::openedx_events::__private::inventory::submit! {
            ::openedx_events::__private::EventDescriptor::new::<#ident>(::std::concat!(::std::module_path!(), "::", #rust_type))
        }
        /// Names this event by its type string for `producer_config!`.
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis type #alias = #ident;
    })
}

/// Whether a `#[derive(...)]` among `attrs` names `name` (`Debug`, `std::fmt::Debug`...).
fn derives(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs.iter().filter(|a| a.path().is_ident("derive")).any(|a| {
        a.parse_args_with(syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)
            .is_ok_and(|paths| paths.iter().any(|p| p.segments.last().is_some_and(|s| s.ident == name)))
    })
}

/// The impls shared by events and data records: field checks, serde, record info.
///
/// Nothing here declares an item or a type parameter a field type could be shadowed by:
/// the visitor and the field-name lookup are generic code in `__private`, and the type
/// parameters are spelled `__A`, `__S`, `__D`.
fn record_impls(record: &Record, record_name: &str) -> TokenStream {
    let ident = record.ident;
    let n = record.fields.len();
    let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    let idents: Vec<_> = record.fields.iter().map(|f| f.ident).collect();
    let tys: Vec<_> = record.fields.iter().map(|f| f.ty).collect();
    let docs: Vec<&str> = record.fields.iter().map(|f| f.doc.as_str()).collect();
    let ty_strs: Vec<String> = tys.iter().map(|t| quote!(#t).to_string().replace(' ', "")).collect();
    let locals: Vec<_> = (0..n).map(|i| format_ident!("__f{}", i)).collect();
    let indices: Vec<usize> = (0..n).collect();

    // Each field's shape, spanned at its type: an unsupported type is reported there, once,
    // and the constant below (always evaluated) runs each type's checks.
    let shapes = tys.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            ::openedx_events::__private::field_shape::<#ty>()
        }
    });

    quote! {
        const _: &::openedx_events::__private::Record = <#ident as ::openedx_events::__private::EventDataInfo>::RECORD;

        impl ::openedx_events::__private::EventDataInfo for #ident {
            const RECORD_NAME: &'static str = #record_name;
            const FIELDS: &'static [::openedx_events::__private::FieldInfo] = &[
                #(::openedx_events::__private::FieldInfo { name: #names, rust_type: #ty_strs, doc: #docs },)*
            ];
            const FIELD_NAMES: &'static [&'static str] = &[#(#names),*];
            const RECORD: &'static ::openedx_events::__private::Record = &::openedx_events::__private::Record {
                name: #record_name,
                fields: &[#(::openedx_events::__private::RecordField { name: #names, shape: #shapes },)*],
            };
            fn avro_fields(cx: &mut ::openedx_events::__private::SchemaContext) -> ::std::vec::Vec<::openedx_events::__private::serde_json::Value> {
                ::std::vec![#(::openedx_events::__private::avro_field_entry::<#tys>(#names, cx)),*]
            }
            fn resolve_key_path(path: &[&str]) -> ::std::result::Result<::openedx_events::__private::ResolvedKey<Self>, ::openedx_events::__private::KeyPathError> {
                let (first, rest) = match path.split_first() {
                    ::std::option::Option::Some(p) => p,
                    ::std::option::Option::None => return ::std::result::Result::Err(::openedx_events::__private::KeyPathError::Empty { path: ::std::string::String::new() }),
                };
                match *first {
                    #(#names => ::openedx_events::__private::key_through_field::<Self, #tys>(#names, rest, |s: &Self| &s.#idents),)*
                    other => ::std::result::Result::Err(::openedx_events::__private::no_such_field::<Self>(other)),
                }
            }
            fn read_record<'de, __A: ::openedx_events::__private::serde::de::MapAccess<'de>>(
                mut __map: __A,
                __mode: ::openedx_events::__private::ReadMode,
            ) -> ::std::result::Result<Self, __A::Error> {
                #(let mut #locals: ::std::option::Option<#tys> = ::std::option::Option::None;)*
                while let ::std::option::Option::Some(__key) = __map.next_key_seed(
                    ::openedx_events::__private::FieldKey::new(<Self as ::openedx_events::__private::EventDataInfo>::FIELD_NAMES, __mode),
                )? {
                    match __key {
                        #(::std::option::Option::Some(#indices) => {
                            if #locals.is_some() {
                                return ::std::result::Result::Err(<__A::Error as ::openedx_events::__private::serde::de::Error>::duplicate_field(#names));
                            }
                            #locals = ::std::option::Option::Some(__map.next_value_seed(::openedx_events::__private::FieldSeed::<#tys>::new(__mode))?);
                        })*
                        _ => {
                            __map.next_value::<::openedx_events::__private::serde::de::IgnoredAny>()?;
                        }
                    }
                }
                ::std::result::Result::Ok(Self {
                    #(#idents: ::openedx_events::__private::take_field::<#tys, __A::Error>(#locals, #names)?,)*
                })
            }
        }

        impl ::openedx_events::__private::serde::Serialize for #ident {
            fn serialize<__S: ::openedx_events::__private::serde::Serializer>(&self, __serializer: __S) -> ::std::result::Result<__S::Ok, __S::Error> {
                use ::openedx_events::__private::serde::ser::SerializeStruct as _;
                let mut __st = __serializer.serialize_struct(#record_name, #n)?;
                #(__st.serialize_field(#names, &::openedx_events::data::Ser(&self.#idents))?;)*
                __st.end()
            }
        }

        impl<'de> ::openedx_events::__private::serde::Deserialize<'de> for #ident {
            fn deserialize<__D: ::openedx_events::__private::serde::Deserializer<'de>>(__deserializer: __D) -> ::std::result::Result<Self, __D::Error> {
                ::openedx_events::__private::deserialize_record::<Self, __D>(__deserializer, ::openedx_events::__private::ReadMode::Exact)
            }
        }
    }
}
