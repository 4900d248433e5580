use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(nmespace = "orders")]
struct Order(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "invoices")]
struct Invoice {
    #[advisory_key(key)]
    number: i32,
    total: i32,
}

fn main() {}
