use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
#[advisory_key(namespace = "invoices")]
struct Order(i32);

#[derive(AdvisoryKey)]
#[advisory_key(int8, int8)]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "customers")]
struct Customer {
    #[advisory_key(id)]
    #[advisory_key(id)]
    id: i32,
    name: String,
}

fn main() {}
