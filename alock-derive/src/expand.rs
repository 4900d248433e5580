//! Writes the impls: `Namespaced` for a namespaced key, and `AdvisoryKey`
//! whose `lock_id` is a constant and one field read.

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, Type};

use crate::ast::{Field, Input, Key, Namespace};
use crate::ctxt::Errors;

pub(crate) fn derive(node: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let input = Input::from_syn(node, &mut errors);
    let key = input.validate(&mut errors);
    errors.finish()?;
    let key = key.expect("BUG: validation returned no key and no error");
    Ok(match key {
        Key::Int4Pair { namespace, id } => int4_pair(&input, &namespace, id),
        Key::Int8 { id } => int8(&input, id),
    })
}

fn int4_pair(input: &Input<'_>, namespace: &Namespace<'_>, id: &Field<'_>) -> TokenStream {
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let namespace = match namespace {
        Namespace::Name(name) => quote!(::alock::namespace(#name)),
        Namespace::Value(value) => value.to_token_stream(),
    };
    let key = key_impl(
        input,
        id,
        IdInt::Int4,
        |id| quote!(::alock::LockId::Int4Pair(<Self as ::alock::Namespaced>::NAMESPACE, #id)),
    );
    quote! {
        #[automatically_derived]
        impl #impl_generics ::alock::Namespaced for #ident #ty_generics #where_clause {
            const NAMESPACE: i32 = #namespace;
        }

        #key
    }
}

fn int8(input: &Input<'_>, id: &Field<'_>) -> TokenStream {
    key_impl(
        input,
        id,
        IdInt::Int8,
        |id| quote!(::alock::LockId::Int8(#id)),
    )
}

/// The integer an id field converts to, through which trait.
#[derive(Clone, Copy)]
enum IdInt {
    Int4,
    Int8,
}

impl IdInt {
    /// The trait, spanned at the id's type so that a type without it is
    /// reported there, with the trait's own message.
    fn bound(self, span: Span) -> TokenStream {
        match self {
            IdInt::Int4 => quote_spanned!(span=> ::alock::Int4Key),
            IdInt::Int8 => quote_spanned!(span=> ::alock::Int8Key),
        }
    }

    fn method(self, span: Span) -> TokenStream {
        match self {
            IdInt::Int4 => quote_spanned!(span=> to_int4),
            IdInt::Int8 => quote_spanned!(span=> to_int8),
        }
    }
}

/// `impl AdvisoryKey`, whose `lock_id` is `lock_id` applied to the id
/// field's conversion to `int`.
fn key_impl(
    input: &Input<'_>,
    id: &Field<'_>,
    int: IdInt,
    lock_id: impl FnOnce(TokenStream) -> TokenStream,
) -> TokenStream {
    let ident = input.ident;
    let ty = id.ty;
    let member = &id.member;
    let span = ty.span();
    let bound = int.bound(span);
    let method = int.method(span);
    let convert = quote_spanned!(span=> <#ty as #bound>::#method);
    let lock_id = lock_id(quote!(#convert(&self.#member)));

    let generics = bound_generic_id(input.generics, ty, &bound);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::alock::AdvisoryKey for #ident #ty_generics #where_clause {
            #[inline]
            fn lock_id(&self) -> ::alock::LockId {
                #lock_id
            }
        }
    }
}

/// Adds `IdType: Int4Key` (or `Int8Key`) to the where clause when the id's
/// type names a type parameter; a concrete type is checked where it is
/// converted.
fn bound_generic_id(generics: &Generics, ty: &Type, bound: &TokenStream) -> Generics {
    let params: HashSet<&Ident> = generics.type_params().map(|param| &param.ident).collect();
    let mut generics = generics.clone();
    if mentions(ty.to_token_stream(), &params) {
        let span = ty.span();
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote_spanned!(span=> #ty: #bound));
    }
    generics
}

fn mentions(tokens: TokenStream, params: &HashSet<&Ident>) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => params.contains(&ident),
        TokenTree::Group(group) => mentions(group.stream(), params),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn errors(input: DeriveInput) -> Vec<String> {
        match derive(&input) {
            Ok(tokens) => panic!("expected errors, derived {tokens}"),
            Err(errors) => errors.into_iter().map(|error| error.to_string()).collect(),
        }
    }

    fn expansion(input: DeriveInput) -> String {
        derive(&input).expect("derives").to_string()
    }

    #[test]
    fn every_independent_mistake_is_reported() {
        let errors = errors(parse_quote! {
            #[advisory_key(namespace = 1.5, colour)]
            struct Order {
                #[advisory_key(id)]
                id: i32,
                #[advisory_key(id, namespace = "x")]
                customer: i32,
            }
        });
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].starts_with("expected a string or integer literal"));
        assert!(errors[1].starts_with("unknown key `colour`"));
        assert!(errors[2].starts_with("#[advisory_key(namespace = ...)] goes on the struct"));
        assert!(errors[3].starts_with("a key has one id field and `id` is already"));
    }

    #[test]
    fn a_typo_is_not_also_reported_as_a_missing_key() {
        let errors = errors(parse_quote! {
            #[advisory_key(nmespace = "orders")]
            struct Order {
                #[advisory_key(di)]
                id: i32,
                note: String,
            }
        });
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors.iter().all(|error| error.starts_with("unknown key")));
    }

    #[test]
    fn namespace_literals_at_the_edges_of_int4() {
        let lowest = expansion(parse_quote! {
            #[advisory_key(namespace = -2147483648)]
            struct Lowest(i32);
        });
        assert!(
            lowest.contains("const NAMESPACE : i32 = - 2147483648i32"),
            "{lowest}"
        );
        for namespace in [
            quote!(2147483648),
            quote!(-2147483649),
            quote!(99999999999999999999999999999999999999999),
        ] {
            let errors = errors(parse_quote! {
                #[advisory_key(namespace = #namespace)]
                struct Order(i32);
            });
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(errors[0].starts_with("namespace is out of int4 range"));
        }
    }

    #[test]
    fn a_string_namespace_is_hashed_in_a_const() {
        let tokens = expansion(parse_quote! {
            #[advisory_key(namespace = "orders")]
            struct Order(i32);
        });
        assert!(
            tokens.contains("const NAMESPACE : i32 = :: alock :: namespace (\"orders\")"),
            "{tokens}"
        );
        assert!(
            tokens.contains("< i32 as :: alock :: Int4Key > :: to_int4 (& self . 0)"),
            "{tokens}"
        );
    }

    #[test]
    fn only_a_generic_id_type_is_bound_in_the_where_clause() {
        let generic = expansion(parse_quote! {
            #[advisory_key(int8)]
            struct Key<T, U> where U: Clone { #[advisory_key(id)] id: Option<T>, other: U }
        });
        assert!(
            generic.contains("where U : Clone , Option < T > : :: alock :: Int8Key"),
            "{generic}"
        );
        let concrete = expansion(parse_quote! {
            #[advisory_key(int8)]
            struct Key<T> { #[advisory_key(id)] id: i64, other: T }
        });
        assert!(!concrete.contains("where"), "{concrete}");
    }
}
