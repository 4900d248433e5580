// A namespace named by a constant is range-checked by the compiler: an int4
// for an id of 32 bits or fewer, 16 bits for a 64-bit id.
use alock::AdvisoryKey;

mod consts {
    pub const BIG_OID: u32 = 3_000_000_000;
    pub const INVOICES_OID: u32 = 192_842;
}

const RATIO: f64 = 1.5;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = consts::BIG_OID)]
struct OrderId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = consts::INVOICES_OID)]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = RATIO)]
struct Ratio(i32);

fn main() {}
