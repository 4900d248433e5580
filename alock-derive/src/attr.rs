//! Parses the `#[advisory_key(...)]` attributes of the struct and of its
//! fields. Whether a key belongs where it was written is `valid`'s business.

use proc_macro2::Group;
use syn::meta::ParseNestedMeta;
use syn::{
    Attribute, Expr, ExprLit, ExprPath, ExprUnary, Lit, LitInt, LitStr, Path, Token, UnOp, token,
};

use crate::ctxt::Errors;

/// Where the attributes sit, for naming the keys that belong there.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Struct,
    Field,
}

/// The keys of every `#[advisory_key(...)]` on one struct or field; each
/// path is the key as written, for spans.
#[derive(Default)]
pub(crate) struct Attrs {
    pub namespace: Option<Namespace>,
    pub int8: Option<Path>,
    pub krate: Option<Crate>,
    pub id: Option<Path>,
    /// Some key was unknown or malformed; what it meant to say is unknown,
    /// so a "missing" error here would only repeat that one.
    pub malformed: bool,
}

/// `crate = "path"`: where the generated code finds `alock`.
pub(crate) struct Crate {
    pub key: Path,
    pub path: Path,
}

/// `namespace = <literal or path>`.
pub(crate) struct Namespace {
    pub key: Path,
    pub value: NamespaceValue,
}

pub(crate) enum NamespaceValue {
    Name(LitStr),
    /// An integer literal, maybe negated; `value` is `None` when it does not
    /// even fit an `i128`.
    Int {
        literal: Expr,
        value: Option<i128>,
    },
    /// A path to a constant, range-checked by the compiler.
    Const(Path),
}

const NAMESPACE_LITERAL: &str = "expected a string, an integer literal or a path to an integer \
     constant, as in #[advisory_key(namespace = \"orders\")], \
     #[advisory_key(namespace = 192842)] or #[advisory_key(namespace = ORDERS_OID)]";

pub(crate) fn get(attrs: &[Attribute], position: Position, errors: &mut Errors) -> Attrs {
    let mut found = Attrs::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("advisory_key"))
    {
        let mut node_errors = Errors::default();
        let parsed =
            attr.parse_nested_meta(|meta| parse_key(&meta, position, &mut found, &mut node_errors));
        if let Err(error) = parsed {
            node_errors.push(error);
        }
        if let Err(error) = node_errors.finish() {
            found.malformed = true;
            errors.push(error);
        }
    }
    found
}

fn parse_key(
    meta: &ParseNestedMeta<'_>,
    position: Position,
    found: &mut Attrs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let key = &meta.path;
    if key.is_ident("namespace") {
        if !meta.input.peek(Token![=]) {
            skip_value(meta)?;
            errors.push(meta.error("expected #[advisory_key(namespace = \"...\")]"));
            return Ok(());
        }
        let literal: Expr = meta.value()?.parse()?;
        match namespace_value(literal) {
            Ok(value) => {
                let namespace = Namespace {
                    key: key.clone(),
                    value,
                };
                set_once(&mut found.namespace, namespace, key, errors);
            }
            Err(error) => errors.push(error),
        }
    } else if key.is_ident("crate") {
        if !meta.input.peek(Token![=]) {
            skip_value(meta)?;
            errors.push(meta.error("expected #[advisory_key(crate = \"...\")]"));
            return Ok(());
        }
        let value: Expr = meta.value()?.parse()?;
        match crate_path(&value) {
            Ok(path) => {
                let krate = Crate {
                    key: key.clone(),
                    path,
                };
                set_once(&mut found.krate, krate, key, errors);
            }
            Err(error) => errors.push(error),
        }
    } else if key.is_ident("int8") || key.is_ident("id") {
        if meta.input.peek(Token![=]) || meta.input.peek(token::Paren) {
            skip_value(meta)?;
            let name = path_name(key);
            errors.push(meta.error(format!(
                "#[advisory_key({name})] takes no value; write #[advisory_key({name})]"
            )));
            return Ok(());
        }
        let slot = if key.is_ident("id") {
            &mut found.id
        } else {
            &mut found.int8
        };
        set_once(slot, key.clone(), key, errors);
    } else {
        skip_value(meta)?;
        let expected = match position {
            Position::Struct => {
                "on a struct, write #[advisory_key(namespace = \"...\")], #[advisory_key(int8)] \
                 or #[advisory_key(crate = \"...\")]"
            }
            Position::Field => "on a field, write #[advisory_key(id)]",
        };
        errors.push(meta.error(format!(
            "unknown key `{}` in #[advisory_key(...)]; {expected}",
            path_name(key)
        )));
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Path, errors: &mut Errors) {
    if slot.is_some() {
        let message = format!("duplicate #[advisory_key({})] attribute", path_name(key));
        errors.push(syn::Error::new_spanned(key, message));
    } else {
        *slot = Some(value);
    }
}

/// Consumes a key's `= value` or `(...)`, so parsing goes on to the next
/// key after a mistake.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(token::Paren) {
        meta.input.parse::<Group>()?;
    }
    Ok(())
}

/// The path in `crate = "path"`, a string as serde's `crate` takes it.
fn crate_path(value: &Expr) -> syn::Result<Path> {
    let message =
        "expected the path to alock as a string, as in #[advisory_key(crate = \"::alock\")]";
    match value {
        Expr::Group(group) => crate_path(&group.expr),
        Expr::Lit(ExprLit {
            lit: Lit::Str(path),
            ..
        }) => path
            .parse()
            .map_err(|_| syn::Error::new_spanned(path, message)),
        _ => Err(syn::Error::new_spanned(value, message)),
    }
}

fn namespace_value(literal: Expr) -> syn::Result<NamespaceValue> {
    match &literal {
        Expr::Group(group) => namespace_value((*group.expr).clone()),
        Expr::Path(ExprPath {
            attrs,
            qself: None,
            path,
            ..
        }) if attrs.is_empty() => Ok(NamespaceValue::Const(path.clone())),
        Expr::Lit(ExprLit {
            lit: Lit::Str(name),
            ..
        }) => Ok(NamespaceValue::Name(name.clone())),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => {
            let value = int_value(int)?;
            Ok(NamespaceValue::Int { literal, value })
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(int), ..
            }) => {
                let value = int_value(int)?.map(|value| -value);
                Ok(NamespaceValue::Int { literal, value })
            }
            _ => Err(syn::Error::new_spanned(&literal, NAMESPACE_LITERAL)),
        },
        _ => Err(syn::Error::new_spanned(&literal, NAMESPACE_LITERAL)),
    }
}

fn int_value(int: &LitInt) -> syn::Result<Option<i128>> {
    match int.suffix() {
        "" | "i32" => Ok(int.base10_parse().ok()),
        suffix => Err(syn::Error::new_spanned(
            int,
            format!(
                "an integer namespace is checked against its key's range, not typed; \
                 drop the `{suffix}` suffix"
            ),
        )),
    }
}

fn path_name(path: &Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    segments.join("::")
}
