//! A typed view of the derive input, borrowing the syn nodes, and the key
//! shape that validation settles on.

use syn::{Data, DeriveInput, Generics, Ident, LitStr, Member, Path, Token, Type};

use crate::attr::{self, Attrs, Position};
use crate::ctxt::Errors;

pub(crate) struct Input<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub attrs: Attrs,
    pub body: Body<'a>,
}

pub(crate) enum Body<'a> {
    Struct(Vec<Field<'a>>),
    Enum(&'a Token![enum]),
    Union(&'a Token![union]),
}

pub(crate) struct Field<'a> {
    pub attrs: Attrs,
    pub member: Member,
    pub ty: &'a Type,
}

/// What a valid input locks by.
pub(crate) enum Key<'a> {
    /// `LockId::Int4Pair(namespace, id)`.
    Int4Pair {
        namespace: Namespace<'a>,
        id: &'a Field<'a>,
    },
    /// `LockId::tagged(tag, id)`: the namespace's 16-bit tag, then a 48-bit
    /// id.
    TaggedInt8 {
        namespace: Namespace<'a>,
        id: &'a Field<'a>,
    },
    /// `LockId::Int8(id)`.
    Int8 { id: &'a Field<'a> },
}

/// A namespace, its literal checked to fit its key: an int4 for a pair, a
/// 16-bit tag for an int8.
pub(crate) enum Namespace<'a> {
    Name(&'a LitStr),
    Value(i32),
    /// A path to a constant, range-checked by the compiler.
    Const(&'a Path),
}

impl<'a> Input<'a> {
    pub(crate) fn from_syn(node: &'a DeriveInput, errors: &mut Errors) -> Self {
        let attrs = attr::get(&node.attrs, Position::Struct, errors);
        let body = match &node.data {
            Data::Struct(data) => Body::Struct(
                data.fields
                    .iter()
                    .enumerate()
                    .map(|(index, field)| Field::from_syn(index, field, errors))
                    .collect(),
            ),
            Data::Enum(data) => Body::Enum(&data.enum_token),
            Data::Union(data) => Body::Union(&data.union_token),
        };
        Input {
            ident: &node.ident,
            generics: &node.generics,
            attrs,
            body,
        }
    }
}

impl<'a> Field<'a> {
    fn from_syn(index: usize, node: &'a syn::Field, errors: &mut Errors) -> Self {
        let member = match &node.ident {
            Some(ident) => Member::Named(ident.clone()),
            None => Member::Unnamed(index.into()),
        };
        Field {
            attrs: attr::get(&node.attrs, Position::Field, errors),
            member,
            ty: &node.ty,
        }
    }
}
