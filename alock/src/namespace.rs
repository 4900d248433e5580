//! Namespaces for int4-pair keys.

/// Placeholder: replaced by the derive work.
pub const fn namespace(name: &str) -> i32 {
    name.len() as i32
}
