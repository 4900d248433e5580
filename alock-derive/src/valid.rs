//! Semantic checks, each error spanned at the token to change. Every check
//! runs even after another failed, so all independent mistakes show at once.

use quote::ToTokens;
use syn::{GenericArgument, Ident, Member, PathArguments, Type, TypePath};

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
        // The id's type decides the key space, but the struct's mistakes
        // read best before the fields'.
        let mut id_errors = Errors::default();
        let id = id_field(self.ident, fields, &mut id_errors);
        let space = key_space(self, id, errors);
        for field in fields {
            check_field_attrs(&field.attrs, errors);
        }
        if let Err(error) = id_errors.finish() {
            errors.push(error);
        }
        Some(match (space?, id?) {
            (Space::Int4Pair(namespace), id) => Key::Int4Pair { namespace, id },
            (Space::TaggedInt8(namespace), id) => Key::TaggedInt8 { namespace, id },
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
    if let Some(krate) = &attrs.krate {
        errors.push(syn::Error::new_spanned(
            &krate.key,
            "#[advisory_key(crate = ...)] goes on the struct, not on a field",
        ));
    }
}

/// The key space the struct's attributes and id type ask for.
enum Space<'a> {
    Int4Pair(Namespace<'a>),
    TaggedInt8(Namespace<'a>),
    Int8,
}

fn key_space<'a>(
    input: &'a Input<'a>,
    id: Option<&Field<'_>>,
    errors: &mut Errors,
) -> Option<Space<'a>> {
    let attrs = &input.attrs;
    match (&attrs.namespace, &attrs.int8) {
        (Some(namespace), int8) => {
            // An id field the derive cannot see is checked as an int4 pair:
            // the usual case, and the one its other errors will be about.
            let tagged = int8.is_some() || id.is_some_and(|id| is_64_bit(id.ty));
            let namespace = checked_namespace(&namespace.value, tagged, errors)?;
            Some(match tagged {
                true => Space::TaggedInt8(namespace),
                false => Space::Int4Pair(namespace),
            })
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

/// Whether the id's type, as written, is a 64-bit integer: `i64`, `u64`,
/// their `NonZero` forms, or a reference to one. Under a namespace such an
/// id makes an int8 key; a type the derive cannot see through (an alias, a
/// type parameter) asks for it with `int8`.
fn is_64_bit(ty: &Type) -> bool {
    const WIDE: [&str; 4] = ["i64", "u64", "NonZeroI64", "NonZeroU64"];
    match ty {
        Type::Reference(reference) => is_64_bit(&reference.elem),
        Type::Group(group) => is_64_bit(&group.elem),
        Type::Paren(paren) => is_64_bit(&paren.elem),
        Type::Path(TypePath { qself: None, path }) => {
            let Some(last) = path.segments.last() else {
                return false;
            };
            match &last.arguments {
                PathArguments::None => WIDE.iter().any(|wide| last.ident == wide),
                PathArguments::AngleBracketed(args) if last.ident == "NonZero" => {
                    match args.args.iter().collect::<Vec<_>>()[..] {
                        [GenericArgument::Type(inner)] => is_64_bit(inner),
                        _ => false,
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn checked_namespace<'a>(
    value: &'a NamespaceValue,
    tagged: bool,
    errors: &mut Errors,
) -> Option<Namespace<'a>> {
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
        NamespaceValue::Const(path) => Some(Namespace::Const(path)),
        NamespaceValue::Int { literal, value } if tagged => {
            match value.and_then(|value| u16::try_from(value).ok()) {
                Some(value) => Some(Namespace::Value(i32::from(value))),
                None => {
                    errors.push(syn::Error::new_spanned(literal, TAG_RANGE));
                    None
                }
            }
        }
        NamespaceValue::Int { literal, value } => {
            match value.and_then(|value| i32::try_from(value).ok()) {
                Some(value) => Some(Namespace::Value(value)),
                None => {
                    errors.push(syn::Error::new_spanned(literal, INT4_RANGE));
                    None
                }
            }
        }
    }
}

/// Why an integer namespace does not fit an int4 pair's first half.
pub(crate) const INT4_RANGE: &str = "namespace is out of int4 range; use an integer from \
     -2147483648 to 2147483647, or a string namespace";

/// Why an integer namespace does not fit the tag of a namespaced int8 key.
pub(crate) const TAG_RANGE: &str = "namespace is out of range for a 64-bit id: its int8 key \
     holds the namespace in 16 bits and the id in 48; use an integer from 0 to 65535, or a \
     string namespace";

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
