//! Writes the impls: the namespace constant (`Namespaced` for an int4-pair
//! key, `Int8Namespaced` for a namespaced int8 key), `KeyType` naming the
//! key space, and `AdvisoryKey`, whose `lock_id` is a constant and one field
//! read.

use std::collections::HashSet;

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, LitStr, Path, Type};

use crate::ast::{Field, Input, Key, Namespace};
use crate::ctxt::Errors;

pub(crate) fn derive(node: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let input = Input::from_syn(node, &mut errors);
    let key = input.validate(&mut errors);
    errors.finish()?;
    let key = key.expect("BUG: validation returned no key and no error");
    let krate = match &input.attrs.krate {
        Some(krate) => krate.path.to_token_stream(),
        None => quote!(::alock),
    };
    let cx = Cx {
        input: &input,
        krate,
    };
    Ok(match key {
        Key::Int4Pair { namespace, id } => cx.int4_pair(&namespace, id),
        Key::TaggedInt8 { namespace, id } => cx.tagged_int8(&namespace, id),
        Key::Int8 { id } => cx.int8(id),
    })
}

/// The input, and the path its impls name `alock` by.
struct Cx<'a> {
    input: &'a Input<'a>,
    krate: TokenStream,
}

impl Cx<'_> {
    fn int4_pair(&self, namespace: &Namespace<'_>, id: &Field<'_>) -> TokenStream {
        let krate = &self.krate;
        let namespace = match namespace {
            Namespace::Name(name) => quote!(#krate::namespace(#name)),
            Namespace::Value(value) => value.to_token_stream(),
            Namespace::Const(path) => self.const_namespace(path, NamespaceRange::Int4),
        };
        let constant = self.impl_for(
            quote!(#krate::Namespaced),
            quote!(const NAMESPACE: i32 = #namespace;),
        );
        let space = quote! {
            #krate::KeySpace::Int4Pair {
                namespace: <Self as #krate::Namespaced>::NAMESPACE,
            }
        };
        let key = self.key_impl(id, IdInt::Int4, |id| {
            quote! {
                #[inline]
                fn lock_id(&self) -> #krate::LockId {
                    #krate::LockId::Int4Pair(<Self as #krate::Namespaced>::NAMESPACE, #id)
                }
            }
        });
        quote!(#constant #key)
            .into_iter()
            .chain(self.key_type(space))
            .collect()
    }

    fn tagged_int8(&self, namespace: &Namespace<'_>, id: &Field<'_>) -> TokenStream {
        let krate = &self.krate;
        let tag = match namespace {
            Namespace::Name(name) => quote!(#krate::namespace_tag(#name)),
            Namespace::Value(value) => {
                let tag = u16::try_from(*value).expect("BUG: a tag literal is checked to fit u16");
                tag.to_token_stream()
            }
            Namespace::Const(path) => self.const_namespace(path, NamespaceRange::Tag),
        };
        let constant = self.impl_for(
            quote!(#krate::Int8Namespaced),
            quote!(const NAMESPACE_TAG: u16 = #tag;),
        );
        let space = quote! {
            #krate::KeySpace::TaggedInt8 {
                tag: <Self as #krate::Int8Namespaced>::NAMESPACE_TAG,
            }
        };
        let name = LitStr::new(
            &self.input.ident.unraw().to_string(),
            self.input.ident.span(),
        );
        let key = self.key_impl(id, IdInt::Int8, |id| {
            let tag = quote!(<Self as #krate::Int8Namespaced>::NAMESPACE_TAG);
            quote! {
                #[inline]
                fn lock_id(&self) -> #krate::LockId {
                    #krate::__private::tagged_or_panic(#tag, #id, #name)
                }

                #[inline]
                fn checked_lock_id(
                    &self,
                ) -> ::core::result::Result<#krate::LockId, #krate::KeyError> {
                    #krate::__private::tagged(#tag, #id, #name)
                }
            }
        });
        quote!(#constant #key)
            .into_iter()
            .chain(self.key_type(space))
            .collect()
    }

    fn int8(&self, id: &Field<'_>) -> TokenStream {
        let krate = &self.krate;
        let key = self.key_impl(id, IdInt::Int8, |id| {
            quote! {
                #[inline]
                fn lock_id(&self) -> #krate::LockId {
                    #krate::LockId::Int8(#id)
                }
            }
        });
        key.into_iter()
            .chain(self.key_type(quote!(#krate::KeySpace::Int8)))
            .collect()
    }

    /// `impl KeyType`, and for a type without generics a constant that makes
    /// the compiler evaluate it, so a namespace constant out of range stops
    /// the build even if no key of the type is ever locked.
    fn key_type(&self, space: TokenStream) -> TokenStream {
        let krate = &self.krate;
        let key_type = self.impl_for(
            quote!(#krate::KeyType),
            quote!(const KEY_SPACE: #krate::KeySpace = #space;),
        );
        if !self.input.generics.params.is_empty() {
            return key_type;
        }
        let ident = self.input.ident;
        quote! {
            #key_type

            const _: #krate::KeySpace = <#ident as #krate::KeyType>::KEY_SPACE;
        }
    }

    /// `impl #trait_ for #ident { #items }`, with the struct's generics.
    fn impl_for(&self, trait_: TokenStream, items: TokenStream) -> TokenStream {
        let ident = self.input.ident;
        let (impl_generics, ty_generics, where_clause) = self.input.generics.split_for_impl();
        quote! {
            #[automatically_derived]
            impl #impl_generics #trait_ for #ident #ty_generics #where_clause {
                #items
            }
        }
    }

    /// A namespace read from a constant: checked to be an integer by a trait
    /// bound, and to fit `range` by a constant assertion, both reported at
    /// the path in the attribute.
    fn const_namespace(&self, path: &Path, range: NamespaceRange) -> TokenStream {
        let krate = &self.krate;
        let span = path.span();
        let written = path_name(path);
        let ident = self.input.ident.unraw();
        let (narrow, message) = match range {
            NamespaceRange::Int4 => (
                quote_spanned!(span=> int4_namespace),
                format!(
                    "namespace `{written}` of `{ident}` is out of int4 range; \
                     use a constant from -2147483648 to 2147483647"
                ),
            ),
            NamespaceRange::Tag => (
                quote_spanned!(span=> namespace_tag_of),
                format!(
                    "namespace `{written}` of `{ident}` is out of range for a 64-bit id: its \
                     int8 key holds the namespace in 16 bits and the id in 48; use a constant \
                     from 0 to 65535"
                ),
            ),
        };
        let message = LitStr::new(&message, span);
        // The panic's tokens run from the path's first token to its last, so
        // the compiler underlines the whole path, not its first segment.
        let last = path
            .segments
            .last()
            .map_or(span, |segment| segment.ident.span());
        let mut arguments = Group::new(Delimiter::Parenthesis, message.to_token_stream());
        arguments.set_span(last);
        let panic = quote_spanned!(span=> ::core::panic!);
        quote_spanned! {span=>
            {
                let value = #path;
                let _: &dyn #krate::__private::NamespaceInteger = &value;
                match #krate::__private::#narrow(value as i128) {
                    ::core::option::Option::Some(namespace) => namespace,
                    ::core::option::Option::None => #panic #arguments,
                }
            }
        }
    }

    /// `impl AdvisoryKey` with the methods `methods` writes for the id
    /// field's conversion to `int`.
    fn key_impl(
        &self,
        id: &Field<'_>,
        int: IdInt,
        methods: impl FnOnce(TokenStream) -> TokenStream,
    ) -> TokenStream {
        let krate = &self.krate;
        let ident = self.input.ident;
        let ty = id.ty;
        let member = &id.member;
        let span = ty.span();
        let bound = int.bound(krate, span);
        let method = int.method(span);
        let convert = quote_spanned!(span=> <#ty as #bound>::#method);
        let methods = methods(quote!(#convert(&self.#member)));

        let generics = bound_generic_id(self.input.generics, ty, &bound);
        let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
        quote! {
            #[automatically_derived]
            impl #impl_generics #krate::AdvisoryKey for #ident #ty_generics #where_clause {
                #methods
            }
        }
    }
}

/// The range a namespace constant must fit.
#[derive(Clone, Copy)]
enum NamespaceRange {
    /// An `i32`, the first half of an int4 pair.
    Int4,
    /// A `u16`, the high bits of a namespaced int8 key.
    Tag,
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
    fn bound(self, krate: &TokenStream, span: Span) -> TokenStream {
        match self {
            IdInt::Int4 => quote_spanned!(span=> #krate::Int4Key),
            IdInt::Int8 => quote_spanned!(span=> #krate::Int8Key),
        }
    }

    fn method(self, span: Span) -> TokenStream {
        match self {
            IdInt::Int4 => quote_spanned!(span=> to_int4),
            IdInt::Int8 => quote_spanned!(span=> to_int8),
        }
    }
}

/// A path as written, for messages: `consts::ORDERS`.
fn path_name(path: &Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.unraw().to_string())
        .collect();
    let leading = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{leading}{}", segments.join("::"))
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
        assert!(errors[0].starts_with("expected a string, an integer literal or a path"));
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
    fn a_64_bit_id_under_a_namespace_is_a_tagged_int8() {
        for ty in [
            quote!(i64),
            quote!(&'a i64),
            quote!(core::primitive::i64),
            quote!(NonZero<i64>),
            quote!(std::num::NonZero<i64>),
            quote!(NonZeroI64),
            quote!(u64),
        ] {
            let tokens = expansion(parse_quote! {
                #[advisory_key(namespace = "jobs")]
                struct Job<'a>(#[advisory_key(id)] #ty, PhantomData<&'a ()>);
            });
            assert!(
                tokens.contains("const NAMESPACE_TAG : u16 = :: alock :: namespace_tag (\"jobs\")"),
                "{ty}: {tokens}"
            );
            assert!(tokens.contains(":: alock :: Int8Key"), "{ty}: {tokens}");
            assert!(
                !tokens.contains(":: alock :: Namespaced for"),
                "{ty}: {tokens}"
            );
        }
        for ty in [quote!(i32), quote!(Pk), quote!(NonZero<u32>), quote!(T)] {
            let tokens = expansion(parse_quote! {
                #[advisory_key(namespace = "jobs")]
                struct Job<T>(#[advisory_key(id)] #ty, PhantomData<T>);
            });
            assert!(tokens.contains("const NAMESPACE : i32"), "{ty}: {tokens}");
        }
        let asked = expansion(parse_quote! {
            #[advisory_key(namespace = 65535, int8)]
            struct Job(Pk);
        });
        assert!(
            asked.contains("const NAMESPACE_TAG : u16 = 65535u16"),
            "{asked}"
        );
    }

    #[test]
    fn an_integer_tag_must_fit_16_bits() {
        for namespace in [quote!(65536), quote!(-1), quote!(2147483647)] {
            let errors = errors(parse_quote! {
                #[advisory_key(namespace = #namespace)]
                struct Job(i64);
            });
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(errors[0].starts_with("namespace is out of range for a 64-bit id"));
        }
    }

    #[test]
    fn the_crate_path_replaces_alock_everywhere() {
        let tokens = expansion(parse_quote! {
            #[advisory_key(namespace = "jobs", crate = "my::renamed")]
            struct Job(i64);
        });
        assert!(!tokens.contains(":: alock"), "{tokens}");
        assert!(
            tokens.contains("my :: renamed :: namespace_tag"),
            "{tokens}"
        );
        assert!(tokens.contains("my :: renamed :: KeyError"), "{tokens}");
        let errors = errors(parse_quote! {
            #[advisory_key(namespace = "jobs", crate = my::renamed)]
            struct Job(i64);
        });
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("expected the path to alock as a string"));
    }

    #[test]
    fn a_namespace_constant_is_checked_where_it_is_read() {
        let tokens = expansion(parse_quote! {
            #[advisory_key(namespace = consts::ORDERS)]
            struct Order(i32);
        });
        assert!(tokens.contains("let value = consts :: ORDERS"), "{tokens}");
        assert!(
            tokens.contains("int4_namespace (value as i128)"),
            "{tokens}"
        );
        assert!(
            tokens.contains("namespace `consts::ORDERS` of `Order` is out of int4 range"),
            "{tokens}"
        );
        // A type without generics is evaluated even if never locked.
        assert!(
            tokens.contains("const _ : :: alock :: KeySpace = < Order as :: alock :: KeyType >"),
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
