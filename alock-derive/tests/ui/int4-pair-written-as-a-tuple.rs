// A tuple of keys is a list of keys, so `(table_oid, 0)` would read as two
// keys; as `i32` is no key, it does not compile, and the message says how to
// write one int4 pair or two int8 keys.
use alock::AdvisoryKeys;
use alock::prelude::*;

fn takes_keys(_: impl AdvisoryKeys) {}

fn lock_a_table(conn: &mut sqlx::PgConnection, table_oid: i32) {
    let _ = conn.lock_exclusive((table_oid, 0));
}

fn main() {
    takes_keys((1_i32, 2_i32));
    let _ = lock_a_table;
}
