//! The keys of a command line: `--key NAME`, `--id N`, `--pair A,B`.

use alock::{KeyNames, LockId};

use crate::Failure;

/// Which advisory keys a command is about; each option may be repeated.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// A key by name: the int8 that sqlx's PgAdvisoryLock::new(NAME) locks
    #[arg(long = "key", value_name = "NAME")]
    names: Vec<String>,

    /// An int8 key, as pg_advisory_lock(N) takes it
    #[arg(long = "id", value_name = "N", allow_negative_numbers = true)]
    ids: Vec<i64>,

    /// An int4-pair key, as pg_advisory_lock(A, B) takes it
    #[arg(long = "pair", value_name = "A,B", allow_hyphen_values = true, value_parser = parse_pair)]
    pairs: Vec<LockId>,

    /// Show keys of this string namespace as NAME:ID, as
    /// #[advisory_key(namespace = "NAME")] makes them
    #[arg(long = "namespace", value_name = "NAME")]
    namespaces: Vec<String>,
}

impl KeyArgs {
    /// The keys given, sorted, so that two commands naming the same keys in
    /// another order take them in the same order and cannot deadlock.
    pub fn ids(&self) -> Vec<LockId> {
        let mut ids: Vec<LockId> = self.names.iter().map(|n| LockId::from_name(n)).collect();
        ids.extend(self.ids.iter().map(|&id| LockId::Int8(id)));
        ids.extend(&self.pairs);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The keys given, at least one.
    pub fn required_ids(&self) -> Result<Vec<LockId>, Failure> {
        let ids = self.ids();
        if ids.is_empty() {
            return Err(Failure::usage(
                "no key given: pass --key NAME, --id N or --pair A,B (see 'alock --help')",
            ));
        }
        Ok(ids)
    }

    /// Names for display: each `--key` by its name, each `--namespace`'s
    /// keys as `NAME:ID`.
    pub fn names(&self) -> KeyNames {
        let names = self
            .namespaces
            .iter()
            .fold(KeyNames::new(), |names, n| names.named(n));
        self.names.iter().fold(names, |names, n| {
            names.key(LockId::from_name(n), n.as_str())
        })
    }
}

fn parse_pair(text: &str) -> Result<LockId, String> {
    let invalid = || format!("'{text}' is not a pair of int4 keys such as 12,34");
    let (first, second) = text.split_once(',').ok_or_else(invalid)?;
    let first = first.trim().parse().map_err(|_| invalid())?;
    let second = second.trim().parse().map_err(|_| invalid())?;
    Ok(LockId::pair(first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_with_signs_and_spaces() {
        assert_eq!(parse_pair("1,2"), Ok(LockId::pair(1, 2)));
        assert_eq!(parse_pair("-2147483648, 7"), Ok(LockId::pair(i32::MIN, 7)));
        assert!(parse_pair("1").is_err());
        assert!(parse_pair("1,2,3").is_err());
        assert!(parse_pair("2147483648,1").is_err());
    }
}
