//! Semantic checks, each error spanned at the token to change. Every check
//! runs even after another failed, so all independent mistakes show at once.

use quote::ToTokens;
use syn::{Ident, Member};

use crate::ast::{Body, Field, Input, Key, Namespace};
use crate::attr::{Attrs, NamespaceValue};
use crate::ctxt::Errors;

impl<'a> Input<'a> {
    /// The key this input derives, or `None` with the reasons in `errors`.
    pub(crate) fn validate(&'a self, errors: &mut Errors) -> Option<Key<'a>> {
        check_struct_attrs(&self.attrs, errors);
        let fields = match &self.body {
            Body::Struct(fields) => fields,
            Body::Enum(token) => return not_a_struct(token, "enums", errors),
            Body::Union(token) => return not_a_struct(token, "unions", errors),
        };
        let space = key_space(self, errors);
        for field in fields {
            check_field_attrs(&field.attrs, errors);
        }
        let id = id_field(self.ident, fields, errors);
        Some(match (space?, id?) {
            (Space::Namespace(namespace), id) => Key::Int4Pair { namespace, id },
            (Space::Int8, id) => Key::Int8 { id },
        })
    }
}

fn not_a_struct<T>(keyword: impl ToTokens, kind: &str, errors: &mut Errors) -> Option<T> {
    errors.push(syn::Error::new_spanned(
        keyword,
        format!(
            "#[derive(AdvisoryKey)] works on structs only, not {kind}; derive it on a struct \
             that holds the key, or implement `alock::AdvisoryKey` by hand"
        ),
    ));
    None
}

fn check_struct_attrs(attrs: &Attrs, errors: &mut Errors) {
    if let Some(id) = &attrs.id {
        errors.push(syn::Error::new_spanned(
            id,
            "#[advisory_key(id)] goes on the field that holds the id, not on the struct",
        ));
    }
}

fn check_field_attrs(attrs: &Attrs, errors: &mut Errors) {
    if let Some(namespace) = &attrs.namespace {
        errors.push(syn::Error::new_spanned(
            &namespace.key,
            "#[advisory_key(namespace = ...)] goes on the struct, not on a field",
        ));
    }
    if let Some(int8) = &attrs.int8 {
        errors.push(syn::Error::new_spanned(
            int8,
            "#[advisory_key(int8)] goes on the struct, not on a field",
        ));
    }
}

/// The key space the struct's attributes ask for.
enum Space<'a> {
    Namespace(Namespace<'a>),
    Int8,
}

fn key_space<'a>(input: &'a Input<'a>, errors: &mut Errors) -> Option<Space<'a>> {
    let attrs = &input.attrs;
    match (&attrs.namespace, &attrs.int8) {
        (Some(namespace), int8) => {
            if let Some(int8) = int8 {
                errors.push(syn::Error::new_spanned(
                    int8,
                    "#[advisory_key(int8)] cannot be combined with a namespace: an int8 key \
                     spans the whole int8 key space; remove one of the two",
                ));
            }
            let namespace = checked_namespace(&namespace.value, errors)?;
            int8.is_none().then_some(Space::Namespace(namespace))
        }
        (None, Some(_)) => Some(Space::Int8),
        (None, None) if attrs.malformed => None,
        (None, None) => {
            errors.push(syn::Error::new_spanned(
                input.ident,
                "missing #[advisory_key(namespace = \"...\")] on this struct; name the \
                 namespace its ids live in, or write #[advisory_key(int8)] to key by an int8 \
                 id alone",
            ));
            None
        }
    }
}

fn checked_namespace<'a>(value: &'a NamespaceValue, errors: &mut Errors) -> Option<Namespace<'a>> {
    match value {
        NamespaceValue::Name(name) if name.value().is_empty() => {
            errors.push(syn::Error::new_spanned(
                name,
                "empty namespace; name the table or type, as in \
                 #[advisory_key(namespace = \"orders\")]",
            ));
            None
        }
        NamespaceValue::Name(name) => Some(Namespace::Name(name)),
        NamespaceValue::Int { literal, value } => {
            match value.and_then(|value| i32::try_from(value).ok()) {
                Some(value) => Some(Namespace::Value(value)),
                None => {
                    errors.push(syn::Error::new_spanned(
                        literal,
                        format!(
                            "namespace is out of int4 range; use an integer from {} to {}, \
                             or a string namespace",
                            i32::MIN,
                            i32::MAX
                        ),
                    ));
                    None
                }
            }
        }
    }
}

fn id_field<'a>(
    ident: &Ident,
    fields: &'a [Field<'a>],
    errors: &mut Errors,
) -> Option<&'a Field<'a>> {
    let mut marked = fields
        .iter()
        .filter_map(|field| Some((field, field.attrs.id.as_ref()?)));
    if let Some((first, _)) = marked.next() {
        for (_, extra) in marked {
            errors.push(syn::Error::new_spanned(
                extra,
                format!(
                    "a key has one id field and {} is already #[advisory_key(id)]; \
                     remove one of the two",
                    describe(&first.member)
                ),
            ));
        }
        return Some(first);
    }
    match fields {
        [only] => Some(only),
        [] => {
            errors.push(syn::Error::new_spanned(
                ident,
                "this struct has no field to take the id from; add one that holds the id",
            ));
            None
        }
        _ if fields.iter().any(|field| field.attrs.malformed) => None,
        _ => {
            errors.push(syn::Error::new_spanned(
                ident,
                format!(
                    "this struct has {} fields and none is #[advisory_key(id)]; mark the \
                     field that holds the id",
                    fields.len()
                ),
            ));
            None
        }
    }
}

fn describe(member: &Member) -> String {
    match member {
        Member::Named(ident) => format!("`{ident}`"),
        Member::Unnamed(index) => format!("field {}", index.index),
    }
}
